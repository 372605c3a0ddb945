"""Flat-panel detector model: line integrals -> counts, with blur and noise, and back.

Order of operations (each optional step is skipped when its parameter is 0/None)::

    I   = I0 exp(-L)                       Beer-Lambert, I0 photons per pixel (mean)
    I   = G_focal * I                      focal-spot blur (the source is not a point)
    N   ~ Poisson(I)                       quantum noise (counts are whole photons)
    N   = G_det * N                        detector blur (scintillator light spread; blurs the noise too)
    N  += Normal(0, sigma_e^2)             electronic (read-out) noise, white
    L'  = -log(max(N, eps) / I0)           the negative-log image clinical viewers show

The focal-spot blur of an object at source distance ``z`` on a detector at SDD is the focal
spot magnified by ``(SDD - z) / z``; :func:`focal_spot_sigma_px` evaluates it at one depth
(usually the isocenter). All random draws use a seeded ``torch.Generator``.

:class:`DetectorModel` is the whole imaging chain in one object -- spectrum, scintillator layer,
scatter, aperture, blur, noise, gain/offset, saturation and bit depth -- applied to the
per-material line integrals of :mod:`stereodrr.render.polychromatic`. An energy-integrating
panel deposits ``eps(E) = eta(E) E`` per incident photon, with the scintillator's photoelectric
absorption (xraylib)::

    eta(E) = (mu_pe / mu)(E) (1 - exp(-mu(E) rho d))        (K-fluorescence escape neglected)

(``eta = 1`` for the ideal detector). Expected signal and quantum variance relative to the open
field, for ``N0`` photons per pixel::

    t = sum_E S eps e^{-mu L} / sum_E S eps         q = sum_E S eps^2 e^{-mu L} / (sum_E S eps)^2 * sum_E S

The recorded photon-equivalent count is ``N = (N0 t / n) Poisson(n)`` with ``n = N0 t^2 / q``:
mean ``N0 t`` and variance ``N0 q`` (Swank-type spread of deposited energies), exactly
``Poisson(N0 t)`` for one energy. Then the detector PSF, read-out noise (counts), the gain
(counts per photon-equivalent), the offset, saturation and rounding to ``bit_depth`` bits::

    counts = clip(round(gain (N + Normal(0, (sigma_e / gain)^2)) + offset), 0, 2^bits - 1)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..physics.attenuation import (
    compound_density,
    mass_attenuation,
    mass_photoabsorption,
)
from ..physics.spectrum import Spectrum
from .aperture import BALL_SUBPIXELS
from .scatter import SCATTER_MODELS, ScatterModel, add_scatter

if TYPE_CHECKING:
    from ..geometry import Camera

__all__ = [
    "beer_lambert", "gaussian_blur", "focal_spot_sigma_px", "detect", "negative_log",
    "to_uint16", "FWHM_PER_SIGMA", "ScintillatorLayer", "DetectorModel", "LAYERS", "PRESETS", "detector_preset",
]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # Gaussian FWHM = 2.3548 sigma


def beer_lambert(line_integral: Tensor, i0: float = 1.0) -> Tensor:
    """``I = I0 exp(-L)`` (any shape)."""
    if not (i0 > 0 and math.isfinite(i0)):
        raise ValueError(f"i0: expected a positive photon count / intensity, got {i0}")
    return i0 * torch.exp(-line_integral)


def gaussian_blur(image: Tensor, sigma_px: float | tuple[float, float]) -> Tensor:
    """Separable Gaussian blur of ``(..., H, W)`` images (reflect padding, kernel +-4 sigma,
    normalised so flat fields keep their value); differentiable.

    Args:
        sigma_px: standard deviation in pixels, one value or ``(sigma_v, sigma_u)``.
    """
    sv, su = (sigma_px, sigma_px) if np.isscalar(sigma_px) else sigma_px
    if not (sv >= 0 and su >= 0):
        raise ValueError(f"sigma_px: expected non-negative pixels, got {sigma_px}")
    shape = image.shape
    x = image.reshape(-1, 1, *shape[-2:])
    for sigma, dim in ((sv, -2), (su, -1)):
        if sigma == 0:
            continue
        r = max(1, int(math.ceil(4.0 * sigma)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=image.device, dtype=image.dtype) / sigma) ** 2)
        k = k / k.sum()
        if dim == -2:
            pad, kernel = (0, 0, r, r), k.reshape(1, 1, -1, 1)
        else:
            pad, kernel = (r, r, 0, 0), k.reshape(1, 1, 1, -1)
        mode = "reflect" if min(shape[-2:]) > r else "replicate"
        x = F.conv2d(F.pad(x, pad, mode=mode), kernel)
    return x.reshape(shape)


def focal_spot_sigma_px(focal_spot_mm: float, sdd: float, source_object_mm: float, pixel_spacing: float) -> float:
    """Gaussian sigma (pixels) of the focal-spot blur for objects at ``source_object_mm``.

    A focal spot of nominal size ``f`` (taken as the FWHM) blurs an object at distance ``z``
    from the source by ``f (SDD - z) / z`` on the detector.
    """
    if not (0 < source_object_mm < sdd):
        raise ValueError(f"source_object_mm: expected 0 < z < SDD ({sdd} mm), got {source_object_mm}")
    if focal_spot_mm < 0 or pixel_spacing <= 0:
        raise ValueError(f"focal_spot_mm >= 0 and pixel_spacing > 0 expected, got {focal_spot_mm}, {pixel_spacing}")
    return focal_spot_mm * (sdd - source_object_mm) / source_object_mm / FWHM_PER_SIGMA / pixel_spacing


def detect(
    line_integral: Tensor,
    photons: float | None = 1e4,
    *,
    electronic_sigma: float = 0.0,
    detector_blur_px: float = 0.0,
    focal_spot_blur_px: float = 0.0,
    seed: int | None = 0,
) -> Tensor:
    """Simulated detector counts from line integrals (module docstring for the chain).

    Args:
        line_integral: ``(..., H, W)`` ``L`` (dimensionless).
        photons: mean photon count per pixel without attenuation (``I0``); ``None`` gives the
            noiseless expected intensity ``exp(-L)`` (``I0 = 1``, no Poisson step).
        electronic_sigma: standard deviation of the read-out noise, in photons.
        detector_blur_px, focal_spot_blur_px: Gaussian sigmas in pixels.
        seed: seed of the random generator (``None``: torch's global generator).

    Returns:
        Counts, same shape, float in ``line_integral``'s dtype (can be negative with read-out
        noise, as real offset-corrected data can).
    """
    if not bool(torch.isfinite(line_integral).all()):
        raise ValueError("line_integral: contains NaN or inf")
    if electronic_sigma < 0:
        raise ValueError(f"electronic_sigma: expected >= 0 photons, got {electronic_sigma}")
    t = torch.exp(-line_integral)
    return _photon_chain(t, None, photons, electronic_sigma=electronic_sigma, detector_blur_px=detector_blur_px,
                         focal_spot_blur_px=focal_spot_blur_px, generator=_generator(seed, line_integral.device))


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _photon_chain(t: Tensor, q: Tensor | None, photons: float | None, *, electronic_sigma: float,
                  detector_blur_px: float, focal_spot_blur_px: float, generator: torch.Generator | None) -> Tensor:
    """Focal blur, quantum noise, detector PSF, read-out noise (module docstring), in photons.

    ``t``: expected transmission (open field 1); ``q``: its quantum variance factor (``None``:
    Poisson, ``q = t``); ``photons = None``: noiseless, ``I0 = 1``.
    """
    if photons is not None and not (photons > 0 and math.isfinite(photons)):
        raise ValueError(f"photons: expected a positive photon count per pixel, got {photons}")
    i = t if photons is None else float(photons) * t
    if focal_spot_blur_px:
        i = gaussian_blur(i, focal_spot_blur_px)
        q = gaussian_blur(q, focal_spot_blur_px) if q is not None else None
    if photons is not None:
        if q is None:
            i = torch.poisson(i.detach(), generator=generator).to(i.dtype)
        else:
            n = (float(photons) * t_sq_over_q(i / float(photons), q)).detach()
            i = (i / n.clamp_min(1e-30)).detach() * torch.poisson(n, generator=generator).to(i.dtype)
    if detector_blur_px:
        i = gaussian_blur(i, detector_blur_px)
    if electronic_sigma:
        noise = torch.randn(i.shape, generator=generator, device=i.device, dtype=i.dtype)
        i = i + electronic_sigma * noise
    return i


def t_sq_over_q(t: Tensor, q: Tensor) -> Tensor:
    """Effective photon number per incident photon ``t^2 / q`` (``t`` for one energy)."""
    return t * t / q.clamp_min(1e-30)


def negative_log(counts: Tensor, i0: float, floor: float = 0.5) -> Tensor:
    """``-log(max(N, floor) / I0)``: the line-integral estimate clinical viewers display.

    ``floor`` (photons) keeps pixels that recorded no photon finite.
    """
    if not (i0 > 0 and floor > 0):
        raise ValueError(f"i0 and floor: expected positive counts, got {i0}, {floor}")
    return -torch.log(counts.clamp_min(floor) / i0)


def to_uint16(image: Tensor | np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Quantise a non-negative image to 16 bits: ``round(image * scale)`` clipped to 0..65535.

    Args:
        image: ``(H, W)`` (any float).
        scale: counts per unit; default maps the image maximum to 65535.

    Returns:
        ``(H, W)`` uint16 array and the scale used (divide by it to get values back).
    """
    a = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if not np.all(np.isfinite(a)):
        raise ValueError("image: contains NaN or inf")
    if scale is None:
        peak = float(a.max()) if a.size else 0.0
        scale = 65535.0 / peak if peak > 0 else 1.0
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale: expected a positive number, got {scale}")
    return np.clip(np.rint(a * scale), 0, 65535).astype(np.uint16), float(scale)


# ---- energy-integrating detector model
@dataclass(frozen=True)
class ScintillatorLayer:
    """A scintillator of a flat panel: ``material`` (xraylib spec), ``thickness_mm``, ``density``
    (g/cm^3; default the NIST compound's)."""

    material: str = "Cesium Iodide"
    thickness_mm: float = 0.6
    density: float | None = None

    def __post_init__(self) -> None:
        if not (self.thickness_mm > 0 and math.isfinite(self.thickness_mm)):
            raise ValueError(f"layer thickness_mm: expected a positive thickness, got {self.thickness_mm}")
        if self.density is None:
            object.__setattr__(self, "density", compound_density(self.material))
        elif not self.density > 0:
            raise ValueError(f"layer density: expected a positive density (g/cm^3), got {self.density}")

    def absorption(self, energies_kev: np.ndarray) -> np.ndarray:
        """``eta(E) = (mu_pe / mu)(1 - exp(-mu rho d))``: the fraction of photons absorbed."""
        mu = mass_attenuation(self.material, energies_kev)
        pe = mass_photoabsorption(self.material, energies_kev)
        return pe / mu * (1.0 - np.exp(-mu * float(self.density) * self.thickness_mm / 10.0))


#: Named scintillators: ``ideal`` (eta = 1), ``csi`` (600 um CsI:Tl, the usual flat panel),
#: ``gos`` (200 um Gd2O2S:Tb, a "fast" screen).
LAYERS: dict[str, ScintillatorLayer | None] = {
    "ideal": None,
    "csi": ScintillatorLayer("Cesium Iodide", 0.6),
    "gos": ScintillatorLayer("Gadolinium Oxysulfide", 0.2),
}
"""Named scintillators: ``ideal`` (eta = 1), ``csi`` (600 um CsI:Tl, the usual flat panel), ``gos`` (200 um Gd2O2S:Tb, a "fast" screen)."""


def _mono60() -> Spectrum:
    return Spectrum.monochromatic(60.0)


@dataclass(frozen=True)
class DetectorModel:
    """Spectrum, scintillator, scatter, aperture, blur, noise, gain and bit depth: the imaging chain.

    Attributes:
        spectrum: the tube's spectrum (default one line at 60 keV: today's monochromatic model).
        layer: scintillator (``None``: ideal, ``eta = 1``).
        scatter: :class:`~stereodrr.render.scatter.ScatterModel` or ``None`` (off).
        aperture: ``"area"`` (pixel reports its area's average) or ``"point"``; with
            ``subpixels`` sub-rays per pixel axis through the analytic marker balls
            (:func:`stereodrr.render.polychromatic.primary_signals`; CT bodies, smooth on the
            pixel scale, at the pixel centre).
        detector_blur_px: Gaussian PSF sigma of the scintillator / panel, pixels.
        focal_spot_blur_px: Gaussian sigma of the focal-spot blur, pixels.
        photons: mean photons per pixel in the open field ``N0``, reaching the detector (behind
            the grid, if any) (``None``: noiseless expected signal).
        electronic_sigma: read-out noise, counts.
        gain: counts per photon-equivalent; offset: dark offset, counts.
        bit_depth: ``None`` keeps float counts; ``16`` rounds and clips to 0..65535 (saturation).
        name: preset name or ``"custom"``.
    """

    spectrum: Spectrum = field(default_factory=_mono60)
    layer: ScintillatorLayer | None = None
    scatter: ScatterModel | None = None
    aperture: str = "area"
    subpixels: int = BALL_SUBPIXELS
    detector_blur_px: float = 0.0
    focal_spot_blur_px: float = 0.0
    photons: float | None = None
    electronic_sigma: float = 0.0
    gain: float = 1.0
    offset: float = 0.0
    bit_depth: int | None = None
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.aperture not in ("area", "point"):
            raise ValueError(f"aperture: expected 'area' or 'point', got {self.aperture!r}")
        if int(self.subpixels) != self.subpixels or self.subpixels < 1:
            raise ValueError(f"subpixels: expected a positive integer, got {self.subpixels}")
        for k in ("detector_blur_px", "focal_spot_blur_px", "electronic_sigma", "offset"):
            v = getattr(self, k)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{k}: expected a number >= 0, got {v}")
        if not (self.gain > 0 and math.isfinite(self.gain)):
            raise ValueError(f"gain: expected a positive number of counts per photon, got {self.gain}")
        if self.photons is not None and not (self.photons > 0 and math.isfinite(self.photons)):
            raise ValueError(f"photons: expected a positive photon count per pixel, got {self.photons}")
        if self.bit_depth is not None and (int(self.bit_depth) != self.bit_depth or not 1 <= self.bit_depth <= 32):
            raise ValueError(f"bit_depth: expected 1-32 bits or None, got {self.bit_depth}")

    # ---- energy response
    def response(self, energies_kev: np.ndarray) -> np.ndarray:
        """``eps(E) = eta(E) E``: energy deposited per incident photon (keV)."""
        e = np.asarray(energies_kev, dtype=np.float64)
        return e if self.layer is None else self.layer.absorption(e) * e

    def spectral_weights(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
        """``(2, K)``: ``S eps`` and ``S eps^2 (sum S) / sum S eps``, both over ``sum S eps`` -- so
        equation (1) of :mod:`~stereodrr.render.polychromatic` gives ``t`` and ``q`` directly."""
        s = self.spectrum.weights
        eps = self.response(self.spectrum.energies_kev)
        norm = float((s * eps).sum())
        if norm <= 0:
            raise ValueError("detector: the layer absorbs nothing of this spectrum")
        w = np.stack([s * eps / norm, s * eps**2 / norm**2])
        return torch.as_tensor(w, device=device, dtype=dtype)

    # ---- the chain
    def primary(self, channels: Tensor, names: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Expected primary signal ``t`` and quantum variance factor ``q``, ``(H, W)`` each,
        relative to the open field, of per-material line integrals ``channels`` ``(M, H, W)``."""
        from .polychromatic import attenuation_table, spectral_sums

        att = attenuation_table(names, self.spectrum.energies_kev, channels.device, channels.dtype)
        w = self.spectral_weights(channels.device, channels.dtype)
        t, q = spectral_sums(channels, att, w)
        return t, q

    def transmission(self, channels: Tensor, names: Sequence[str], camera: Camera | None = None
                     ) -> tuple[Tensor, Tensor]:
        """:meth:`primary` plus scatter (scatter needs the ``camera`` for pitch and field size)."""
        return self.add_scatter(*self.primary(channels, names), camera)

    def add_scatter(self, t: Tensor, q: Tensor | None, camera: Camera | None) -> tuple[Tensor, Tensor | None]:
        """Primary ``t`` (and its variance factor ``q``, ``None`` for plain Poisson) plus the
        scatter model's scatter, behind the grid, relative to the open field behind the grid
        (``P + (g_s / g_p) S``); unchanged without a scatter model."""
        if self.scatter is None:
            return t, q
        if camera is None:
            raise ValueError("detector: a scatter model needs the view's camera (pixel pitch, field size)")
        from ..volume import mu_water

        e_mean = min(max(self.spectrum.mean_energy_kev, 1.0), 800.0)
        du, dv = (float(v) for v in np.broadcast_to(np.asarray(camera.pixel_spacing, float), (2,)))
        area = camera.width * du * camera.height * dv / 100.0  # detector field, cm^2
        p, sc = add_scatter(t, self.scatter, pixel_spacing_mm=du, field_area_cm2=area,
                            mu_water_per_mm=mu_water(e_mean))
        # Relative to the open field behind the same grid (I_open: nothing in the beam, so no scatter).
        g = self.scatter.grid
        gp = g.primary_transmission if g is not None else 1.0
        p, sc = p / gp, sc / gp
        if q is None:
            return p + sc, None
        ratio = (q / t.clamp_min(1e-30)).detach()  # scatter's spectrum taken as the primary's
        return p + sc, ratio * (p + sc)

    def counts(self, t: Tensor, q: Tensor | None, seed: int | None = 0) -> Tensor:
        """Detector counts ``(H, W)`` from ``t, q`` (module docstring): noise, PSF, gain, offset,
        saturation, bits. ``q = None`` is plain Poisson (one energy): with gain 1 and offset 0
        this is :func:`detect` draw for draw. Noiseless (``photons=None``) models return the
        float ``gain t + offset`` (``photons = 1``; no rounding to bits, which would be
        meaningless at one photon)."""
        # Read-out noise in photon units inside the chain keeps detect()'s order of random draws.
        n = _photon_chain(t, q, self.photons, electronic_sigma=self.electronic_sigma / self.gain,
                          detector_blur_px=self.detector_blur_px, focal_spot_blur_px=self.focal_spot_blur_px,
                          generator=_generator(seed, t.device))
        c = self.gain * n + self.offset
        if self.bit_depth is not None and self.photons is not None:
            c = c.clamp(0.0, float(2**self.bit_depth - 1))
            c = c + (torch.round(c) - c).detach()  # rounded values, straight-through gradient
        return c

    def open_field(self) -> float:
        """Expected open-field counts ``gain N0 + offset`` (``N0 = 1`` when noiseless)."""
        return self.gain * (1.0 if self.photons is None else float(self.photons)) + self.offset

    def negative_log(self, counts: Tensor, floor: float = 0.5) -> Tensor:
        """``-log((counts - offset) / (gain N0))``: the line-integral estimate; ``floor``
        (photon-equivalents) keeps starved pixels finite."""
        n0 = 1.0 if self.photons is None else float(self.photons)
        floor_n = floor if self.photons is not None else 1e-12
        return -torch.log(((counts - self.offset) / self.gain).clamp_min(floor_n) / n0)

    def image(self, channels: Tensor, names: Sequence[str], camera: Camera | None = None, *,
              seed: int | None = 0, output: str = "neglog") -> Tensor:
        """The view's image ``(H, W)``: ``"counts"`` or ``"neglog"`` (``-log(I / I_open)``)."""
        if output not in ("counts", "neglog"):
            raise ValueError(f"output: expected 'counts' or 'neglog', got {output!r}")
        c = self.counts(*self.transmission(channels, names, camera), seed=seed)
        return c if output == "counts" else self.negative_log(c)

    # ---- description
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (manifests, configs)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("spectrum", "layer", "scatter")}
        d["spectrum"] = self.spectrum.to_dict()
        d["layer"] = None if self.layer is None else asdict(self.layer)
        d["scatter"] = None if self.scatter is None else self.scatter.to_dict()
        d["mean_deposited_kev"] = float((self.spectrum.weights * self.response(self.spectrum.energies_kev)).sum())
        return d

    def with_(self, **changes: Any) -> DetectorModel:
        """A copy with some fields changed."""
        return replace(self, **changes)


def spectrum_from_spec(spec: Mapping[str, Any] | None, energy_kev: float = 60.0) -> Spectrum:
    """A spectrum from a config-style description: ``None`` (one line at ``energy_kev``),
    ``{"kvp": 80, "filter": "Al:2.5", "anode_angle_deg": 12}`` or ``{"table": path}``."""
    if spec is None:
        return Spectrum.monochromatic(energy_kev)
    if "table" in spec:
        return Spectrum.from_csv(spec["table"])
    if "energy_kev" in spec:
        return Spectrum.monochromatic(float(spec["energy_kev"]))
    return Spectrum.from_tube(float(spec["kvp"]), spec.get("filter", "Al:2.5"),
                              float(spec.get("anode_angle_deg", 12.0)))


def _fluoro() -> DetectorModel:
    return DetectorModel(Spectrum.from_tube(80.0, "Al:2.5,Cu:0.1"), LAYERS["csi"], SCATTER_MODELS["grid"],
                         detector_blur_px=0.5, photons=1e4, electronic_sigma=2.0, gain=1.0, offset=100.0,
                         bit_depth=16, name="fluoro80")


def _radiography() -> DetectorModel:
    return DetectorModel(Spectrum.from_tube(120.0, "Al:3"), LAYERS["csi"], SCATTER_MODELS["grid"],
                         detector_blur_px=0.6, photons=3e4, electronic_sigma=3.0, gain=1.0, offset=100.0,
                         bit_depth=16, name="radiography120")


#: Named detector set-ups: ``mono60`` (today's monochromatic, noise-free model), ``ideal80``
#: (80 kVp Al:2.5, ideal detector, no scatter, no noise: the reference polychromatic image),
#: ``fluoro80`` (80 kVp Al:2.5 + Cu:0.1, 600 um CsI, 10:1 grid scatter, 1e4 photons, 16 bits),
#: ``radiography120`` (120 kVp Al:3, CsI, grid scatter, 3e4 photons, 16 bits).
PRESETS: dict[str, Callable[[], DetectorModel]] = {
    "mono60": lambda: DetectorModel(name="mono60"),
    "ideal80": lambda: DetectorModel(Spectrum.from_tube(80.0, "Al:2.5"), name="ideal80"),
    "fluoro80": _fluoro,
    "radiography120": _radiography,
}
"""Named detector set-ups (:func:`detector_preset`): ``mono60``, ``ideal80``, ``fluoro80``, ``radiography120``."""


def detector_preset(name: str) -> DetectorModel:
    """A named :data:`PRESETS` model; unknown names raise ``ValueError`` listing them."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown detector preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]()

"""The detector: what it is (:class:`DetectorModel`, its fields stated once) and what it does to
the expected primary signal, an ordered list of stages (:data:`STAGES`).

The front end (:mod:`stereodrr.imaging.primary`) turns per-material line integrals into the
expected primary signal ``t`` relative to the open field and its quantum variance factor ``q``
through the spectrum, the scintillator and the pixel aperture. An energy-integrating panel
deposits ``eps(E) = eta(E) E`` per incident photon on average (:mod:`stereodrr.physics.scintillator`):
each photon is absorbed with probability ``eta`` and then deposits ``E``, so for ``N0`` incident
photons per pixel the signal is compound Poisson, of mean and variance factor::

    t = sum_E S eps e^{-mu L} / sum_E S eps         q = sum_E S eps E e^{-mu L} / (sum_E S eps)^2 * sum_E S

Then the stages, in this order (each skipped when its parameter is 0/None)::

    scatter        t += (g_s / g_p) S(t)                   convolution scatter model behind the grid
    exposure       I  = N0 t                               photons per pixel (I0 = 1 when noiseless)
    focal_blur     I  = G_focal * I                        the focal spot is not a point
    quantum_noise  N  = (N0 t / n) Poisson(n), n = N0 t^2 / q   mean N0 t, variance N0 q; for one energy
                                                           Poisson(eta N0 t) / eta, the absorbed quanta
    distortion     N' = A N                                an image intensifier's field: each recorded pixel the
                                                           average over its area's pre-image, black outside the
                                                           round field (after the input screen's quantum noise)
    detector_blur  N  = G_det * N                          scintillator light spread (blurs the noise too)
    readout_noise  N += Normal(0, (sigma_e / gain)^2)      electronic noise, white
    gain           c  = gain N + offset                    counts
    quantisation   c  = clip(round(c), 0, 2^bits - 1)      saturation and bit depth (noisy models)

A stage is ``apply(signal, detector, view) -> signal`` on a :class:`Signal`; a new stage is one
entry of :data:`STAGES` at its place, reading its parameters from a field of
:class:`DetectorModel` (``distortion`` is the example). All random draws come from one seeded
``torch.Generator`` per view, in stage order.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..distortion import IntensifierField, distort_image
from ..distortion.simulate import oversample_factor
from ..geometry import oversampled_camera
from ..physics.blur import gaussian_blur
from ..physics.scatter import SCATTER_MODELS, ScatterModel, add_scatter
from ..physics.scintillator import LAYERS, ScintillatorLayer
from ..physics.spectral import spectral_sums, t_sq_over_q
from ..physics.spectrum import Spectrum
from ..render.aperture import APERTURES, BALL_SUBPIXELS, Aperture
from ..resources import MAX_BLUR_PX, MAX_PHOTONS
from .materials import attenuation_table

if TYPE_CHECKING:
    from ..geometry import Camera

__all__ = ["DetectorModel", "Signal", "Stage", "STAGES", "PRESETS", "PresetName", "Output", "detector_preset",
           "spectrum_from_spec", "run_stages", "quantise"]

Output = Literal["counts", "neglog"]
MAX_OVERSAMPLE = 4
"""The finest input-screen sampling :attr:`DetectorModel.distortion_oversample` may ask for (memory
and time grow with its square)."""

PresetName = Literal["mono60", "ideal80", "fluoro80", "radiography120"]


def _mono60() -> Spectrum:
    return Spectrum.monochromatic(60.0)


@dataclass(frozen=True)
class DetectorModel:
    """Spectrum, scintillator, scatter, aperture, blur, noise, gain and bit depth: the imaging chain.

    Attributes:
        spectrum: the tube's spectrum (default one line at 60 keV: the monochromatic model).
        layer: scintillator (``None``: ideal, ``eta = 1``).
        scatter: :class:`~stereodrr.physics.scatter.ScatterModel` or ``None`` (off).
        aperture: ``"area"`` (a pixel reports its area's average) or ``"point"``; with
            ``subpixels`` sub-rays per pixel axis through the analytic marker balls (CT bodies,
            smooth on the pixel scale, at the pixel centre).
        detector_blur_px: Gaussian PSF sigma of the scintillator / panel, pixels.
        focal_spot_blur_px: Gaussian sigma of the focal-spot blur, pixels.
        photons: mean photons per pixel in the open field ``N0``, reaching the detector (behind
            the grid, if any) (``None``: noiseless expected signal).
        electronic_sigma: read-out noise, counts.
        gain: counts per photon-equivalent; offset: dark offset, counts.
        bit_depth: ``None`` keeps float counts; ``16`` rounds and clips to 0..65535 (saturation).
        distortion: an image intensifier's field (:class:`~stereodrr.distortion.IntensifierField`,
            sized as the images), applied after the quantum noise; ``None``: a flat panel.
        distortion_oversample: with a ``distortion``, the scene is imaged onto the input screen
            this many times finer per axis than the recorded pixels (:func:`simulate` renders so;
            the stages before the distortion act on the fine image, the recorded pixel sums its
            pre-image), so the recorded image is the scene, not a pixelated image of it, seen
            through the field (3: a calibration through two strong intensifiers triangulates
            as well as without them; 2 leaves 1.4x, 1 2.2x; ``experiments/distortion_calibration.py``).
        name: preset name or ``"custom"``.
    """

    spectrum: Spectrum = field(default_factory=_mono60)
    layer: ScintillatorLayer | None = None
    scatter: ScatterModel | None = None
    aperture: Aperture = "area"
    subpixels: int = BALL_SUBPIXELS
    detector_blur_px: float = 0.0
    focal_spot_blur_px: float = 0.0
    photons: float | None = None
    electronic_sigma: float = 0.0
    gain: float = 1.0
    offset: float = 0.0
    bit_depth: int | None = None
    distortion: IntensifierField | None = None
    distortion_oversample: int = 3
    name: str = "custom"

    def __post_init__(self) -> None:
        if self.aperture not in APERTURES:
            raise ValueError(f"aperture: expected one of {APERTURES}, got {self.aperture!r}")
        if isinstance(self.subpixels, bool) or int(self.subpixels) != self.subpixels or self.subpixels < 1:
            raise ValueError(f"subpixels: expected a positive integer, got {self.subpixels}")
        for k in ("detector_blur_px", "focal_spot_blur_px", "electronic_sigma", "offset"):
            v = getattr(self, k)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{k}: expected a number >= 0, got {v}")
        for k in ("detector_blur_px", "focal_spot_blur_px"):
            if getattr(self, k) > MAX_BLUR_PX:
                raise ValueError(f"{k}: expected at most {MAX_BLUR_PX:g} px, got {getattr(self, k)}")
        if not (self.gain > 0 and math.isfinite(self.gain)):
            raise ValueError(f"gain: expected a positive number of counts per photon, got {self.gain}")
        if self.photons is not None and not 0 < self.photons <= MAX_PHOTONS:
            raise ValueError(f"photons: expected a photon count per pixel in (0, {MAX_PHOTONS:g}], got {self.photons}")
        if self.electronic_sigma > MAX_PHOTONS:  # its draws would overflow float32 to inf
            raise ValueError(f"electronic_sigma: expected at most {MAX_PHOTONS:g} photons, got {self.electronic_sigma}")
        if self.bit_depth is not None and (int(self.bit_depth) != self.bit_depth or not 1 <= self.bit_depth <= 32):
            raise ValueError(f"bit_depth: expected 1-32 bits or None, got {self.bit_depth}")
        if self.distortion is not None and not isinstance(self.distortion, IntensifierField):
            raise ValueError(f"distortion: expected an IntensifierField or None, got {type(self.distortion).__name__}")
        over = self.distortion_oversample
        if isinstance(over, bool) or int(over) != over or not 1 <= over <= MAX_OVERSAMPLE:
            raise ValueError(f"distortion_oversample: expected an integer 1-{MAX_OVERSAMPLE}, got {over!r}")
        if self.focal_spot_blur_px * self.render_oversample > MAX_BLUR_PX:
            raise ValueError(f"focal_spot_blur_px: expected at most {MAX_BLUR_PX / over:g} px with distortion_oversample "
                             f"{over} (the fine image's blur is capped at {MAX_BLUR_PX:g} px), got {self.focal_spot_blur_px}")

    @property
    def render_oversample(self) -> int:
        """How many times finer per axis than its pixels this detector wants the scene rendered
        (``distortion_oversample`` with an intensifier, else 1)."""
        return int(self.distortion_oversample) if self.distortion is not None else 1

    # ---- energy response
    @property
    def is_monochromatic(self) -> bool:
        """One line and an ideal layer: ``t = exp(-mu L)`` at that line's energy."""
        return self.spectrum.is_monochromatic and self.layer is None

    def response(self, energies_kev: np.ndarray) -> np.ndarray:
        """``eps(E) = eta(E) E``: energy deposited per incident photon (keV)."""
        e = np.asarray(energies_kev, dtype=np.float64)
        return e if self.layer is None else self.layer.absorption(e) * e

    def spectral_weights(self, device: torch.device | str = "cpu",
                         dtype: torch.dtype = torch.float64) -> Float[Tensor, "2 K"]:
        """``(2, K)``: ``S eps / sum S eps`` and ``S eps E / (sum S eps)^2`` (the spectrum's weights
        sum to 1) -- so equation (1) of :mod:`stereodrr.physics.spectral` gives ``t`` and ``q``
        directly. The variance weight is ``S eta E^2``: a photon is absorbed (probability
        ``eta``) and deposits ``E``, or passes."""
        s, e = self.spectrum.weights, self.spectrum.energies_kev
        eps = self.response(e)
        norm = float((s * eps).sum())
        if norm <= 0:
            raise ValueError("detector: the layer absorbs nothing of this spectrum")
        w = np.stack([s * eps / norm, s * eps * e / norm**2])
        return torch.as_tensor(w, device=device, dtype=dtype)

    # ---- the chain
    def primary(self, channels: Float[Tensor, "M H W"], names: Sequence[str]
                ) -> tuple[Float[Tensor, "H W"], Float[Tensor, "H W"]]:
        """The front end: expected primary signal ``t`` and quantum variance factor ``q``, ``(H, W)``
        each, relative to the open field, of per-material line integrals ``channels`` ``(M, H, W)``."""
        att = attenuation_table(names, self.spectrum.energies_kev, channels.device, channels.dtype)
        t, q = spectral_sums(channels, att, self.spectral_weights(channels.device, channels.dtype))
        return t, q

    def line_signal(self, t: Float[Tensor, "H W"]) -> Signal:
        """The signal of a one-line spectrum's transmission ``t`` (the mu route): plain Poisson
        with the ideal layer; with a scintillator ``q = t / eta`` (each photon absorbed with
        probability ``eta``: ``Poisson(eta N0 t) / eta``, what :meth:`primary` gives for one line)."""
        if not self.spectrum.is_monochromatic:
            raise ValueError(f"detector: a transmission is one line's signal, got the spectrum {self.spectrum.description}")
        if self.layer is None:
            return Signal(t)
        eta = float(self.layer.absorption(self.spectrum.energies_kev)[0])
        return Signal(t, t / eta)

    def transmission(self, channels: Float[Tensor, "M H W"], names: Sequence[str], camera: Camera | None = None
                     ) -> tuple[Float[Tensor, "H W"], Float[Tensor, "H W"] | None]:
        """:meth:`primary` plus scatter (scatter needs the ``camera`` for pitch and field size)."""
        return self.add_scatter(*self.primary(channels, names), camera)

    def image(self, channels: Float[Tensor, "M H W"], names: Sequence[str], camera: Camera | None = None, *,
              seed: int | None = 0, output: Output = "neglog") -> Float[Tensor, "H W"]:
        """The view's image ``(H, W)``: ``"counts"`` or ``"neglog"`` (``-log(I / I_open)``)."""
        if output not in ("counts", "neglog"):
            raise ValueError(f"output: expected 'counts' or 'neglog', got {output!r}")
        c = self.counts(*self.transmission(channels, names, camera), seed=seed)
        return c if output == "counts" else self.negative_log(c)

    def add_scatter(self, t: Float[Tensor, "H W"], q: Float[Tensor, "H W"] | None, camera: Camera | None
                    ) -> tuple[Float[Tensor, "H W"], Float[Tensor, "H W"] | None]:
        """Primary ``t`` (and its variance factor ``q``, ``None`` for plain Poisson) plus the
        scatter model's scatter, behind the grid, relative to the open field behind the grid
        (``P + (g_s / g_p) S``); unchanged without a scatter model."""
        s = _scatter(Signal(t, q), self, camera)
        return s.image, s.q

    def counts(self, t: Float[Tensor, "Hs Ws"], q: Float[Tensor, "Hs Ws"] | None, seed: int | None = 0
               ) -> Float[Tensor, "H W"]:
        """Detector counts ``(H, W)`` from ``t, q`` after scatter: every stage from ``exposure``
        on (module docstring); with an intensifier ``t, q`` may be its input screen's image, an
        integer multiple of the recorded size (:func:`run_stages`). ``q = None`` is plain Poisson (one energy): with gain 1 and offset
        0 this is :func:`stereodrr.imaging.detect` draw for draw. Noiseless (``photons=None``)
        models return the float ``gain t + offset`` (no rounding to bits, which would be
        meaningless at one photon)."""
        return run_stages(Signal(t, q), self, None, seed, first="exposure").image

    def open_field(self) -> float:
        """Expected open-field counts ``gain N0 + offset`` (``N0 = 1`` when noiseless)."""
        return self.gain * (1.0 if self.photons is None else float(self.photons)) + self.offset

    def negative_log(self, counts: Float[Tensor, "*shape"], floor: float = 0.5) -> Float[Tensor, "*shape"]:
        """``-log((counts - offset) / (gain N0))``: the line-integral estimate; ``floor``
        (photon-equivalents) keeps starved pixels finite."""
        n0 = 1.0 if self.photons is None else float(self.photons)
        floor_n = floor if self.photons is not None else 1e-12
        return -torch.log(((counts - self.offset) / self.gain).clamp_min(floor_n) / n0)

    # ---- description
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (``detector.json``, manifests, dataset configs); :meth:`from_dict`
        reads it back."""
        # Plain fields first, then the parts that describe themselves (the order detector.json has).
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if values["distortion"] is None:  # a flat panel: the description it has always had
            del values["distortion"], values["distortion_oversample"]
        d = {k: v for k, v in values.items() if not hasattr(v, "to_dict") and k not in ("layer", "scatter", "distortion")}
        d.update({k: None if v is None else v.to_dict() for k, v in values.items() if k not in d})
        d["mean_deposited_kev"] = float((self.spectrum.weights * self.response(self.spectrum.energies_kev)).sum())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DetectorModel:
        """The model :meth:`to_dict` describes. Nested parts may also be given by name: ``layer``
        a key of :data:`~stereodrr.physics.scintillator.LAYERS`, ``scatter`` of
        :data:`~stereodrr.physics.scatter.SCATTER_MODELS`, ``spectrum`` a spec of
        :func:`spectrum_from_spec`. Derived keys (``mean_deposited_kev``) are ignored.

        Raises:
            ValueError: an unknown key or a bad value (the message names the key).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known - {"mean_deposited_kev"})
        if unknown:
            raise ValueError(f"detector: unknown key {unknown[0]!r} (known keys: {sorted(known)})")
        kw = {k: v for k, v in d.items() if k in known}
        # The numeric fields, known by their annotations: JSON gives strings and nulls too, which
        # would fail deep in a check as "'<' not supported between 'int' and 'str'".
        for f in fields(cls):
            if f.name not in kw or f.type not in ("int", "float", "int | None", "float | None"):
                continue
            optional, value = f.type.endswith("| None"), kw[f.name]
            if (value is not None or not optional) and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ValueError(f"detector: {f.name}: expected a number{' or null' if optional else ''}, got {value!r}")
        try:
            if "spectrum" in kw and not isinstance(kw["spectrum"], Spectrum):
                kw["spectrum"] = _spectrum_from_any(kw["spectrum"])
            if isinstance(kw.get("layer"), str):
                kw["layer"] = _named(LAYERS, kw["layer"], "layer")
            elif isinstance(kw.get("layer"), Mapping):
                kw["layer"] = ScintillatorLayer.from_dict(kw["layer"])
            if isinstance(kw.get("scatter"), str):
                kw["scatter"] = _named(SCATTER_MODELS, kw["scatter"], "scatter")
            elif isinstance(kw.get("scatter"), Mapping):
                kw["scatter"] = ScatterModel.from_dict(kw["scatter"])
            if isinstance(kw.get("distortion"), Mapping):
                kw["distortion"] = IntensifierField.from_dict(dict(kw["distortion"]))
            return cls(**kw)
        except (TypeError, KeyError) as exc:
            raise ValueError(f"detector: {exc}") from None

    def with_(self, **changes: Any) -> DetectorModel:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _named(table: Mapping[str, Any], name: str, key: str) -> Any:
    if name not in table:
        raise ValueError(f"{key}: expected one of {sorted(table)}, got {name!r}")
    return table[name]


def _spectrum_from_any(spec: Any) -> Spectrum:
    """A spectrum from :meth:`Spectrum.to_dict` output (it has ``kind``) or a config spec."""
    if isinstance(spec, Mapping) and "kind" in spec:
        return Spectrum.from_dict(spec)
    return spectrum_from_spec(spec)


def spectrum_from_spec(spec: Mapping[str, Any] | None, energy_kev: float = 60.0) -> Spectrum:
    """A spectrum from a config-style description: ``None`` (one line at ``energy_kev``),
    ``{"kvp": 80, "filter": "Al:2.5", "anode_angle_deg": 12}``, ``{"energy_kev": 60}`` or
    ``{"table": path}``."""
    if spec is None:
        return Spectrum.monochromatic(energy_kev)
    # Every key is one of a form's: a misspelt "filtre" made the default Al:2.5 beam, silently.
    keys = set(spec) if isinstance(spec, Mapping) else set()
    if not keys or not (keys == {"table"} or keys == {"energy_kev"}
                        or ("kvp" in keys and keys <= {"kvp", "filter", "anode_angle_deg"})):
        raise ValueError('spectrum: expected null, {"kvp": kV, "filter": "Al:2.5", "anode_angle_deg": 12}, '
                         f'{{"energy_kev": keV}} or {{"table": "file.csv"}}, got {spec!r}')
    if "table" in spec:
        return Spectrum.from_csv(spec["table"])
    if "energy_kev" in spec:
        return Spectrum.monochromatic(float(spec["energy_kev"]))
    return Spectrum.from_tube(float(spec["kvp"]), spec.get("filter", "Al:2.5"),
                              float(spec.get("anode_angle_deg", 12.0)))


# ---- the stages
@dataclass(frozen=True)
class Signal:
    """The image between stages: ``image`` ``(H, W)`` (relative to the open field before
    ``exposure``, photon-equivalents after it, counts after ``gain``) and its quantum variance
    factor ``q`` (``None``: plain Poisson)."""

    image: Tensor
    q: Tensor | None = None


@dataclass(frozen=True)
class View:
    """What a stage may need of the view: its camera (pixel pitch and field size) and the
    view's random generator (``None``: torch's global one)."""

    camera: Camera | None
    generator: torch.Generator | None


def _scatter(s: Signal, det: DetectorModel, camera: Camera | None) -> Signal:
    if det.scatter is None:
        return s
    if camera is None:
        raise ValueError("detector: a scatter model needs the view's camera (pixel pitch, field size)")
    from ..volume import mu_water

    t, q = s.image, s.q
    e_mean = min(max(det.spectrum.mean_energy_kev, 1.0), 800.0)
    du, dv = (float(v) for v in np.broadcast_to(np.asarray(camera.pixel_spacing, float), (2,)))
    area = camera.width * du * camera.height * dv / 100.0  # detector field, cm^2
    p, sc = add_scatter(t, det.scatter, pixel_spacing_mm=du, field_area_cm2=area, mu_water_per_mm=mu_water(e_mean))
    # Relative to the open field behind the same grid (I_open: nothing in the beam, so no scatter).
    g = det.scatter.grid
    gp = g.primary_transmission if g is not None else 1.0
    p, sc = p / gp, sc / gp
    if q is None:
        return Signal(p + sc, None)
    ratio = (q / t.clamp_min(1e-30)).detach()  # scatter's spectrum taken as the primary's
    return Signal(p + sc, ratio * (p + sc))


def _exposure(s: Signal, det: DetectorModel, view: View) -> Signal:
    return s if det.photons is None else Signal(float(det.photons) * s.image, s.q)


def _focal_blur(s: Signal, det: DetectorModel, view: View) -> Signal:
    if not det.focal_spot_blur_px:
        return s
    q = gaussian_blur(s.q, det.focal_spot_blur_px) if s.q is not None else None
    return Signal(gaussian_blur(s.image, det.focal_spot_blur_px), q)


# Above this mean, a draw off the CPU is the normal approximation: CUDA's Poisson draw is a
# 32-bit unsigned count (curand_poisson), so a mean near 2**32 wraps. (Poisson's skewness there
# is below 3e-5: the two are the same distribution to float32's precision.)
_POISSON_EXACT_MAX = 1e9


def _poisson_draw(rate: Float[Tensor, "*shape"], generator: torch.Generator | None,
                 exact_max: float | None = None) -> Float[Tensor, "*shape"]:
    """Poisson counts of mean ``rate``: ``torch.poisson`` on the CPU; elsewhere means above
    ``exact_max`` (default ``_POISSON_EXACT_MAX`` off the CPU, none on it) drawn from the
    normal approximation ``N(rate, rate)`` (clamped at 0)."""
    if exact_max is None:
        exact_max = math.inf if rate.device.type == "cpu" else _POISSON_EXACT_MAX
    if exact_max == math.inf:
        return torch.poisson(rate, generator=generator)
    big = rate > exact_max
    counts = torch.poisson(torch.where(big, 0.0, rate), generator=generator)
    normal = rate + rate.sqrt() * torch.randn(rate.shape, generator=generator, device=rate.device, dtype=rate.dtype)
    return torch.where(big, normal.clamp_min(0.0), counts)


def _quantum_noise(s: Signal, det: DetectorModel, view: View) -> Signal:
    if det.photons is None:
        return s
    i = s.image
    if s.q is None:
        return Signal(_poisson_draw(i.detach(), view.generator).to(i.dtype))
    n = (float(det.photons) * t_sq_over_q(i / float(det.photons), s.q)).detach()
    return Signal((i / n.clamp_min(1e-30)).detach() * _poisson_draw(n, view.generator).to(i.dtype))


def _distortion(s: Signal, det: DetectorModel, view: View) -> Signal:
    if det.distortion is None:
        return s
    k = _oversample(s.image, det)
    if k == 1:
        return Signal(distort_image(s.image, det.distortion), s.q)
    # From the fine image: a recorded pixel sums the photons of its pre-image (each fine pixel had
    # N0 / k^2), or averages the noiseless signal; q is spent (the noise is drawn).
    return Signal(distort_image(s.image, det.distortion) * (k * k if det.photons is not None else 1))


def _detector_blur(s: Signal, det: DetectorModel, view: View) -> Signal:
    return Signal(gaussian_blur(s.image, det.detector_blur_px), s.q) if det.detector_blur_px else s


def _readout_noise(s: Signal, det: DetectorModel, view: View) -> Signal:
    # In photon units inside the chain, which keeps detect()'s order of random draws.
    sigma = det.electronic_sigma / det.gain
    if not sigma:
        return s
    i = s.image
    noise = torch.randn(i.shape, generator=view.generator, device=i.device, dtype=i.dtype)
    return Signal(i + sigma * noise, s.q)


def _gain(s: Signal, det: DetectorModel, view: View) -> Signal:
    return Signal(det.gain * s.image + det.offset, s.q)


def quantise(counts: Float[Tensor, "*shape"], bit_depth: int) -> Float[Tensor, "*shape"]:
    """Counts clipped to ``0 .. 2^bit_depth - 1`` and rounded (a straight-through gradient)."""
    c = counts.clamp(0.0, float(2**bit_depth - 1))
    return c + (torch.round(c) - c).detach()


#: Share of a view's pixels at the bit depth's top above which :func:`warn_saturation` warns.
SATURATION_WARN_SHARE = 0.01


def warn_saturation(view: str, counts: Float[Tensor, "H W"], bit_depth: int, stacklevel: int = 2) -> None:
    """Warn when more than 1% of a view's quantised counts sit at the bit depth's top:
    ``-log(I / I_open)`` reads those pixels (air, mostly) as attenuating. The text names the view
    alone (no share), so repeats are the same text: a dataset of many items says it once per view
    name (:func:`stereodrr.dataset.generate_dataset` gathers its items' warnings)."""
    top = float(2**bit_depth - 1)
    if float((counts.detach() >= top).float().mean()) > SATURATION_WARN_SHARE:
        warnings.warn(f"view {view!r}: more than 1% of its pixels saturate at {top:.0f} counts ({bit_depth} bits), "
                      "where -log(I / I_open) is no line integral: lower the photons or the gain",
                      stacklevel=stacklevel + 1)


def _quantisation(s: Signal, det: DetectorModel, view: View) -> Signal:
    if det.bit_depth is None or det.photons is None:  # noiseless: intensities for I0 = 1, not counts
        return s
    return Signal(quantise(s.image, det.bit_depth), s.q)


@dataclass(frozen=True)
class Stage:
    """One step of the detector: ``apply(signal, detector, view) -> signal`` (a no-op when the
    detector's parameters switch it off)."""

    name: str
    apply: Callable[[Signal, DetectorModel, View], Signal]


STAGES: list[Stage] = [
    Stage("scatter", lambda s, det, view: _scatter(s, det, view.camera)),
    Stage("exposure", _exposure),
    Stage("focal_blur", _focal_blur),
    Stage("quantum_noise", _quantum_noise),
    Stage("distortion", _distortion),
    Stage("detector_blur", _detector_blur),
    Stage("readout_noise", _readout_noise),
    Stage("gain", _gain),
    Stage("quantisation", _quantisation),
]
"""The stages in the order they act (module docstring). Add a stage by inserting it here."""


def run_stages(signal: Signal, detector: DetectorModel, camera: Camera | None, seed: int | None,
               first: str = "scatter", last: str | None = None) -> Signal:
    """``signal`` through the stages of :data:`STAGES` from ``first`` to ``last`` (default: to
    the end), with a generator seeded by ``seed`` (``None``: torch's global generator).

    With an intensifier, ``signal`` may be the input screen's image ``k`` times finer per axis
    than ``camera`` and the field (:attr:`DetectorModel.render_oversample`): the stages before
    ``distortion`` then act on it (``N0 / k^2`` photons and ``k`` times the focal blur per fine
    pixel, the camera :func:`~stereodrr.geometry.oversampled_camera`) and ``distortion`` brings
    it to the recorded pixels."""
    names = [st.name for st in STAGES]
    for what, name in (("first", first), ("last", last if last is not None else names[-1])):
        if name not in names:
            raise ValueError(f"{what}: expected a stage of {names}, got {name!r}")
    stop = len(names) if last is None else names.index(last) + 1
    view = View(camera, _generator(seed, signal.image.device))
    k = _oversample(signal.image, detector)
    before = names.index("distortion")
    fine, fine_view = detector, view
    if k > 1:  # the input screen's image, k x k fine pixels per recorded one
        fine = detector.with_(photons=None if detector.photons is None else detector.photons / (k * k),
                              focal_spot_blur_px=detector.focal_spot_blur_px * k)
        fine_view = View(None if camera is None else oversampled_camera(camera, k), view.generator)
    for i in range(names.index(first), stop):
        signal = STAGES[i].apply(signal, *((fine, fine_view) if i < before else (detector, view)))
    return signal


def _oversample(image: Tensor, detector: DetectorModel) -> int:
    """How many times finer than the recorded pixels ``image`` is (1 without an intensifier;
    :func:`~stereodrr.distortion.simulate.oversample_factor`)."""
    return 1 if detector.distortion is None else oversample_factor(image.shape, detector.distortion, "detector")


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


# ---- presets
def _fluoro() -> DetectorModel:
    return DetectorModel(Spectrum.from_tube(80.0, "Al:2.5,Cu:0.1"), LAYERS["csi"], SCATTER_MODELS["grid"],
                         detector_blur_px=0.5, photons=1e4, electronic_sigma=2.0, gain=1.0, offset=100.0,
                         bit_depth=16, name="fluoro80")


def _radiography() -> DetectorModel:
    return DetectorModel(Spectrum.from_tube(120.0, "Al:3"), LAYERS["csi"], SCATTER_MODELS["grid"],
                         detector_blur_px=0.6, photons=3e4, electronic_sigma=3.0, gain=1.0, offset=100.0,
                         bit_depth=16, name="radiography120")


PRESETS: dict[str, Callable[[], DetectorModel]] = {
    "mono60": lambda: DetectorModel(name="mono60"),
    "ideal80": lambda: DetectorModel(Spectrum.from_tube(80.0, "Al:2.5"), name="ideal80"),
    "fluoro80": _fluoro,
    "radiography120": _radiography,
}
"""Named detector set-ups (:func:`detector_preset`): ``mono60`` (the monochromatic, noise-free
model), ``ideal80`` (80 kVp Al:2.5, ideal detector, no scatter, no noise: the reference
polychromatic image), ``fluoro80`` (80 kVp Al:2.5 + Cu:0.1, 600 um CsI, 10:1 grid scatter, 1e4
photons, 16 bits), ``radiography120`` (120 kVp Al:3, CsI, grid scatter, 3e4 photons, 16 bits)."""


def detector_preset(name: PresetName | str) -> DetectorModel:
    """A named :data:`PRESETS` model; unknown names raise ``ValueError`` listing them."""
    if name not in PRESETS:
        raise ValueError(f"preset: unknown detector preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]()

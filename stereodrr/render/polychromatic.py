"""Polychromatic rendering without per-energy ray marching: one line-integral channel per
material, then the spectrum sum per pixel.

A voxel of a CT is decomposed into partial densities ``rho_m`` (g/cm^3) of a few materials
(:func:`decompose_hu`); the renderer integrates each (``render_rig`` of a density volume: the
per-material channel of ``render_structures``, with fractional membership) into

    L_m(u, v) = integral rho_m ds          [g/cm^3 mm]

and the detected signal is, for a spectrum ``S(E)`` and a detector response ``eps(E) = eta(E) E``
(the energy deposited per incident photon; ``E`` for the ideal detector),

    I(u, v) = sum_E S(E) eps(E) exp(-sum_m (mu/rho)_m(E) L_m(u, v) / 10)
    t(u, v) = I / I_open,   I_open = sum_E S(E) eps(E)                               (1)

so beam hardening follows from (1) and a one-line spectrum at energy E gives ``t = exp(-L)`` with
``L = sum_m mu_m(E) L_m``, today's monochromatic render. ``(mu/rho)_m`` come from xraylib
(:mod:`stereodrr.phantoms.materials`). Everything is torch and differentiable w.r.t. the
channels (hence the CT and the poses).

Decomposition models (``decompose_hu``), with the CT's HU defined at a reference energy
``E_ref`` (the scanner's effective energy; 60 keV by default, the project's HU <-> mu energy):

* ``"water"``: one channel, water of density ``max(1 + HU/1000, 0)`` -- exactly
  ``hu_to_mu`` at every energy (everything hardens like water).
* ``"tissue_bone"`` (default): the two-material basis of dual-energy CT. Between the HU of
  ICRU-44 soft tissue and of ICRU-44 cortical bone at ``E_ref`` a voxel is a mixture with bone
  volume fraction ``f = (HU - HU_t) / (HU_b - HU_t)``; below ``HU_t`` (fat, lung, air) it is
  soft tissue, above ``HU_b`` bone, at the density that keeps ``mu(E_ref)``. So
  ``sum_m rho_m (mu/rho)_m(E_ref) / 10 = hu_to_mu(HU, E_ref)`` for every voxel below the metal
  threshold: at ``E_ref`` the render equals the monochromatic one.
* metal: voxels at or above ``metal_hu`` (3000 HU by default; a 12-bit CT clips metal at 3071)
  are the metal (``"titanium"`` Ti-6Al-4V by default) at its nominal density, since a CT's HU of
  metal is clipped and carries no density.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..geometry import Camera, StereoRig
from ..phantoms.materials import get_material
from ..volume import Volume, hu_to_mu
from .drr import camera_batch, render_rig
from .markers import render_spheres

if TYPE_CHECKING:
    from .detector import DetectorModel

__all__ = ["DECOMPOSITIONS", "decompose_hu", "material_line_integrals", "attenuation_table", "spectral_sums",
           "render_polychromatic", "primary_signals", "remove_scatter", "ball_transmission",
           "metal_thickness"]

DECOMPOSITIONS = ("tissue_bone", "water")


def decompose_hu(hu: Tensor, reference_kev: float = 60.0, model: str = "tissue_bone",
                 metal: str = "titanium", metal_hu: float = 3000.0) -> tuple[list[str], Tensor]:
    """Partial densities of materials from HU (module docstring for the models).

    Args:
        hu: ``(...)`` HU at ``reference_kev``.
        model: ``"tissue_bone"`` or ``"water"``.
        metal: material of voxels at or above ``metal_hu`` (a name of
            :data:`stereodrr.phantoms.MATERIALS`); ignored by ``"water"``.

    Returns:
        Material names ``(M,)`` and ``(M, ...)`` densities in g/cm^3 (the metal channel only
        when some voxel reaches ``metal_hu``).
    """
    if model not in DECOMPOSITIONS:
        raise ValueError(f"decomposition: expected one of {list(DECOMPOSITIONS)}, got {model!r}")
    mu_ref = hu_to_mu(hu, reference_kev)
    if model == "water":
        water = get_material("water")
        return ["water"], (mu_ref / water.mu(reference_kev) * water.density)[None]
    tissue, bone, met = get_material("soft_tissue"), get_material("cortical_bone"), get_material(metal)
    hu_t, hu_b = tissue.hu(reference_kev), bone.hu(reference_kev)
    f = ((hu - hu_t) / (hu_b - hu_t)).clamp(0.0, 1.0)
    mu_t, mu_b = tissue.mu(reference_kev), bone.mu(reference_kev)
    # Scale so the mixture keeps mu(E_ref); exactly 1 between the two reference HUs.
    scale = mu_ref / ((1.0 - f) * mu_t + f * mu_b)
    is_metal = hu >= metal_hu
    keep = (~is_metal).to(hu.dtype)
    names, chans = ["soft_tissue", "cortical_bone"], [(1.0 - f) * tissue.density * scale * keep,
                                                       f * bone.density * scale * keep]
    if bool(is_metal.any()):
        names.append(met.name)
        chans.append(is_metal.to(hu.dtype) * met.density)
    return names, torch.stack(chans)


def material_line_integrals(
    hu: Volume | None,
    cameras: Camera | Sequence[Camera] | Mapping[str, Camera] | StereoRig,
    *,
    reference_kev: float = 60.0,
    decomposition: str = "tissue_bone",
    metal: str = "titanium",
    spheres: tuple[np.ndarray, np.ndarray, Sequence[str]] | None = None,
    mode: str = "auto",
    step_mm: float | None = None,
) -> tuple[list[str], dict[str, Tensor]]:
    """Per-material line integrals ``L_m = integral rho_m ds`` (g/cm^3 mm) of every view.

    Args:
        hu: a CT in HU (decomposed by :func:`decompose_hu`), or ``None`` (spheres only).
        cameras: a Camera, sequence, mapping or StereoRig (views of any size).
        spheres: analytic balls ``(centres (S, 3) mm, diameters (S,) mm, material names (S,))``,
            rendered exactly (chord x density) into their material's channel.
        mode, step_mm: as in :func:`stereodrr.render.drr`.

    Returns:
        Material names ``(M,)`` and ``{view: (M, H_v, W_v)}`` on ``hu``'s device (CPU without a CT).
    """
    names_v, cams = camera_batch(cameras)
    device = hu.device if hu is not None else torch.device("cpu")
    dtype = hu.data.dtype if hu is not None else torch.float32
    names: list[str] = []
    per: dict[str, list[Tensor]] = {n: [] for n in names_v}
    if hu is not None:
        names, dens = decompose_hu(hu.data, reference_kev, decomposition, metal)
        for d in dens:
            for v, img in render_rig(hu.with_data(d), dict(zip(names_v, cams)), mode=mode, step_mm=step_mm).items():
                per[v].append(img)
    if spheres is not None and len(spheres[2]):
        centers, diameters = np.asarray(spheres[0], np.float64), np.asarray(spheres[1], np.float64)
        mats = list(spheres[2])
        for mat in sorted(set(mats)):
            sel = np.array([m == mat for m in mats])
            rho = get_material(mat).density
            imgs = {v: render_spheres(centers[sel], diameters[sel], rho, c, device=device, dtype=dtype)[0][0]
                    for v, c in zip(names_v, cams)}
            if mat in names:
                i = names.index(mat)
                for v in names_v:
                    per[v][i] = per[v][i] + imgs[v]
            else:
                names.append(mat)
                for v in names_v:
                    per[v].append(imgs[v])
    if not names:
        raise ValueError("material_line_integrals: give a CT (hu) and/or spheres")
    return names, {v: torch.stack(per[v]) for v in names_v}


def attenuation_table(names: Sequence[str], energies_kev: np.ndarray, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """``(M, K)`` ``(mu/rho)_m(E_k) / 10``: multiplies ``L_m`` (g/cm^3 mm) into an exponent."""
    a = np.stack([np.atleast_1d(get_material(n).mass_attenuation(np.asarray(energies_kev))) / 10.0 for n in names])
    return torch.as_tensor(a, device=device, dtype=dtype)


def spectral_sums(channels: Tensor, att: Tensor, weights: Tensor) -> Tensor:
    """Weighted spectrum sums ``sum_k w_jk exp(-sum_m att_mk L_m)`` of equation (1).

    Args:
        channels: ``(M, H, W)`` line integrals ``L_m``.
        att: ``(M, K)`` from :func:`attenuation_table`.
        weights: ``(J, K)``, e.g. ``S eps`` (the signal) and ``S eps^2`` (its quantum variance).

    Returns:
        ``(J, H, W)``; divide by ``weights.sum(1)`` for the open-field-normalised value.
    """
    if channels.ndim != 3 or att.ndim != 2 or att.shape[0] != channels.shape[0] or weights.ndim != 2 \
            or weights.shape[1] != att.shape[1]:
        raise ValueError(f"spectral_sums: expected channels (M, H, W), att (M, K), weights (J, K), got "
                         f"{tuple(channels.shape)}, {tuple(att.shape)}, {tuple(weights.shape)}")
    m, h, w = channels.shape
    flat = channels.reshape(m, h * w)
    rows = max(1, 2**22 // max(att.shape[1], 1))  # bounded (pixels x bins) working set
    parts = []
    for s in range(0, h * w, rows):
        parts.append(weights @ torch.exp(-(att.T @ flat[:, s:s + rows])))
    out = torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    return out.reshape(-1, h, w)


def render_polychromatic(
    hu: Volume | None,
    cameras: Camera | Sequence[Camera] | Mapping[str, Camera] | StereoRig,
    detector: DetectorModel | None = None,
    *,
    reference_kev: float = 60.0,
    decomposition: str = "tissue_bone",
    metal: str = "titanium",
    spheres: tuple[np.ndarray, np.ndarray, Sequence[str]] | None = None,
    mode: str = "auto",
    step_mm: float | None = None,
    seed: int | None = 0,
    output: str = "neglog",
) -> dict[str, Tensor]:
    """Images of every view through a :class:`~stereodrr.render.detector.DetectorModel`.

    Args:
        hu: CT in HU at ``reference_kev`` (or ``None`` with ``spheres``).
        detector: the imaging chain (default: one line at ``reference_kev``, ideal, noiseless).
        output: ``"neglog"`` (``-log(I / I_open)``, float) or ``"counts"``.
        seed: noise seed of the first view; view ``v`` uses ``seed + v``.
        Others: as in :func:`material_line_integrals`.

    Returns:
        ``{view: (H_v, W_v)}``.
    """
    from .detector import DetectorModel

    if output not in ("counts", "neglog"):
        raise ValueError(f"output: expected 'counts' or 'neglog', got {output!r}")
    det = detector if detector is not None else DetectorModel(spectrum=_mono(reference_kev))
    names_v, cams = camera_batch(cameras)
    signals = primary_signals(hu, dict(zip(names_v, cams)), det, reference_kev=reference_kev,
                              decomposition=decomposition, metal=metal, spheres=spheres, mode=mode, step_mm=step_mm)
    out = {}
    for i, (v, c) in enumerate(zip(names_v, cams)):
        counts = det.counts(*det.add_scatter(*signals[v], c), seed=None if seed is None else seed + i)
        out[v] = counts if output == "counts" else det.negative_log(counts)
    return out


def primary_signals(
    hu: Volume | None,
    cameras: Camera | Sequence[Camera] | Mapping[str, Camera] | StereoRig,
    detector: DetectorModel,
    *,
    reference_kev: float = 60.0,
    decomposition: str = "tissue_bone",
    metal: str = "titanium",
    spheres: tuple[np.ndarray, np.ndarray, Sequence[str]] | None = None,
    mode: str = "auto",
    step_mm: float | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Expected primary signal and quantum variance factor (:meth:`DetectorModel.primary`) of
    every view, through the detector's pixel aperture.

    With ``aperture="area"`` each pixel averages the *intensity* (not the line integral) over
    ``subpixels x subpixels`` sub-rays through the analytic balls
    (:func:`~stereodrr.render.aperture.subpixel_cameras`); the CT, smooth on the pixel scale,
    is taken at the pixel centre. ``"point"``: the pixel-centre ray for both.

    Returns:
        ``{view: (t (H_v, W_v), q (H_v, W_v))}``.
    """
    from .markers import shadow_pixels, sphere_subpixel_integrals

    names_v, cams = camera_batch(cameras)
    area = detector.aperture == "area" and spheres is not None and len(spheres[2]) > 0
    if hu is None and not area:
        names, chans = material_line_integrals(None, dict(zip(names_v, cams)), spheres=spheres)
    elif hu is not None:
        names, chans = material_line_integrals(hu, dict(zip(names_v, cams)), reference_kev=reference_kev,
                                               decomposition=decomposition, metal=metal,
                                               spheres=None if area else spheres, mode=mode, step_mm=step_mm)
    else:
        names, chans = [], {}
    if not area:
        return {v: detector.primary(chans[v], names) for v in names_v}
    device = hu.device if hu is not None else torch.device("cpu")
    dtype = hu.data.dtype if hu is not None else torch.float32
    centers, diameters = np.asarray(spheres[0], np.float64), np.asarray(spheres[1], np.float64)
    mats = list(spheres[2])
    ball_names = sorted(set(mats))
    out = {}
    for v, cam in zip(names_v, cams):
        body = chans.get(v, torch.zeros((0, cam.height, cam.width), device=device, dtype=dtype))
        # Away from the balls' shadows the pixel-centre signal of the smooth bodies is the area's.
        t, q = detector.primary(torch.cat([body, body.new_zeros((len(ball_names),) + body.shape[1:])]),
                                list(names) + ball_names)
        pix = shadow_pixels(centers, diameters, cam)
        if len(pix):
            idx = torch.as_tensor(pix, device=device)
            balls = [sphere_subpixel_integrals(centers[[m == b for m in mats]], diameters[[m == b for m in mats]],
                                               get_material(b).density, cam, pix, detector.subpixels,
                                               device=device).to(dtype) for b in ball_names]  # (N, s^2) each
            n_sub = balls[0].shape[1]
            sub = torch.cat([body.flatten(1)[:, idx, None].expand(-1, -1, n_sub),
                             torch.stack(balls)])  # (M, N, s^2) as a (M, H, W) image
            ts, qs = detector.primary(sub, list(names) + ball_names)
            t.view(-1)[idx] = ts.mean(1)
            q.view(-1)[idx] = qs.mean(1)
        out[v] = (t, q)
    return out


def _mono(energy_kev: float):
    from ..physics.spectrum import Spectrum

    return Spectrum.monochromatic(energy_kev)


def remove_scatter(image: np.ndarray, detector: DetectorModel, camera: Camera, iterations: int = 5) -> np.ndarray:
    """The primary part of a ``-log(I / I_open)`` image made with ``detector``'s scatter model.

    Scatter, a smooth pedestal that does not drop under a ball, compresses the ball's contrast.
    It is removed by the fixed point ``P <- t - (g_s / g_p) S(P)`` of the model itself (the
    convolution scatter correction of Love and Kruger, 1987). Without a scatter model the image
    is returned unchanged.

    Args:
        image: ``(H, W)`` ``-log(I / I_open)``.
        camera: the view (pixel pitch and field size of the scatter model).

    Returns:
        ``(H, W)`` float64 ``-log`` of the primary transmission.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or not np.all(np.isfinite(img)):
        raise ValueError("image: expected a finite (H, W) -log image")
    if detector.scatter is None:
        return img
    t = torch.exp(-torch.as_tensor(img))
    prim = t
    for _ in range(int(iterations)):
        total, _q = detector.add_scatter(prim, None, camera)
        prim = (prim - (total - t)).clamp_min(1e-12)  # total - t: the model's excess for this primary
    return (-torch.log(prim)).numpy()


class _TwoMaterialCurve:
    """``p(b, s) = -log t`` of equation (1) for ``b`` mm of a background material and ``s`` mm of
    a metal, with the background-equivalent thickness of a ``-log`` value (a table, monotone)."""

    def __init__(self, detector: DetectorModel, metal: str, background: str) -> None:
        self.att = attenuation_table([background, metal], detector.spectrum.energies_kev, dtype=torch.float64)
        self.w = detector.spectral_weights()
        self.rho = (get_material(background).density, get_material(metal).density)
        self.b_tab = np.linspace(0.0, 1000.0, 2001)
        self.p_tab = self(self.b_tab, np.zeros_like(self.b_tab))

    def __call__(self, b_mm: np.ndarray, s_mm: np.ndarray) -> np.ndarray:
        b_mm, s_mm = np.broadcast_arrays(np.asarray(b_mm, np.float64), np.asarray(s_mm, np.float64))
        ch = torch.as_tensor(np.stack([self.rho[0] * b_mm, self.rho[1] * s_mm]).reshape(2, 1, -1))
        return -np.log(spectral_sums(ch, self.att, self.w)[0].numpy().reshape(b_mm.shape))

    def background_mm(self, neglog: np.ndarray) -> np.ndarray:
        return np.interp(neglog, self.p_tab, self.b_tab)


# Background grid of the per-pixel curve: T is linear-interpolated between tables this far apart
# in -log (the curve changes by < 1e-4 in T across one step for 1-2 mm steel at 80 kVp).
_BALL_BG_STEP = 0.02


def ball_transmission(detector: DetectorModel, metal: str = "stainless_steel", background: str = "water",
                      max_mm: float = 10.0, samples: int = 4096) -> Callable[..., np.ndarray]:
    """The transmission curve of metal balls on a polychromatic beam, for the ball fit of
    :func:`stereodrr.calib.detect.detect_markers` (its ``transmission`` argument).

    Beam hardening makes a ball's ``-log`` profile non-linear in its chord (the centre hardens
    most), so the one-energy model ``exp(-a chord)`` of the fit shifts the fitted centre with the
    sub-pixel phase (0.01-0.02 px at 80 kVp for 1-2 mm steel). This curve is equation (1) itself:
    on a background of ``-log`` value ``bg`` (taken as ``b`` mm of ``background``, the spectrum's
    own curve inverted), ``s`` mm of ``metal`` transmits ``T = exp(-(p(b, s) - p(b, 0)))``; it is
    returned against ``a = mu_0(ref) s``, ``mu_0`` the metal's attenuation at zero thickness on
    the background ``ref``, so ``T(a) = exp(-a)`` for one energy. ``bg`` may vary per pixel (the
    plastic under a ball changes across a brick edge, and with it the beam the steel sees) while
    ``a`` keeps one thickness scale, that of ``ref``. The fit then averages ``T`` over each
    pixel's area as the detector does. Images with scatter: remove it first
    (:func:`remove_scatter`).

    Returns:
        ``T(a, bg, ref=None)``: ``a`` an array of attenuations, ``bg`` the background's ``-log``
        value (a number, or an array broadcast against ``a``), ``ref`` the background of ``a``'s
        scale (default ``bg``, which must then be a number); tabulated on ``samples``
        thicknesses up to ``max_mm`` (clamped beyond), one table per background value (cached;
        an array ``bg`` is interpolated between tables ``_BALL_BG_STEP`` apart).
    """
    if not (max_mm > 0 and samples >= 16):
        raise ValueError(f"ball_transmission: expected max_mm > 0 and samples >= 16, got {max_mm}, {samples}")
    curve = _TwoMaterialCurve(detector, metal, background)
    s_tab = np.linspace(0.0, float(max_mm), int(samples))
    ds = 1e-4

    @lru_cache(maxsize=1024)
    def table(bg: float) -> tuple[float, np.ndarray]:
        """``mu_0`` on ``bg`` and ``T`` on ``s_tab``."""
        b = float(curve.background_mm(np.array(max(bg, 0.0))))
        p0 = float(curve(b, 0.0))
        mu0 = (float(curve(b, ds)) - p0) / ds
        return mu0, np.exp(-(curve(np.full_like(s_tab, b), s_tab) - p0))

    def transmission(a: np.ndarray, bg: float | np.ndarray, ref: float | None = None) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if ref is None:
            if np.ndim(bg) != 0:
                raise ValueError("ball_transmission: a per-pixel background needs ref, the background of a's scale")
            ref = float(bg)
        mu0 = table(round(float(ref), 6))[0]
        if np.ndim(bg) == 0:
            return np.interp(a / mu0, s_tab, table(round(float(bg), 6))[1])
        a, under = np.broadcast_arrays(a, np.asarray(bg, dtype=np.float64))
        s = a / mu0
        grid = np.maximum(under, 0.0) / _BALL_BG_STEP
        k = np.floor(grid)
        w = grid - k
        out = np.empty_like(s)
        for kk in np.unique(k):
            idx = k == kk
            lo = np.interp(s[idx], s_tab, table(round(kk * _BALL_BG_STEP, 6))[1])
            hi = np.interp(s[idx], s_tab, table(round((kk + 1) * _BALL_BG_STEP, 6))[1])
            out[idx] = lo + w[idx] * (hi - lo)
        return out

    return transmission


def metal_thickness(image: np.ndarray, detector: DetectorModel, camera: Camera | None = None,
                    metal: str = "stainless_steel", background: str = "water", window_px: int = 31,
                    max_mm: float = 10.0) -> np.ndarray:
    """Two-material beam-hardening correction: metal thickness (mm) per pixel of a
    ``-log(I / I_open)`` image, e.g. to read a metal marker's or implant's thickness.

    The background is estimated per pixel by a median filter wider than the balls, converted to a
    ``background``-equivalent thickness through the spectrum's own curve, and the pixel's value
    inverted for the metal thickness on that background (bisection on ``p(b, s) = -log t`` of
    equation (1)), which is linear in the chord again. With a scatter model (and the
    ``camera``) the scatter is removed first (:func:`remove_scatter`). A pixel is one value, so
    this map is exact for pixel-centre sampling only: a pixel that averages a ball's sharp rim
    over its area is not linearised by it. For sub-pixel ball centres on area-integrated images
    fit the polychromatic curve instead (:func:`ball_transmission`).

    Args:
        image: ``(H, W)`` ``-log(I / I_open)``.
        detector: the model that made the image.
        window_px: median window (odd), a few ball diameters.
        max_mm: largest metal thickness searched (either sign).

    Returns:
        ``(H, W)`` float64 metal thickness in mm (near 0 on the background, negative where the
        image is below its median background).
    """
    from scipy.ndimage import median_filter

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or not np.all(np.isfinite(img)):
        raise ValueError("image: expected a finite (H, W) -log image")
    if detector.scatter is not None:
        if camera is None:
            raise ValueError("metal_thickness: the detector has a scatter model; pass the view's camera")
        img = remove_scatter(img, detector, camera)
    curve = _TwoMaterialCurve(detector, metal, background)
    b = curve.background_mm(median_filter(img, size=int(window_px) | 1, mode="nearest"))
    # Every pixel is inverted, those below their background to a negative thickness (p is
    # monotone in s on both sides of 0): the map stays smooth, so structure of the background
    # under a ball (brick edges, studs) keeps its shape; clipping at 0 would rectify it.
    lo, hi = np.full_like(img, -float(max_mm)), np.full_like(img, float(max_mm))
    for _ in range(36):  # bisection to 2 max_mm / 2^36
        mid = 0.5 * (lo + hi)
        below = curve(b, mid) < img
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)

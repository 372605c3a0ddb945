"""Beam hardening and scatter, undone: what calibration needs to read balls off polychromatic
``-log(I / I_open)`` images made by a :class:`~stereodrr.imaging.DetectorModel`.

* :func:`remove_scatter`: the primary part of an image, by the fixed point of the detector's
  own scatter model;
* :func:`ball_transmission`: the transmission curve of metal balls on the beam, for the ball
  fit of :func:`stereodrr.calib.detect.detect_markers`;
* :func:`metal_thickness`: the two-material beam-hardening correction, metal thickness per pixel.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..phantoms.materials import get_material
from ..physics.spectral import spectral_sums
from .detector import DetectorModel
from .materials import attenuation_table

if TYPE_CHECKING:
    from ..geometry import Camera

__all__ = ["remove_scatter", "ball_transmission", "metal_thickness"]


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

    def __call__(self, b_mm: np.ndarray | np.floating | float, s_mm: np.ndarray | float) -> np.ndarray | np.floating:
        b_mm, s_mm = np.broadcast_arrays(np.asarray(b_mm, np.float64), np.asarray(s_mm, np.float64))
        ch = torch.as_tensor(np.stack([self.rho[0] * b_mm, self.rho[1] * s_mm]).reshape(2, 1, -1))
        return -np.log(spectral_sums(ch, self.att, self.w)[0].numpy().reshape(b_mm.shape))

    def background_mm(self, neglog: np.ndarray) -> np.ndarray | np.floating:
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

"""Find metal calibration balls in an X-ray image, with sub-pixel centres.

Steps, for a ``(H, W)`` image (float or 16-bit):

1. Attenuation domain. A line-integral / negative-log image (markers bright) is used as is; a
   raw intensity image ``I = I0 exp(-L)`` (markers dark) becomes ``-log I``, which equals ``L``
   up to a constant, so every ball has the profile ``mu * chord`` whatever lies behind it.
   ``kind="auto"`` picks the polarity whose small-blob (top-hat) response is the stronger: metal
   balls are the most compact, highest-contrast features of a calibration image (judged on a
   copy smoothed over a pixel, so a low-dose raw frame's pixel noise does not decide it).
2. Background removal: ``a - max_theta open(a, line_theta)``, the top-hat by the supremum of
   openings with line segments longer than the largest ball in 12 directions
   (``cv2.morphologyEx``). A ball survives no line opening, while the plastic around it (broad
   regions, and also thin walls of bricks seen end-on, which a disk opening would keep with the
   ball) survives the opening along its own direction, so balls lying on walls come out clean.
3. Candidates: connected components (``cv2.connectedComponentsWithStats``) of the top-hat above
   ``max(k sigma, f * peak)`` (sigma by the median absolute deviation), kept when their area
   fits the expected ball size and their second moments are round (edges of plastic walls seen
   end-on are long and thin, and fail).
4. Sub-pixel centre. The centroid of the top-hat above half its peak (the ball's core, which
   weaker plastic left near brick corners does not reach) gives a coarse centre and radius.
   Where the ring around the ball is planar within its noise (water, soft tissue), that plane
   is subtracted; otherwise (bricks: walls and edges crossing the ball) the background is fitted
   jointly with the ball over the disk and the ring, as a degree-7 polynomial (3 for balls under
   2.5 px in radius) plus a piecewise-linear profile across the ring's dominant edge, so the
   ring pins it down and the ball's sharp circular rim tells the two apart; interpolating it
   across the ball instead left 0.02 px on voxelized LEGO bricks. The centre is the weighted
   centroid (``subpixel="centroid"``, plane background) or (``"fit"``, default) a least-squares
   fit of the projected-sphere model over that background (solved in closed form at every step),

       a(u, v) = b(u, v) - log(G_s * exp(-A sqrt(max(0, 1 - ((u - u0)^2 + (v - v0)^2) / rho^2)))),

   the chord profile of a ball of projected radius ``rho`` px averaged over each pixel's area
   (a flat panel's aperture; ``aperture="point"`` samples it at the pixel centres), blurred by a Gaussian ``G_s`` whose sigma ``s`` is fitted too. Detector (scintillator) and
   focal-spot blur act on the intensity ``exp(-a)``, not on its logarithm, hence the
   ``-log(G * exp(.))``; a sharp-edged model fitted to a blurred ball is pulled towards the pixel
   grid. Refits re-centre the patch on the fit and widen the disk by the blurred rim until the
   centre moves less than 1e-3 px, so the result does not depend on the coarse start. A ball's silhouette is a circle centred on the projected centre to within
   ~1e-3 px for millimetre balls at clinical distances (perspective elongation is ~(r/D)^2),
   so the fitted ``(u0, v0)`` estimates the exact projected centre. Non-square pixels
   (``DetectOptions.pixel_aspect``) stretch that circle into an axis-aligned ellipse in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, NamedTuple, Sequence, get_args

import cv2
import numpy as np
import pandas as pd
from scipy.ndimage import convolve1d
from scipy.optimize import least_squares

from ..imaging.functional import zero_floor
from ..render.threads import single_threaded_blas

try:
    from numba import vectorize
except ImportError:  # pragma: no cover - exercised only where numba is absent
    vectorize = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ..render.aperture import Aperture

__all__ = ["ImageKind", "DetectOptions", "KINDS", "APERTURES", "attenuation_image", "detect_markers", "fit_reach_px"]

ImageKind = Literal["auto", "line_integral", "intensity"]
KINDS: tuple[str, ...] = get_args(ImageKind)
# Gaussian sigma from the median absolute deviation (normal consistency constant).
_MAD_TO_SIGMA = 1.4826


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ValueError(f"{name}: expected a 2D (H, W) image of at least 8x8 pixels, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.floating) or np.issubdtype(img.dtype, np.integer)):
        raise ValueError(f"{name}: expected a numeric image, got dtype {img.dtype}")
    img = img.astype(np.float64)
    if not np.all(np.isfinite(img)):
        raise ValueError(f"{name}: contains NaN or inf ({int((~np.isfinite(img)).sum())} pixels)")
    if img.max() == img.min():
        raise ValueError(f"{name}: the image is constant ({img.min():g}); no markers can be found")
    return img


# Gaussian sigma (px) of the copy kind 'auto' decides the polarity on (attenuation_image).
_AUTO_SMOOTH_PX = 1.0
# Directions of the line openings (every 15 degrees).
_N_DIRECTIONS = 12
# Half width (taps) of the blur kernel of the ball model; covers sigma up to a third of it.
_BLUR_HALF_WIDTH = 6
# Width of the ring around a ball that shows its background alone.
_RING_PX = 4.0
# A ring whose plane fit leaves at most this many noise sigmas (RMS) is planar (_ball_patch).
_PLANE_TOLERANCE = 1.25
# Structured backgrounds (_background_basis): polynomial degree (a lower one for balls under
# _SMALL_BALL_PX in radius, which a flexible background could mimic) and edge-profile knot spacing.
_BACKGROUND_DEGREE = 7
_SMALL_BALL_DEGREE = 3
_SMALL_BALL_PX = 2.5
_EDGE_KNOT_PX = 0.5
# Refits of a ball with its window re-centred on the previous fit, until it moves less than this.
_RECENTRE_PX = 1e-3
_MAX_REFITS = 4
# Largest marker contrast the ball fit takes: its model's exp(-a) underflows float64 near 745, and
# no detector records a transmission of exp(-700).
_MAX_CONTRAST = 700.0
# Largest contrast of a line-integral image's balls: a detector of up to 20 bits records no
# transmission below 2^-20 = e^-13.9. Higher, the image is -log(I/I0) in other units or a display,
# and the area-averaged model, nonlinear in the intensity, fits the wrong profile (a 100x scale
# moved centres by up to 0.9 px and calibrated a rig 2.7% off in SDD that passed every check).
_MAX_RECORDED = 14.0


def _tophat(a: np.ndarray, length_px: int) -> np.ndarray:
    """``a - max_theta open(a, line_theta)``: line segments of ``length_px`` pixels (odd) in
    ``_N_DIRECTIONS`` directions over 180 degrees."""
    r = length_px // 2
    a32 = a.astype(np.float32)
    bg = np.full_like(a32, -np.inf)
    for theta in np.arange(_N_DIRECTIONS) * np.pi / _N_DIRECTIONS:
        k = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
        du, dv = r * np.cos(theta), r * np.sin(theta)
        cv2.line(k, (int(round(r - du)), int(round(r - dv))), (int(round(r + du)), int(round(r + dv))), 1)
        opened = cv2.morphologyEx(a32, cv2.MORPH_OPEN, k)
        bg = np.maximum(bg, opened)
    return a - bg.astype(np.float64)


def attenuation_image(image: np.ndarray, kind: str = "auto", max_diameter_px: float = 16.0,
                      name: str = "image") -> tuple[np.ndarray, str]:
    """The image in the attenuation domain (markers bright, ``L`` up to a constant).

    Args:
        image: ``(H, W)`` float or integer.
        kind: ``"line_integral"`` (also negative-log images), ``"intensity"`` or ``"auto"``.
        max_diameter_px: largest ball diameter in pixels (sizes the top-hat of ``"auto"``).

    Returns:
        ``(H, W)`` float64 and the kind used.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    img = _check_image(image, name)
    if kind == "auto":
        d = int(2 * np.ceil(max_diameter_px / 2) + 5)
        # Decided on a copy smoothed over about a pixel: a ball spans several pixels and keeps
        # its contrast, single-pixel noise does not (a low-dose raw frame's Poisson noise in the
        # bright air otherwise tops its dark balls: 1e3 photons/px read as a line integral).
        smooth = cv2.GaussianBlur(img, (0, 0), _AUTO_SMOOTH_PX)
        bright = np.percentile(_tophat(smooth, d), 99.99)
        dark = np.percentile(_tophat(-smooth, d), 99.99)
        kind = "line_integral" if bright >= dark else "intensity"
    if kind == "intensity":
        if img.min() <= 0:
            # Zero counts (photon starvation behind metal, a collimated border)
            img = np.maximum(img, zero_floor(img))
        return -np.log(img), kind
    return img, kind


def fit_reach_px(blur_px: float = 0.0) -> float:
    """How far beyond a ball's rim (px) its centre fit reads the image, for a fitted blur sigma
    ``blur_px``: the disk's margin widened by the blurred rim (``1 + 3 blur``, as the refits of
    :func:`_refined_fit` widen it), the background ring (``_RING_PX``) and a neighbour's rim
    blurred into it (``blur``). Another ball's shadow nearer than this biases the centre (two
    1 mm balls at 0.3 mm pixels, blur 0.5 px, 5 px apart: 0.03 px; 7 px: 0.003 px, as alone)."""
    return 1.0 + 3.0 * blur_px + _RING_PX + blur_px


def _window(radius: float, basis: np.ndarray | None) -> float:
    """The fit's window around a ball's disk of ``radius``: a pixel of the plane-subtracted
    ring (planar backgrounds), or the whole ring, which pins down a jointly fitted background."""
    return radius + (1.0 if basis is None else _RING_PX)


def _ball_patch(a: np.ndarray, u0: float, v0: float, rho: float, margin: float = 1.0,
                structured: bool = True) -> tuple[np.ndarray, int, int, np.ndarray | None] | None:
    """The patch of ``a`` around a ball for the fit, and its background model.

    The ball covers the disk of radius ``R = rho + margin`` around ``(u0, v0)``; the ring
    ``R < d <= R + _RING_PX`` around it shows the background alone. A ring that a plane explains
    within its noise (water, soft tissue) gets that plane, fitted to the ring and subtracted (the
    fit's own plane absorbs what is left), since a richer model would only add noise; so does
    every ring when not ``structured`` (the centroid, which has no model to fit). Any other
    ring (plastic bricks: walls and their edges cross the ball) gets a background fitted jointly
    with the ball over the whole window ``d <= R + _RING_PX`` (:func:`_background_basis`): the
    ring pins it down, and the ball's sharp circular rim cannot be mimicked by it, so neither
    the background nor the ball has to be guessed under the other.

    Returns ``(patch, u_lo, v_lo, basis)``: the patch (ring-plane subtracted and zero outside the
    disk in the planar case; raw otherwise), its top-left pixel and ``None`` (planar) or the
    ``(H, W, K)`` background basis; ``None`` when the patch would leave the image.
    """
    r = int(np.ceil(rho + margin + _RING_PX + 1.0))
    ui, vi = int(round(u0)), int(round(v0))
    if ui - r < 0 or vi - r < 0 or ui + r + 1 > a.shape[1] or vi + r + 1 > a.shape[0]:
        return None
    patch = a[vi - r:vi + r + 1, ui - r:ui + r + 1]
    vv, uu = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    du, dv = uu + ui - u0, vv + vi - v0
    radius = rho + margin
    d2 = du * du + dv * dv
    hole = d2 <= radius**2
    ring = ~hole & (d2 <= (radius + _RING_PX) ** 2)
    # The noise sigma from neighbour differences in the ring (MAD: robust to a few edge pixels).
    A = np.stack([np.ones(ring.sum()), du[ring], dv[ring]], axis=1)
    coef = np.linalg.lstsq(A, patch[ring], rcond=None)[0]
    plane_rms = float(np.sqrt(np.mean((patch[ring] - A @ coef) ** 2)))
    diffs = np.concatenate([np.diff(patch, axis=0)[ring[1:] & ring[:-1]],
                            np.diff(patch, axis=1)[ring[:, 1:] & ring[:, :-1]]])
    noise = _MAD_TO_SIGMA * float(np.median(np.abs(diffs - np.median(diffs)))) / np.sqrt(2.0)
    if plane_rms <= _PLANE_TOLERANCE * noise or not structured:
        res = np.zeros_like(patch)
        res[hole] = patch[hole] - (coef[0] + coef[1] * du[hole] + coef[2] * dv[hole])
        return res, ui - r, vi - r, None
    gv, gu = np.gradient(patch)
    J = np.array([[np.sum(gu[ring] ** 2), np.sum(gu[ring] * gv[ring])],
                  [np.sum(gu[ring] * gv[ring]), np.sum(gv[ring] ** 2)]])
    normal = np.linalg.eigh(J)[1][:, 1]
    degree = _BACKGROUND_DEGREE if rho >= _SMALL_BALL_PX else _SMALL_BALL_DEGREE
    return patch.copy(), ui - r, vi - r, _background_basis(du, dv, radius + _RING_PX, normal, degree)


def _background_basis(du: np.ndarray, dv: np.ndarray, window: float, normal: np.ndarray,
                      degree: int) -> np.ndarray:
    """``(H, W, K)`` columns spanning the background of a structured ring, at offsets
    ``(du, dv)`` from the ball centre: a polynomial of ``degree`` in
    ``(du, dv) / window`` (smooth variation, several crossing bricks) plus a piecewise-linear
    profile across the ring's dominant edge (hat functions of ``t = normal . (du, dv)`` with
    knots every ``_EDGE_KNOT_PX``): the straight edges of brick walls, sharper than any
    low-degree polynomial, continue unchanged along their direction through the ball.
    Measured on voxelized LEGO bricks, 512^2 x 0.3 mm: degree 7 with the edge profile leaves
    0.005-0.007 px RMS, against 0.02 px for interpolating the background across the ball."""
    su, sv = du / window, dv / window
    pu, pv = [su**i for i in range(degree + 1)], [sv**j for j in range(degree + 1)]
    cols = [pu[i] * pv[j] for i in range(degree + 1) for j in range(degree + 1 - i)]
    t = du * normal[0] + dv * normal[1]
    knots = np.arange(-np.ceil(window), np.ceil(window) + _EDGE_KNOT_PX, _EDGE_KNOT_PX)
    cols += [np.maximum(0.0, 1.0 - np.abs(t - k) / _EDGE_KNOT_PX) for k in knots]
    return np.stack(cols, axis=-1)


_TINY = np.finfo(np.float64).tiny


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with a fixed +-_BLUR_HALF_WIDTH tap kernel (smooth in sigma)."""
    k = np.arange(-_BLUR_HALF_WIDTH, _BLUR_HALF_WIDTH + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / max(sigma, 1e-3)) ** 2)
    w /= w.sum()
    return convolve1d(convolve1d(img, w, axis=0, mode="constant"), w, axis=1, mode="constant")


def _chord_kernel(u: float, v: float, u0: float, v0: float, inv_r2: float, amp: float) -> float:
    """At ``(u, v)``: ``amp`` times the chord through a ball projected at ``(u0, v0)`` with radius
    ``1 / sqrt(inv_r2)``, relative to its central chord (the ball's attenuation at small thickness)."""
    du, dv = u - u0, v - v0
    return amp * np.sqrt(np.maximum(1.0 - (du * du + dv * dv) * inv_r2, 0.0))


# Compiled to one ufunc (one pass over the rim's sub-samples instead of ten NumPy temporaries);
# without Numba the same expression runs on the arrays.
_chord = (vectorize(["float64(float64, float64, float64, float64, float64, float64)"], cache=True)(_chord_kernel)
          if vectorize is not None else _chord_kernel)


# Sub-samples per pixel axis of the box-integrated model, and the band around the rim (px)
# where they are used: elsewhere the chord profile is smooth on the pixel scale and the pixel
# centre stands for the pixel average.
_APERTURE_SUBPIXELS = 5
_APERTURE_RIM_PX = 2.0
APERTURES = ("area", "point")


class _BallFit:
    """Least-squares fit of the blurred projected-sphere model on a patch (top-left pixel
    ``(u_lo, v_lo)``), over the disk of radius ``window`` around ``(u0, v0)``.

    Parameters ``x = (u0, v0, rho, A, sigma)``. The ball's intensity
    ``exp(-A chord)`` is averaged over each pixel's area (``aperture="area"``: a flat panel
    integrates over its pixel; ``_APERTURE_SUBPIXELS``^2 sub-samples in the band of
    ``_APERTURE_RIM_PX`` around the rim, where the profile is sharp) or sampled at the pixel
    centre (``"point"``), then blurred by a Gaussian of ``sigma`` px (detector and focal-spot
    blur; 0 for an ideal detector) and taken back to the log domain, over a background that is
    linear in its coefficients: a plane, or the columns of ``basis`` (``(H, W, K)``,
    :func:`_background_basis`). The background is solved in closed form at every step
    (variable projection), so only the ball's five parameters are iterated.
    ``pixel_aspect`` (``dv / du``): with non-square pixels the shadow is an ellipse in pixels;
    ``rho`` is its larger semi-axis, the other ``rho / pixel_aspect`` along ``v`` (or
    ``rho * pixel_aspect`` along ``u`` when ``pixel_aspect < 1``).
    ``transmission`` replaces ``exp(-a)`` by the ball's own transmission curve ``T(a, bg, level)``
    (``a`` its attenuation at small thickness on the background ``level``, ``bg`` the ``-log``
    background under the pixel), e.g. a polychromatic beam's, whose hardening bends the profile
    and changes with the material under the ball: the fit runs with ``bg = level`` everywhere,
    then again with each pixel's background as that first fit found it.
    ``weights`` (patch-shaped): residual weights, one over each pixel's noise sigma.

    The set-up (the background's span, the rim's sub-samples) depends on the patch and the
    start's centre and radius only, so one instance serves several starts (:meth:`fit`).
    """

    def __init__(self, res: np.ndarray, u_lo: int, v_lo: int, u0: float, v0: float, rho: float, window: float,
                 aperture: str = "area", transmission: Callable[..., np.ndarray] | None = None,
                 level: float = 0.0, weights: np.ndarray | None = None, basis: np.ndarray | None = None,
                 pixel_aspect: float = 1.0) -> None:
        self.shape, self.aperture, self.transmission, self.level = res.shape, aperture, transmission, level
        self.start = (u0, v0, rho)
        vv, uu = np.mgrid[v_lo:v_lo + res.shape[0], u_lo:u_lo + res.shape[1]].astype(np.float64)
        # The model's coordinates, scaled so the ellipse becomes a circle of radius rho (exactly
        # the pixel coordinates for square pixels).
        self.su, self.sv = max(1.0, 1.0 / pixel_aspect), max(1.0, pixel_aspect)
        self.uu, self.vv = uu * self.su, vv * self.sv
        self.sel = sel = (uu - u0) ** 2 + (vv - v0) ** 2 <= window**2
        self.vals = res[sel]
        self.w = np.ones_like(self.vals) if weights is None else weights[sel]
        B = (np.stack([np.ones_like(self.vals), uu[sel] - u0, vv[sel] - v0], axis=1) if basis is None
             else basis[sel])
        U, S, _ = np.linalg.svd(B * self.w[:, None], full_matrices=False)
        self.U = U[:, S > 1e-9 * S[0]]  # orthonormal basis of the weighted background's span
        self.rim = np.zeros_like(sel)
        if aperture == "area":
            self.rim = np.abs(np.hypot((uu - u0) * self.su, (vv - v0) * self.sv) - rho) <= _APERTURE_RIM_PX + 0.71
            off = (np.arange(_APERTURE_SUBPIXELS) + 0.5) / _APERTURE_SUBPIXELS - 0.5
            ou, ov = (o.ravel() for o in np.meshgrid(off, off))
            self.fu = (uu[self.rim][:, None] + ou[None]) * self.su
            self.fv = (vv[self.rim][:, None] + ov[None]) * self.sv
        self.bg: float | np.ndarray = level  # the curve's background: one level, then per pixel

    def _trans(self, a: np.ndarray, under: float | np.ndarray) -> np.ndarray:
        return np.exp(-a) if self.transmission is None else self.transmission(a, under, self.level)

    def model(self, x: np.ndarray) -> np.ndarray:
        """The model's values on the window's pixels for the parameters ``x``."""
        inv_r2 = 1.0 / (x[2] * x[2])
        u0, v0 = x[0] * self.su, x[1] * self.sv
        intensity = self._trans(_chord(self.uu, self.vv, u0, v0, inv_r2, x[3]), self.bg)
        if self.aperture == "area":
            under = self.bg[self.rim][:, None] if isinstance(self.bg, np.ndarray) else self.bg
            sub = self._trans(_chord(self.fu, self.fv, u0, v0, inv_r2, x[3]), under)
            intensity[self.rim] = np.add.reduce(sub, axis=1) / sub.shape[1]  # sub.mean(axis=1), less overhead
        # floored: a ball of implausible contrast (a scaled line-integral image) underflows to 0
        return -np.log(np.maximum(_gaussian_blur(intensity, x[4]), _TINY))[self.sel]

    def residual(self, x: np.ndarray) -> np.ndarray:
        """Weighted residual, orthogonal to the background."""
        r = (self.model(x) - self.vals) * self.w
        return r - self.U @ (self.U.T @ r)

    def fit(self, amp: float, blur: float) -> _Fit:
        """The fit from the start's centre and radius with ``amp`` and ``blur``."""
        u0, v0, rho = self.start
        x = np.array([u0, v0, rho, amp, blur])
        self.bg = self.level
        lo = [u0 - 2, v0 - 2, 0.5, 0.0, 0.0]
        hi = [u0 + 2, v0 + 2, rho + 2, np.inf, _BLUR_HALF_WIDTH / 3]

        def run(start: np.ndarray):  # noqa: ANN202 - scipy's OptimizeResult
            return least_squares(self.residual, start, bounds=(lo, hi), x_scale="jac", method="trf",
                                 xtol=1e-7, ftol=1e-8, gtol=1e-10, max_nfev=60)

        sol = run(x)
        if self.transmission is not None:
            # Refit with the curve at the background the first fit found under each pixel (its
            # projection of data minus ball).
            r = (self.model(sol.x) - self.vals) * self.w
            bg = np.full(self.shape, float(self.level))
            bg[self.sel] = -(self.U @ (self.U.T @ r)) / self.w
            self.bg = bg
            sol = run(sol.x)
        return _Fit(sol.x, float(np.sqrt(np.mean((sol.fun / self.w) ** 2))), _centre_sigma(sol, self.U.shape[1]))


class _Fit(NamedTuple):
    """One ball fit: parameters ``(u0, v0, rho, A, sigma)``, the RMS of its unweighted residual
    and the centre's standard errors ``(sigma_u, sigma_v)`` in pixels."""

    x: np.ndarray
    rms: float
    sigma: tuple[float, float]


def _centre_sigma(sol: Any, n_background: int) -> tuple[float, float]:
    """Standard errors of the fitted centre: ``s^2 (J^T J)^-1`` with ``s^2`` the weighted
    residual's variance per degree of freedom (the weights are relative, so the data set their
    scale); NaN when the fit is singular."""
    dof = sol.fun.size - sol.x.size - n_background
    if dof < 1:
        return float("nan"), float("nan")
    try:
        cov = float(sol.fun @ sol.fun) / dof * np.linalg.inv(sol.jac.T @ sol.jac)
    except np.linalg.LinAlgError:
        return float("nan"), float("nan")
    return float(np.sqrt(max(cov[0, 0], 0.0))), float(np.sqrt(max(cov[1, 1], 0.0)))


def _poisson_weights(a_patch: np.ndarray) -> np.ndarray:
    """Fit weights for ``a = -log(counts)``: its variance is ``1 / counts``, so each pixel weighs
    ``sqrt(counts) ~ exp(-a / 2)`` (relative). ``a`` is smoothed first (Gaussian, 1 px) so the
    weights do not follow the noise they weigh."""
    smooth = cv2.GaussianBlur(a_patch.astype(np.float64), (0, 0), 1.0)
    return np.exp(-0.5 * (smooth - smooth.min()))


Subpixel = Literal["fit", "centroid"]


@dataclass(frozen=True)
class DetectOptions:
    """Tuning knobs of :func:`detect_markers`.

    Attributes:
        subpixel: ``"fit"`` (projected-sphere model) or ``"centroid"`` (attenuation weighted).
        threshold_sigma, threshold_fraction: candidate pixels exceed ``threshold_sigma`` noise
            sigmas and ``threshold_fraction`` of the strongest top-hat response.
        min_roundness: smallest accepted ratio of the minor to the major axis of a candidate.
        pixel_aspect: a pixel's height over its width, ``dv / du`` (``fx / fy``): the ball fit
            models the elliptical shadow non-square pixels give.
        max_blobs: refuse an image with more ball-sized candidates than this before fitting
            them (``None``: no limit); calibration sets it from the phantom's marker count, so a
            wrong image (a grid plate: hundreds of holes) fails in a second, not minutes.
    """

    subpixel: Subpixel = "fit"
    threshold_sigma: float = 6.0
    threshold_fraction: float = 0.2
    min_roundness: float = 0.6
    pixel_aspect: float = 1.0
    max_blobs: int | None = None

    def __post_init__(self) -> None:
        if self.subpixel not in ("fit", "centroid"):
            raise ValueError(f"subpixel: expected 'fit' or 'centroid', got {self.subpixel!r}")
        if not (np.isfinite(self.pixel_aspect) and self.pixel_aspect > 0):
            raise ValueError(f"pixel_aspect: expected a positive number (dv / du), got {self.pixel_aspect}")


def detect_markers(
    image: np.ndarray,
    kind: ImageKind = "auto",
    diameter_px: Sequence[float] = (3.0, 16.0),
    aperture: Aperture = "area",
    *,
    options: DetectOptions | None = None,
    name: str = "image",
    transmission: Callable[..., np.ndarray] | None = None,
) -> pd.DataFrame:
    """Detect metal balls and locate their projected centres to sub-pixel precision.

    Args:
        image: ``(H, W)`` float or 16-bit X-ray (line integral, negative-log or raw intensity).
        kind: ``"auto"``, ``"line_integral"`` or ``"intensity"`` (see the module docstring).
        diameter_px: ``(min, max)`` expected ball diameter on the detector in pixels
            (ball diameter x magnification / pixel pitch).
        aperture: the detector pixels' sampling the fit models: ``"area"`` (each pixel the
            average over its area, as a flat panel and stereodrr's default renderer) or
            ``"point"`` (sampled at the pixel centre).
        options: the tuning knobs (:class:`DetectOptions`).
        name: the image's name in error messages.
        transmission: ``T(a, bg, ref)``, the balls' transmission (relative to their background)
            as a function of their attenuation ``a`` at small thickness on a background of ``-log``
            value ``ref`` (the median around the ball), seen through a background ``bg`` (a number
            or the per-pixel array the fit finds under the ball): a polychromatic beam's curve
            (:func:`stereodrr.imaging.ball_transmission`) for the fit; default ``exp(-a)``, one
            energy. ``peak`` is then ``a`` of the central chord.

    Returns:
        One row per ball, sorted by ``v`` then ``u``: ``u, v`` (px), ``diameter_px``,
        ``peak`` (attenuation above background), ``roundness``, ``blur_px`` (fitted Gaussian
        blur sigma), ``fit_rms`` (model residual) and ``sigma_u, sigma_v`` (the centre's standard
        errors from the fit's residual and Jacobian, px); the last four NaN for centroids.

    Raises:
        ValueError: not a 2D image, NaN/inf, a constant image, bad options, or no markers found.
    """
    o = options or DetectOptions()
    if aperture not in APERTURES:
        raise ValueError(f"aperture: expected one of {APERTURES}, got {aperture!r}")
    dmin, dmax = (float(x) for x in diameter_px)
    if not 0 < dmin <= dmax:
        raise ValueError(f"diameter_px: expected 0 < min <= max pixels, got {tuple(diameter_px)}")
    a, used = attenuation_image(image, kind, dmax, name)
    top = _tophat(a, int(2 * np.ceil(dmax / 2) + 5))
    blobs, n_candidates, thr = _blobs(top, dmin, dmax, o)
    guessed = (" (kind 'auto' read it as a line integral: a noisy raw frame's bright air can outweigh its "
               "dark balls; give kind 'intensity', --kind intensity, for a raw frame)") if kind == "auto" else ""
    if o.max_blobs is not None and len(blobs) > o.max_blobs:
        # A raw frame misread as a line integral shows its noise as blobs: say so, as below.
        raise ValueError(f"{name}: {len(blobs)} ball-sized blobs, more than the {o.max_blobs} a shot of this phantom "
                         "can show: not an image of the phantom (a grid plate, another object)?"
                         + (guessed if used == "line_integral" else ""))
    if o.subpixel == "fit" and blobs and top.max() > _MAX_CONTRAST:
        # Not an attenuation image: a bright-bone display (65535 - I, or -log scaled to 16 bits).
        raise ValueError(f"{name}: markers stand {top.max():.4g} above their background as {used!r}, beyond any "
                         f"-log(I/I0) ({_MAX_CONTRAST:g}); expected a raw frame (bone dark) or a -log(I/I0) "
                         "image in its own units, not a display (inverted, or -log scaled to grey levels)")
    if o.subpixel == "fit" and aperture == "area" and blobs and used == "line_integral" and top.max() > _MAX_RECORDED:
        raise ValueError(f"{name}: markers stand {top.max():.4g} above their background as a line integral, more "
                         f"than a detector records as -log(I/I0) ({_MAX_RECORDED:g}){guessed}; the area-averaged "
                         "ball model needs -log(I/I0) itself: give the raw frame or the image in those units, or use "
                         "aperture 'point' (--aperture point)")
    rows = []
    with single_threaded_blas():  # the fits' small products and SVDs (see render.threads)
        starts = np.array([(cu, cv_) for cu, cv_, _ in blobs], np.float64)
        for k, (cu, cv_, roundness) in enumerate(blobs):
            ball = _locate(a, top, (cu, cv_), dmax, used, aperture, transmission, o.subpixel, o.pixel_aspect,
                           others=np.delete(starts, k, axis=0))
            if ball is not None:
                rows.append({**ball, "roundness": roundness})
    if not rows:
        raise ValueError(
            f"{name}: no markers found (kind {used!r}, expected ball diameter {dmin:g}-{dmax:g} px, "
            f"{n_candidates} candidate blob(s) above {thr:.3g}); check the image, --kind and the marker size"
        )
    cols = ["u", "v", "diameter_px", "peak", "roundness", "blur_px", "fit_rms", "sigma_u", "sigma_v"]
    return pd.DataFrame(rows)[cols].sort_values(["v", "u"], ignore_index=True)


def _blobs(top: np.ndarray, dmin: float, dmax: float, o: DetectOptions
           ) -> tuple[list[tuple[float, float, float]], int, float]:
    """Candidates (step 3 of the module docstring): ``(u, v, roundness)`` of each connected
    component of the top-hat above the threshold whose area fits a ball and which is round;
    also how many components there were and the threshold."""
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(top - np.median(top))))
    thr = max(o.threshold_sigma * sigma, o.threshold_fraction * float(top.max()))
    mask = (top > thr).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    # A ball's above-threshold core is smaller than its disk; allow from a quarter of the smallest.
    area_lo, area_hi = 0.25 * np.pi * (dmin / 2) ** 2, np.pi * (dmax / 2 + 1) ** 2
    out = []
    for i in range(1, n):
        area = stats[i, cv2.CC_STAT_AREA]
        if not area_lo <= area <= area_hi:
            continue
        vs, us = np.nonzero(labels == i)
        w = top[vs, us]
        cu, cv_ = np.average(us, weights=w), np.average(vs, weights=w)
        cov = np.cov(np.stack([us, vs]), aweights=w) if len(us) > 2 else np.eye(2)
        ev = np.linalg.eigvalsh(cov)
        roundness = float(np.sqrt(max(ev[0], 0) / ev[1])) if ev[1] > 0 else 1.0
        if roundness >= o.min_roundness:
            out.append((float(cu), float(cv_), roundness))
    return out, n - 1, thr


def _core(top: np.ndarray, cu: float, cv_: float, dmax: float,
          others: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """Coarse centre, radius and peak from the ball's core: the pixels above half its top-hat peak
    connected to the peak (a disk of radius ~0.87 rho for the chord profile), within a disk a
    pixel wider than the largest radius. Weaker plastic that the line openings leave near brick
    corners stays out of it, so it does not pull the start (by up to 2.5 px before). ``others``
    ``(K, 2)``: the other candidates' centres; pixels nearer one of them are left out, so a
    small ball beside a larger one (the disk is sized by the largest ball) starts from its own
    core, not from the brighter inside of its neighbour's rim."""
    H, W = top.shape
    rad = dmax / 2 + 1
    r = int(np.ceil(rad))
    u_lo, u_hi = max(int(round(cu)) - r, 0), min(int(round(cu)) + r + 1, W)
    v_lo, v_hi = max(int(round(cv_)) - r, 0), min(int(round(cv_)) + r + 1, H)
    vv, uu = np.mgrid[v_lo:v_hi, u_lo:u_hi]
    own = (uu - cu) ** 2 + (vv - cv_) ** 2
    inside = own <= rad**2
    if others is not None:
        for ou, ov in others[np.hypot(others[:, 0] - cu, others[:, 1] - cv_) < 2 * rad]:
            inside &= own <= (uu - ou) ** 2 + (vv - ov) ** 2
    win = top[v_lo:v_hi, u_lo:u_hi] * inside
    peak = float(win.max())
    core = cv2.connectedComponents((win >= 0.5 * peak).astype(np.uint8), connectivity=8)[1]
    core = core == core.flat[int(np.argmax(win))]
    wcore = (win - 0.5 * peak) * core
    cu, cv_ = float((wcore * uu).sum() / wcore.sum()), float((wcore * vv).sum() / wcore.sum())
    rho = float(np.clip(np.sqrt(core.sum() / np.pi) / np.sqrt(0.75), 0.6, dmax / 2))
    return cu, cv_, rho, peak


def _locate(a: np.ndarray, top: np.ndarray, start: tuple[float, float], dmax: float, kind: str, aperture: str,
            transmission: Callable[..., np.ndarray] | None, subpixel: Subpixel,
            pixel_aspect: float = 1.0, others: np.ndarray | None = None) -> dict[str, float] | None:
    """Sub-pixel centre of one candidate (step 4 of the module docstring), or ``None`` when it
    lies too close to the image edge for a background estimate (``others``: :func:`_core`)."""
    cu, cv_, rho, peak = _core(top, start[0], start[1], dmax, others)
    local = _ball_patch(a, cu, cv_, rho, structured=subpixel == "fit")
    if local is None:
        return None
    res, pu, pv, basis = local
    fit_rms, blur, sigma = float("nan"), float("nan"), (float("nan"), float("nan"))
    level = 0.0
    if transmission is not None:
        # The ball's background level (the scale of its attenuation in the fit): the median of
        # its patch outside the ball's disk.
        patch = a[pv:pv + res.shape[0], pu:pu + res.shape[1]]
        vv, uu = np.mgrid[pv:pv + res.shape[0], pu:pu + res.shape[1]]
        level = float(np.median(patch[(uu - cu) ** 2 + (vv - cv_) ** 2 > (rho + 1.0) ** 2]))
    if subpixel == "fit":
        fit = _refined_fit(a, local, (cu, cv_, rho, peak), kind, aperture, transmission, level, pixel_aspect)
        cu, cv_, rho, peak, blur = (float(v) for v in fit.x)
        fit_rms, sigma = fit.rms, fit.sigma
    else:
        vv, uu = np.mgrid[pv:pv + res.shape[0], pu:pu + res.shape[1]]
        w = np.clip(res, 0, None)
        cu, cv_ = float((w * uu).sum() / w.sum()), float((w * vv).sum() / w.sum())
    return {"u": cu, "v": cv_, "diameter_px": 2 * rho, "peak": peak, "blur_px": blur, "fit_rms": fit_rms,
            "sigma_u": sigma[0], "sigma_v": sigma[1]}


def _refined_fit(a: np.ndarray, local: tuple, start: tuple[float, float, float, float], kind: str, aperture: str,
                 transmission: Callable[..., np.ndarray] | None, level: float, pixel_aspect: float = 1.0) -> _Fit:
    """The projected-sphere fit from two starts, then refits re-centred on it until it stands still."""
    res, pu, pv, basis = local
    cu, cv_, rho, peak = start
    # Two starts: sharp (near 0 the blur's derivative vanishes, the kernel taps underflow,
    # so it stays sharp) and 0.5 px blurred; the blurred model has local minima.
    model = _BallFit(res, pu, pv, cu, cv_, rho, _window(rho + 1.0, basis), aperture, transmission, level, basis=basis,
                     pixel_aspect=pixel_aspect)
    best = min((model.fit(peak, s0) for s0 in (1e-3, 0.5)), key=lambda fit: fit.rms)
    # Refits with the patch re-centred on the fit and its disk widened by the blurred rim,
    # until the centre stands still: the result does not depend on the coarse start.
    for _ in range(_MAX_REFITS):
        x = best.x
        patch = _ball_patch(a, x[0], x[1], x[2], 1.0 + 3.0 * x[4])
        if patch is None:
            break
        res, pu, pv, basis = patch
        weights = (_poisson_weights(a[pv:pv + res.shape[0], pu:pu + res.shape[1]])
                   if kind == "intensity" else None)
        best = _BallFit(res, pu, pv, x[0], x[1], x[2], _window(x[2] + 1.0 + 3.0 * x[4], basis), aperture,
                        transmission, level, weights, basis, pixel_aspect).fit(x[3], x[4])
        if np.hypot(*(best.x[:2] - x[:2])) < _RECENTRE_PX:
            break
    return best

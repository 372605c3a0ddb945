"""Implanted beads (small metal spheres) in X-ray frames, with sub-pixel centres.

Steps, for one ``(H, W)`` frame:

1. Attenuation. An intensity frame (``image="intensity"``: bright = air, beads dark, e.g. XMALab's
   undistorted 8-bit video) becomes ``a = -log I``: a bead adds its own attenuation to the
   tissue's, so under the bead a sloped tissue background stays additive; an attenuation frame
   (``"attenuation"``: beads bright) is used as is.
2. Candidates: local maxima of a difference of Gaussians at the bead scale (a band-pass that
   keeps compact blobs of the expected size) above ``threshold_sigma`` times its noise, whose
   fitting window lies in the mask. The noise (median absolute deviation of the response) is
   measured per level of the smoothed tissue, since ``-log`` noise grows where little light is
   left; pixels clipped black or saturated are left out of it.
3. Sub-pixel centre: a least-squares fit, at every candidate at once (a batched
   Levenberg-Marquardt), of a blurred disc on a polynomial background over a round window,

       a(u, v) = b(u - u_c, v - v_c) + A * erfc((rho - r) / (sqrt(2) s)) / 2,
       rho = |(u, v) - (u0, v0)|,

   with centre ``(u0, v0)``, radius ``r``, edge blur ``s``, contrast ``A`` and a plane (or
   quadratic) background ``b``. A first fit sees only the pixels nearer its own candidate than
   any other, so a bead does not spread over its neighbour; beads within a window of each other
   (the ulna's pairs) are then refitted in turns on their whole window, less their neighbours'
   fitted discs. Candidates that the expected disc, fitted at the candidate pixel, explains
   poorly are dropped before the fit (most of them: noise and tissue edges).
4. Acceptance: the fitted profile's full width at half depth (``diameter_px``; ``2 r`` for a
   sharp disc, ``1.35 s`` for a point) within the range, the centre within 2 px of its
   candidate, ``score = A / rms(residual)`` near the bead above ``min_score`` and the disc
   explaining ``min_explained`` of the signal above the background (letters, the rims of large
   skin markers and the field edge are not discs and leave much of their signal unexplained).

On spheres rendered independently (transmission through the chord, 8 x 8 supersampled pixels,
blur, sloped field) the centres are within 0.03 px noise-free and about 0.02 px RMS with Poisson
noise (4000 counts in the open field)
(``tests/track/test_beads_detect.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np
import pandas as pd
from scipy.special import erfc, erfcinv

__all__ = ["BeadDetectOptions", "detect_beads", "DETECTION_COLUMNS"]

DETECTION_COLUMNS = ("u", "v", "diameter_px", "blur_px", "contrast", "score", "explained")
"""Columns of :func:`detect_beads`'s table, one row per bead."""
# Gaussian sigma from the median absolute deviation (normal consistency constant).
_MAD_TO_SIGMA = 1.4826
_SQRT2PI = float(np.sqrt(2.0 * np.pi))


@dataclass(frozen=True)
class BeadDetectOptions:
    """How :func:`detect_beads` finds beads.

    Attributes:
        diameter_px: ``(min, max)`` accepted width of the fitted profile at half depth, in
            pixels (about 0.6-0.9 of the shadow's diameter, bead diameter x magnification / pixel
            pitch; the wrist sample's beads measure 4.5-5.7 px). A range wider than a ratio of
            3.2 is searched in bands (each its own scale and window, ``diameter + 8`` px
            across). :func:`~stereodrr.track.track_beads` sets it per camera from the beads'
            size in mm and the calibration (``BeadTrackOptions.bead_mm``).
        image: ``"intensity"`` (bright = air, beads dark: fitted in ``-log`` of the frame) or
            ``"attenuation"`` (beads bright: fitted as is).
        background: the background the bead sits on within its window, ``"plane"`` or
            ``"quadratic"``.
        threshold_sigma: candidates are difference-of-Gaussian maxima above this many noise sigmas.
        min_score: smallest accepted ``contrast / rms(residual)`` of the fit.
        min_explained: smallest accepted fraction of the signal above the fitted background
            (within the disc and its blurred rim) that the disc explains.
        iterations: Levenberg-Marquardt iterations per fit.
    """

    diameter_px: tuple[float, float] = (2.5, 8.0)
    image: Literal["intensity", "attenuation"] = "intensity"
    background: Literal["plane", "quadratic"] = "plane"
    threshold_sigma: float = 6.0
    min_score: float = 8.0
    min_explained: float = 0.9
    iterations: int = 30

    def __post_init__(self) -> None:
        lo, hi = (float(x) for x in self.diameter_px)
        if not 0 < lo <= hi <= 64:
            raise ValueError(f"diameter_px: expected 0 < min <= max <= 64 pixels, got {self.diameter_px}")
        if self.image not in ("intensity", "attenuation"):
            raise ValueError(f"image: expected 'intensity' or 'attenuation', got {self.image!r}")
        if self.background not in ("plane", "quadratic"):
            raise ValueError(f"background: expected 'plane' or 'quadratic', got {self.background!r}")
        for name in ("threshold_sigma", "min_score"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")
        if not 0 <= self.min_explained < 1:
            raise ValueError(f"min_explained: expected a fraction in [0, 1), got {self.min_explained}")
        if not 1 <= self.iterations <= 1000:
            raise ValueError(f"iterations: expected 1..1000, got {self.iterations}")


def _check_inputs(image: np.ndarray, mask: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    img = np.asarray(image)
    if img.ndim != 2 or min(img.shape) < 16:
        raise ValueError(f"{name}: expected a 2D (H, W) image of at least 16 x 16 pixels, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise ValueError(f"{name}: expected an integer or float image, got dtype {img.dtype}")
    if np.issubdtype(img.dtype, np.floating) and not np.all(np.isfinite(img)):
        raise ValueError(f"{name}: contains NaN or inf")
    if mask is None:
        return img, None
    m = np.asarray(mask)
    if m.shape != img.shape or m.dtype != np.bool_:
        raise ValueError(f"{name} mask: expected a boolean array of the image's shape {img.shape}, "
                         f"got {m.dtype} {m.shape}")
    return img, m


def _attenuation(img: np.ndarray, kind: str) -> np.ndarray:
    a = img.astype(np.float32)
    if kind == "attenuation":
        return a
    # The floor keeps -log finite on black pixels (outside the intensifier's field).
    floor = max(float(a.max()) * 1e-3, np.finfo(np.float32).tiny)
    return -np.log(np.maximum(a, floor))


def _window_radius(opts: BeadDetectOptions) -> int:
    # The disc, its blurred rim and a ring of background around the largest bead.
    return int(np.ceil(opts.diameter_px[1] / 2 + 4))


def _candidates(a: np.ndarray, mask: np.ndarray | None, opts: BeadDetectOptions, h: int) -> np.ndarray:
    """``(N, 2)`` integer ``(row, col)`` of difference-of-Gaussian maxima above the threshold whose
    ``h``-window lies inside the image and the mask."""
    d0 = float(np.sqrt(opts.diameter_px[0] * opts.diameter_px[1]))
    # The centre sigma of a difference of Gaussians that peaks on a blurred disc of diameter d0.
    s1 = max(0.5, 0.25 * d0)
    dog = cv2.GaussianBlur(a, (0, 0), s1) - cv2.GaussianBlur(a, (0, 0), 2.0 * s1)
    # The tissue level the noise depends on, at a scale where beads hardly count.
    level = _smooth(a, 4.0 * d0)
    inside_b = np.zeros(a.shape, bool)
    inside_b[h:-h, h:-h] = True
    if mask is not None:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * h + 1, 2 * h + 1))
        inside_b &= cv2.erode(mask.astype(np.uint8), k, borderValue=0) > 0
    peaks = (dog >= cv2.dilate(dog, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))) & inside_b & (dog > 0)
    cand = np.argwhere(peaks)
    levels, noise = _noise_by_level(a, level, dog, inside_b)
    if len(cand) == 0 or len(levels) == 0:
        return np.zeros((0, 2), np.intp)
    at = np.interp(level[cand[:, 0], cand[:, 1]], levels, noise)
    return cand[dog[cand[:, 0], cand[:, 1]] > opts.threshold_sigma * at]


# Above this sigma (px) a Gaussian blur runs on a binned image: the blurred map is smooth on the
# scale of the bins, and the full-resolution blur of a 1760 x 1760 frame at sigma 40 (2 mm beads'
# tissue level) took 0.7 s of a view's detection. At or below it (the 2.5-8 px band's 18 px)
# the blur is exact.
_BINNED_SIGMA = 20.0


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """``a`` blurred by a Gaussian of ``sigma`` px: exact up to :data:`_BINNED_SIGMA`, beyond it
    on ``a`` binned by ``sigma / 8`` (area mean) and interpolated back (linear)."""
    f = int(sigma // 8)
    if sigma <= _BINNED_SIGMA or min(a.shape) < 8 * f:
        return cv2.GaussianBlur(a, (0, 0), sigma)
    h, w = a.shape
    small = cv2.resize(a, (w // f, h // f), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    # Bin centres sit at f (i + 1/2) - 1/2 full pixels: resize's own half-pixel convention maps
    # them back exactly when the size divides; a remainder of under f pixels stretches it slightly.
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _noise_by_level(a: np.ndarray, level: np.ndarray, response: np.ndarray, searched: np.ndarray,
                    bins: int = 16, stride: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The response's noise (sigma from the median absolute deviation) as a function of the local
    level, in ``bins`` quantiles of the searched pixels (every ``stride``-th row and column):
    ``-log`` noise grows where the tissue is thick and little light is left. A plateau at the
    lowest or highest value (pixels clipped black or saturated, over 1 % of the pixels) is left
    out: flat there, it would pull the deviation to zero."""
    sub = (slice(None, None, stride), slice(None, None, stride))
    sel = searched[sub]
    a_s, lev, res = a[sub][sel], level[sub][sel], response[sub][sel]
    if a_s.size < 10:
        return np.zeros(0), np.zeros(0)
    bins = max(1, min(bins, a_s.size // 100))
    ok = np.ones(a_s.size, bool)
    for extreme in (a_s.min(), a_s.max()):
        clipped = a_s == extreme
        if clipped.mean() > 0.01:
            ok &= ~clipped
    lev, res = (lev[ok], res[ok]) if ok.sum() >= 10 * bins else (lev, res)
    order = np.argsort(lev)
    groups = np.array_split(order, bins)
    centres = np.array([np.median(lev[g]) for g in groups])
    noise = np.array([_MAD_TO_SIGMA * np.median(np.abs(res[g] - np.median(res[g]))) for g in groups])
    # Noise-free levels (synthetic or quantised flat) have none: a floor keeps the threshold positive.
    return centres, np.maximum(noise, 1e-6 * max(float(np.abs(res).max()), 1e-30))


class _Fit:
    """Batched fit of the blurred disc on a polynomial background to ``N`` square windows.

    Parameters per window: ``u0, v0`` (offset from the window centre, px), ``r``, ``s`` (px), ``A``
    and the background coefficients (in units of the window radius, for conditioning).
    """

    def __init__(self, windows: np.ndarray, h: int, background: str, max_blur: float) -> None:
        self.data = windows.reshape(len(windows), -1).astype(np.float64)
        g = np.arange(-h, h + 1, dtype=np.float64)
        self.dx = np.tile(g, 2 * h + 1)
        self.dy = np.repeat(g, 2 * h + 1)
        self.round = ((self.dx**2 + self.dy**2) <= (h + 0.5) ** 2).astype(np.float64)
        x, y = self.dx / h, self.dy / h
        terms = [np.ones_like(x), x, y] + ([x * x, x * y, y * y] if background == "quadratic" else [])
        self.basis = np.stack(terms, axis=1)  # (P, nb)
        self.h = h
        self.max_blur = max_blur

    def profile(self, theta: np.ndarray, with_jacobian: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None]:
        """Disc profile ``(N, P)`` and its derivatives w.r.t. ``u0, v0, r, s`` ``(N, P, 4)``."""
        u0, v0, r, s = (theta[:, i:i + 1] for i in range(4))
        ex, ey = self.dx[None] - u0, self.dy[None] - v0
        rho = np.sqrt(ex * ex + ey * ey + 1e-12)
        z = (rho - r) / s
        p = 0.5 * erfc(z / np.sqrt(2.0))
        if not with_jacobian:
            return p, None
        phi = np.exp(-0.5 * z * z) / (_SQRT2PI * s)  # -dp/drho
        jac = np.stack([phi * ex / rho, phi * ey / rho, phi, phi * z], axis=2)
        return p, jac

    def model(self, theta: np.ndarray) -> np.ndarray:
        p, _ = self.profile(theta, with_jacobian=False)
        return theta[:, 4:5] * p + theta[:, 5:] @ self.basis.T

    def linear(self, nonlinear: np.ndarray, data: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Full parameters: ``nonlinear`` ``(N, 4)`` with the contrast and background that fit best."""
        p, _ = self.profile(nonlinear, with_jacobian=False)
        design = np.concatenate([p[:, :, None], np.broadcast_to(self.basis, (*p.shape, self.basis.shape[1]))], axis=2)
        dw = design * weight[:, :, None]
        lhs = dw.transpose(0, 2, 1) @ design + 1e-9 * np.eye(design.shape[2])
        coef = np.linalg.solve(lhs, dw.transpose(0, 2, 1) @ data[:, :, None])[:, :, 0]
        return np.concatenate([nonlinear, coef], axis=1)

    def run(self, theta: np.ndarray, data: np.ndarray, weight: np.ndarray, iterations: int) -> np.ndarray:
        """Levenberg-Marquardt from ``theta`` ``(N, 5 + nb)`` on ``data`` with pixel weights ``(N, P)``."""
        n, k = theta.shape
        lam = np.full(n, 1e-3)
        cost = np.sum(weight * (self.model(theta) - data) ** 2, axis=1)
        for _ in range(iterations):
            p, dp = self.profile(theta)
            assert dp is not None
            J = np.concatenate([theta[:, 4:5, None] * dp, p[:, :, None],
                                np.broadcast_to(self.basis, (n, *self.basis.shape))], axis=2)
            res = theta[:, 4:5] * p + theta[:, 5:] @ self.basis.T - data
            Jw = J * weight[:, :, None]
            JTJ = Jw.transpose(0, 2, 1) @ J
            g = (Jw.transpose(0, 2, 1) @ res[:, :, None])[:, :, 0]
            damping = lam[:, None, None] * (np.einsum("nkk->nk", JTJ)[:, :, None] * np.eye(k)) + 1e-12 * np.eye(k)
            step = -np.linalg.solve(JTJ + damping, g[:, :, None])[:, :, 0]
            trial = theta + step
            # Radius and blur stay in a physical range (a reflection through 0 would flip signs).
            trial[:, 2] = np.clip(trial[:, 2], 0.3, 2.0 * self.h)
            trial[:, 3] = np.clip(trial[:, 3], 0.2, self.max_blur)
            new_cost = np.sum(weight * (self.model(trial) - data) ** 2, axis=1)
            better = new_cost < cost
            theta = np.where(better[:, None], trial, theta)
            cost = np.where(better, new_cost, cost)
            lam = np.clip(np.where(better, lam * 0.3, lam * 10.0), 1e-9, 1e9)
            if np.all(np.abs(step[:, :2]).max(axis=1) < 1e-5):
                break
        return theta


def _own_pixels(fit: _Fit, cand: np.ndarray) -> np.ndarray:
    """``(N, P)`` weights for a first fit: each window's round disc less the pixels nearer another
    candidate's centre than its own, so a bead's fit does not spread over its neighbour."""
    weight = np.repeat(fit.round[None], len(cand), axis=0)
    d = np.abs(cand[:, None] - cand[None]).max(axis=2)
    for i, j in zip(*np.nonzero((d <= 2 * fit.h) & (d > 0))):
        ox, oy = cand[j, 1] - cand[i, 1], cand[j, 0] - cand[i, 0]
        nearer = (fit.dx - ox) ** 2 + (fit.dy - oy) ** 2 < fit.dx**2 + fit.dy**2
        weight[i, nearer] = 0.0
    return weight


# One detection band spans at most this ratio of diameters (the wrist sample's 2.5-8 px): one
# difference of Gaussians, one starting disc and one window fit blobs within it, but a disc much
# larger than the band's scale has no central maximum and is screened out (2 mm beads at the
# ankle sample's magnification, 14-18 px, found none in a 2.5-20 px range).
_BAND_RATIO = 3.2
# Band edges are 2.5 * 3.2**k px, so the default range is exactly one band.
_BAND_ANCHOR = 2.5


def _bands(diameter_px: tuple[float, float]) -> list[tuple[float, float]]:
    """The diameter range split into bands of ratio at most ``_BAND_RATIO``, edges at
    ``_BAND_ANCHOR * _BAND_RATIO**k``. Neighbours overlap by 20 % (a bead at an edge is fitted
    whole in one of them): bands below ``(2.5, 8)`` reach up into the next, bands above it reach
    down, so ``(2.5, 8)`` itself is searched as on its own."""
    lo, hi = (float(x) for x in diameter_px)
    k = int(np.floor(np.log(lo / _BAND_ANCHOR) / np.log(_BAND_RATIO) + 1e-9))
    out = []
    while _BAND_ANCHOR * _BAND_RATIO**k < hi:
        a, b = _BAND_ANCHOR * _BAND_RATIO**k, _BAND_ANCHOR * _BAND_RATIO ** (k + 1)
        a, b = (a / 1.2, b) if k > 0 else (a, 1.2 * b) if k < 0 else (a, b)
        out.append((max(a, lo), min(b, hi)))
        k += 1
    return out or [(lo, hi)]  # lo == hi on a band edge


def _screened(fit: _Fit, theta: np.ndarray, data: np.ndarray, options: BeadDetectOptions) -> np.ndarray:
    """Which starting fits pass the screen: a dip (positive depth) that scores and explains at
    least half of what an accepted bead must."""
    q = _quality(fit, theta, data)
    return (theta[:, 4] > 0) & (q["score"] >= 0.5 * options.min_score) & (q["explained"] >= 0.5 * options.min_explained)


def detect_beads(image: np.ndarray, mask: np.ndarray | None = None,
                 options: BeadDetectOptions = BeadDetectOptions(), name: str = "image") -> pd.DataFrame:
    """Find the beads in one X-ray frame and their sub-pixel centres.

    Args:
        image: ``(H, W)`` frame, integer or float (see ``options.image`` for its polarity).
        mask: ``(H, W)`` boolean, the pixels to search (e.g. the image intensifier's field of view);
            a bead is reported only when its whole fitting window lies in it. ``None``: the image.
        options: see :class:`BeadDetectOptions`.
        name: the frame's name in error messages.

    Returns:
        One row per bead, sorted by ``v`` then ``u``: ``u, v`` (px, OpenCV convention: pixel
        centres at integers, u = column, v = row down), ``diameter_px`` (the fitted profile's
        full width at half depth), ``blur_px`` (the edge's Gaussian sigma), ``contrast`` (``A``, in the fitted domain: ``-log`` units for
        intensity frames), ``score`` (``contrast / rms(residual)``) and ``explained`` (fraction of
        the bead's signal the disc explains). Empty when none is found.

    Raises:
        ValueError: not a 2D image, NaN/inf, or a mask of another shape or type.
    """
    img, m = _check_inputs(image, mask, name)
    a = _attenuation(img, options.image)
    tables = []
    # A wide range of sizes is searched band by band (see _BAND_RATIO); one bead found in two
    # overlapping bands is kept once (_unique: the better score).
    for band in _bands(options.diameter_px):
        opts = replace(options, diameter_px=band)
        fitted = _fit_candidates(a, m, opts)
        if fitted is not None:
            fit, cand, theta, data = fitted
            tables.append(_table(theta, cand, _accepted(fit, theta, data, opts), _quality(fit, theta, data)))
    if not tables:
        return pd.DataFrame({c: np.zeros(0) for c in DETECTION_COLUMNS})
    table = tables[0] if len(tables) == 1 else _unique(pd.concat(tables, ignore_index=True))
    return table.sort_values(["v", "u"]).reset_index(drop=True)


def _fit_candidates(a: np.ndarray, mask: np.ndarray | None, options: BeadDetectOptions
                    ) -> tuple[_Fit, np.ndarray, np.ndarray, np.ndarray] | None:
    """The fit at every candidate that passes the screening: the fit, the candidates ``(N, 2)``
    (row, col), the parameters ``(N, 5 + nb)`` and each window's data less its neighbours."""
    h = _window_radius(options)
    cand = _candidates(a, mask, options, h)
    if len(cand) == 0:
        return None
    offsets = np.arange(-h, h + 1)
    windows = a[cand[:, 0, None, None] + offsets[None, :, None], cand[:, 1, None, None] + offsets[None, None, :]]
    fit = _Fit(windows, h, options.background, options.diameter_px[1] / 2)
    # Start from a small blurred disc at the candidate pixel (the fit grows it).
    start = np.zeros((len(cand), 4))
    start[:, 2] = 0.25 * (options.diameter_px[0] + options.diameter_px[1]) / 2
    start[:, 3] = 0.8
    own = _own_pixels(fit, cand)
    theta = fit.linear(start, fit.data, own)
    # Most candidates are noise or tissue edges: the disc of the expected size, fitted at the
    # candidate pixel (linear least squares), already explains little of them.
    keep = _screened(fit, theta, fit.data, options)
    # A bead near the top of a wide band is over twice that small start disc, which then leaves
    # too much unexplained (2 mm beads of 14-18 px screened out): candidates the small disc
    # does not pass are screened again with discs of the band's middle and largest size.
    for radius in (0.25 * options.diameter_px[1], 0.4 * options.diameter_px[1]):
        redo = np.nonzero(~keep)[0]
        if len(redo) == 0:
            break
        bigger = start[redo].copy()
        bigger[:, 2] = radius
        th = fit.linear(bigger, fit.data[redo], own[redo])
        ok = _screened(fit, th, fit.data[redo], options)
        theta[redo[ok]] = th[ok]
        keep[redo[ok]] = True
    if not keep.any():
        return None
    cand, theta, own = cand[keep], theta[keep], own[keep]
    fit = _Fit(windows[keep], h, options.background, options.diameter_px[1] / 2)
    theta = fit.run(theta, fit.data, own, options.iterations)
    # Beads within a window of each other (pairs): refit each on its whole window less its
    # neighbours' fitted discs, in turns, so the fits agree.
    data = fit.data
    full = np.broadcast_to(fit.round, data.shape)
    for _ in range(3):
        data, refit = _without_neighbours(fit, theta, cand, _disc_like(theta, options))
        if len(refit) == 0:
            break
        theta[refit] = fit.run(theta[refit], data[refit], full[refit], options.iterations)
    return fit, cand, theta, data


def _quality(fit: _Fit, theta: np.ndarray, data: np.ndarray) -> dict[str, np.ndarray]:
    """Per fit: ``score`` (contrast / residual RMS near the bead) and ``explained`` (over the
    disc and its blurred rim, ``1 - sum(res^2) / sum((data - background)^2)``)."""
    p, _ = fit.profile(theta, with_jacobian=False)
    background = theta[:, 5:] @ fit.basis.T
    res = data - theta[:, 4:5] * p - background
    ex, ey = fit.dx[None] - theta[:, 0:1], fit.dy[None] - theta[:, 1:2]
    core = (ex**2 + ey**2) <= (theta[:, 2:3] + 2.0 * theta[:, 3:4]) ** 2
    # The residual near the bead (a background that bends far out in the window does not count).
    near = (ex**2 + ey**2) <= (theta[:, 2:3] + 2.0 * theta[:, 3:4] + 2.0) ** 2
    rms = np.sqrt(np.sum(near * res**2, axis=1) / np.maximum(np.sum(near, axis=1), 1))
    signal = np.sum(core * (data - background) ** 2, axis=1)
    explained = 1.0 - np.sum(core * res**2, axis=1) / np.maximum(signal, 1e-30)
    return {"score": theta[:, 4] / np.maximum(rms, 1e-12), "explained": explained}


def _fwhm(r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Full width at half depth of the blurred disc ``erfc((rho - r) / (sqrt(2) s)) / 2``: ``2 r`` for
    a sharp disc, ``1.35 s`` for a point; well determined where ``r`` and ``s`` are not apart."""
    peak = 0.5 * erfc(-r / (np.sqrt(2.0) * s))
    return 2.0 * (r + s * np.sqrt(2.0) * erfcinv(peak))


def _disc_like(theta: np.ndarray, opts: BeadDetectOptions) -> np.ndarray:
    """Fits of a dark disc of an accepted size near their candidate (whatever the residual)."""
    diameter = _fwhm(theta[:, 2], theta[:, 3])
    return ((theta[:, 4] > 0) & (np.hypot(theta[:, 0], theta[:, 1]) <= 2.0)
            & (diameter >= opts.diameter_px[0]) & (diameter <= opts.diameter_px[1]))


def _accepted(fit: _Fit, theta: np.ndarray, data: np.ndarray, opts: BeadDetectOptions) -> np.ndarray:
    q = _quality(fit, theta, data)
    return _disc_like(theta, opts) & (q["score"] >= opts.min_score) & (q["explained"] >= opts.min_explained)


def _without_neighbours(fit: _Fit, theta: np.ndarray, cand: np.ndarray, good: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Each window's data less the discs fitted in other windows (those flagged ``good``) that
    reach into it, and the indices of the windows that changed."""
    centres = cand[:, ::-1] + theta[:, :2]
    reach = 2.0 * fit.h
    d = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    # Two fits closer than a pixel are the same bead found twice (resolved by _unique).
    close = (d < reach) & (d > 1.0) & good[None]
    data = fit.data.copy()
    changed = np.nonzero(close.any(axis=1))[0]
    for i in changed:
        js = np.nonzero(close[i])[0]
        other = theta[js].copy()
        other[:, :2] += cand[js, ::-1] - cand[i, ::-1]  # their centres in window i
        p, _ = fit.profile(other, with_jacobian=False)
        data[i] -= np.sum(other[:, 4:5] * p, axis=0)
    return data, changed


def _table(theta: np.ndarray, cand: np.ndarray, good: np.ndarray, quality: dict[str, np.ndarray]) -> pd.DataFrame:
    table = pd.DataFrame({
        "u": cand[:, 1] + theta[:, 0], "v": cand[:, 0] + theta[:, 1], "diameter_px": _fwhm(theta[:, 2], theta[:, 3]),
        "blur_px": theta[:, 3], "contrast": theta[:, 4], "score": quality["score"],
        "explained": quality["explained"],
    })[good]
    return _unique(table).sort_values(["v", "u"]).reset_index(drop=True)


def _unique(table: pd.DataFrame) -> pd.DataFrame:
    """One row per bead: of candidates whose fits converged within a radius, the best score."""
    table = table.sort_values("score", ascending=False)
    xy = table[["u", "v"]].to_numpy()
    radius = table["diameter_px"].to_numpy() / 2
    keep: list[int] = []
    for i in range(len(table)):
        if all(np.hypot(*(xy[i] - xy[k])) > max(radius[i], radius[k]) for k in keep):
            keep.append(i)
    return table.iloc[keep]

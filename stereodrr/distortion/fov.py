"""An image intensifier's round field of view, found in a frame or a grid image.

Outside its round field an intensifier records nothing: the frame is black there (or white in an
inverted export), at most with a dim glow near the edge. Along rays from the image centre the
field ends where the frame falls to within a quarter of its range of that outside level and
stays there up to the border. A circle is fitted to those ends by consensus (RANSAC, then least
squares on the points that agree), so anatomy or a plate as dark as the outside at the field's
edge, and the image border that cuts the circle, only remove points from the fit.

Inside the edge the picture does not end at once: an intensifier's brightness falls off over a
band next to it (vignetting; on the Autoscoper wrist sample about 60 px of a 1760 px frame, air
there reads as up to 1 of line integral), which in ``-log`` looks like a bright ring of bone-like
width. :func:`falloff_margin` measures that band, so that what compares images with DRRs can
leave it out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

__all__ = ["FieldOfView", "field_of_view", "falloff_margin"]


@dataclass(frozen=True)
class FieldOfView:
    """An image intensifier's round field: centre ``(u, v)`` and radius in pixels (``radius`` is
    ``inf`` for a frame without one, a flat panel), and how far the usable mask stays inside it."""

    center: tuple[float, float]
    radius: float
    margin: float = 4.0

    @property
    def round(self) -> bool:
        return bool(np.isfinite(self.radius))

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """``(H, W)`` bool: pixels whose centre lies at least ``margin`` inside the field."""
        if not self.round:
            return np.ones(shape, dtype=bool)
        inner = self.radius - self.margin
        if inner < 0:  # a field no wider than its margin leaves nothing usable
            return np.zeros(shape, dtype=bool)
        v, u = np.ogrid[:shape[0], :shape[1]]
        return (u - self.center[0]) ** 2 + (v - self.center[1]) ** 2 <= inner ** 2


def _fit_circle(pts: np.ndarray) -> tuple[float, float, float]:
    """Least-squares circle through points (algebraic: ``u^2 + v^2 + a u + b v + c = 0``)."""
    u, v = pts[:, 0], pts[:, 1]
    A = np.c_[u, v, np.ones_like(u)]
    sol = np.linalg.lstsq(A, -(u * u + v * v), rcond=None)[0]
    cu, cv = -sol[0] / 2, -sol[1] / 2
    return cu, cv, float(np.sqrt(max(cu * cu + cv * cv - sol[2], 0.0)))


def _edge_points(a: np.ndarray, outside: float, level: float, n_rays: int = 720) -> np.ndarray:
    """``(N, 2)`` points ``(u, v)``: along rays from the image centre, the outermost place where the
    frame leaves the field for good (from more than ``level`` away from the outside level to
    within it, staying there up to the border). Rays through anatomy or a plate as dark as the
    outside stop short of the edge: they are the fit's outliers."""
    h, w = a.shape
    far = (np.abs(a - outside) > level).astype(np.float32)
    cu, cv = 0.5 * (w - 1), 0.5 * (h - 1)
    s = np.arange(0.0, math.hypot(w, h) / 2, 0.5, dtype=np.float32)
    theta = np.linspace(0.0, 2 * math.pi, n_rays, endpoint=False, dtype=np.float32)
    u = cu + s[None, :] * np.cos(theta)[:, None]
    v = cv + s[None, :] * np.sin(theta)[:, None]
    inside_image = (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    profile = cv2.remap(far, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    field = (profile > 0.5) & inside_image
    # The last sample in the field, when the ray then reaches the border outside it.
    last = field.shape[1] - 1 - np.argmax(field[:, ::-1], axis=1)
    n_in = inside_image.sum(axis=1)
    ok = field.any(axis=1) & (last < n_in - 2)
    k = last[ok]
    # Half way between the last field sample and the first outside one.
    return np.c_[u[ok, k] + 0.25 * np.cos(theta[ok]), v[ok, k] + 0.25 * np.sin(theta[ok])].astype(np.float64)


def _corners(a: np.ndarray) -> np.ndarray:
    """The pixels of the frame's four corner squares (a fiftieth of its side), where a round field
    leaves the outside level."""
    h, w = a.shape
    c = max(2, min(h, w) // 50)
    return np.concatenate([a[:c, :c].ravel(), a[:c, -c:].ravel(), a[-c:, :c].ravel(), a[-c:, -c:].ravel()])


def _frame_edge_points(a: np.ndarray, edge_level: float = 0.25) -> np.ndarray:
    """The edge points of one frame, none when its corners are not one uniform outside level;
    ``edge_level``: the field starts this fraction of the frame's spread from the outside level."""
    corners = _corners(a)
    outside = float(np.median(corners))
    lo, hi = np.percentile(a, [1, 99])
    spread = max(abs(hi - outside), abs(lo - outside))
    # A glow beyond the field's edge and dark anatomy at it both sit well below the field's levels.
    level = edge_level * spread
    if spread <= 0 or np.mean(np.abs(corners - outside) <= level) < 0.9:
        return np.zeros((0, 2))
    return _edge_points(a, outside, level)


def field_of_view(image: np.ndarray | Sequence[np.ndarray], margin: float = 4.0, seed: int = 0,
                  edge_level: float = 0.25) -> FieldOfView:
    """The round field of an image intensifier's frame (either polarity), or ``radius = inf``.

    Args:
        image: ``(H, W)`` frame or grid image, or several frames of one camera (the intensifier
            does not move within a trial: their edge points are fitted together, so anatomy
            hiding part of the edge in one frame is outvoted by the others).
        margin: pixels the usable mask keeps inside the fitted edge.
        seed: the consensus search's draws (the result does not depend on it in practice).
        edge_level: the field's pixels differ from the outside level by more than this fraction
            of the frame's spread (its 1st to 99th percentile from the outside level); lower it
            for a grid of bright holes whose plate is nearly as dark as the outside.

    Returns:
        :class:`FieldOfView`; ``radius = inf`` when the corners are not one uniform outside level
        or no circle explains most of the outline (a flat panel, a field larger than the frame).

    Raises:
        ValueError: not a 2D image of at least 16 x 16 pixels, or NaN pixels.
    """
    return fit_field_of_view(image, margin, seed, edge_level)[0]


def fit_field_of_view(image: np.ndarray | Sequence[np.ndarray], margin: float = 4.0, seed: int = 0,
                      edge_level: float = 0.25) -> tuple[FieldOfView, float]:
    """:func:`field_of_view` and the share of the rays' edge points its circle was fitted to (0
    without a round field): about 1 when the field's pixels stand out from the outside level all
    the way to the edge, less where something inside reads as outside at ``edge_level`` (anatomy,
    or a grid plate darker than the level: then the rays end at holes short of the edge)."""
    frames = [image] if isinstance(image, np.ndarray) and image.ndim != 3 else list(image)
    if not frames:
        raise ValueError("image: expected at least one frame")
    shape = np.shape(frames[0])
    parts = []
    for i, frame in enumerate(frames):
        a = np.asarray(frame)
        if a.ndim != 2 or min(a.shape) < 16 or a.shape != shape:
            raise ValueError(f"image {i}: expected a 2D frame of at least 16x16 pixels like the first {shape}, "
                             f"got shape {a.shape}")
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"image {i}: contains NaN or inf pixels")
        parts.append(_frame_edge_points(a, edge_level))
    h, w = shape
    flat = FieldOfView((0.5 * (w - 1), 0.5 * (h - 1)), math.inf, margin)
    pts = np.concatenate(parts)
    if len(pts) < 20:
        return flat, 0.0
    rng = np.random.default_rng(seed)
    best, best_in = None, 0
    for _ in range(200):
        cu, cv, r = _fit_circle(pts[rng.choice(len(pts), 3, replace=False)])
        if not (0.2 * min(h, w) < r < 2 * max(h, w)):
            continue
        n_in = int((np.abs(np.hypot(pts[:, 0] - cu, pts[:, 1] - cv) - r) < 2.0).sum())
        if n_in > best_in:
            best, best_in = (cu, cv, r), n_in
    if best is None:
        return flat, 0.0
    keep = np.abs(np.hypot(pts[:, 0] - best[0], pts[:, 1] - best[1]) - best[2]) < 2.0
    cu, cv, r = _fit_circle(pts[keep])
    angles = np.arctan2(pts[keep, 1] - cv, pts[keep, 0] - cu)
    coverage = len(np.unique(np.floor((angles + np.pi) / (2 * np.pi) * 36))) / 36
    # Anatomy may hide half the edge; a chance circle through other points collects a few percent.
    if keep.mean() < 0.25 or coverage < 0.3:
        return flat, 0.0
    return FieldOfView((float(cu), float(cv)), float(r), margin), float(keep.mean())


def falloff_margin(image: np.ndarray | Sequence[np.ndarray], field: FieldOfView, level: float = 0.97,
                   depth: float = 0.25) -> float:
    """How far inside the fitted edge the frames have recovered from the intensifier's brightness
    fall-off, in pixels: a margin for :class:`FieldOfView` that leaves the fall-off band out.

    Along 720 rays from the field's centre, each frame's distance from the outside level
    (smoothed by a Gaussian of 2 px) at ``d`` pixels inside the edge is divided by its value at
    ``depth`` times the radius inside; the median over rays and frames (anatomy that crosses a ray
    moves single ratios either way, the fall-off moves them all down) recovers to ``level`` at the
    margin and stays there. Rays that leave the image are not used.

    Args:
        image: ``(H, W)`` frame or several frames of one camera, either polarity.
        field: the camera's field (:func:`field_of_view`); without a round one its margin is returned.
        level: the ratio counted as recovered.
        depth: the reference depth and the largest margin, as a fraction of the radius.

    Returns:
        The margin: at least ``field.margin``, at most ``depth * field.radius``.
    """
    if not field.round:
        return field.margin
    frames = [image] if isinstance(image, np.ndarray) and image.ndim != 3 else list(image)
    reach = max(int(depth * field.radius), 1)
    d = np.arange(reach + 1, dtype=np.float32)
    theta = np.linspace(0.0, 2 * math.pi, 720, endpoint=False, dtype=np.float32)
    r = np.float32(field.radius) - d
    u = np.float32(field.center[0]) + r[None, :] * np.cos(theta)[:, None]
    v = np.float32(field.center[1]) + r[None, :] * np.sin(theta)[:, None]
    ratios = []
    for frame in frames:
        a = cv2.GaussianBlur(np.asarray(frame, dtype=np.float32), (0, 0), 2.0)
        h, w = a.shape
        outside = float(np.median(_corners(a)))
        on = ((u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)).all(axis=1)
        q = np.abs(cv2.remap(a, u[on], v[on], cv2.INTER_LINEAR) - outside)
        ref = q[:, -1:]
        ok = ref[:, 0] > 0
        ratios.append(q[ok] / ref[ok])
    ratio = np.concatenate(ratios) if ratios else np.zeros((0, reach + 1))
    if len(ratio) < 20:
        return field.margin
    low = np.nonzero(np.median(ratio, axis=0) < level)[0]
    return float(min(max(field.margin, low.max() + 1.0 if len(low) else 0.0), reach))

"""Input checks shared by the calibration stage: every array is validated once, at the public
boundary, and a bad one raises a ValueError naming the input and what was expected."""

from __future__ import annotations

import numpy as np


def as_points(name: str, points: object, dim: int, min_count: int = 1, purpose: str = "") -> np.ndarray:
    """``points`` as a finite float64 ``(N, dim)`` array with ``N >= min_count``.

    Raises:
        ValueError: wrong shape, NaN/inf (with the offending rows), or too few points.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[1] == 1:  # OpenCV's (N, 1, d) layout
        arr = arr[:, 0, :]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (N, {dim}), got {arr.shape}")
    bad = ~np.all(np.isfinite(arr), axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)[:10].tolist()
        raise ValueError(f"{name}: {int(bad.sum())} point(s) contain NaN or inf (rows {rows})")
    if len(arr) < min_count:
        why = f" for {purpose}" if purpose else ""
        raise ValueError(f"{name}: expected at least {min_count} points{why}, got {len(arr)}")
    return arr


def same_count(**arrays: np.ndarray) -> int:
    """The common length of the named arrays; raises naming each length when they differ."""
    counts = {k: len(v) for k, v in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ValueError("mismatched point counts: " + ", ".join(f"{k} has {n}" for k, n in counts.items()))
    return next(iter(counts.values()))


def hartley_normalization(points: np.ndarray) -> np.ndarray:
    """Similarity ``T`` ((d+1)x(d+1)) moving the centroid to the origin and scaling the mean
    distance to ``sqrt(d)`` (Hartley 1997), so the linear systems of F, DLT and triangulation
    are well conditioned.

    Args:
        points: ``(N, d)`` float64.

    Returns:
        ``(d+1, d+1)`` with ``x_n = T (x, 1)``.
    """
    d = points.shape[1]
    c = points.mean(axis=0)
    mean_dist = np.linalg.norm(points - c, axis=1).mean()
    if not mean_dist > 0:
        raise ValueError("points: all points coincide; expected a spread of points")
    s = np.sqrt(d) / mean_dist
    T = np.eye(d + 1)
    T[:d, :d] *= s
    T[:d, d] = -s * c
    return T


def apply_h(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a homogeneous transform ``T`` ((d+1)x(d+1)) to ``(N, d)`` points."""
    h = np.c_[points, np.ones(len(points))] @ T.T
    return h[:, :-1] / h[:, -1:]

"""Two-view geometry from known cameras: fundamental matrix, epipoles, epipolar lines.

Convention (Hartley-Zisserman): ``x2^T F x1 = 0`` for pixel coordinates ``x1`` in view 1 and
``x2`` in view 2 of the same world point; ``l2 = F x1`` is the epipolar line of ``x1`` in view 2
and ``l1 = F^T x2`` the line of ``x2`` in view 1. float64 numpy (calibration math).
"""

from __future__ import annotations

import numpy as np

from .camera import Camera, camera_center
from .se3 import skew

__all__ = ["fundamental_from_projections", "fundamental_from_cameras", "epipoles", "epipolar_lines"]


def fundamental_from_projections(P1: np.ndarray, P2: np.ndarray) -> np.ndarray:
    """``F = [e2]_x P2 P1^+`` with ``e2 = P2 C1`` (HZ eq. 9.1), scaled to unit Frobenius norm.

    Args:
        P1, P2: ``(3, 4)`` projection matrices of finite cameras.

    Returns:
        ``(3, 3)`` rank-2 fundamental matrix.
    """
    P1 = np.asarray(P1, dtype=np.float64)
    P2 = np.asarray(P2, dtype=np.float64)
    for name, P in (("P1", P1), ("P2", P2)):
        if P.shape != (3, 4) or not np.all(np.isfinite(P)):
            raise ValueError(f"{name}: expected a finite 3x4 projection matrix, got shape {P.shape}")
    # Camera centre of view 1: the right null vector of P1.
    C1 = np.linalg.svd(P1)[2][-1]
    e2 = P2 @ C1
    F = skew(e2) @ P2 @ np.linalg.pinv(P1)
    n = np.linalg.norm(F)
    if n < 1e-300:
        raise ValueError("fundamental matrix: the two cameras share their centre (zero baseline)")
    return F / n


def fundamental_from_cameras(cam1: Camera, cam2: Camera) -> np.ndarray:
    """Fundamental matrix ``F`` with ``x2^T F x1 = 0`` between two known cameras."""
    if np.allclose(camera_center(cam1.R, cam1.t), camera_center(cam2.R, cam2.t)):
        raise ValueError("fundamental matrix: the two cameras share their centre (zero baseline)")
    return fundamental_from_projections(cam1.P, cam2.P)


def epipoles(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epipoles as homogeneous 3-vectors: ``e1`` (``F e1 = 0``, in view 1) and ``e2`` (``F^T e2 = 0``).

    Scaled so the last coordinate is 1 when finite; an epipole at infinity (parallel views) keeps
    a zero last coordinate and unit norm.
    """
    F = np.asarray(F, dtype=np.float64)
    if F.shape != (3, 3) or not np.all(np.isfinite(F)):
        raise ValueError(f"F: expected a finite 3x3 matrix, got shape {F.shape}")
    U, _, Vt = np.linalg.svd(F)
    out = []
    for e in (Vt[-1], U[:, -1]):
        out.append(e / e[2] if abs(e[2]) > 1e-12 * np.abs(e).max() else e / np.linalg.norm(e))
    return out[0], out[1]


def epipolar_lines(F: np.ndarray, points: np.ndarray, which: int = 1) -> np.ndarray:
    """Epipolar lines ``(a, b, c)`` with ``a^2 + b^2 = 1``, so ``a u + b v + c`` is a signed
    distance in pixels.

    Args:
        F: ``(3, 3)`` with ``x2^T F x1 = 0``.
        points: ``(N, 2)`` pixel coordinates in view ``which``.
        which: 1 -> lines in view 2 (``F x1``); 2 -> lines in view 1 (``F^T x2``).

    Returns:
        ``(N, 3)``.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points: expected shape (N, 2), got {pts.shape}")
    if which not in (1, 2):
        raise ValueError(f"which: expected 1 or 2, got {which}")
    F = np.asarray(F, dtype=np.float64)
    if F.shape != (3, 3) or not np.all(np.isfinite(F)) or not np.any(F):
        raise ValueError(f"F: expected a finite non-zero 3x3 matrix, got shape {F.shape}")
    h = np.c_[pts, np.ones(len(pts))]
    lines = h @ (F.T if which == 1 else F)
    return lines / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)

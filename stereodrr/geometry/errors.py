"""Error measures shared by calibration and registration, defined once here.

- Rotation error: the angle of ``R_a R_b^T`` (the rotation taking ``b`` to ``a``), in degrees.
- Depth / in-plane split of a 3D error ``e`` along a unit viewing direction ``n``:
  ``depth = e . n`` (signed), ``in-plane = |e - (e . n) n|``.
- The viewing direction (depth axis) at a point ``X`` seen from sources ``S_v`` is the unit
  bisector of the rays ``X - S_v``: :func:`depth_directions`. The rig-level axis used for a
  volume's pose, :func:`mean_viewing_direction`, is the normalised sum of the principal rays --
  the same bisector at a point where every principal ray meets it (a factory rig's
  isocenter), and defined without a point for a rig read from a file.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .camera import Camera
from .rig import StereoRig
from .se3 import matrix_to_rotvec

__all__ = ["rotation_angle_deg", "depth_directions", "mean_viewing_direction", "split_depth_inplane"]


def rotation_angle_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle (degrees) of ``R_a R_b^T`` for two ``(3, 3)`` rotations."""
    return float(np.degrees(np.linalg.norm(matrix_to_rotvec(np.asarray(R_a) @ np.asarray(R_b).T))))


def depth_directions(cameras: Sequence[Camera], X: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit bisector of the viewing rays (source -> point) of all views at each of
    the points ``X (N, 3)`` (world mm)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 3:
        raise ValueError(f"X: expected shape (N, 3), got {X.shape}")
    d = sum((X - c.center) / np.linalg.norm(X - c.center, axis=1, keepdims=True) for c in cameras)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def mean_viewing_direction(rig: StereoRig) -> np.ndarray:
    """``(3,)`` unit vector ``n = sum_v d_v / |sum_v d_v|`` of the principal rays ``d_v``.

    Raises:
        ValueError: when the rays cancel (e.g. two opposed views), so no depth axis exists.
    """
    s = np.sum([cam.principal_ray for cam in rig.cameras.values()], axis=0)
    norm = float(np.linalg.norm(s))
    if norm < 1e-6 * len(rig):
        raise ValueError("rig: the principal rays cancel out; the mean viewing direction (depth axis) is undefined")
    return s / norm


def split_depth_inplane(error: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed depth ``e . n`` and in-plane magnitude ``|e - (e . n) n|`` of errors ``(N, 3)``
    along unit directions ``(N, 3)`` or one ``(3,)`` (normalised here); both ``(N,)`` mm."""
    e = np.asarray(error, dtype=np.float64)
    n = np.asarray(direction, dtype=np.float64)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    depth = np.sum(e * n, axis=-1)
    return depth, np.linalg.norm(e - depth[..., None] * n, axis=-1)

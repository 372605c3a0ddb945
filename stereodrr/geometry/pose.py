"""The rigid pose of a volume in the world frame, shared by every view of a rig.

Convention: a pose ``(r, tau)`` about the volume centre ``c`` moves each world point ``x`` of the
volume to::

    x' = R(r) (x - c) + c + tau        i.e.  T = [[R, c - R c + tau], [0, 1]]

with ``R(r)`` the rotation of the rotation vector ``r`` (radians; degrees in files and tables)
and ``tau`` a translation in world mm. The identity pose leaves the volume where its own
geometry puts it. Rotating about the centre decouples rotation from translation: a small
rotation moves the centre not at all.

A camera ``(R_c, t_c)`` sees the moved volume exactly as the camera ``E' = E T`` sees the
original one (``E = [[R_c, t_c], [0, 1]]``), since ``R_c x' + t_c = (E T) x``; in blocks
``R' = R_c R_p``, ``t' = R_c t_p + t_c`` with ``T = [[R_p, t_p], [0, 1]]``. The registration
therefore never resamples the volume: it moves the cameras.

File ``pose.json`` (schema ``stereodrr.pose/1``)::

    {"schema": "stereodrr.pose/1", "center": [x, y, z],
     "rotvec_deg": [rx, ry, rz], "translation_mm": [tx, ty, tz],
     "matrix": [[...4x4 world transform, informative...]]}

Reading accepts a rotation as ``rotvec_deg``, ``quaternion`` (w, x, y, z) or the ``matrix``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from numpy.typing import ArrayLike
from torch import Tensor

from ..fileio import atomic_write_text, read_json
from ._dual import numpy_or_torch
from .se3 import (
    compose,
    invert,
    matrix_to_rotvec,
    quaternion_to_matrix,
    rigid_matrix,
    rotate_about,
    rotvec_to_matrix,
    transform_points,
)

__all__ = ["POSE_SCHEMA", "RigidPose", "pose_matrix", "moved_extrinsics", "save_pose", "load_pose"]

POSE_SCHEMA = "stereodrr.pose/1"
"""Schema name of a pose file (``pose.json``, :func:`save_pose`)."""


@numpy_or_torch
def pose_matrix(rotation: Float[Tensor, "*batch 3 3"], translation: Float[Tensor, "*batch 3"],
                center: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 4 4"]:
    """World transform of a pose about ``center``: ``T = Trans(tau) . Rot_c(R)``.

    ``x' = R (x - c) + c + tau``. Differentiable in every argument.

    Args:
        rotation: ``(..., 3, 3)`` rotation matrices ``R``.
        translation: ``(..., 3)`` ``tau`` in mm.
        center: ``(..., 3)`` ``c`` in world mm.

    Returns:
        ``(..., 4, 4)``.
    """
    eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device).expand(rotation.shape)
    return compose(rigid_matrix(eye, translation), rotate_about(rotation, center))


@numpy_or_torch
def moved_extrinsics(R: Float[Tensor, "B 3 3"], t: Float[Tensor, "B 3"], T: Float[Tensor, "*b 4 4"]
                     ) -> tuple[Float[Tensor, "B 3 3"], Float[Tensor, "B 3"]]:
    """Extrinsics that see the original volume as ``(R, t)`` sees it moved by ``T``.

    ``E' = E T``, i.e. ``R' = R R_p``, ``t' = R t_p + t``.

    Args:
        R: ``(B, 3, 3)`` world-to-camera rotations.
        t: ``(B, 3)`` world-to-camera translations (mm).
        T: ``(4, 4)`` or ``(B, 4, 4)`` pose of the volume in the world.

    Returns:
        ``R' (B, 3, 3)``, ``t' (B, 3)``.
    """
    E = compose(rigid_matrix(R, t), T)
    return E[..., :3, :3], E[..., :3, 3]


def _vec(name: str, value: Any, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected {n} finite numbers, got {value!r}")
    return arr


@dataclass(frozen=True, eq=False)
class RigidPose:
    """A rigid pose of a volume about its centre (see the module docstring).

    Attributes:
        rotvec: ``(3,)`` rotation vector, radians.
        translation: ``(3,)`` ``tau`` in world mm.
        center: ``(3,)`` world mm, the volume's box centre (:attr:`Volume.center`).
    """

    rotvec: np.ndarray
    translation: np.ndarray
    center: np.ndarray

    def __post_init__(self) -> None:
        for name in ("rotvec", "translation", "center"):
            arr = _vec(name, getattr(self, name), 3)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        # Keep the angle in [0, pi] so equal poses have equal parameters.
        if np.linalg.norm(self.rotvec) > math.pi:
            object.__setattr__(self, "rotvec", matrix_to_rotvec(rotvec_to_matrix(self.rotvec)))

    @classmethod
    def identity(cls, center: ArrayLike) -> RigidPose:
        return cls(np.zeros(3), np.zeros(3), _vec("center", center, 3))

    @classmethod
    def from_degrees(cls, rotvec_deg: ArrayLike, translation_mm: ArrayLike,
                     center: ArrayLike) -> RigidPose:
        return cls(np.radians(_vec("rotvec_deg", rotvec_deg, 3)), _vec("translation", translation_mm, 3),
                   _vec("center", center, 3))

    @classmethod
    def from_matrix(cls, T: np.ndarray, center: ArrayLike) -> RigidPose:
        """Pose about ``center`` of a 4x4 world transform: ``tau = T c - c``."""
        T = np.asarray(T, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"pose matrix: expected a finite 4x4 array, got shape {T.shape}")
        R = T[:3, :3]
        if np.abs(R @ R.T - np.eye(3)).max() > 1e-6 or np.linalg.det(R) < 0 or np.abs(T[3] - [0, 0, 0, 1]).max() > 1e-9:
            raise ValueError("pose matrix: expected a rigid transform [[R, t], [0, 1]] with R a proper rotation")
        c = _vec("center", center, 3)
        return cls(matrix_to_rotvec(R), transform_points(T, c[None])[0] - c, c)

    @property
    def rotation(self) -> np.ndarray:
        """``(3, 3)`` rotation matrix."""
        return rotvec_to_matrix(self.rotvec)

    @property
    def rotvec_deg(self) -> np.ndarray:
        return np.degrees(self.rotvec)

    @property
    def angle_deg(self) -> float:
        return float(np.degrees(np.linalg.norm(self.rotvec)))

    @property
    def matrix(self) -> np.ndarray:
        """``(4, 4)`` world transform ``x' = R (x - c) + c + tau``."""
        return pose_matrix(self.rotation, self.translation, self.center)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Move world points ``(N, 3)`` with the volume."""
        return transform_points(self.matrix, np.asarray(points, dtype=np.float64))

    def inverse(self) -> RigidPose:
        """The pose that undoes this one (about the same centre)."""
        return RigidPose.from_matrix(invert(self.matrix), self.center)

    def compose(self, other: RigidPose) -> RigidPose:
        """``self`` after ``other`` (``T_self @ T_other``), about this pose's centre."""
        return RigidPose.from_matrix(compose(self.matrix, other.matrix), self.center)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": POSE_SCHEMA,
            "center": self.center.tolist(),
            "rotvec_deg": self.rotvec_deg.tolist(),
            "translation_mm": self.translation.tolist(),
            "matrix": self.matrix.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "pose") -> RigidPose:
        """Validate a ``stereodrr.pose/1`` dict; errors name ``source`` and the field."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object")
        if data.get("schema") != POSE_SCHEMA:
            raise ValueError(f"{source}: expected schema {POSE_SCHEMA!r}, got {data.get('schema')!r}")
        try:
            # A matrix is the whole transform whatever the centre it is parametrised about (the
            # origin when none is given); a rotation vector or quaternion means nothing without it.
            only_matrix = "matrix" in data and "rotvec_deg" not in data and "quaternion" not in data
            center = np.zeros(3) if only_matrix and "center" not in data else _vec("center", data.get("center"), 3)
            if "rotvec_deg" in data:
                translation: Any = data.get("translation_mm")  # None: _vec names the missing field
                pose = cls.from_degrees(data["rotvec_deg"], translation, center)
            elif "quaternion" in data:
                q = _vec("quaternion", data["quaternion"], 4)
                if np.linalg.norm(q) == 0:
                    raise ValueError("quaternion: expected a non-zero (w, x, y, z)")
                pose = cls(matrix_to_rotvec(quaternion_to_matrix(q)), _vec("translation", data.get("translation_mm"), 3),
                           center)
            elif "matrix" in data:
                pose = cls.from_matrix(np.asarray(data["matrix"], dtype=np.float64), center)
            else:
                raise ValueError("expected a rotation as 'rotvec_deg', 'quaternion' or 'matrix'")
            if "matrix" in data and ("rotvec_deg" in data or "quaternion" in data):
                # to_dict writes both; a matrix edited by hand (or by another tool) must not be ignored
                given = np.asarray(data["matrix"], dtype=np.float64)
                if given.shape != (4, 4) or not np.allclose(given, pose.matrix, rtol=0.0, atol=1e-6):
                    raise ValueError("'matrix' disagrees with the rotation and 'translation_mm' given beside it; "
                                     "give one description of the pose (or make them agree)")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: {exc}") from None
        return pose

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RigidPose):
            return NotImplemented
        return all(np.array_equal(getattr(self, k), getattr(other, k)) for k in ("rotvec", "translation", "center"))

    def __repr__(self) -> str:
        r, t = self.rotvec_deg, self.translation
        return (f"RigidPose(rotvec_deg=({r[0]:.3f}, {r[1]:.3f}, {r[2]:.3f}), "
                f"translation_mm=({t[0]:.3f}, {t[1]:.3f}, {t[2]:.3f}))")


def save_pose(pose: RigidPose, path: str | os.PathLike[str]) -> Path:
    """Write ``pose.json`` atomically (floats round-trip exactly)."""
    p = Path(path)
    atomic_write_text(p, json.dumps(pose.to_dict(), indent=2) + "\n")
    return p


def load_pose(path: str | os.PathLike[str]) -> RigidPose:
    """Read ``pose.json``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: malformed JSON (with line and column), wrong schema or a bad field.
    """
    return RigidPose.from_dict(read_json(path, "pose file"), str(path))

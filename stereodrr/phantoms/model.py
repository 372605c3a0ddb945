"""The phantom model: bodies (posed primitives of one material) and spherical markers, in a
phantom frame that a rigid ``pose`` places in the world (LPS, mm).

Poses are 4x4 rigid transforms ``x_out = R x_in + t`` (:mod:`stereodrr.geometry.se3`); at the
user-facing boundary a pose is given as a translation in mm and rotation angles in degrees
(:func:`rigid_pose`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ..geometry.se3 import compose, euler_to_matrix, is_rotation, rigid_matrix, transform_points
from .materials import Material
from .primitives import Primitive, Sphere

__all__ = ["Body", "Marker", "MarkerArrays", "Phantom", "rigid_pose", "MARKER_COLUMNS"]

# Columns of the ground-truth marker table (world mm).
MARKER_COLUMNS = ["marker_id", "x", "y", "z", "diameter_mm", "material"]
"""Columns of the ground-truth marker table (world mm)."""


def rigid_pose(rotation_deg: ArrayLike = (0.0, 0.0, 0.0), translation_mm: ArrayLike = (0.0, 0.0, 0.0),
               seq: str = "xyz") -> np.ndarray:
    """4x4 rigid transform from Euler angles in degrees and a translation in mm.

    ``x' = R x + t`` with ``R = euler_to_matrix(radians(rotation_deg), seq)``; the default
    ``"xyz"`` is extrinsic: rotate about the fixed x axis, then y, then z
    (``R = Rz Ry Rx``), then translate.
    """
    rot = np.asarray(rotation_deg, dtype=np.float64)
    t = np.asarray(translation_mm, dtype=np.float64)
    if rot.shape != (3,) or not np.all(np.isfinite(rot)):
        raise ValueError(f"rotation_deg: expected 3 finite angles in degrees, got {rotation_deg!r}")
    if t.shape != (3,) or not np.all(np.isfinite(t)):
        raise ValueError(f"translation: expected 3 finite numbers in mm, got {translation_mm!r}")
    return rigid_matrix(euler_to_matrix(np.radians(rot), seq), t)


def _check_pose(name: str, T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)) or not is_rotation(T[:3, :3]) or np.abs(T[3] - [0, 0, 0, 1]).max() > 1e-12:
        raise ValueError(f"{name}: expected a 4x4 rigid transform [[R, t], [0, 1]] with R a rotation")
    T = T.copy()
    T.setflags(write=False)
    return T


@dataclass(frozen=True, eq=False)
class Body:
    """A primitive of one material placed in the phantom frame.

    Attributes:
        shape: the primitive in its local frame.
        material: its material.
        pose: ``(4, 4)`` local -> phantom frame.
        name: optional label for messages and files.
    """

    shape: Primitive
    material: Material
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pose", _check_pose(f"body {self.name!r} pose", self.pose))

    def bounds(self, T: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lo (3,), hi (3,))`` tight axis-aligned bounds after the affine map ``T`` (4x4) of the
        phantom frame (e.g. to world, or to voxel indices)."""
        M = compose(np.eye(4) if T is None else np.asarray(T, dtype=np.float64), self.pose)
        half = self.shape.half_extent_under(M[:3, :3])
        return M[:3, 3] - half, M[:3, 3] + half


@dataclass(frozen=True, eq=False)
class Marker:
    """A spherical marker (e.g. a steel ball) in the phantom frame.

    Attributes:
        marker_id: unique integer id.
        center: ``(3,)`` centre in mm (phantom frame).
        diameter: ball diameter in mm.
        material: its material.
    """

    marker_id: int
    center: np.ndarray
    diameter: float
    material: Material

    def __post_init__(self) -> None:
        if isinstance(self.marker_id, bool) or int(self.marker_id) != self.marker_id:
            raise ValueError(f"marker id: expected an integer, got {self.marker_id!r}")
        c = np.asarray(self.center, dtype=np.float64)
        if c.shape != (3,) or not np.all(np.isfinite(c)):
            raise ValueError(f"marker {self.marker_id} center: expected 3 finite numbers (mm), got {self.center!r}")
        d = float(self.diameter)
        if not (np.isfinite(d) and d > 0):
            raise ValueError(f"marker {self.marker_id} diameter: expected a positive size in mm, got {self.diameter!r}")
        c.setflags(write=False)
        object.__setattr__(self, "marker_id", int(self.marker_id))
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "diameter", d)

    def as_body(self) -> Body:
        """The marker as a sphere body."""
        return Body(Sphere(self.diameter / 2), self.material, rigid_matrix(np.eye(3), self.center), f"marker {self.marker_id}")


@dataclass(frozen=True)
class MarkerArrays:
    """Markers as arrays for analytic rendering (world mm).

    Attributes:
        ids: ``(N,)`` int marker ids.
        centers: ``(N, 3)`` world centres in mm.
        diameters: ``(N,)`` mm.
        mu: ``(N,)`` true linear attenuation in 1/mm at the requested energy (never clipped).
    """

    ids: np.ndarray
    centers: np.ndarray
    diameters: np.ndarray
    mu: np.ndarray


@dataclass(frozen=True, eq=False)
class Phantom:
    """Bodies and markers in a phantom frame, placed in the world by ``pose``.

    Later bodies displace earlier ones where they overlap (painter's order); markers are painted
    last. Raises ``ValueError`` for duplicate marker ids or markers whose balls intersect.

    Attributes:
        name: short name (file stem).
        bodies: posed primitives, in painting order.
        markers: spherical markers (phantom frame).
        pose: ``(4, 4)`` phantom frame -> world (LPS mm).
        description: free text.
    """

    name: str
    bodies: tuple[Body, ...] = ()
    markers: tuple[Marker, ...] = ()
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bodies", tuple(self.bodies))
        object.__setattr__(self, "markers", tuple(self.markers))
        object.__setattr__(self, "pose", _check_pose("phantom pose", self.pose))
        if not self.bodies and not self.markers:
            raise ValueError(f"phantom {self.name!r}: expected at least one body or marker")
        ids = [m.marker_id for m in self.markers]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"phantom {self.name!r}: duplicate marker id(s) {dup}")
        if len(self.markers) > 1:
            c = np.stack([m.center for m in self.markers])
            r = np.array([m.diameter / 2 for m in self.markers])
            gap = np.linalg.norm(c[:, None] - c[None], axis=-1) - (r[:, None] + r[None])
            np.fill_diagonal(gap, np.inf)
            if gap.min() < 0:
                a, b = np.unravel_index(np.argmin(gap), gap.shape)
                raise ValueError(
                    f"phantom {self.name!r}: markers {ids[a]} and {ids[b]} overlap (centres "
                    f"{np.linalg.norm(c[a] - c[b]):.3f} mm apart, radii {r[a]:g} + {r[b]:g} mm)"
                )

    # ---- placement
    def with_pose(self, pose: np.ndarray) -> Phantom:
        """The same phantom with phantom->world ``pose`` (4x4) replaced."""
        return replace(self, pose=pose)

    def moved(self, T: np.ndarray) -> Phantom:
        """The phantom moved by the world transform ``T`` (4x4): new pose ``T @ pose``."""
        return replace(self, pose=compose(_check_pose("T", T), self.pose))

    # ---- markers (world)
    @property
    def marker_centers(self) -> np.ndarray:
        """``(N, 3)`` marker centres in world mm."""
        if not self.markers:
            return np.zeros((0, 3))
        return transform_points(self.pose, np.stack([m.center for m in self.markers]))

    def marker_table(self) -> pd.DataFrame:
        """Ground truth: one row per marker, columns ``marker_id, x, y, z, diameter_mm, material`` (world mm)."""
        c = self.marker_centers
        return pd.DataFrame({
            "marker_id": np.array([m.marker_id for m in self.markers], dtype=np.int64),
            "x": c[:, 0], "y": c[:, 1], "z": c[:, 2],
            "diameter_mm": np.array([m.diameter for m in self.markers], dtype=np.float64),
            "material": [m.material.name for m in self.markers],
        }, columns=MARKER_COLUMNS)

    def marker_arrays(self, energy_kev: float = 60.0) -> MarkerArrays:
        """Marker ids, world centres, diameters and true ``mu`` (1/mm) for analytic sphere rendering."""
        return MarkerArrays(
            ids=np.array([m.marker_id for m in self.markers], dtype=np.int64),
            centers=self.marker_centers,
            diameters=np.array([m.diameter for m in self.markers], dtype=np.float64),
            mu=np.array([m.material.mu(energy_kev) for m in self.markers], dtype=np.float64),
        )

    # ---- extent
    def bounds(self, include_markers: bool = True, T: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(lo (3,), hi (3,))`` axis-aligned bounds of the bodies (and markers) in world mm, or
        after the affine map ``T`` (4x4) of world coordinates."""
        T_all = self.pose if T is None else compose(np.asarray(T, dtype=np.float64), self.pose)
        items = list(self.bodies) + ([m.as_body() for m in self.markers] if include_markers else [])
        if not items:
            raise ValueError(f"phantom {self.name!r}: nothing to bound (no bodies, markers excluded)")
        boxes = [b.bounds(T_all) for b in items]
        return np.min([b[0] for b in boxes], axis=0), np.max([b[1] for b in boxes], axis=0)

"""Solid primitives in their own local frame (mm), centred on the local origin.

Each primitive is an implicit solid: ``g(p) <= 0`` inside. Every ``g`` here is a *distance
bound*: ``|g(p)|`` never exceeds the Euclidean distance from ``p`` to the surface (exact for the
sphere, box and circular cylinder; for ellipses ``g = (|p / r| - 1) min(r)``, a bound because
``|p / r|`` is ``1/min(r)``-Lipschitz). The voxelizer relies on it: a voxel whose centre has
``|g| >`` half the voxel diagonal is wholly inside or outside, and only the others are
supersampled.

Local frames: box, hollow box, ellipsoid: axes along the local x, y, z; cylinder: axis along
local z; hollow box: open face at local -z (the underside of a LEGO brick).
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Primitive", "Box", "HollowBox", "Cylinder", "Sphere", "Ellipsoid", "PRIMITIVES"]


def _positive(name: str, value: object, n: int, scalar_ok: bool = False) -> np.ndarray:
    """``n`` positive finite numbers (one number broadcasts when ``scalar_ok``), else ValueError naming ``name``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.full(0, np.nan)
    if scalar_ok and arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name}: expected {n} positive finite number(s) in mm, got {value!r}")
    return arr


def _box_sdf(p: Tensor, half: Tensor) -> Tensor:
    """Exact signed distance of an axis-aligned box ``|x| <= half``: ``|max(q, 0)| + min(max_i q_i, 0)``, ``q = |p| - half``."""
    q = p.abs() - half
    return torch.linalg.norm(q.clamp_min(0.0), dim=-1) + q.max(-1).values.clamp_max(0.0)


def _ellipse_bound(p: Tensor, radii: Tensor) -> Tensor:
    """Distance bound ``(|p / r| - 1) min(r)`` of an ellipse/ellipsoid with semi-axes ``r``."""
    return (torch.linalg.norm(p / radii, dim=-1) - 1.0) * radii.min()


class Primitive(abc.ABC):
    """Base class: ``implicit``, ``half_extent``, ``volume`` and the JSON ``params``."""

    kind: ClassVar[str]

    @abc.abstractmethod
    def implicit(self, p: Tensor) -> Tensor:
        """Distance bound ``g``, negative inside.

        Args:
            p: ``(..., 3)`` local coordinates in mm.

        Returns:
            ``(...)``.
        """

    def contains(self, p: Tensor) -> Tensor:
        """``(...)`` bool, True where ``p`` ``(..., 3)`` is inside or on the surface (``g <= 0``)."""
        return self.implicit(p) <= 0

    @abc.abstractmethod
    def half_extent(self) -> np.ndarray:
        """``(3,)`` half sizes of the local axis-aligned bounding box (mm)."""

    def half_extent_under(self, A: np.ndarray) -> np.ndarray:
        """``(3,)`` half sizes of the tight axis-aligned box of the solid mapped by the linear map
        ``A`` (3, 3), about the mapped centre. For a box: ``|A| @ half`` (element-wise ``|A|``)."""
        return np.abs(A) @ self.half_extent()

    @abc.abstractmethod
    def volume(self) -> float:
        """Exact solid volume in mm^3."""

    def curvature_size(self) -> float:
        """Smallest diameter of curvature of the surface in mm (``inf`` for flat faces only); the
        voxelizer supersamples small curved features more finely."""
        return math.inf

    @abc.abstractmethod
    def params(self) -> dict:
        """The phantom-file fields of this primitive (besides type, material and pose)."""


@dataclass(frozen=True)
class Box(Primitive):
    """Solid box of edge lengths ``size`` (x, y, z)."""

    size: Sequence[float]
    kind: ClassVar[str] = "box"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(_positive("size", self.size, 3).tolist()))

    def implicit(self, p: Tensor) -> Tensor:
        return _box_sdf(p, p.new_tensor(self.size) / 2)

    def contains(self, p: Tensor) -> Tensor:
        return (p.abs() <= p.new_tensor(self.size) / 2).all(-1)

    def half_extent(self) -> np.ndarray:
        return np.asarray(self.size) / 2

    def volume(self) -> float:
        return float(np.prod(self.size))

    def params(self) -> dict:
        return {"size": list(self.size)}


@dataclass(frozen=True)
class HollowBox(Primitive):
    """Box of outer ``size`` with side walls ``wall`` thick, a closed top ``top`` thick (+z) and
    an open bottom (-z): the shell of a LEGO brick. ``g = max(g_outer, -g_cavity)``."""

    size: Sequence[float] | np.ndarray
    wall: float
    top: float
    kind: ClassVar[str] = "hollow_box"

    def __post_init__(self) -> None:
        size = _positive("size", self.size, 3)
        wall = float(_positive("wall", self.wall, 1, True)[0])
        top = float(_positive("top", self.top, 1, True)[0])
        if 2 * wall >= min(size[0], size[1]):
            raise ValueError(f"wall: expected less than half the smaller side {min(size[:2]) / 2:g} mm, got {wall:g}")
        if top >= size[2]:
            raise ValueError(f"top: expected less than the height {size[2]:g} mm, got {top:g}")
        object.__setattr__(self, "size", tuple(size.tolist()))
        object.__setattr__(self, "wall", wall)
        object.__setattr__(self, "top", top)

    def implicit(self, p: Tensor) -> Tensor:
        sx, sy, sz = self.size
        # The cavity reaches from below the bottom face (open) up to the underside of the top.
        lo, hi = -1.5 * sz, sz / 2 - self.top
        cav_half = p.new_tensor([sx / 2 - self.wall, sy / 2 - self.wall, (hi - lo) / 2])
        cav_centre = p.new_tensor([0.0, 0.0, (hi + lo) / 2])
        return torch.maximum(_box_sdf(p, p.new_tensor(self.size) / 2), -_box_sdf(p - cav_centre, cav_half))

    def contains(self, p: Tensor) -> Tensor:
        sx, sy, sz = self.size
        outer = (p.abs() <= p.new_tensor(self.size) / 2).all(-1)
        cavity = ((p[..., 0].abs() < sx / 2 - self.wall) & (p[..., 1].abs() < sy / 2 - self.wall)
                  & (p[..., 2] < sz / 2 - self.top))
        return outer & ~cavity

    def half_extent(self) -> np.ndarray:
        return np.asarray(self.size) / 2

    def volume(self) -> float:
        sx, sy, sz = self.size
        return float(sx * sy * sz - (sx - 2 * self.wall) * (sy - 2 * self.wall) * (sz - self.top))

    def params(self) -> dict:
        return {"size": list(self.size), "wall": self.wall, "top": self.top}


@dataclass(frozen=True)
class Cylinder(Primitive):
    """Cylinder along local z of ``height``, circular (``radius`` one number) or elliptic
    (``radius`` = (rx, ry)); ``inner_radius > 0`` makes it a tube (a circular bore along z)."""

    radius: float | Sequence[float]
    height: float
    inner_radius: float = 0.0
    kind: ClassVar[str] = "cylinder"

    def __post_init__(self) -> None:
        r = _positive("radius", self.radius, 2, True)
        h = float(_positive("height", self.height, 1, True)[0])
        ri = float(self.inner_radius)
        if not (np.isfinite(ri) and 0 <= ri < r.min()):
            raise ValueError(f"inner_radius: expected 0 <= inner_radius < radius {r.min():g} mm, got {self.inner_radius}")
        object.__setattr__(self, "radius", float(r[0]) if r[0] == r[1] else tuple(r.tolist()))
        object.__setattr__(self, "height", h)
        object.__setattr__(self, "inner_radius", ri)

    @property
    def radii(self) -> np.ndarray:
        return np.broadcast_to(np.asarray(self.radius, dtype=np.float64), (2,)).copy()

    def implicit(self, p: Tensor) -> Tensor:
        rx, ry = self.radii
        rho = torch.linalg.norm(p[..., :2], dim=-1)
        radial = rho - rx if rx == ry else _ellipse_bound(p[..., :2], p.new_tensor([rx, ry]))
        if self.inner_radius > 0:
            radial = torch.maximum(radial, self.inner_radius - rho)
        d = torch.stack([radial, p[..., 2].abs() - self.height / 2], -1)
        # Exact for a circular cylinder; a bound otherwise (both components are bounds).
        return torch.linalg.norm(d.clamp_min(0.0), dim=-1) + d.max(-1).values.clamp_max(0.0)

    def contains(self, p: Tensor) -> Tensor:
        rx, ry = self.radii
        rho2 = p[..., 0].square() / rx**2 + p[..., 1].square() / ry**2
        inside = (rho2 <= 1.0) & (p[..., 2].abs() <= self.height / 2)
        if self.inner_radius > 0:
            inside &= p[..., 0].square() + p[..., 1].square() >= self.inner_radius**2
        return inside

    def half_extent(self) -> np.ndarray:
        rx, ry = self.radii
        return np.array([rx, ry, self.height / 2])

    def half_extent_under(self, A: np.ndarray) -> np.ndarray:
        # An elliptic disc of semi-axes (rx, ry) spans sqrt((A_i0 rx)^2 + (A_i1 ry)^2) along axis i.
        rx, ry = self.radii
        return np.hypot(A[:, 0] * rx, A[:, 1] * ry) + np.abs(A[:, 2]) * self.height / 2

    def volume(self) -> float:
        rx, ry = self.radii
        return float(math.pi * (rx * ry - self.inner_radius**2) * self.height)

    def curvature_size(self) -> float:
        rx, ry = sorted(self.radii)
        size = 2.0 * rx**2 / ry
        return min(size, 2.0 * self.inner_radius) if self.inner_radius > 0 else size

    def params(self) -> dict:
        out = {"radius": self.radius if np.ndim(self.radius) == 0 else list(self.radius),  # type: ignore[arg-type]
               "height": self.height}
        if self.inner_radius > 0:
            out["inner_radius"] = self.inner_radius
        return out


@dataclass(frozen=True)
class Sphere(Primitive):
    """Ball of ``radius``; ``g = |p| - r`` (exact)."""

    radius: float
    kind: ClassVar[str] = "sphere"

    def __post_init__(self) -> None:
        object.__setattr__(self, "radius", float(_positive("radius", self.radius, 1, True)[0]))

    def implicit(self, p: Tensor) -> Tensor:
        return torch.linalg.norm(p, dim=-1) - self.radius

    def contains(self, p: Tensor) -> Tensor:
        return p.square().sum(-1) <= self.radius**2

    def half_extent(self) -> np.ndarray:
        return np.full(3, self.radius)

    def half_extent_under(self, A: np.ndarray) -> np.ndarray:
        return np.linalg.norm(A, axis=1) * self.radius

    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radius**3

    def curvature_size(self) -> float:
        return 2.0 * self.radius

    def params(self) -> dict:
        return {"radius": self.radius}


@dataclass(frozen=True)
class Ellipsoid(Primitive):
    """Ellipsoid with semi-axes ``radii`` along local x, y, z."""

    radii: Sequence[float]
    kind: ClassVar[str] = "ellipsoid"

    def __post_init__(self) -> None:
        object.__setattr__(self, "radii", tuple(_positive("radii", self.radii, 3).tolist()))

    def implicit(self, p: Tensor) -> Tensor:
        return _ellipse_bound(p, p.new_tensor(self.radii))

    def contains(self, p: Tensor) -> Tensor:
        return (p / p.new_tensor(self.radii)).square().sum(-1) <= 1.0

    def half_extent(self) -> np.ndarray:
        return np.asarray(self.radii)

    def half_extent_under(self, A: np.ndarray) -> np.ndarray:
        # Support function of an ellipsoid: the extent along e_i is |diag(r) A^T e_i|.
        return np.linalg.norm(A * np.asarray(self.radii)[None, :], axis=1)

    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * float(np.prod(self.radii))

    def curvature_size(self) -> float:
        r = sorted(self.radii)
        return 2.0 * r[0] ** 2 / r[2]  # smallest radius of curvature, b^2 / a at the end of the major axis

    def params(self) -> dict:
        return {"radii": list(self.radii)}


PRIMITIVES: dict[str, type[Primitive]] = {c.kind: c for c in (Box, HollowBox, Cylinder, Sphere, Ellipsoid)}
"""Primitive shapes by their ``kind`` in a phantom definition."""

"""X-ray cameras in the OpenCV / Hartley-Zisserman pinhole convention.

The focal spot is the camera centre. A world point ``X`` (LPS, mm) maps to the camera frame by
``x_cam = R @ X + t`` and to pixels by ``x ~ K @ x_cam``, so ``P = K [R | t]``. The camera's +z
axis points from the source towards the detector, which lies at ``z = SDD``;
``K = [[SDD/du, s, cu], [0, SDD/dv, cv], [0, 0, 1]]``. Pixel centres sit at integer ``(u, v)``,
``u`` the column and ``v`` the row of an ``(H, W)`` image.

The formulas live in the functional core (torch, batched, differentiable; numpy input runs the
same code in float64). :class:`Camera` is a thin float64 container that calls them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence, TypeGuard

import numpy as np
import scipy.linalg
import torch
from jaxtyping import Float
from numpy.typing import ArrayLike
from torch import Tensor

from ._dual import numpy_or_torch
from .se3 import is_rotation

__all__ = [
    "Camera",
    "oversampled_camera",
    "intrinsic_matrix",
    "projection_matrix",
    "project_points",
    "camera_center",
    "pixel_to_ray",
    "decompose_projection",
    "look_at_rotation",
    "stack_cameras",
    "crop_camera",
]


# --------------------------------------------------------------------------- functional core
@numpy_or_torch
def intrinsic_matrix(sdd: Float[Tensor, "*batch"], pixel_spacing: Float[Tensor, "*batch 2"],
                     principal_point: Float[Tensor, "*batch 2"]) -> Float[Tensor, "*batch 3 3"]:
    """``K = [[SDD/du, 0, cu], [0, SDD/dv, cv], [0, 0, 1]]``.

    Args:
        sdd: ``(...)`` source-to-detector distance in mm.
        pixel_spacing: ``(..., 2)`` detector pitch ``(du, dv)`` in mm.
        principal_point: ``(..., 2)`` ``(cu, cv)`` in pixels.

    Returns:
        ``(..., 3, 3)``.
    """
    z = torch.zeros_like(sdd)
    o = torch.ones_like(sdd)
    fu, fv = sdd / pixel_spacing[..., 0], sdd / pixel_spacing[..., 1]
    cu, cv = principal_point[..., 0], principal_point[..., 1]
    return torch.stack(
        [torch.stack([fu, z, cu], -1), torch.stack([z, fv, cv], -1), torch.stack([z, z, o], -1)], -2
    )


@numpy_or_torch
def projection_matrix(K: Float[Tensor, "*batch 3 3"], R: Float[Tensor, "*batch 3 3"],
                      t: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 4"]:
    """``P = K [R | t]``.

    Args:
        K: ``(..., 3, 3)``; R: ``(..., 3, 3)``; t: ``(..., 3)``.

    Returns:
        ``(..., 3, 4)``.
    """
    return K @ torch.cat([R, t[..., :, None]], -1)


@numpy_or_torch
def project_points(P: Float[Tensor, "*batch 3 4"], points: Float[Tensor, "*batch N 3"]
                   ) -> tuple[Float[Tensor, "*batch N 2"], Float[Tensor, "*batch N"]]:
    """Project world points to pixels: ``(u, v, 1) ~ P (X, 1)``.

    The depth is the distance of the point from the source along the principal axis (``z_cam``
    in mm), computed so that any scaling of ``P`` (including by -1) gives the same value.

    Args:
        P: ``(..., 3, 4)`` projection matrices.
        points: ``(..., N, 3)`` world points in mm.

    Returns:
        uv: ``(..., N, 2)`` pixel coordinates; depth: ``(..., N)`` in mm (negative behind the source).
    """
    x = points @ P[..., :3, :3].transpose(-1, -2) + P[..., None, :, 3]
    w = x[..., 2]
    m3 = P[..., 2, :3]
    scale = torch.linalg.norm(m3, dim=-1) * torch.sign(torch.linalg.det(P[..., :3, :3]))
    return x[..., :2] / w[..., None], w / scale[..., None]


@numpy_or_torch
def camera_center(R: Float[Tensor, "*batch 3 3"], t: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
    """Source (focal spot) position in world mm, ``C = -R^T t``.

    Args:
        R: ``(..., 3, 3)``; t: ``(..., 3)``.

    Returns:
        ``(..., 3)``.
    """
    return -(R.transpose(-1, -2) @ t[..., :, None])[..., 0]


@numpy_or_torch
def pixel_to_ray(K: Float[Tensor, "*batch 3 3"], R: Float[Tensor, "*batch 3 3"], t: Float[Tensor, "*batch 3"],
                 uv: Float[Tensor, "*batch N 2"]) -> tuple[Float[Tensor, "*batch N 3"], Float[Tensor, "*batch N 3"]]:
    """Back-project pixels to world rays from the source: ``d ~ R^T K^-1 (u, v, 1)``.

    Args:
        K: ``(..., 3, 3)``; R: ``(..., 3, 3)``; t: ``(..., 3)``.
        uv: ``(..., N, 2)`` pixel coordinates.

    Returns:
        origin: ``(..., N, 3)`` the source position repeated per ray;
        direction: ``(..., N, 3)`` unit vectors in world, pointing from source to detector.
    """
    h = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)
    d_cam = torch.linalg.solve_triangular(K, h.transpose(-1, -2), upper=True)
    d = d_cam.transpose(-1, -2) @ R  # (R^T d_cam)^T, contiguous: the norm below is 20x faster on it
    d = d / torch.linalg.norm(d, dim=-1, keepdim=True)
    origin = camera_center(R, t)[..., None, :].expand(d.shape)
    return origin, d


def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``P`` (3x4, any scale or sign) into ``K, R, t`` with ``P ~ K [R | t]``.

    RQ decomposition of the left 3x3 block; signs are fixed so that ``K`` has a positive
    diagonal with ``K[2, 2] = 1`` and ``R`` is a proper rotation (det +1). float64, numpy only.

    Args:
        P: ``(3, 4)``.

    Returns:
        K ``(3, 3)``, R ``(3, 3)``, t ``(3,)``.

    Raises:
        ValueError: if ``P`` is not a finite 3x4 matrix with an invertible left 3x3 block.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (3, 4) or not np.all(np.isfinite(P)):
        raise ValueError(f"projection matrix: expected a finite 3x4 array, got shape {P.shape}")
    M = P[:, :3]
    det = np.linalg.det(M)
    if abs(det) <= 1e-12 * np.linalg.norm(M) ** 3:
        raise ValueError("projection matrix: its left 3x3 block is singular (camera at infinity?)")
    if det < 0:  # P is defined up to scale: pick the sign that makes det(K R) > 0
        P = -P
        M = P[:, :3]
    K, R = scipy.linalg.rq(M)
    D = np.diag(np.sign(np.diag(K)))
    K, R = K @ D, D @ R  # D @ D = I keeps K @ R unchanged
    t = np.linalg.solve(K, P[:, 3])
    K = K / K[2, 2]
    K[1, 0] = K[2, 0] = K[2, 1] = 0.0
    return K, R, t


@numpy_or_torch
def look_at_rotation(source: Float[Tensor, "*batch 3"], target: Float[Tensor, "*batch 3"],
                     up: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation ``R`` of a camera at ``source`` whose principal axis (+z) points at ``target``.

    The image +v axis (rows, downwards) points opposite to ``up`` projected onto the image
    plane, so ``up`` appears at the top of the image; ``x = y x z`` completes a right-handed
    camera frame.

    Args:
        source: ``(..., 3)``; target: ``(..., 3)``; up: ``(..., 3)`` world vectors.

    Returns:
        ``(..., 3, 3)`` world-to-camera rotation (rows are the camera axes in world).
    """
    z = target - source
    z = z / torch.linalg.norm(z, dim=-1, keepdim=True)
    y = -(up - (up * z).sum(-1, keepdim=True) * z)
    y = y / torch.linalg.norm(y, dim=-1, keepdim=True)
    x = torch.linalg.cross(y, z, dim=-1)
    return torch.stack([x, y, z], -2)


# --------------------------------------------------------------------------- container
def _as_matrix(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or inf")
    return arr


def _is_number(x: object) -> TypeGuard[int | float | np.integer | np.floating]:
    """An int or float (Python's or NumPy's), not a bool or text: what a rig file's numbers may be."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def _is_count(n: object) -> bool:
    """A positive whole number (an int, or a float such as ``512.0`` that JSON or NumPy gave)."""
    return _is_number(n) and bool(np.isfinite(n) and int(n) == n and n > 0)


@dataclass(frozen=True, eq=False)
class Camera:
    """One X-ray view: intrinsics ``K``, world-to-camera pose ``R, t`` and the detector.

    Attributes:
        K: ``(3, 3)`` intrinsics in pixels (upper triangular, positive diagonal, ``K[2,2] = 1``).
        R: ``(3, 3)`` world-to-camera rotation (proper).
        t: ``(3,)`` world-to-camera translation in mm.
        width, height: detector size in pixels (image arrays are ``(height, width)``).
        pixel_spacing: ``(du, dv)`` detector pitch in mm.
        sdd: source-to-detector distance in mm; defaults (NaN or None) to ``K[0,0] * du``.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    pixel_spacing: tuple[float, float] = (1.0, 1.0)
    sdd: float = field(default=float("nan"))

    def __post_init__(self) -> None:
        K = _as_matrix("K", self.K, (3, 3))
        R = _as_matrix("R", self.R, (3, 3))
        t = _as_matrix("t", self.t, (3,))
        if abs(K[1, 0]) + abs(K[2, 0]) + abs(K[2, 1]) > 1e-9 * np.abs(K).max():
            raise ValueError(f"K: expected an upper-triangular intrinsic matrix, got {K.tolist()}")
        if K[2, 2] <= 0 or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"K: expected a positive diagonal, got {np.diag(K).tolist()}")
        K = K / K[2, 2]
        if not is_rotation(R):
            raise ValueError(
                "R: expected a proper rotation (R @ R.T = I, det R = +1), got "
                f"det={np.linalg.det(R):.6g}, |R R^T - I|max={np.abs(R @ R.T - np.eye(3)).max():.3g}"
            )
        if not all(_is_count(n) for n in (self.width, self.height)):
            raise ValueError(f"detector size: expected positive integers, got {self.width!r} x {self.height!r}")
        try:
            if isinstance(self.pixel_spacing, (str, bytes)):
                raise TypeError
            du, dv = (float(v) for v in np.broadcast_to(np.asarray(self.pixel_spacing, float), (2,)))
        except (ValueError, TypeError):
            du = dv = math.nan
        if not (du > 0 and dv > 0 and np.isfinite(du) and np.isfinite(dv)):
            raise ValueError(f"pixel_spacing: expected one or two positive numbers (mm), got {self.pixel_spacing!r}")
        given = self.sdd if self.sdd is not None else math.nan  # None (JSON null) as NaN: the default
        sdd = math.nan if not _is_number(given) else float(K[0, 0] * du) if np.isnan(given) else float(given)
        if not (sdd > 0 and np.isfinite(sdd)):
            raise ValueError(f"sdd: expected a positive distance in mm, got {self.sdd!r}")
        for name, value in (("K", K), ("R", R), ("t", t)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "pixel_spacing", (du, dv))
        object.__setattr__(self, "sdd", sdd)

    # ---- constructors
    @classmethod
    def from_detector(
        cls,
        sdd: float,
        pixel_spacing: float | Sequence[float],
        width: int,
        height: int,
        principal_offset_mm: Sequence[float] = (0.0, 0.0),
        R: np.ndarray | None = None,
        t: np.ndarray | None = None,
    ) -> Camera:
        """Camera from the physical detector.

        The principal point is the detector centre ``((W-1)/2, (H-1)/2)`` shifted by
        ``principal_offset_mm`` (along +u, +v, in mm).
        """
        du, dv = np.broadcast_to(np.asarray(pixel_spacing, dtype=np.float64), (2,))
        if not (du > 0 and dv > 0):
            raise ValueError(f"pixel_spacing: expected positive mm, got {pixel_spacing}")
        off = _as_matrix("principal_offset_mm", principal_offset_mm, (2,))
        pp = np.array([(width - 1) / 2 + off[0] / du, (height - 1) / 2 + off[1] / dv])
        K = intrinsic_matrix(np.asarray(sdd, dtype=np.float64), np.array([du, dv]), pp)
        return cls(
            K=K,
            R=np.eye(3) if R is None else R,
            t=np.zeros(3) if t is None else t,
            width=width,
            height=height,
            pixel_spacing=(du, dv),
            sdd=sdd,
        )

    @classmethod
    def from_projection(
        cls,
        P: np.ndarray,
        width: int,
        height: int,
        pixel_spacing: float | Sequence[float] = 1.0,
        sdd: float | None = None,
    ) -> Camera:
        """Camera from a 3x4 projection matrix (any scale), decomposed by RQ."""
        K, R, t = decompose_projection(P)
        du, dv = np.broadcast_to(np.asarray(pixel_spacing, dtype=np.float64), (2,))
        return cls(K=K, R=R, t=t, width=width, height=height, pixel_spacing=(du, dv),
                   sdd=float("nan") if sdd is None else sdd)

    @classmethod
    def look_at(
        cls,
        source: ArrayLike,
        target: ArrayLike,
        sdd: float,
        pixel_spacing: float | Sequence[float],
        width: int,
        height: int,
        up: ArrayLike = (0.0, 0.0, 1.0),
        principal_offset_mm: ArrayLike = (0.0, 0.0),
    ) -> Camera:
        """Camera with its focal spot at ``source`` and its principal ray through ``target``.

        ``up`` (world) appears towards the top of the image (default +z, superior in LPS).
        """
        src = _as_matrix("source", source, (3,))
        tgt = _as_matrix("target", target, (3,))
        upv = _as_matrix("up", up, (3,))
        d = tgt - src
        if np.linalg.norm(d) == 0:
            raise ValueError("look_at: source and target coincide")
        if np.linalg.norm(np.cross(d, upv)) < 1e-9 * np.linalg.norm(d) * max(np.linalg.norm(upv), 1e-300):
            raise ValueError("look_at: 'up' is parallel to the viewing direction")
        R = look_at_rotation(src, tgt, upv)
        return cls.from_detector(sdd, pixel_spacing, width, height, tuple(np.asarray(principal_offset_mm, dtype=np.float64)),
                                 R=R, t=-R @ src)

    def with_pose(self, R: np.ndarray, t: np.ndarray) -> Camera:
        """The same detector and intrinsics with another pose."""
        return Camera(self.K, R, t, self.width, self.height, self.pixel_spacing, self.sdd)

    # ---- derived quantities
    @property
    def P(self) -> np.ndarray:
        """``(3, 4)`` projection matrix ``K [R | t]``."""
        return projection_matrix(self.K, self.R, self.t)

    @property
    def center(self) -> np.ndarray:
        """``(3,)`` source position in world mm."""
        return camera_center(self.R, self.t)

    @property
    def principal_ray(self) -> np.ndarray:
        """``(3,)`` unit world direction of the camera's +z axis (source towards detector)."""
        return self.R[2].copy()

    @property
    def principal_point(self) -> np.ndarray:
        """``(2,)`` ``(cu, cv)`` in pixels."""
        return self.K[:2, 2].copy()

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points ``(N, 3)`` mm -> pixels ``(N, 2)`` and depth along the axis ``(N,)`` mm."""
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points: expected shape (N, 3), got {pts.shape}")
        return project_points(self.P, pts)

    def pixel_to_ray(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(N, 2)`` -> world rays: origins ``(N, 3)`` (the source) and unit directions ``(N, 3)``."""
        uv = np.asarray(uv, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"uv: expected shape (N, 2), got {uv.shape}")
        return pixel_to_ray(self.K, self.R, self.t, uv)

    def in_image(self, uv: np.ndarray) -> np.ndarray:
        """``(N,)`` True where pixel coordinates fall on the detector (pixel edges at -0.5, W-0.5)."""
        uv = np.asarray(uv, dtype=np.float64)
        if uv.ndim != 2 or uv.shape[1] != 2:
            raise ValueError(f"uv: expected shape (N, 2), got {uv.shape}")
        return (
            (uv[:, 0] >= -0.5) & (uv[:, 0] <= self.width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= self.height - 0.5)
        )

    def to_torch(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        """``(K (3,3), R (3,3), t (3,))`` as tensors for the differentiable renderer."""
        return tuple(torch.as_tensor(np.array(a), dtype=dtype, device=device) for a in (self.K, self.R, self.t))  # type: ignore[return-value]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return (
            np.array_equal(self.K, other.K)
            and np.array_equal(self.R, other.R)
            and np.array_equal(self.t, other.t)
            and (self.width, self.height, self.pixel_spacing, self.sdd)
            == (other.width, other.height, other.pixel_spacing, other.sdd)
        )

    def __repr__(self) -> str:
        c = self.center
        return (
            f"Camera({self.width}x{self.height} px, pitch {self.pixel_spacing[0]:g}x{self.pixel_spacing[1]:g} mm, "
            f"SDD {self.sdd:g} mm, source at ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) mm)"
        )


def stack_cameras(cameras: Sequence[Camera], device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32
                  ) -> tuple[Float[Tensor, "V 3 3"], Float[Tensor, "V 3 3"], Float[Tensor, "V 3"]]:
    """The batched tensor form of views: ``K (V, 3, 3)``, ``R (V, 3, 3)``, ``t (V, 3)`` in the
    order given (what :func:`stereodrr.render.drr` and the registration take)."""
    cams = list(cameras)
    if not cams or not all(isinstance(c, Camera) for c in cams):
        raise ValueError("cameras: expected a non-empty sequence of Cameras")
    K, R, t = zip(*(c.to_torch(device, dtype) for c in cams))
    return torch.stack(K), torch.stack(R), torch.stack(t)


def oversampled_camera(camera: Camera, factor: int) -> Camera:
    """The camera whose ``factor x factor`` pixels tile each pixel of ``camera``: the same pose and
    field, ``factor`` times the pixels per axis at ``1 / factor`` the pitch. A point projecting to
    ``(u, v)`` in ``camera`` projects to ``factor (u, v) + (factor - 1) / 2`` (pixel centres at
    integers), so fine pixels ``factor u .. factor u + factor - 1`` are coarse pixel ``u``."""
    if isinstance(factor, bool) or not (np.isfinite(factor) and int(factor) == factor and factor >= 1):
        raise ValueError(f"factor: expected a positive integer, got {factor!r}")
    s = int(factor)
    if s == 1:
        return camera
    S = np.array([[s, 0.0, 0.5 * (s - 1)], [0.0, s, 0.5 * (s - 1)], [0.0, 0.0, 1.0]])
    du, dv = camera.pixel_spacing
    return Camera(S @ camera.K, camera.R, camera.t, camera.width * s, camera.height * s, (du / s, dv / s), camera.sdd)


def crop_camera(camera: Camera, u0: int, v0: int, width: int, height: int) -> Camera:
    """The camera that sees pixels ``u0 .. u0 + width - 1`` by ``v0 .. v0 + height - 1`` of
    ``camera`` as its own ``(height, width)`` detector: the same K, R, t with the principal point
    moved by ``-(u0, v0)``, so it projects exactly as the crop of the full view. The crop may reach
    past the detector (negative ``u0``, ...): the pinhole has no edge."""
    for name, v in (("u0", u0), ("v0", v0), ("width", width), ("height", height)):
        if not (np.isfinite(v) and int(v) == v):  # int(nan) would fail without naming the input
            raise ValueError(f"crop {name}: expected an integer number of pixels, got {v}")
    if width < 1 or height < 1:
        raise ValueError(f"crop size: expected a positive width and height, got {width} x {height}")
    K = np.array(camera.K, dtype=np.float64)
    K[0, 2] -= u0
    K[1, 2] -= v0
    return Camera(K, camera.R, camera.t, int(width), int(height), camera.pixel_spacing, camera.sdd)

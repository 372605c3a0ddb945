"""Rotations and rigid transforms (SE(3)), batched and differentiable.

Every function takes torch tensors with arbitrary leading batch dimensions ``...`` (and then
keeps their dtype, device and autograd graph) or numpy arrays (then it computes in float64 and
returns numpy). Angles are radians here; user-facing code converts from degrees.

Conventions:
    * Rotation vector ``r``: axis * angle (right-handed), ``R = exp([r]_x)`` (Rodrigues).
    * Quaternion: scalar first, ``(w, x, y, z)``, unit norm; ``q`` and ``-q`` are the same rotation.
    * Euler angles: a named sequence as in scipy, e.g. ``"ZYX"`` (upper case = intrinsic, about
      the moving axes: ``R = Rz(a) @ Ry(b) @ Rx(c)``) or ``"xyz"`` (lower case = extrinsic, about
      the fixed axes: ``R = Rz(c) @ Ry(b) @ Rx(a)``).
    * Rigid transform: 4x4 homogeneous ``T = [[R, t], [0, 1]]`` acting as ``x' = R x + t``.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from scipy.spatial.transform import Rotation
from torch import Tensor

from ._dual import numpy_or_torch

__all__ = [
    "kabsch",
    "skew",
    "rotvec_to_matrix",
    "matrix_to_rotvec",
    "quaternion_to_matrix",
    "matrix_to_quaternion",
    "euler_to_matrix",
    "matrix_to_euler",
    "rigid_matrix",
    "compose",
    "invert",
    "rotate_about",
    "transform_points",
    "is_rotation",
]

_SMALL = 1e-8


@numpy_or_torch
def skew(v: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    """Cross-product matrix ``[v]_x`` with ``[v]_x @ w = v x w``.

    Args:
        v: ``(..., 3)``.

    Returns:
        ``(..., 3, 3)``.
    """
    z = torch.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack(
        [torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], -2
    )


@numpy_or_torch
def rotvec_to_matrix(rotvec: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    """Rodrigues' formula ``R = I + A [r]_x + B [r]_x^2`` with ``A = sin(a)/a``, ``B = (1-cos a)/a^2``.

    Taylor expansions near ``a = 0`` keep the value and the gradient finite there.

    Args:
        rotvec: ``(..., 3)`` axis * angle in radians.

    Returns:
        ``(..., 3, 3)`` rotation matrices.
    """
    theta2 = (rotvec * rotvec).sum(-1)
    small = theta2 < _SMALL
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta * theta))
    k = skew(rotvec)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device).expand(k.shape)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


@numpy_or_torch
def quaternion_to_matrix(q: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrix of a quaternion ``(w, x, y, z)`` (normalised first).

    Args:
        q: ``(..., 4)``.

    Returns:
        ``(..., 3, 3)``.
    """
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


@numpy_or_torch
def matrix_to_quaternion(R: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 4"]:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a rotation matrix (Shepperd's method).

    Of the four algebraically equivalent formulas the one with the largest denominator is used
    per matrix, so the result is accurate for every rotation.

    Args:
        R: ``(..., 3, 3)``.

    Returns:
        ``(..., 4)``.
    """
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    # Four candidates, each stable when its leading component is the largest.
    cands = torch.stack(
        [
            torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * m[..., 0, 0] - tr, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * m[..., 1, 1] - tr, m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * m[..., 2, 2] - tr], -1),
        ],
        -2,
    )  # (..., 4 candidates, 4)
    lead = torch.stack([1 + tr, 1 + 2 * m[..., 0, 0] - tr, 1 + 2 * m[..., 1, 1] - tr, 1 + 2 * m[..., 2, 2] - tr], -1)
    best = lead.argmax(-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / torch.linalg.norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


@numpy_or_torch
def matrix_to_rotvec(R: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 3"]:
    """Rotation vector (axis * angle, angle in [0, pi]) of a rotation matrix.

    Args:
        R: ``(..., 3, 3)``.

    Returns:
        ``(..., 3)``.
    """
    q = matrix_to_quaternion(R)
    v = q[..., 1:]
    s = torch.linalg.norm(v, dim=-1)
    angle = 2.0 * torch.atan2(s, q[..., 0])
    # angle / sin(angle/2) -> 2 as angle -> 0
    scale = torch.where(s < 1e-12, torch.full_like(s, 2.0), angle / torch.where(s < 1e-12, torch.ones_like(s), s))
    return v * scale[..., None]


def _elementary(axis: str, angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    rows = {
        "x": [[o, z, z], [z, c, -s], [z, s, c]],
        "y": [[c, z, s], [z, o, z], [-s, z, c]],
        "z": [[c, -s, z], [s, c, z], [z, z, o]],
    }[axis]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def _check_sequence(seq: str) -> str:
    if len(seq) != 3 or not (seq.isupper() or seq.islower()) or set(seq.lower()) - set("xyz"):
        raise ValueError(
            f"Euler sequence {seq!r}: expected three of x/y/z, all upper case (intrinsic) or all "
            "lower case (extrinsic), e.g. 'ZYX' or 'xyz'"
        )
    if seq[0].lower() == seq[1].lower() or seq[1].lower() == seq[2].lower():
        raise ValueError(f"Euler sequence {seq!r}: consecutive axes must differ")
    return seq


@numpy_or_torch
def euler_to_matrix(angles: Float[Tensor, "*batch 3"], seq: str = "ZYX") -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrix from three Euler angles in radians about a named axis sequence.

    Args:
        angles: ``(..., 3)`` the angles for the three axes of ``seq`` in order.
        seq: e.g. ``"ZYX"`` (intrinsic, ``R = Rz(a0) Ry(a1) Rx(a2)``) or ``"xyz"`` (extrinsic,
            ``R = Rz(a2) Ry(a1) Rx(a0)``); the same meaning as ``scipy.spatial.transform``.

    Returns:
        ``(..., 3, 3)``.
    """
    _check_sequence(seq)
    mats = [_elementary(ax.lower(), angles[..., i]) for i, ax in enumerate(seq)]
    if seq.isupper():
        return mats[0] @ mats[1] @ mats[2]
    return mats[2] @ mats[1] @ mats[0]


def matrix_to_euler(R: np.ndarray, seq: str = "ZYX") -> np.ndarray:
    """Euler angles (radians) of rotation matrices, the inverse of :func:`euler_to_matrix`.

    Not differentiable (gimbal lock makes it ill-posed); numpy only, via scipy.

    Args:
        R: ``(..., 3, 3)``.
        seq: as in :func:`euler_to_matrix`.

    Returns:
        ``(..., 3)``.
    """
    _check_sequence(seq)
    R = np.asarray(R, dtype=np.float64)
    flat = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_euler(seq)
    return flat.reshape(*R.shape[:-2], 3)


@numpy_or_torch
def rigid_matrix(R: Float[Tensor, "*batch 3 3"], t: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 4 4"]:
    """Homogeneous 4x4 transform ``[[R, t], [0, 1]]``.

    Args:
        R: ``(..., 3, 3)``.
        t: ``(..., 3)``.

    Returns:
        ``(..., 4, 4)``.
    """
    top = torch.cat([R, t[..., :, None]], -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], -2)


@numpy_or_torch
def compose(T1: Float[Tensor, "*batch 4 4"], T2: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """``T1 @ T2``: apply ``T2`` first, then ``T1``. Shapes ``(..., 4, 4)``."""
    return T1 @ T2


@numpy_or_torch
def invert(T: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Inverse of rigid transforms, ``[[R^T, -R^T t], [0, 1]]``. Shapes ``(..., 4, 4)``."""
    Rt = T[..., :3, :3].transpose(-1, -2)
    return rigid_matrix(Rt, -(Rt @ T[..., :3, 3:])[..., 0])


@numpy_or_torch
def rotate_about(R: Float[Tensor, "*batch 3 3"], center: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 4 4"]:
    """Rigid transform that rotates by ``R`` about the point ``center``: ``x' = R (x - c) + c``.

    Args:
        R: ``(..., 3, 3)``.
        center: ``(..., 3)``.

    Returns:
        ``(..., 4, 4)``.
    """
    return rigid_matrix(R, center - (R @ center[..., :, None])[..., 0])


@numpy_or_torch
def transform_points(T: Float[Tensor, "*batch 4 4"], points: Float[Tensor, "*batch N 3"]) -> Float[Tensor, "*batch N 3"]:
    """Apply rigid transforms to points: ``x' = R x + t``.

    Args:
        T: ``(..., 4, 4)``.
        points: ``(..., N, 3)``.

    Returns:
        ``(..., N, 3)``.
    """
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def is_rotation(R: np.ndarray, tol: float = 1e-6) -> bool:
    """True when ``R`` (3x3) is orthonormal with determinant +1 within ``tol``."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3) or not np.all(np.isfinite(R)):
        return False
    return bool(np.abs(R @ R.T - np.eye(3)).max() < tol and abs(np.linalg.det(R) - 1.0) < tol)


def kabsch(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` and translation ``t`` minimising ``sum |R a_i + t - b_i|^2`` (Kabsch).

    Args:
        A, B: ``(..., N, 3)`` corresponding points, ``N >= 3`` (batched over leading axes).

    Returns:
        R ``(..., 3, 3)`` proper rotations, t ``(..., 3)``.
    """
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    ca, cb = A.mean(axis=-2), B.mean(axis=-2)
    H = np.swapaxes(A - ca[..., None, :], -1, -2) @ (B - cb[..., None, :])
    U, _, Vt = np.linalg.svd(H)
    V, Ut = np.swapaxes(Vt, -1, -2), np.swapaxes(U, -1, -2)
    # A reflection is the best orthogonal fit of a degenerate or noisy set: flip the last axis.
    d = np.sign(np.linalg.det(V @ Ut))
    D = np.broadcast_to(np.eye(3), (*d.shape, 3, 3)).copy()
    D[..., 2, 2] = np.where(d == 0, 1.0, d)
    R = V @ D @ Ut
    return R, cb - (R @ ca[..., None])[..., 0]

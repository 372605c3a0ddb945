"""Pixel rays in a volume's index space, clipped to the volume's box.

A pixel's world ray ``x(s) = C + s d`` (``C`` the source, ``d`` a unit vector, ``s`` in mm) is
mapped to continuous voxel indices with the volume's inverse affine ``A^-1``:

    p(s) = o + s e,   o = A^-1 (C, 1),   e = A^-1[:3, :3] d

so ``s`` stays the path length in mm whatever the spacing and direction cosines. The box is
``-0.5 <= p_a <= n_a - 0.5`` on each axis (voxel edges, centres at integers); the slab method
gives the entry and exit lengths ``s0 <= s1``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..geometry import pixel_to_ray

__all__ = ["pixel_grid_chunk", "index_rays", "clip_to_box", "voxel_spacing", "nonzero_direction"]


def pixel_grid_chunk(start: int, stop: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Pixel centres ``(u, v)`` of the flat (row-major) pixel indices ``start .. stop-1``.

    Returns:
        ``(stop - start, 2)``: ``u = n mod W`` (column), ``v = n div W`` (row).
    """
    n = torch.arange(start, stop, device=device)
    return torch.stack([(n % width).to(dtype), (n // width).to(dtype)], -1)


def index_rays(index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, uv: Tensor) -> tuple[Tensor, Tensor]:
    """Rays of pixels ``uv`` in continuous voxel indices (i, j, k), parameterised by mm.

    Args:
        index_from_world: ``(4, 4)`` inverse of the volume affine.
        K, R: ``(..., 3, 3)``; t: ``(..., 3)`` views (OpenCV world -> camera).
        uv: ``(N, 2)`` pixel coordinates (the same for every view).

    Returns:
        o: ``(..., N, 3)`` source in indices; e: ``(..., N, 3)`` index displacement per mm of path.
    """
    origin, direction = pixel_to_ray(K, R, t, uv)
    M, b = index_from_world[:3, :3], index_from_world[:3, 3]
    # every ray of a view starts at its source: map that one point, not N copies of it
    return (origin[..., :1, :] @ M.T + b).expand(origin.shape), direction @ M.T


def clip_to_box(o: Tensor, e: Tensor, shape_xyz: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Slab-method clipping of ``p(s) = o + s e`` to the box ``[-0.5, n - 0.5]^3``, ``s >= 0``.

    ``s0 = max(0, max_a min(s_a^-, s_a^+))``, ``s1 = max(s0, min_a max(s_a^-, s_a^+))`` with
    ``s_a^+- = (edge_a^+- - o_a) / e_a``. A ray parallel to an axis (``|e_a|`` below
    :func:`nonzero_direction`'s tiny) leaves that axis unconstrained when it lies in the closed
    slab ``-0.5 <= o_a <= n_a - 0.5`` (both faces alike) and misses otherwise, with
    ``s0 = s1 = 0``; no gradient flows from that axis.

    Args:
        o, e: ``(N, 3)``.
        shape_xyz: voxel counts ``(n_i, n_j, n_k)``.

    Returns:
        s0, s1: ``(N,)`` entry and exit path lengths in mm; ``s1 == s0`` for rays that miss.
    """
    n = torch.tensor(shape_xyz, dtype=o.dtype, device=o.device)
    safe = nonzero_direction(e)
    sa = (-0.5 - o) / safe
    sb = (n - 0.5 - o) / safe
    enter, leave = torch.minimum(sa, sb), torch.maximum(sa, sb)
    parallel = safe != e
    inside = (o >= -0.5) & (o <= n - 0.5)
    inf = torch.full_like(enter, math.inf)
    enter = torch.where(parallel, torch.where(inside, -inf, inf), enter)
    leave = torch.where(parallel, torch.where(inside, inf, -inf), leave)
    s0 = enter.amax(-1).clamp_min(0.0)
    s1 = leave.amin(-1)
    # only a ray parallel to a pair of faces, outside their slab, enters at +inf: its empty
    # segment is put at 0 (an infinite one would make the samples' positions NaN)
    s0 = torch.where(torch.isinf(s0), torch.zeros_like(s0), s0)
    return s0, torch.maximum(s1, s0)


def nonzero_direction(e: Tensor) -> Tensor:
    """``e`` with components below ``tiny = finfo.tiny ** (1/4)`` replaced by ``+-tiny`` (sign
    kept), so ``(plane - o) / e`` is finite: +-huge for a ray parallel to the plane. The stand-in
    is a constant, so no gradient flows through it."""
    tiny = torch.full_like(e, torch.finfo(e.dtype).tiny ** 0.25)  # 1/tiny * box size stays finite
    return torch.where(e.abs() < tiny, torch.where(e < 0, -tiny, tiny), e)


def voxel_spacing(index_from_world: Tensor) -> Tensor:
    """``(3,)`` voxel size in mm along i, j, k: ``1 / |row_a of A^-1[:3, :3]|``."""
    return 1.0 / torch.linalg.norm(index_from_world[:3, :3], dim=1)

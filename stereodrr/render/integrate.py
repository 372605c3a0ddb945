"""Line integrals of a voxel volume along clipped rays: trilinear ray marching and the exact
radiological path (Siddon/Jacobs).

Both take rays in index space (:mod:`stereodrr.render.rays`): ``p(s) = o + s e`` for
``s0 <= s <= s1`` (mm), voxel centres at integer indices, box edges at ``-0.5`` and ``n - 0.5``.

Trilinear (midpoint rule on each ray's own clipped segment)::

    L = ds * sum_{k=0}^{n-1} f(o + (s0 + (k + 1/2) ds) e),   n = ceil((s1 - s0) / step),  ds = (s1 - s0) / n

``f`` is the trilinear interpolant of the voxel values with the index clamped to
``[0, n_a - 1]`` (the edge voxels extend to the box edge), so a uniform box of ``N`` voxels
integrates to ``N`` voxel lengths, never ``N - 1``.

Joseph (one bilinear sample per slab of ``k`` slices of the ray's dominant index axis
``a = argmax_a |e_a|``; Joseph's projector for ``k = 1``)::

    L = sum_j w_j f(p(s(m_j))),   s(x) = (x - o_a) / e_a,   c_j = j k + (k - 1) // 2,   m_j = min(c_j, n_a - 1)
    w_j = |[s0, s1] & [s(c_j) - h, s(c_j) + h]|,   h = k / (2 |e_a|)

over the slabs ``|p_a - c_j| <= k / 2`` (``j >= 0``, a fixed grid that covers the box) that the
clipped segment meets. The sample lies on slice ``m_j`` (``p_a = m_j`` exactly: the slab's
centre, or the last slice where a slab reaches past the box), so ``f`` there is the bilinear
interpolant of that slice (4 voxels, not 8); ``w_j`` is the path length inside the slab (``2 h``
inside, less in the first and last). The ``w_j`` sum to ``s1 - s0``: a uniform box integrates
exactly. ``k`` comes from a step in mm (:func:`slab_slices`).

Exact::

    L = sum_m mu[v_m] (a_{m+1} - a_m)

over the sorted path lengths ``a_m`` where the ray crosses voxel-edge planes ``p_a = m - 1/2``
inside ``[s0, s1]``; ``v_m`` is the voxel holding the segment's midpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .rays import nonzero_direction

__all__ = ["trilinear_torch", "joseph_torch", "exact_integral", "segment_samples", "slab_slices", "SAMPLE_BUDGET"]

# Samples (trilinear) or plane crossings (exact) held at once per chunk of rays: ~10 floats
# each in the torch path, so 2**20 keeps a chunk's working set near 40 MB (float32).
SAMPLE_BUDGET = 2**20


def segment_samples(e: Tensor, s0: Tensor, s1: Tensor, step: float | Tensor) -> tuple[Tensor, Tensor]:
    """Samples of each clipped segment at ``step`` mm (a number or a 0-d tensor):
    ``(ds (N,), n (N,) int64)`` with ``n = max(1, ceil((s1 - s0) / step))``, ``ds = (s1 - s0) / n``."""
    length = s1 - s0
    n = torch.ceil(length.detach() / step).clamp_min(1).to(torch.int64)
    return length / n.to(length.dtype), n


def slab_slices(e: Tensor, step: float | Tensor, shape: tuple[int, ...]) -> Tensor:
    """Slices per Joseph slab ``k (N,) int64``: ``max(1, round(step max_a |e_a|))``, the slices
    of the dominant axis in ``step`` mm (a number or a 0-d tensor), at most that axis's slices in
    a volume of ``shape`` ``(Z, Y, X)``: a slab as thick as the volume is sampled at its middle
    slice (a thicker one's centre would lie past the box, and its sample at the box's edge
    slice stand for the whole ray). A step of at most the smallest voxel spacing gives Joseph's
    one slice."""
    ea = e.detach().abs()
    k = torch.round(step * ea.amax(-1)).clamp_min(1).to(torch.int64)
    slices = torch.tensor(tuple(shape)[::-1], device=e.device)[ea.argmax(-1)]  # first axis on ties, as the kernels
    return torch.minimum(k, slices)


def _sample_torch(data: Tensor, p: Tensor) -> Tensor:
    """Edge-clamped trilinear interpolant of ``data (Z, Y, X)`` at index points ``p (N, M, 3)``
    (``grid_sample``): ``(N, M)``."""
    size = torch.tensor(data.shape[::-1], dtype=p.dtype, device=p.device)
    # align_corners=True puts index 0 at -1 and n-1 at +1; "border" clamps to the edge voxels.
    g = torch.where(size > 1, 2.0 * p / (size - 1).clamp_min(1.0) - 1.0, torch.zeros_like(p))
    return F.grid_sample(data[None, None], g[None, :, :, None, :], mode="bilinear",
                         padding_mode="border", align_corners=True)[0, 0, :, :, 0]


def trilinear_torch(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor) -> Tensor:
    """Trilinear ray marching with ``torch.nn.functional.grid_sample`` (any device, autograd).

    Args:
        data: ``(Z, Y, X)`` mu per voxel.
        o, e: ``(N, 3)`` ray origin and index step per mm; s0: ``(N,)`` entry length (mm).
        ds: ``(N,)`` step of each ray (mm); n: ``(N,)`` int64 samples of each ray.

    Returns:
        ``(N,)`` line integrals ``ds * sum_k f(o + (s0 + (k + 1/2) ds) e)``.
    """
    n_max = int(n.max()) if n.numel() else 1
    k = torch.arange(n_max, device=o.device, dtype=o.dtype) + 0.5
    s = s0[:, None] + k[None, :] * ds[:, None]  # (N, n_max)
    p = o[:, None, :] + s[..., None] * e[:, None, :]  # (N, n_max, 3) indices (i, j, k)
    val = _sample_torch(data, p)
    val = torch.where(k[None, :] < n[:, None].to(o.dtype), val, torch.zeros_like(val))
    return val.sum(-1) * ds


def joseph_torch(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor) -> Tensor:
    """Joseph's projector (module docstring) with ``grid_sample`` (any device, autograd).

    Args:
        data: ``(Z, Y, X)``; o, e: ``(N, 3)``; s0, s1: ``(N,)`` clipped segment (mm);
        k: ``(N,)`` int64 slices per slab.

    Returns:
        ``(N,)`` line integrals ``sum_j w_j f(p(s(m_j)))``; differentiable w.r.t. every floating
        input (the dominant axis and the slab range are piecewise constant).
    """
    nz, ny, nx = data.shape
    a = e.detach().abs().argmax(-1, keepdim=True)  # (N, 1), first axis on ties as the fused kernels
    oa, ea = o.gather(1, a)[:, 0], e.gather(1, a)[:, 0]
    na = torch.tensor([nx, ny, nz], device=o.device)[a[:, 0]]
    c0 = torch.div(k - 1, 2, rounding_mode="floor")
    kf = k.to(o.dtype)
    with torch.no_grad():
        pa0, pa1 = oa + s0 * ea, oa + s1 * ea
        j0 = torch.floor((torch.minimum(pa0, pa1) - c0 + 0.5 * kf) / kf).to(torch.int64).clamp_min(0)
        j1 = torch.minimum(torch.floor((torch.maximum(pa0, pa1) - c0 + 0.5 * kf) / kf).to(torch.int64),
                           torch.div(na - 1 - c0, k, rounding_mode="floor") + 1)
        count = torch.where(s1 > s0, j1 - j0 + 1, 0).clamp_min(0)
    n_max = max(int(count.max()) if count.numel() else 1, 1)
    i = torch.arange(n_max, device=o.device)
    c = (j0[:, None] + i[None, :]) * k[:, None] + c0[:, None]  # (N, n_max) slab centres (slices)
    m = torch.minimum(c, (na - 1)[:, None]).to(o.dtype)  # the sample's slice
    inv = (1.0 / ea)[:, None]
    h = 0.5 * kf[:, None] * inv.abs()
    sm = (m - oa[:, None]) * inv
    sw = (c.to(o.dtype) - oa[:, None]) * inv
    w = (torch.minimum(s1[:, None], sw + h) - torch.maximum(s0[:, None], sw - h)).clamp_min(0.0)
    w = torch.where(i[None, :] < count[:, None], w, torch.zeros_like(w))
    p = o[:, None, :] + sm[..., None] * e[:, None, :]
    # On the slice exactly (p_a = m, a constant): the trilinear interpolant is the slice's bilinear one.
    on_axis = torch.arange(3, device=o.device)[None, None, :] == a[:, :, None]
    p = torch.where(on_axis, m[..., None], p)
    return (_sample_torch(data, p) * w).sum(-1)


def exact_integral(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """Exact radiological path (Siddon/Jacobs) through the voxels, vectorised over rays.

    Args:
        data: ``(Z, Y, X)``; o, e: ``(N, 3)``; s0, s1: ``(N,)``.

    Returns:
        ``(N,)`` line integrals; differentiable w.r.t. ``data`` and the ray (through the
        crossing lengths).
    """
    nz, ny, nx = data.shape
    sizes = (nx, ny, nz)
    safe = nonzero_direction(e)
    crossings = [s0[:, None], s1[:, None]]
    for a, n_a in enumerate(sizes):
        planes = torch.arange(n_a + 1, device=o.device, dtype=o.dtype) - 0.5
        crossings.append((planes[None, :] - o[:, a : a + 1]) / safe[:, a : a + 1])
    a_all = torch.cat(crossings, 1)
    a_all = torch.minimum(torch.maximum(a_all, s0[:, None]), s1[:, None])
    a_all, _ = torch.sort(a_all, dim=1)
    seg = a_all[:, 1:] - a_all[:, :-1]
    mid = 0.5 * (a_all[:, 1:] + a_all[:, :-1]).detach()
    p = o.detach()[:, None, :] + mid[..., None] * e.detach()[:, None, :]
    idx = torch.floor(p + 0.5).to(torch.int64)
    ix = idx[..., 0].clamp(0, nx - 1)
    iy = idx[..., 1].clamp(0, ny - 1)
    iz = idx[..., 2].clamp(0, nz - 1)
    mu = data.reshape(-1)[(iz * ny + iy) * nx + ix]
    return (mu * seg).sum(-1)

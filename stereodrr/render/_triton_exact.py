"""Fused GPU kernel for the exact radiological path (Siddon/Jacobs, Triton), with its analytic
backward pass.

The same walk and formulas as the Numba kernel (:mod:`stereodrr.render._fused_exact`, whose
docstring carries the backward equations): each lane walks one ray's voxels, stepping the axis
whose plane comes next, so a segment costs one load and a multiply-add. The loop bound is the
longest walk of the block, ``sum_a (|i_a(s1) - i_a(s0)| + 1) + 1`` steps (one spare per axis for
a crossing rounded across an end), read on the device; a lane that reaches its exit idles.
The walk runs in the rays' dtype (float32, or float64 for a float64 volume); volumes may be
float32, bfloat16, float16 (read as is) or float64. The volume gradient is scattered with
atomics, float or (``deterministic``) fixed-point int64, as in :mod:`stereodrr.render._triton`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._triton import _SCALARS, _block, _grid, _rows_like, _scatter, volume_grad, volume_grad_buffer

__all__ = ["forward", "backward"]


@triton.jit
def _start(p, e, top):
    """Voxel of an axis just after index coordinate ``p`` (on a plane: the one the ray moves
    into), clamped to ``0 .. top``, and the walk's step ``+1 / -1 / 0``."""
    i = tl.where(e < 0.0, tl.ceil(p - 0.5), tl.floor(p + 0.5))
    i = tl.minimum(tl.maximum(i, 0.0), top).to(tl.int32)
    step = tl.where(e > 0.0, 1, tl.where(e < 0.0, -1, 0))
    return i, step


@triton.jit
def _leave(i, step, o, inv, top):
    """Path length where the ray leaves voxel ``i`` of an axis; ``inf`` when it never does
    (parallel, or the next voxel is outside the box: the walk stays in the edge voxel)."""
    nxt = i + step
    stay = (step == 0) | (nxt < 0) | (nxt.to(o.dtype) > top)
    return tl.where(stay, float("inf"), (i.to(o.dtype) + 0.5 * step.to(o.dtype) - o) * inv)


@triton.jit
def _axis(o, e, lo, hi, top):
    """One axis of the walk's start: ``1 / e`` (0 if parallel), voxel, step, first crossing, and
    the steps the walk can take along it (``|i(hi) - i(lo)| + 1``)."""
    inv = tl.where(e != 0.0, 1.0 / tl.where(e != 0.0, e, 1.0), 0.0)
    i, step = _start(o + lo * e, e, top)
    i_end, _s = _start(o + hi * e, e, top)
    return inv, i, step, _leave(i, step, o, inv, top), tl.abs(i_end - i) + 1


@triton.jit
def _walk_start(o_ptr, e_ptr, s0_ptr, s1_ptr, r, m, tx, ty, tz):
    """Ray ``r``'s origin and index step per mm, segment ``[lo, hi]``, and per axis the walk's
    start (:func:`_axis`); ``count``: the loop bound of its walk (0 for a ray that misses)."""
    ox = tl.load(o_ptr + 3 * r, mask=m, other=0.0)
    oy = tl.load(o_ptr + 3 * r + 1, mask=m, other=0.0)
    oz = tl.load(o_ptr + 3 * r + 2, mask=m, other=0.0)
    ex = tl.load(e_ptr + 3 * r, mask=m, other=0.0)
    ey = tl.load(e_ptr + 3 * r + 1, mask=m, other=0.0)
    ez = tl.load(e_ptr + 3 * r + 2, mask=m, other=0.0)
    lo = tl.load(s0_ptr + r, mask=m, other=0.0)
    hi = tl.load(s1_ptr + r, mask=m, other=0.0)
    vx, ix, sx, cx, nx_ = _axis(ox, ex, lo, hi, tx)
    vy, iy, sy, cy, ny_ = _axis(oy, ey, lo, hi, ty)
    vz, iz, sz, cz, nz_ = _axis(oz, ez, lo, hi, tz)
    count = tl.where(m & (hi > lo), nx_ + ny_ + nz_ + 1, 0)
    return ox, oy, oz, vx, vy, vz, lo, hi, ix, iy, iz, sx, sy, sz, cx, cy, cz, count


@triton.jit(do_not_specialize=_SCALARS)
def _forward_kernel(data_ptr, o_ptr, e_ptr, s0_ptr, s1_ptr, out_ptr, N, nx, ny, tx, ty, tz,
                    BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = r < N
    ox, oy, oz, vx, vy, vz, lo, hi, ix, iy, iz, sx, sy, sz, cx, cy, cz, count = _walk_start(
        o_ptr, e_ptr, s0_ptr, s1_ptr, r, m, tx, ty, tz)
    done = count == 0
    s = lo
    acc = tl.zeros_like(lo)
    mu = tl.load(data_ptr + (iz * ny + iy) * nx + ix, mask=~done, other=0.0).to(lo.dtype)
    for _ in range(0, tl.max(count, axis=0)):
        t = tl.minimum(tl.minimum(cx, cy), cz)
        last = t >= hi
        t = tl.where(last, hi, tl.maximum(t, s))  # a first crossing rounded to just before the entry
        acc += tl.where(done, 0.0, mu * (t - s))
        s = tl.where(done, s, t)
        cross = ~done & ~last
        on_x = cross & (cx <= t)
        on_y = cross & ~on_x & (cy <= t)
        on_z = cross & ~on_x & ~on_y & (cz <= t)  # the same for finite crossings; NaN ones stay in the box
        ix += tl.where(on_x, sx, 0)
        iy += tl.where(on_y, sy, 0)
        iz += tl.where(on_z, sz, 0)
        cx = tl.where(on_x, _leave(ix, sx, ox, vx, tx), cx)
        cy = tl.where(on_y, _leave(iy, sy, oy, vy, ty), cy)
        cz = tl.where(on_z, _leave(iz, sz, oz, vz, tz), cz)
        mu = tl.load(data_ptr + (iz * ny + iy) * nx + ix, mask=cross, other=0.0).to(lo.dtype)
        done = done | last
    tl.store(out_ptr + r, acc, mask=m)


@triton.jit(do_not_specialize=_SCALARS)
def _backward_kernel(data_ptr, o_ptr, e_ptr, s0_ptr, s1_ptr, g_ptr, gvol_ptr, scale_ptr,
                     go_ptr, ge_ptr, gs0_ptr, gs1_ptr, N, nx, ny, tx, ty, tz,
                     WANT_DATA: tl.constexpr, DETERMINISTIC: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = r < N
    ox, oy, oz, vx, vy, vz, lo, hi, ix, iy, iz, sx, sy, sz, cx, cy, cz, count = _walk_start(
        o_ptr, e_ptr, s0_ptr, s1_ptr, r, m, tx, ty, tz)
    g = tl.load(g_ptr + r, mask=m, other=0.0).to(lo.dtype)
    scale = tl.load(scale_ptr)
    done = count == 0
    s = lo
    b = (iz * ny + iy) * nx + ix
    mu = tl.load(data_ptr + b, mask=~done, other=0.0).to(lo.dtype)
    d_lo = tl.where(done, 0.0, -mu)
    # per axis: sum of D_m = mu before - mu after its crossings, and of a_m D_m
    dx = tl.zeros_like(lo)
    dy = tl.zeros_like(lo)
    dz = tl.zeros_like(lo)
    hx = tl.zeros_like(lo)
    hy = tl.zeros_like(lo)
    hz = tl.zeros_like(lo)
    for _ in range(0, tl.max(count, axis=0)):
        t = tl.minimum(tl.minimum(cx, cy), cz)
        last = t >= hi
        t = tl.where(last, hi, tl.maximum(t, s))
        if WANT_DATA:
            _scatter(gvol_ptr, b, g * (t - s), scale, ~done, DETERMINISTIC)
        s = tl.where(done, s, t)
        cross = ~done & ~last
        on_x = cross & (cx <= t)
        on_y = cross & ~on_x & (cy <= t)
        on_z = cross & ~on_x & ~on_y & (cz <= t)  # the same for finite crossings; NaN ones stay in the box
        ix += tl.where(on_x, sx, 0)
        iy += tl.where(on_y, sy, 0)
        iz += tl.where(on_z, sz, 0)
        cx = tl.where(on_x, _leave(ix, sx, ox, vx, tx), cx)
        cy = tl.where(on_y, _leave(iy, sy, oy, vy, ty), cy)
        cz = tl.where(on_z, _leave(iz, sz, oz, vz, tz), cz)
        b = (iz * ny + iy) * nx + ix
        nxt = tl.load(data_ptr + b, mask=cross, other=0.0).to(lo.dtype)
        d = tl.where(cross, mu - nxt, 0.0)
        dx += tl.where(on_x, d, 0.0)
        dy += tl.where(on_y, d, 0.0)
        dz += tl.where(on_z, d, 0.0)
        hx += tl.where(on_x, t * d, 0.0)
        hy += tl.where(on_y, t * d, 0.0)
        hz += tl.where(on_z, t * d, 0.0)
        mu = tl.where(cross, nxt, mu)
        done = done | last
    d_hi = tl.where(count > 0, mu, 0.0)
    tl.store(go_ptr + 3 * r, -g * vx * dx, mask=m)
    tl.store(go_ptr + 3 * r + 1, -g * vy * dy, mask=m)
    tl.store(go_ptr + 3 * r + 2, -g * vz * dz, mask=m)
    tl.store(ge_ptr + 3 * r, -g * vx * hx, mask=m)
    tl.store(ge_ptr + 3 * r + 1, -g * vy * hy, mask=m)
    tl.store(ge_ptr + 3 * r + 2, -g * vz * hz, mask=m)
    tl.store(gs0_ptr + r, g * d_lo, mask=m)
    tl.store(gs1_ptr + r, g * d_hi, mask=m)


def _walk_grid(data: Tensor) -> tuple[int | float, ...]:
    """``nx, ny`` and the largest voxel index of each axis as a float (``_grid``'s clamp tops)."""
    nx, ny, tx, ty, tz = _grid(data)[:5]
    return nx, ny, tx, ty, tz


def forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """Exact line integrals ``L (N,)`` in ``o``'s dtype, one launch for all ``N`` rays."""
    grid = _walk_grid(data)
    N = o.shape[0]
    out = torch.empty(N, dtype=o.dtype, device=o.device)
    if N:
        block = _block(N)
        _forward_kernel[(triton.cdiv(N, block),)](
            data.contiguous(), o.contiguous(), e.contiguous(), s0.contiguous(), s1.contiguous(), out, N, *grid,
            BLOCK=block)
    return out


def backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, want_data: bool,
             deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(data or (0,), o, e, s0, s1)`` of ``sum(grad * L)``; one launch."""
    grid = _walk_grid(data)
    N = o.shape[0]
    g = grad.to(o.dtype).contiguous()
    gvol, scale = volume_grad_buffer(data, g, (s1 - s0).clamp_min(0.0), want_data, deterministic)
    go, ge = _rows_like(o), _rows_like(e)
    gs0, gs1 = _rows_like(s0), _rows_like(s1)
    if N:
        block = _block(N)
        _backward_kernel[(triton.cdiv(N, block),)](
            data.contiguous(), o.contiguous(), e.contiguous(), s0.contiguous(), s1.contiguous(), g, gvol, scale,
            go, ge, gs0, gs1, N, *grid, WANT_DATA=want_data, DETERMINISTIC=want_data and deterministic,
            BLOCK=block)
    return volume_grad(gvol, scale, data, want_data, deterministic), go, ge, gs0, gs1

"""Fused GPU kernel for trilinear ray marching (Triton), with its analytic backward pass.

The same samples and formulas as the Numba kernel (:mod:`stereodrr.render._fused`, whose
docstring carries the backward equations): one program marches ``BLOCK`` rays, each lane one
ray, accumulating ``ds sum_k f(p_k)`` without materialising the samples. Rays of every view of
a batch go in one flat array, so a batch is one launch; the loop bound is the longest ray of
the block, read on the device (no host sync).

Volume gradient: ``dL/dmu_v`` is scattered with atomic adds. By default they are float32
atomics (fast; the summation order, hence the last bits, vary between runs). With
``deterministic=True`` each contribution is rounded to a fixed-point int64 at the scale
``2^61 / G`` (``G = sum_r |g_r| ds_r n_r`` bounds every voxel's total, so nothing overflows)
and summed with integer atomics, which are associative: the same bits on every run, and an
absolute error below ``8 n G 2^-62`` for a voxel touched by ``n`` samples.

Volumes may be float32, bfloat16 or float16 (read as is, accumulated in the rays' float32) or
float64 (rays in float64). Under ``TRITON_INTERPRET=1`` (set before triton is imported) the
kernels run on CPU tensors, which is how the test suite checks them without a GPU.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["forward", "backward", "BLOCK", "volume_grad_buffer", "volume_grad"]

BLOCK = 128  # rays per program on a GPU
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _block(n_rays: int) -> int:
    """Rays per program. The interpreter runs a program as numpy operations on its lanes, so
    there one block spans up to 4096 rays (fewer programs, less per-operation overhead).

    Raises:
        ValueError: more rays than one launch indexes in int32.
    """
    if 3 * n_rays > 2**31:  # the kernels index ray r's coordinates at 3 r + 2 in int32
        raise ValueError(f"o: {n_rays} rays in one launch; the Triton kernels take at most {2**31 // 3} "
                         "(drr renders in chunks of 2**24)")
    return min(4096, max(16, triton.next_power_of_2(n_rays))) if _INTERPRETED else BLOCK


# The kernels' integer arguments, compiled as plain i32: Triton would otherwise compile a variant
# for each combination of them that equals 1 or is a multiple of 16 (a new ray count or volume
# shape, a new compile; the loads are gathers, which those hints do not speed up), and the launched
# kernels are the ones tests/render/test_triton_kernels_compile.py compiles.
_SCALARS = ("N", "nx", "ny", "mx", "my", "mz", "sx", "dy", "dz")


def _rows_like(x: Tensor) -> Tensor:
    """An uninitialised buffer of ``x``'s shape, dtype and device in row-major order, the order
    the kernels write (``empty_like`` would keep a transposed input's strides)."""
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


@triton.jit
def _cell(p, top, imax):
    """Edge-clamped linear cell of index coordinate ``p`` on ``n`` voxels (``top = n - 1``,
    ``imax = max(n - 2, 0)``): base index, fraction and ``d frac / dp`` (0 in the clamped edge
    half voxels)."""
    x = tl.minimum(tl.maximum(p, 0.0), top)
    i0 = tl.minimum(tl.floor(x).to(tl.int32), imax)
    inside = ((p > 0.0) & (p < top)).to(p.dtype)
    return i0, x - i0.to(p.dtype), inside


@triton.jit
def _corners(data_ptr, b, ox, dy, dz, live, acc_dtype: tl.constexpr):
    v000 = tl.load(data_ptr + b, mask=live, other=0.0).to(acc_dtype)
    v001 = tl.load(data_ptr + b + ox, mask=live, other=0.0).to(acc_dtype)
    v010 = tl.load(data_ptr + b + dy, mask=live, other=0.0).to(acc_dtype)
    v011 = tl.load(data_ptr + b + dy + ox, mask=live, other=0.0).to(acc_dtype)
    v100 = tl.load(data_ptr + b + dz, mask=live, other=0.0).to(acc_dtype)
    v101 = tl.load(data_ptr + b + dz + ox, mask=live, other=0.0).to(acc_dtype)
    v110 = tl.load(data_ptr + b + dz + dy, mask=live, other=0.0).to(acc_dtype)
    v111 = tl.load(data_ptr + b + dz + dy + ox, mask=live, other=0.0).to(acc_dtype)
    return v000, v001, v010, v011, v100, v101, v110, v111


@triton.jit
def _load_ray(o_ptr, e_ptr, s0_ptr, ds_ptr, n_ptr, r, m):
    """Ray ``r``'s index-space origin and direction, first sample, step and sample count."""
    ox_ = tl.load(o_ptr + 3 * r, mask=m, other=0.0)
    oy_ = tl.load(o_ptr + 3 * r + 1, mask=m, other=0.0)
    oz_ = tl.load(o_ptr + 3 * r + 2, mask=m, other=0.0)
    ex = tl.load(e_ptr + 3 * r, mask=m, other=0.0)
    ey = tl.load(e_ptr + 3 * r + 1, mask=m, other=0.0)
    ez = tl.load(e_ptr + 3 * r + 2, mask=m, other=0.0)
    s0 = tl.load(s0_ptr + r, mask=m, other=0.0)
    ds = tl.load(ds_ptr + r, mask=m, other=0.0)
    n = tl.load(n_ptr + r, mask=m, other=0)
    return ox_, oy_, oz_, ex, ey, ez, s0, ds, n


@triton.jit(do_not_specialize=_SCALARS)
def _forward_kernel(data_ptr, o_ptr, e_ptr, s0_ptr, ds_ptr, n_ptr, out_ptr, N, nx, ny,
                    tx, ty, tz, mx, my, mz, sx, dy, dz, BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = r < N
    ox_, oy_, oz_, ex, ey, ez, s0, ds, n = _load_ray(o_ptr, e_ptr, s0_ptr, ds_ptr, n_ptr, r, m)
    acc = tl.zeros_like(ds)
    for k in range(0, tl.max(n, axis=0)):
        live = m & (k < n)
        s = s0 + (k + 0.5) * ds
        i0, fx, _ddx = _cell(ox_ + s * ex, tx, mx)
        j0, fy, _ddy = _cell(oy_ + s * ey, ty, my)
        k0, fz, _ddz = _cell(oz_ + s * ez, tz, mz)
        b = (k0 * ny + j0) * nx + i0
        v000, v001, v010, v011, v100, v101, v110, v111 = _corners(data_ptr, b, sx, dy, dz, live, ds.dtype)
        c0 = (v000 + fx * (v001 - v000)) + fy * ((v010 + fx * (v011 - v010)) - (v000 + fx * (v001 - v000)))
        c1 = (v100 + fx * (v101 - v100)) + fy * ((v110 + fx * (v111 - v110)) - (v100 + fx * (v101 - v100)))
        acc += tl.where(live, c0 + fz * (c1 - c0), 0.0)
    tl.store(out_ptr + r, acc * ds, mask=m)


@triton.jit
def _scatter(gvol_ptr, idx, val, scale, live, DETERMINISTIC: tl.constexpr):
    if DETERMINISTIC:
        q = tl.floor(val.to(tl.float64) * scale + 0.5).to(tl.int64)
        tl.atomic_add(gvol_ptr + idx, q, mask=live & (q != 0))
    else:
        tl.atomic_add(gvol_ptr + idx, val.to(gvol_ptr.dtype.element_ty), mask=live & (val != 0.0))


@triton.jit(do_not_specialize=_SCALARS)
def _backward_kernel(data_ptr, o_ptr, e_ptr, s0_ptr, ds_ptr, n_ptr, g_ptr, gvol_ptr, scale_ptr,
                     go_ptr, ge_ptr, gs0_ptr, gds_ptr, N, nx, ny, tx, ty, tz, mx, my, mz, sx, dy, dz,
                     WANT_DATA: tl.constexpr, DETERMINISTIC: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = r < N
    ox_, oy_, oz_, ex, ey, ez, s0, ds, n = _load_ray(o_ptr, e_ptr, s0_ptr, ds_ptr, n_ptr, r, m)
    g = tl.load(g_ptr + r, mask=m, other=0.0).to(ds.dtype)
    scale = tl.load(scale_ptr)
    w = g * ds  # dL_total / d(sample value), the same for every sample of the ray
    sf = tl.zeros_like(ds)
    gx = tl.zeros_like(ds)
    gy = tl.zeros_like(ds)
    gz = tl.zeros_like(ds)
    hx = tl.zeros_like(ds)
    hy = tl.zeros_like(ds)
    hz = tl.zeros_like(ds)
    ke = tl.zeros_like(ds)
    for k in range(0, tl.max(n, axis=0)):
        live = m & (k < n)
        kh = k + 0.5
        s = s0 + kh * ds
        i0, fx, ddx = _cell(ox_ + s * ex, tx, mx)
        j0, fy, ddy = _cell(oy_ + s * ey, ty, my)
        k0, fz, ddz = _cell(oz_ + s * ez, tz, mz)
        b = (k0 * ny + j0) * nx + i0
        v000, v001, v010, v011, v100, v101, v110, v111 = _corners(data_ptr, b, sx, dy, dz, live, ds.dtype)
        c00 = v000 + fx * (v001 - v000)
        c01 = v010 + fx * (v011 - v010)
        c10 = v100 + fx * (v101 - v100)
        c11 = v110 + fx * (v111 - v110)
        c0 = c00 + fy * (c01 - c00)
        c1 = c10 + fy * (c11 - c10)
        gy_ = 1.0 - fy
        gz_ = 1.0 - fz
        dfx = ddx * (gz_ * (gy_ * (v001 - v000) + fy * (v011 - v010)) + fz * (gy_ * (v101 - v100) + fy * (v111 - v110)))
        dfy = ddy * (gz_ * (c01 - c00) + fz * (c11 - c10))
        dfz = ddz * (c1 - c0)
        zero = tl.zeros_like(ds)
        sf += tl.where(live, c0 + fz * (c1 - c0), zero)
        dfx = tl.where(live, dfx, zero)
        dfy = tl.where(live, dfy, zero)
        dfz = tl.where(live, dfz, zero)
        gx += dfx
        gy += dfy
        gz += dfz
        hx += s * dfx
        hy += s * dfy
        hz += s * dfz
        ke += kh * (dfx * ex + dfy * ey + dfz * ez)
        if WANT_DATA:
            gx_ = 1.0 - fx
            a0 = w * gz_
            a1 = w * fz
            _scatter(gvol_ptr, b, a0 * gy_ * gx_, scale, live, DETERMINISTIC)
            _scatter(gvol_ptr, b + sx, a0 * gy_ * fx, scale, live, DETERMINISTIC)
            _scatter(gvol_ptr, b + dy, a0 * fy * gx_, scale, live, DETERMINISTIC)
            _scatter(gvol_ptr, b + dy + sx, a0 * fy * fx, scale, live, DETERMINISTIC)
            _scatter(gvol_ptr, b + dz, a1 * gy_ * gx_, scale, live, DETERMINISTIC)
            _scatter(gvol_ptr, b + dz + sx, a1 * gy_ * fx, scale, live, DETERMINISTIC)
            _scatter(gvol_ptr, b + dz + dy, a1 * fy * gx_, scale, live, DETERMINISTIC)
            _scatter(gvol_ptr, b + dz + dy + sx, a1 * fy * fx, scale, live, DETERMINISTIC)
    tl.store(go_ptr + 3 * r, w * gx, mask=m)
    tl.store(go_ptr + 3 * r + 1, w * gy, mask=m)
    tl.store(go_ptr + 3 * r + 2, w * gz, mask=m)
    tl.store(ge_ptr + 3 * r, w * hx, mask=m)
    tl.store(ge_ptr + 3 * r + 1, w * hy, mask=m)
    tl.store(ge_ptr + 3 * r + 2, w * hz, mask=m)
    tl.store(gs0_ptr + r, w * (gx * ex + gy * ey + gz * ez), mask=m)
    tl.store(gds_ptr + r, g * (sf + ds * ke), mask=m)


def _grid(data: Tensor) -> tuple[int | float, ...]:
    """Scalar kernel arguments of the volume's grid: ``nx, ny``, the clamp tops ``n_a - 1``,
    the largest base indices ``max(n_a - 2, 0)`` and the flat offsets to the next voxel along
    x, y, z (0 on an axis of one voxel)."""
    if data.numel() >= 2**31:
        raise ValueError(f"data: {data.numel()} voxels; the Triton kernel indexes the volume with int32 (< 2**31)")
    nz, ny, nx = data.shape
    return (nx, ny, float(nx - 1), float(ny - 1), float(nz - 1), max(nx - 2, 0), max(ny - 2, 0), max(nz - 2, 0),
            int(nx > 1), nx * int(ny > 1), nx * ny * int(nz > 1))


def forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor) -> Tensor:
    """``L (N,)`` in ``o``'s dtype, one launch for all ``N`` rays (shapes as in ``_fused.forward``)."""
    grid = _grid(data)
    N = o.shape[0]
    out = torch.empty(N, dtype=o.dtype, device=o.device)
    if N:
        block = _block(N)
        _forward_kernel[(triton.cdiv(N, block),)](
            data.contiguous(), o.contiguous(), e.contiguous(), s0.contiguous(), ds.contiguous(),
            n.to(torch.int32).contiguous(), out, N, *grid, BLOCK=block)
    return out


def backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor,
             want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(data or (0,), o, e, s0, ds)`` of ``sum(grad * L)``; one launch."""
    grid = _grid(data)
    N = o.shape[0]
    n32 = n.to(torch.int32).contiguous()
    g = grad.to(o.dtype).contiguous()
    gvol, scale = volume_grad_buffer(data, g, ds * n, want_data, deterministic)
    go, ge = _rows_like(o), _rows_like(e)
    gs0, gds = _rows_like(s0), _rows_like(ds)
    if N:
        block = _block(N)
        _backward_kernel[(triton.cdiv(N, block),)](
            data.contiguous(), o.contiguous(), e.contiguous(), s0.contiguous(), ds.contiguous(), n32, g, gvol, scale,
            go, ge, gs0, gds, N, *grid, WANT_DATA=want_data, DETERMINISTIC=want_data and deterministic,
            BLOCK=block)
    return volume_grad(gvol, scale, data, want_data, deterministic), go, ge, gs0, gds


def volume_grad_buffer(data: Tensor, g: Tensor, length: Tensor, want_data: bool,
                       deterministic: bool) -> tuple[Tensor, Tensor]:
    """The volume-gradient accumulator of a backward launch and its fixed-point scale.

    ``length (N,)`` is each ray's sum of sample weights (its clipped path length), so
    ``G = sum_r |g_r| length_r`` bounds every voxel's total (a sample's interpolation weights
    sum to one): deterministic mode accumulates int64 at the largest power-of-two scale with
    ``G scale <= 2^61``; otherwise float atomics (scale 1; a ``(1,)`` placeholder without
    ``want_data``)."""
    if want_data and deterministic:
        bound = (g.double().abs() * length.detach().double()).sum()
        # Largest power of two with bound * scale <= 2^61, kept within float32's exponent range.
        expo = torch.floor(61.0 - torch.log2(bound.clamp_min(1e-300))).clamp(-120.0, 120.0)
        return (torch.zeros(data.shape, dtype=torch.int64, device=data.device),
                torch.exp2(expo).float().reshape(1))
    gvol = torch.zeros(data.shape if want_data else (1,), dtype=torch.float32 if data.dtype != torch.float64
                       else torch.float64, device=data.device)
    return gvol, torch.ones(1, dtype=torch.float32, device=data.device)


def volume_grad(gvol: Tensor, scale: Tensor, data: Tensor, want_data: bool, deterministic: bool) -> Tensor:
    """The volume gradient in ``data``'s dtype from :func:`volume_grad_buffer`'s accumulator
    (``(0,)`` without ``want_data``)."""
    if not want_data:
        return data.new_zeros(0)
    if deterministic:
        return (gvol.double() / scale.double()).to(data.dtype)
    return gvol.to(data.dtype)

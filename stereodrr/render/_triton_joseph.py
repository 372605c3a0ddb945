"""Fused GPU kernel for Joseph's projector (Triton), with its analytic backward pass.

The same slabs, samples and weights as :func:`stereodrr.render.integrate.joseph_torch` and the
Numba kernel (:mod:`stereodrr.render._fused`, whose ``_joseph_backward`` carries the derivative
of each term): each lane takes one ray, picks its dominant index axis ``a`` (largest ``|e_a|``,
the first on ties) and the two in-slice axes ``b, c``, and sums ``w_j f_j`` over its slabs, ``f_j``
the edge-clamped bilinear sample on slice ``m_j`` (4 voxel reads). The loop bound is the most
slabs of any ray of the block, read on the device. Rays of every view go in one launch; the
volume gradient is scattered with atomics, float or (``deterministic``) fixed-point int64, as in
:mod:`stereodrr.render._triton`. Volumes may be float32, bfloat16, float16 (read as is,
accumulated in the rays' float32) or float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._triton import _SCALARS, _block, _cell, _grid, _rows_like, _scatter, volume_grad, volume_grad_buffer

__all__ = ["forward", "backward"]


@triton.jit
def _pick(ax0, ax1, x, y, z):
    """Per lane: ``x`` where the dominant axis is 0, ``y`` where it is 1, else ``z``."""
    return tl.where(ax0, x, tl.where(ax1, y, z))


@triton.jit
def _setup(o_ptr, e_ptr, s0_ptr, s1_ptr, k_ptr, r, m, nx, ny, tx, ty, tz, mx, my, mz, sx, dy, dz):
    """Ray ``r`` in its slice frame: axis masks ``ax0, ax1`` (dominant axis x or y; else z),
    origin and step per mm along ``a, b, c``, the in-slice axes' clamp tops ``n - 1``, largest
    base indices and neighbour offsets, the slice stride ``sa`` and in-slice strides ``sb, sc``,
    ``1 / e_a``, the half slab ``h``, the segment ``[lo, hi]``, the slab grid (``k``, ``c0``) and
    the slab range ``j0``, ``count`` (0 for a ray that misses)."""
    ox = tl.load(o_ptr + 3 * r, mask=m, other=0.0)
    oy = tl.load(o_ptr + 3 * r + 1, mask=m, other=0.0)
    oz = tl.load(o_ptr + 3 * r + 2, mask=m, other=0.0)
    ex = tl.load(e_ptr + 3 * r, mask=m, other=1.0)
    ey = tl.load(e_ptr + 3 * r + 1, mask=m, other=0.0)
    ez = tl.load(e_ptr + 3 * r + 2, mask=m, other=0.0)
    lo = tl.load(s0_ptr + r, mask=m, other=0.0)
    hi = tl.load(s1_ptr + r, mask=m, other=0.0)
    k = tl.load(k_ptr + r, mask=m, other=1)
    ax, ay, az = tl.abs(ex), tl.abs(ey), tl.abs(ez)
    ax0 = (ax >= ay) & (ax >= az)
    ax1 = ~ax0 & (ay >= az)
    # (a, b, c) = (x, y, z), (y, x, z) or (z, x, y)
    oa, ob, oc = _pick(ax0, ax1, ox, oy, oz), _pick(ax0, ax1, oy, ox, ox), _pick(ax0, ax1, oz, oz, oy)
    ea, eb, ec = _pick(ax0, ax1, ex, ey, ez), _pick(ax0, ax1, ey, ex, ex), _pick(ax0, ax1, ez, ez, ey)
    ta = _pick(ax0, ax1, tx, ty, tz)
    tb, tc = _pick(ax0, ax1, ty, tx, tx), _pick(ax0, ax1, tz, tz, ty)
    mb, mc = _pick(ax0, ax1, my, mx, mx), _pick(ax0, ax1, mz, mz, my)
    db, dc = _pick(ax0, ax1, dy, sx, sx), _pick(ax0, ax1, dz, dz, dy)
    sa = _pick(ax0, ax1, 1, nx, nx * ny)
    sb, sc = _pick(ax0, ax1, nx, 1, 1), _pick(ax0, ax1, nx * ny, nx * ny, nx)
    ea = tl.where(ea != 0.0, ea, 1.0)  # only a lane that is masked off has no dominant direction
    inv = 1.0 / ea
    kf = k.to(lo.dtype)
    h = kf * 0.5 * tl.abs(inv)
    c0 = (k - 1) // 2  # k >= 1
    pa0, pa1 = oa + lo * ea, oa + hi * ea
    big = 1e9  # keeps a far ray's slab index finite before the int conversion (count is 0 then)
    j0 = tl.floor(tl.minimum(tl.maximum((tl.minimum(pa0, pa1) - c0 + 0.5 * kf) / kf, -big), big))
    j1 = tl.floor(tl.minimum(tl.maximum((tl.maximum(pa0, pa1) - c0 + 0.5 * kf) / kf, -big), big))
    j0 = tl.maximum(j0, 0.0)
    j1 = tl.minimum(j1, tl.floor((ta - c0) / kf) + 1.0)  # the last slab whose centre c_j <= n_a - 1 + k
    count = tl.where(m & (hi > lo), tl.maximum(j1 - j0 + 1.0, 0.0), 0.0).to(tl.int32)
    return (ax0, ax1, oa, ob, oc, ea, eb, ec, ta, tb, tc, mb, mc, db, dc, sa, sb, sc, inv, h, lo, hi, k, c0,
            j0.to(tl.int32), count)


@triton.jit
def _slab(data_ptr, j, k, c0, ta, oa, inv, h, ob, oc, eb, ec, tb, tc, mb, mc, db, dc, sa, sb, sc, lo, hi, live):
    """Slab ``j``: its clipped weight ``w`` and the bilinear sample on slice ``m`` with what the
    derivatives need: ``(w, f, v01 - v00, v11 - v10, c1 - c0, fb, fc, ib, ic, base, sw, sm,
    top, bot)``."""
    c = j * k + c0
    mm = tl.minimum(c.to(oa.dtype), ta)  # the sample's slice (the last slab may reach past the box)
    sm = (mm - oa) * inv
    sw = sm + (c.to(oa.dtype) - mm) * inv
    top, bot = sw + h, sw - h
    w = tl.maximum(tl.minimum(hi, top) - tl.maximum(lo, bot), 0.0)
    i0, fb, ib = _cell(ob + sm * eb, tb, mb)
    k0, fc, ic = _cell(oc + sm * ec, tc, mc)
    base = mm.to(tl.int32) * sa + i0 * sb + k0 * sc
    v00 = tl.load(data_ptr + base, mask=live, other=0.0).to(oa.dtype)
    v01 = tl.load(data_ptr + base + db, mask=live, other=0.0).to(oa.dtype)
    v10 = tl.load(data_ptr + base + dc, mask=live, other=0.0).to(oa.dtype)
    v11 = tl.load(data_ptr + base + dc + db, mask=live, other=0.0).to(oa.dtype)
    c0_ = v00 + fb * (v01 - v00)
    c1_ = v10 + fb * (v11 - v10)
    return w, c0_ + fc * (c1_ - c0_), v01 - v00, v11 - v10, c1_ - c0_, fb, fc, ib, ic, base, sw, sm, top, bot


@triton.jit(do_not_specialize=_SCALARS)
def _forward_kernel(data_ptr, o_ptr, e_ptr, s0_ptr, s1_ptr, k_ptr, out_ptr, N, nx, ny,
                    tx, ty, tz, mx, my, mz, sx, dy, dz, BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = r < N
    (ax0, ax1, oa, ob, oc, ea, eb, ec, ta, tb, tc, mb, mc, db, dc, sa, sb, sc, inv, h, lo, hi, k, c0,
     j0, count) = _setup(o_ptr, e_ptr, s0_ptr, s1_ptr, k_ptr, r, m, nx, ny, tx, ty, tz, mx, my, mz, sx, dy, dz)
    acc = tl.zeros_like(lo)
    for t in range(0, tl.max(count, axis=0)):
        live = t < count
        w, f, _d0, _d1, _dc, _fb, _fc, _ib, _ic, _b, _sw, _sm, _top, _bot = _slab(
            data_ptr, j0 + t, k, c0, ta, oa, inv, h, ob, oc, eb, ec, tb, tc, mb, mc, db, dc, sa, sb, sc, lo, hi, live)
        acc += tl.where(live, w * f, 0.0)
    tl.store(out_ptr + r, acc, mask=m)


@triton.jit(do_not_specialize=_SCALARS)
def _backward_kernel(data_ptr, o_ptr, e_ptr, s0_ptr, s1_ptr, k_ptr, g_ptr, gvol_ptr, scale_ptr,
                     go_ptr, ge_ptr, gs0_ptr, gs1_ptr, N, nx, ny, tx, ty, tz, mx, my, mz, sx, dy, dz,
                     WANT_DATA: tl.constexpr, DETERMINISTIC: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = r < N
    (ax0, ax1, oa, ob, oc, ea, eb, ec, ta, tb, tc, mb, mc, db, dc, sa, sb, sc, inv, h, lo, hi, k, c0,
     j0, count) = _setup(o_ptr, e_ptr, s0_ptr, s1_ptr, k_ptr, r, m, nx, ny, tx, ty, tz, mx, my, mz, sx, dy, dz)
    g = tl.load(g_ptr + r, mask=m, other=0.0).to(lo.dtype)
    scale = tl.load(scale_ptr)
    zero = tl.zeros_like(lo)
    # dL/ds summed over the slab centres s_w and sample points s_m (plain and times s), dL/dh,
    # the ends, and the in-slice axes' origin and direction terms
    d_s = zero
    d_ss = zero
    dh = zero
    d_lo = zero
    d_hi = zero
    gb_o = zero
    gb_e = zero
    gc_o = zero
    gc_e = zero
    for t in range(0, tl.max(count, axis=0)):
        live = t < count
        w, f, du0, du1, dcv, fb, fc, ib, ic, base, sw, sm, top, bot = _slab(
            data_ptr, j0 + t, k, c0, ta, oa, inv, h, ob, oc, eb, ec, tb, tc, mb, mc, db, dc, sa, sb, sc, lo, hi, live)
        on = live & (w > 0.0)
        f = tl.where(on, f, 0.0)
        w = tl.where(on, w, 0.0)
        dfb = ib * ((1.0 - fc) * du0 + fc * du1)
        dfc = ic * dcv
        # w = min(hi, s_w + h) - max(lo, s_w - h): which end moves with what
        t_hi = hi < top
        t_lo = lo > bot
        d_hi += tl.where(t_hi, f, 0.0)
        d_lo -= tl.where(t_lo, f, 0.0)
        f_top = tl.where(t_hi, 0.0, f)
        f_bot = tl.where(t_lo, 0.0, f)
        cw = f_top - f_bot  # f dw/ds_w
        dh += f_top + f_bot  # f dw/dh
        cp = w * (dfb * eb + dfc * ec)  # w df/ds_m
        d_s += cw + cp
        d_ss += cw * sw + cp * sm
        gb_o += w * dfb
        gb_e += w * dfb * sm
        gc_o += w * dfc
        gc_e += w * dfc * sm
        if WANT_DATA:
            wg = w * g
            _scatter(gvol_ptr, base, wg * (1.0 - fb) * (1.0 - fc), scale, on, DETERMINISTIC)
            _scatter(gvol_ptr, base + db, wg * fb * (1.0 - fc), scale, on, DETERMINISTIC)
            _scatter(gvol_ptr, base + dc, wg * (1.0 - fb) * fc, scale, on, DETERMINISTIC)
            _scatter(gvol_ptr, base + dc + db, wg * fb * fc, scale, on, DETERMINISTIC)
    # ds/do_a = -1/e_a, ds/de_a = -s/e_a; h = k / (2 |e_a|), dh/de_a = -h/e_a
    ga_o = -inv * d_s
    ga_e = -inv * (d_ss + h * dh)
    # back to x, y, z: (a, b, c) = (x, y, z), (y, x, z) or (z, x, y)
    tl.store(go_ptr + 3 * r, g * _pick(ax0, ax1, ga_o, gb_o, gb_o), mask=m)
    tl.store(go_ptr + 3 * r + 1, g * _pick(ax0, ax1, gb_o, ga_o, gc_o), mask=m)
    tl.store(go_ptr + 3 * r + 2, g * _pick(ax0, ax1, gc_o, gc_o, ga_o), mask=m)
    tl.store(ge_ptr + 3 * r, g * _pick(ax0, ax1, ga_e, gb_e, gb_e), mask=m)
    tl.store(ge_ptr + 3 * r + 1, g * _pick(ax0, ax1, gb_e, ga_e, gc_e), mask=m)
    tl.store(ge_ptr + 3 * r + 2, g * _pick(ax0, ax1, gc_e, gc_e, ga_e), mask=m)
    tl.store(gs0_ptr + r, g * d_lo, mask=m)
    tl.store(gs1_ptr + r, g * d_hi, mask=m)


def forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor) -> Tensor:
    """Joseph line integrals ``L (N,)`` in ``o``'s dtype, one launch for all ``N`` rays."""
    grid = _grid(data)
    N = o.shape[0]
    out = torch.empty(N, dtype=o.dtype, device=o.device)
    if N:
        block = _block(N)
        _forward_kernel[(triton.cdiv(N, block),)](
            data.contiguous(), o.contiguous(), e.contiguous(), s0.contiguous(), s1.contiguous(),
            k.to(torch.int32).contiguous(), out, N, *grid, BLOCK=block)
    return out


def backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor, want_data: bool,
             deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(data or (0,), o, e, s0, s1)`` of ``sum(grad * L)``; one launch."""
    grid = _grid(data)
    N = o.shape[0]
    g = grad.to(o.dtype).contiguous()
    gvol, scale = volume_grad_buffer(data, g, (s1 - s0).clamp_min(0.0), want_data, deterministic)
    go, ge = _rows_like(o), _rows_like(e)
    gs0, gs1 = _rows_like(s0), _rows_like(s1)
    if N:
        block = _block(N)
        _backward_kernel[(triton.cdiv(N, block),)](
            data.contiguous(), o.contiguous(), e.contiguous(), s0.contiguous(), s1.contiguous(),
            k.to(torch.int32).contiguous(), g, gvol, scale, go, ge, gs0, gs1, N, *grid, WANT_DATA=want_data,
            DETERMINISTIC=want_data and deterministic, BLOCK=block)
    return volume_grad(gvol, scale, data, want_data, deterministic), go, ge, gs0, gs1

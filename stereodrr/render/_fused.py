"""Fused CPU kernels for trilinear ray marching and Joseph's projector (Numba), with their
analytic backward passes.

It evaluates exactly the samples of :func:`stereodrr.render.integrate.trilinear_torch`
(``L = ds sum_k f(p_k)``, ``p_k = o + (s0 + (k + 1/2) ds) e``, ``f`` the edge-clamped trilinear
interpolant) but never materialises them: one thread walks a ray and accumulates, so memory is
``O(rays)`` and the volume is read straight from cache. Backward::

    dL/do   = ds sum_k grad f(p_k)            dL/de  = ds sum_k s_k grad f(p_k)
    dL/ds0  = ds sum_k grad f(p_k) . e        dL/dds = sum_k f(p_k) + ds sum_k (k + 1/2) grad f(p_k) . e
    dL/dmu_v = ds sum_k w_v(p_k)              (w_v the trilinear weight of voxel v)

``grad f`` is zero along an axis where the sample lies in the clamped half voxel at the box
edge. The volume gradient is scattered into one buffer per thread block, then summed.

The Joseph kernels (:func:`stereodrr.render.integrate.joseph_torch`'s sums) walk the slabs of
each ray's dominant axis; the forward pass steps the interior runs of a tile's rays side by side
(``_lanes_sum``), each ray adding its own samples in order, so a ray gives the same bits alone or
in a tile. Where Numba cannot load (or off the CPU) the torch path runs.
"""

from __future__ import annotations

import functools
from typing import Callable, ParamSpec, TypeVar

import numpy as np
import torch
from torch import Tensor

from .threads import announce_compile, numba_kernel

try:  # Numba is an optional accelerator; the torch path is complete without it.
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None  # type: ignore[assignment]

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["available", "forward", "backward", "joseph_forward", "joseph_backward"]


def available(data: Tensor) -> bool:
    """True when the fused CPU kernel can render ``data`` (a float32/float64 CPU volume)."""
    return numba is not None and data.device.type == "cpu" and data.dtype in (torch.float32, torch.float64)


_F0, _F1, _HALF = np.float32(0.0), np.float32(1.0), np.float32(0.5)
_TILE = 64  # rays per tile of the forward kernels' thread schedule
_GRAD_BUFFER_BYTES = 2 * 2**30  # volume-gradient scatter buffers, all threads together
# Fast-math flags of every kernel: inputs are validated finite (nnan, ninf, nsz) and FMA
# contraction is allowed. Not reassoc/arcp/afn: with them a freshly compiled kernel and the same
# kernel loaded from Numba's cache round differently (measured: one Poisson draw in a dataset
# changed between the first run after install and the next), so the same seed would not give
# the same bytes.
FASTMATH = {"nnan", "ninf", "nsz", "contract"}

_AHEAD = 2  # steps ahead that the lanes' rows are prefetched (the best of 1-8 on 200^2 and 512^2 views)
_PREFETCH_LANES = 4  # one lane in this many prefetches: neighbouring lanes read the same cache lines

if numba is not None:
    from llvmlite import ir as llvm_ir
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def _prefetch(typingctx, arr, index):  # pragma: no cover - compiled
        """Prefetch ``arr[index]``'s cache line for reading (``llvm.prefetch``; a hint: never
        faults)."""
        def codegen(context, builder, signature, args):
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            i8p = llvm_ir.IntType(8).as_pointer()
            i32 = llvm_ir.IntType(32)
            # the intrinsic's name carries its pointer type: "p0" (opaque pointers), "p0i8" (typed)
            suffix = "p0" if str(i8p) == "ptr" else "p0i8"
            fn = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(
                llvm_ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch." + suffix)
            ptr = builder.bitcast(builder.gep(data, [args[1]]), i8p)
            builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, keep in every level, data cache
            return context.get_dummy_value()

        return numba.types.void(arr, index), codegen


    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _cell(p, n):  # pragma: no cover - compiled
        """Edge-clamped linear cell of index coordinate ``p`` on ``n`` voxels:
        ``(i0, stride multiplier 0/1 to i1, frac, d frac / dp)``."""
        zero = p * _F0
        if n == 1:
            return 0, 0, zero, zero
        top = np.float32(n - 1)  # exact below 2**24 voxels; float32 constants keep float32 math
        x = min(max(p, zero), top)
        i0 = min(int(x), n - 2)
        inside = zero + _F1 if (p > zero and p < top) else zero
        return i0, 1, x - np.float32(i0), inside

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _sample(flat, px, py, pz, dims):  # pragma: no cover - compiled
        """Edge-clamped trilinear sample at index ``(px, py, pz)`` of the flat volume (``dims =
        (nx, ny, nz, sy, sz)``: voxel ``(i, j, k)`` at ``i + j sy + k sz``, :func:`_flat`).

        Returns the value, its spatial gradient ``(dfx, dfy, dfz)``, the flat index ``b`` of the
        base voxel, the offsets ``(ox, dy, dz)`` to its neighbours and the fractions
        ``(fx, fy, fz)`` (the forward pass uses the value only; the rest compiles away there).
        """
        nx, ny, nz, sy, sz = dims
        i0, ox, fx, ddx = _cell(px, nx)
        j0, oy, fy, ddy = _cell(py, ny)
        k0, oz, fz, ddz = _cell(pz, nz)
        b = k0 * sz + j0 * sy + i0
        dy, dz = oy * sy, oz * sz
        v000, v001 = flat[b], flat[b + ox]
        v010, v011 = flat[b + dy], flat[b + dy + ox]
        v100, v101 = flat[b + dz], flat[b + dz + ox]
        v110, v111 = flat[b + dz + dy], flat[b + dz + dy + ox]
        c00 = v000 + fx * (v001 - v000)
        c01 = v010 + fx * (v011 - v010)
        c10 = v100 + fx * (v101 - v100)
        c11 = v110 + fx * (v111 - v110)
        c0 = c00 + fy * (c01 - c00)
        c1 = c10 + fy * (c11 - c10)
        gy_, gz_ = _F1 - fy, _F1 - fz
        dfx = ddx * (gz_ * (gy_ * (v001 - v000) + fy * (v011 - v010))
                     + fz * (gy_ * (v101 - v100) + fy * (v111 - v110)))
        dfy = ddy * (gz_ * (c01 - c00) + fz * (c11 - c10))
        dfz = ddz * (c1 - c0)
        return c0 + fz * (c1 - c0), dfx, dfy, dfz, b, ox, dy, dz, fx, fy, fz

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _march_ray(flat, o, e, s0, ds, n, dims):  # pragma: no cover - compiled
        """One ray's trilinear sum ``ds sum_k f(p_k)``."""
        acc = ds * _F0
        for k in range(n):
            s = s0 + (np.float32(k) + _HALF) * ds
            acc += _sample(flat, o[0] + s * e[0], o[1] + s * e[1], o[2] + s * e[2], dims)[0]
        return acc * ds

    @njit(inline="always", cache=True)
    def _tiles(n):  # pragma: no cover - compiled
        """Tiles of ``_TILE`` consecutive rays among ``n``: the forward kernels' thread schedule
        deals them to the ``n_blocks`` threads in turn (block ``blk`` takes tiles ``blk, blk +
        n_blocks, ...``), so each gets rays of every part of the view (a contiguous half each
        left one idle where the other's rays are longer: a chunk of a view's top rows, one half
        missing the CT)."""
        return (n + _TILE - 1) // _TILE

    @njit(parallel=True, fastmath=FASTMATH, cache=True, error_model="numpy")
    def _forward(flat, dims, o, e, s0, ds, n, out, n_blocks):  # pragma: no cover - compiled
        for blk in prange(n_blocks):
            for tile in range(blk, _tiles(o.shape[0]), n_blocks):
                for r in range(tile * _TILE, min(o.shape[0], (tile + 1) * _TILE)):
                    out[r] = _march_ray(flat, o[r], e[r], s0[r], ds[r], n[r], dims)

    @njit(parallel=True, fastmath=FASTMATH, cache=True, error_model="numpy")
    def _backward(flat, dims, o, e, s0, ds, n, g, want_vol, gvol, go, ge, gs0, gds):  # pragma: no cover
        n_blocks = gvol.shape[0]
        for blk in prange(n_blocks):
            buf = gvol[blk]
            for r in range(blk, o.shape[0], n_blocks):  # interleaved: blocks get similar ray lengths
                w = g[r] * ds[r]  # dL_total/d(sample value) for every sample of this ray
                zero = w * _F0
                sf = gx = gy = gz = hx = hy = hz = ke = zero
                for k in range(n[r]):
                    kh = np.float32(k) + _HALF
                    s = s0[r] + kh * ds[r]
                    f, dfx, dfy, dfz, b, ox, dy, dz, fx, fy, fz = _sample(
                        flat, o[r, 0] + s * e[r, 0], o[r, 1] + s * e[r, 1], o[r, 2] + s * e[r, 2], dims)
                    sf += f
                    gx += dfx
                    gy += dfy
                    gz += dfz
                    hx += s * dfx
                    hy += s * dfy
                    hz += s * dfz
                    ke += kh * (dfx * e[r, 0] + dfy * e[r, 1] + dfz * e[r, 2])
                    if want_vol:
                        gx_, gy_ = _F1 - fx, _F1 - fy
                        a0 = w * (_F1 - fz)
                        a1 = w * fz
                        buf[b] += a0 * gy_ * gx_
                        buf[b + ox] += a0 * gy_ * fx
                        buf[b + dy] += a0 * fy * gx_
                        buf[b + dy + ox] += a0 * fy * fx
                        buf[b + dz] += a1 * gy_ * gx_
                        buf[b + dz + ox] += a1 * gy_ * fx
                        buf[b + dz + dy] += a1 * fy * gx_
                        buf[b + dz + dy + ox] += a1 * fy * fx
                go[r, 0] = w * gx
                go[r, 1] = w * gy
                go[r, 2] = w * gz
                ge[r, 0] = w * hx
                ge[r, 1] = w * hy
                ge[r, 2] = w * hz
                gs0[r] = w * (gx * e[r, 0] + gy * e[r, 1] + gz * e[r, 2])
                gds[r] = g[r] * (sf + ds[r] * ke)


    # ------------------------------------------------------------------ joseph (slice planes)
    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _slice_axes(o0, o1, o2, e0, e1, e2, dims):  # pragma: no cover - compiled
        """The ray's dominant index axis ``a`` (largest ``|e_a|``, first on ties) and the two
        in-slice axes ``b``, ``c``: ``(axis ids, origins, directions, sizes, flat strides)``."""
        nx, ny, nz, sy, sz = dims
        if abs(e0) >= abs(e1) and abs(e0) >= abs(e2):
            return 0, 1, 2, o0, o1, o2, e0, e1, e2, nx, ny, nz, 1, sy, sz
        if abs(e1) >= abs(e2):
            return 1, 0, 2, o1, o0, o2, e1, e0, e2, ny, nx, nz, sy, 1, sz
        return 2, 0, 1, o2, o0, o1, e2, e0, e1, nz, nx, ny, sz, 1, sy

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _slab_range(oa, ea, s0, s1, na, k):  # pragma: no cover - compiled
        """Slabs ``j0 .. j1`` (``|p_a - c_j| <= k/2``, ``c_j = j k + (k - 1) // 2``) that the segment
        ``[s0, s1]`` meets, and ``c_0``."""
        c0 = (k - 1) // 2
        half = np.float32(k) * _HALF
        pa0, pa1 = oa + s0 * ea, oa + s1 * ea
        j0 = max(int(np.floor((min(pa0, pa1) - np.float32(c0) + half) / np.float32(k))), 0)
        j1 = min(int(np.floor((max(pa0, pa1) - np.float32(c0) + half) / np.float32(k))), (na - 1 - c0) // k + 1)
        return j0, j1, c0

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _slice_bilinear(flat, m, sm, ob, oc, eb, ec, nb, nc, sa, sb, sc):  # pragma: no cover - compiled
        """The bilinear sample on slice ``m`` at path length ``sm`` and what its derivatives need:
        ``(f, v01 - v00, v11 - v10, c1 - c0, fb, fc, ib, ic, base, db, dc)`` (flat offsets)."""
        i0, db, fb, ib = _cell(ob + sm * eb, nb)
        k0, dc, fc, ic = _cell(oc + sm * ec, nc)
        base = m * sa + i0 * sb + k0 * sc
        db *= sb
        dc *= sc
        v00, v01 = flat[base], flat[base + db]
        v10, v11 = flat[base + dc], flat[base + dc + db]
        c0_ = v00 + fb * (v01 - v00)
        c1_ = v10 + fb * (v11 - v10)
        return c0_ + fc * (c1_ - c0_), v01 - v00, v11 - v10, c1_ - c0_, fb, fc, ib, ic, base, db, dc

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _slab_term(flat, j, k, c0, na, oa, inv, h, lo, hi, ob, oc, eb, ec, nb, nc, sa, sb, sc):  # pragma: no cover
        """``w_j f_j`` of slab ``j`` with its clipped weight and the edge-clamped sample."""
        c = j * k + c0
        m = min(c, na - 1)  # the sample's slice (the last slab may reach past the box)
        sm = (np.float32(m) - oa) * inv  # path length at slice m (recomputed: no drift)
        sw = sm + np.float32(c - m) * inv  # at the slab's centre
        w = max(min(hi, sw + h) - max(lo, sw - h), lo * _F0)
        return w * _slice_bilinear(flat, m, sm, ob, oc, eb, ec, nb, nc, sa, sb, sc)[0]

    _MARGIN = np.float32(1.0 / 64.0)  # voxels; far above the float32 rounding of a sample's index

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _unclamped_steps(p, dp, n):  # pragma: no cover - compiled
        """Real steps ``t`` for which ``p + t dp`` lies in ``[margin, n - 1 - margin]``, as
        ``(t_lo, t_hi)`` (empty when ``t_lo > t_hi``): there ``_cell``'s clamps do nothing and
        ``int`` is the cell."""
        lo_v = _MARGIN + p * _F0
        hi_v = np.float32(n - 1) - _MARGIN
        if n < 2 or (dp == lo_v * _F0 and not (lo_v <= p <= hi_v)):
            return lo_v * _F0 + _F1, lo_v * _F0
        if dp == lo_v * _F0:
            return lo_v * _F0, lo_v * _F0 + np.float32(2**30)
        t1, t2 = (lo_v - p) / dp, (hi_v - p) / dp
        return min(t1, t2), max(t1, t2)

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _unclamped_run(j0, j1, k, c0, oa, inv, ob, oc, eb, ec, nb, nc):  # pragma: no cover - compiled
        """The run ``ja <= j < jb`` of interior slabs (``j0 < j < j1``: full weight ``2 h``, slice
        ``m = c_j``) whose samples need no edge clamp, and at its first slab the path length
        ``sm``, the in-slice indices ``pb, pc`` and their steps per slab ``dsm, dpb, dpc``
        (``ja == jb``: none)."""
        zero = oa * _F0
        js, n_int = j0 + 1, j1 - j0 - 1
        if n_int <= 0:
            return js, js, zero, zero, zero, zero, zero, zero
        dsm = np.float32(k) * inv
        dpb, dpc = dsm * eb, dsm * ec
        sm = (np.float32(js * k + c0) - oa) * inv
        tb0, tb1 = _unclamped_steps(ob + sm * eb, dpb, nb)
        tc0, tc1 = _unclamped_steps(oc + sm * ec, dpc, nc)
        t0 = min(max(max(tb0, tc0), zero), np.float32(n_int))
        t1 = max(min(min(tb1, tc1), np.float32(n_int - 1)), zero - _F1)
        first, last = int(np.ceil(t0)), int(np.floor(t1))
        if last < first:
            return js, js, zero, zero, zero, zero, zero, zero
        ja = js + first
        smf = (np.float32(ja * k + c0) - oa) * inv  # recomputed at the run's start: no drift
        return ja, js + last + 1, smf, ob + smf * eb, oc + smf * ec, dsm, dpb, dpc

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _run_in_bounds(size, row, drow, pb, dpb, pc, dpc, count, sb, sc):  # pragma: no cover - compiled
        """True when every sample of a run (``t < count``, see :func:`_unclamped_sum`) reads inside
        the flat volume. ``fl(p + t dp)`` is monotone in ``t`` and so are its cell indices, so
        each index's extremes are at the run's ends; the last voxel read is at most the sum of the
        largest terms."""
        last = np.float32(count - 1)
        ib0, ib1 = int(pb), int(pb + last * dpb)
        ic0, ic1 = int(pc), int(pc + last * dpc)
        if min(ib0, ib1) < 0 or min(ic0, ic1) < 0 or row < 0:
            return False
        top = row + (count - 1) * drow + max(ib0, ib1) * sb + max(ic0, ic1) * sc + sb + sc
        return top < size

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _unclamped_sum(flat, row, drow, pb, dpb, pc, dpc, count, sb, sc):  # pragma: no cover - compiled
        """``(sum_t f_t, steps done)``, ``f_t`` the bilinear sample at flat slice offset
        ``row + t drow`` and in-slice indices ``(pb + t dpb, pc + t dpc)``, for ``t < count``: the
        samples are known to lie inside their slices' cells (no clamp) and ``sb`` is a constant
        where the caller passes 1. Should the run's reads not all lie inside the volume (they
        cannot by construction) it does nothing (0 steps done) and the caller takes the
        general terms. Without the ``reassoc`` fast-math flag LLVM keeps the sum in order, so it
        does not vectorise the loop into gathers (measured 1.2-1.5x slower than scalar loads)."""
        acc = pb * _F0
        if not _run_in_bounds(flat.size, row, drow, pb, dpb, pc, dpc, count, sb, sc):
            return acc, 0
        t = acc
        usb, usc = np.uint64(sb), np.uint64(sc)  # unsigned offsets: no negative-index wrap-around
        for _ in range(count):
            xb = pb + t * dpb
            xc = pc + t * dpc
            ib, ic = int(xb), int(xc)
            fb, fc = xb - np.float32(ib), xc - np.float32(ic)
            base = np.uint64(row + ib * sb + ic * sc)
            v00, v01 = flat[base], flat[base + usb]
            v10, v11 = flat[base + usc], flat[base + usc + usb]
            c0_ = v00 + fb * (v01 - v00)
            c1_ = v10 + fb * (v11 - v10)
            acc += c0_ + fc * (c1_ - c0_)
            row += drow
            t += _F1
        return acc, count

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _unclamped_grad_sums(flat, row, drow, pb, dpb, pc, dpc, sm, dsm, count, sb, sc):  # pragma: no cover
        """Over the samples of :func:`_unclamped_sum`: ``(sum f, sum f_b, sum s f_b, sum f_c,
        sum s f_c, steps done)``, ``f_b, f_c`` the bilinear interpolant's derivatives along the
        in-slice axes (no clamp: never zero here) and ``s = sm + t dsm`` the sample's path length
        (0 steps done, as there, should the run's reads not all lie inside the volume)."""
        zero = pb * _F0
        sf = gb = gbs = gc = gcs = t = zero
        if not _run_in_bounds(flat.size, row, drow, pb, dpb, pc, dpc, count, sb, sc):
            return sf, gb, gbs, gc, gcs, 0
        usb, usc = np.uint64(sb), np.uint64(sc)
        for _ in range(count):
            xb = pb + t * dpb
            xc = pc + t * dpc
            ib, ic = int(xb), int(xc)
            fb, fc = xb - np.float32(ib), xc - np.float32(ic)
            base = np.uint64(row + ib * sb + ic * sc)
            v00, v01 = flat[base], flat[base + usb]
            v10, v11 = flat[base + usc], flat[base + usc + usb]
            du0, du1 = v01 - v00, v11 - v10
            c0_ = v00 + fb * du0
            c1_ = v10 + fb * du1
            dfc = c1_ - c0_
            dfb = du0 + fc * (du1 - du0)
            s_ = sm + t * dsm
            sf += c0_ + fc * dfc
            gb += dfb
            gbs += dfb * s_
            gc += dfc
            gcs += dfc * s_
            row += drow
            t += _F1
        return sf, gb, gbs, gc, gcs, count

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _joseph_setup(o, e, lo, hi, k, dims):  # pragma: no cover - compiled
        """A ray's slab walk: its axes ``a, b, c``, ``1 / e_a``, half a slab's path length ``h``,
        slabs ``j0 .. j1`` and the unclamped run ``ja .. jb`` (:func:`_unclamped_run`) with its
        first sample's path length and in-slice indices and their steps, and that run's flat
        slice offset and step."""
        a, b, c, oa, ob, oc, ea, eb, ec, na, nb, nc, sa, sb, sc = _slice_axes(
            o[0], o[1], o[2], e[0], e[1], e[2], dims)
        inv = _F1 / ea
        h = np.float32(k) * _HALF * abs(inv)
        j0, j1, c0 = _slab_range(oa, ea, lo, hi, na, k)
        ja, jb, smf, pbf, pcf, dsm, dpb, dpc = _unclamped_run(j0, j1, k, c0, oa, inv, ob, oc, eb, ec, nb, nc)
        row, drow = (ja * k + c0) * sa, k * sa
        return (a, b, c, oa, ob, oc, eb, ec, na, nb, nc, sa, sb, sc, inv, h, j0, j1, c0, ja, jb, smf, pbf, pcf,
                dsm, dpb, dpc, row, drow)

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _joseph_finish(flat, o, e, lo, hi, k, dims, lane_steps, lane_sum):  # pragma: no cover - compiled
        """One ray's Joseph sum. The slabs whose sample needs no edge clamp and whose weight is
        the full ``2 h`` (all but a few near the box's faces) run in an unclamped loop; the rest
        take the general term. Same sum, about 2.5x fewer instructions per sample. A ray whose
        unclamped run :func:`_lanes_sum` already summed passes its steps and sum (else 0)."""
        acc = lo * _F0
        if hi <= lo:
            return acc
        (_a, _b, _c, oa, ob, oc, eb, ec, na, nb, nc, sa, sb, sc, inv, h, j0, j1, c0, ja, jb, _smf, pbf, pcf,
         _dsm, dpb, dpc, row, drow) = _joseph_setup(o, e, lo, hi, k, dims)
        if lane_steps > 0:
            acc += (h + h) * lane_sum
            jb = ja + lane_steps
        elif jb > ja:
            if sb == 1:
                f, done = _unclamped_sum(flat, row, drow, pbf, dpb, pcf, dpc, jb - ja, 1, sc)
            else:
                f, done = _unclamped_sum(flat, row, drow, pbf, dpb, pcf, dpc, jb - ja, sb, sc)
            acc += (h + h) * f
            jb = ja + done
        for j in range(j0, min(ja, j1 + 1)):
            acc += _slab_term(flat, j, k, c0, na, oa, inv, h, lo, hi, ob, oc, eb, ec, nb, nc, sa, sb, sc)
        for j in range(max(jb, j0), j1 + 1):
            acc += _slab_term(flat, j, k, c0, na, oa, inv, h, lo, hi, ob, oc, eb, ec, nb, nc, sa, sb, sc)
        return acc

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _tile_runs(flat, dims, o, e, s0, s1, kk, r0, n, lanes_i, lanes_f):  # pragma: no cover - compiled
        """Set up the unclamped runs of rays ``r0 .. r0 + n - 1`` (one tile) as packed lanes of
        :func:`_lanes_sum`: lane ``j``, the ``j``-th ray taken, in ``lanes_i[0:3, j]`` (flat
        offset, its step, steps) and ``lanes_f[0:4, j]`` (``pb, dpb, pc, dpc``; the backward pass
        also reads the first sample's path length and its step in ``lanes_f[8:10, j]``); ``lanes_i[4, i]``
        the lane of ray ``r0 + i`` (-1: none). A lane takes a ray whose run reads inside the
        volume with the tile's in-slice strides (those of its first such ray). Returns the number
        of lanes and those strides."""
        tb = tc = 0
        lanes = 0
        for i in range(n):
            lanes_i[4, i] = -1
            r = r0 + i
            lo, hi, k = s0[r], s1[r], kk[r]
            if hi <= lo:
                continue
            (_a, _b, _c, _oa, _ob, _oc, _eb, _ec, _na, _nb, _nc, _sa, sb, sc, _inv, _h, _j0, _j1, _c0, ja, jb, smf,
             pbf, pcf, dsm, dpb, dpc, row, drow) = _joseph_setup(o[r], e[r], lo, hi, k, dims)
            if jb <= ja or not _run_in_bounds(flat.size, row, drow, pbf, dpb, pcf, dpc, jb - ja, sb, sc):
                continue
            if lanes == 0:
                tb, tc = sb, sc
            if sb == tb and sc == tc:
                lanes_i[0, lanes], lanes_i[1, lanes], lanes_i[2, lanes] = row, drow, jb - ja
                lanes_f[0, lanes], lanes_f[1, lanes], lanes_f[2, lanes], lanes_f[3, lanes] = pbf, dpb, pcf, dpc
                lanes_f[8, lanes], lanes_f[9, lanes] = smf, dsm
                lanes_i[4, i] = lanes
                lanes += 1
        return lanes, tb, tc

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _lanes_steps(lanes, steps):  # pragma: no cover - compiled
        """The most steps of the first ``lanes`` lanes."""
        n_steps = 0
        for lane in range(lanes):
            n_steps = max(n_steps, steps[lane])
        return n_steps

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _prefetch_rows(flat, ahead, sc):  # pragma: no cover - compiled
        """Prefetch the two rows a bilinear sample at flat offset ``ahead`` reads (if inside)."""
        if 0 <= ahead < flat.size - sc:
            _prefetch(flat, ahead)
            _prefetch(flat, ahead + sc)

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _lanes_cells(t, lanes, sb, sc, row, drow, steps, pb, dpb, pc, dpc, base, fb, fc):  # pragma: no cover
        """Step ``t`` of the first ``lanes`` lanes (a lane past its last step repeats that step):
        each sample's flat offset ``base`` and bilinear weights ``fb, fc`` (a loop over the lanes
        that LLVM vectorises)."""
        for lane in range(lanes):
            tt = min(t, steps[lane] - 1)
            tf = np.float32(tt)
            xb = pb[lane] + tf * dpb[lane]
            xc = pc[lane] + tf * dpc[lane]
            ib, ic = int(xb), int(xc)
            fb[lane], fc[lane] = xb - np.float32(ib), xc - np.float32(ic)
            base[lane] = row[lane] + tt * drow[lane] + ib * sb + ic * sc

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _lanes_sum(flat, lanes, sb, sc, row, drow, steps, pb, dpb, pc, dpc, base, fb, fc, sample, acc):  # pragma: no cover
        """:func:`_unclamped_sum` of the first ``lanes`` lanes of a tile, stepping them together. Per
        step: a loop over the lanes for their cells and weights (vectorised by LLVM), a scalar
        one for the loads (x86 gathers are slower) and bilinear samples, which also prefetches
        the lanes' rows ``_AHEAD`` steps on, and a vectorised one adding the samples. Each lane
        adds its own samples in order: the same sum, bit for bit. A lane past its last step
        repeats that step, masked out of its sum. (Storing the four voxels of each sample for a
        vectorised blend instead measured slower: its stores stall the volume's loads.)"""
        n_steps = _lanes_steps(lanes, steps)
        acc[:lanes] = _F0
        usb, usc = np.uint64(sb), np.uint64(sc)
        for t in range(n_steps):
            _lanes_cells(t, lanes, sb, sc, row, drow, steps, pb, dpb, pc, dpc, base, fb, fc)
            for lane in range(lanes):
                q = np.uint64(base[lane])
                v00, v01 = flat[q], flat[q + usb]
                v10, v11 = flat[q + usc], flat[q + usc + usb]
                c0_ = v00 + fb[lane] * (v01 - v00)
                c1_ = v10 + fb[lane] * (v11 - v10)
                sample[lane] = c0_ + fc[lane] * (c1_ - c0_)
                if lane % _PREFETCH_LANES == 0:
                    _prefetch_rows(flat, base[lane] + _AHEAD * drow[lane], sc)
            for lane in range(lanes):
                acc[lane] = acc[lane] + sample[lane] if t < steps[lane] else acc[lane]

    @njit(fastmath=FASTMATH, cache=True, error_model="numpy")
    def _joseph_forward_block(flat, dims, o, e, s0, s1, kk, out, blk, n_blocks):  # pragma: no cover - compiled
        """Block ``blk`` of :func:`_joseph_forward`'s schedule: tiles ``blk, blk + n_blocks, ...``."""
        n_rays = o.shape[0]
        lanes_i = np.zeros((5, _TILE), np.int64)  # row, its step, steps, base; each ray's lane
        # pb, dpb, pc, dpc, fb, fc, sample, sum, sm, dsm (the rays' dtype: drr gives the volume the same)
        lanes_f = np.zeros((10, _TILE), o.dtype)
        for tile in range(blk, _tiles(n_rays), n_blocks):
            r0 = tile * _TILE
            n = min(n_rays, r0 + _TILE) - r0
            lanes, sb, sc = _tile_runs(flat, dims, o, e, s0, s1, kk, r0, n, lanes_i, lanes_f)
            _lanes_sum(flat, lanes, sb, sc, lanes_i[0], lanes_i[1], lanes_i[2], lanes_f[0], lanes_f[1], lanes_f[2],
                       lanes_f[3], lanes_i[3], lanes_f[4], lanes_f[5], lanes_f[6], lanes_f[7])
            for i in range(n):
                r, lane = r0 + i, lanes_i[4, i]
                steps = lanes_i[2, lane] if lane >= 0 else 0
                out[r] = _joseph_finish(flat, o[r], e[r], s0[r], s1[r], kk[r], dims, steps, lanes_f[7, max(lane, 0)])

    @njit(parallel=True, fastmath=FASTMATH, cache=True, error_model="numpy")
    def _joseph_forward(flat, dims, o, e, s0, s1, kk, out, n_blocks):  # pragma: no cover - compiled
        for blk in prange(n_blocks):  # a call, not inlined: the parallel pass compiles a large body slowly
            _joseph_forward_block(flat, dims, o, e, s0, s1, kk, out, np.int64(blk), n_blocks)

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _lanes_grad_sums(flat, lanes, sb, sc, lanes_i, lanes_f):  # pragma: no cover - compiled
        """:func:`_unclamped_grad_sums` of the first ``lanes`` lanes of a tile (:func:`_tile_runs`),
        stepping them together as :func:`_lanes_sum` does: the sums ``f, f_b, s f_b, f_c, s f_c``
        of lane ``j`` in ``lanes_f[7, j], lanes_f[13:17, j]``, each added in order (the same bits
        as one ray alone)."""
        row, drow, steps, base = lanes_i[0], lanes_i[1], lanes_i[2], lanes_i[3]
        pb, dpb, pc, dpc, fb, fc, f = lanes_f[0], lanes_f[1], lanes_f[2], lanes_f[3], lanes_f[4], lanes_f[5], lanes_f[6]
        sf, sm, dsm, s, dfb, dfc = lanes_f[7], lanes_f[8], lanes_f[9], lanes_f[10], lanes_f[11], lanes_f[12]
        gb, gbs, gc, gcs = lanes_f[13], lanes_f[14], lanes_f[15], lanes_f[16]
        n_steps = _lanes_steps(lanes, steps)
        lanes_f[7, :lanes] = _F0
        lanes_f[13:17, :lanes] = _F0
        usb, usc = np.uint64(sb), np.uint64(sc)
        for t in range(n_steps):
            _lanes_cells(t, lanes, sb, sc, row, drow, steps, pb, dpb, pc, dpc, base, fb, fc)
            for lane in range(lanes):
                s[lane] = sm[lane] + np.float32(min(t, steps[lane] - 1)) * dsm[lane]
            for lane in range(lanes):
                q = np.uint64(base[lane])
                v00, v01 = flat[q], flat[q + usb]
                v10, v11 = flat[q + usc], flat[q + usc + usb]
                du0, du1 = v01 - v00, v11 - v10
                c0_ = v00 + fb[lane] * du0
                c1_ = v10 + fb[lane] * du1
                dfc_ = c1_ - c0_
                dfb[lane] = du0 + fc[lane] * (du1 - du0)
                dfc[lane] = dfc_
                f[lane] = c0_ + fc[lane] * dfc_
                if lane % _PREFETCH_LANES == 0:
                    _prefetch_rows(flat, base[lane] + _AHEAD * drow[lane], sc)
            for lane in range(lanes):
                if t < steps[lane]:
                    sf[lane] += f[lane]
                    gb[lane] += dfb[lane]
                    gbs[lane] += dfb[lane] * s[lane]
                    gc[lane] += dfc[lane]
                    gcs[lane] += dfc[lane] * s[lane]

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _joseph_grad_ray(flat, dims, o, e, lo, hi, k, gr, want_vol, buf, lane_steps, lane_sums):  # pragma: no cover
        """One ray's gradient terms ``(a, b, c, dL/do and dL/de along a, b, c, dL/ds0, dL/ds1)``
        (not yet times ``gr``), scattering ``gr dL/dmu`` into ``buf`` when ``want_vol``. For pose
        gradients alone the unclamped run's samples are summed in one loop; a ray whose run
        :func:`_lanes_grad_sums` already summed passes its steps and the five sums (else 0)."""
        zero = lo * _F0
        ga_o = ga_e = gb_o = gb_e = gc_o = gc_e = d_lo = d_hi = zero
        a = b = c = 0  # a miss writes one axis (go, ge start at zero)
        if hi > lo:
            (a, b, c, oa, ob, oc, eb, ec, na, nb, nc, sa, sb, sc, inv, h, j0, j1, c0, ja, jb, smf, pbf, pcf,
             dsm, dpb, dpc, row, drow) = _joseph_setup(o, e, lo, hi, k, dims)
            # dL/ds summed over samples (plain and times s) for the slab centres s_w and the sample
            # points s_m (both (x - o_a) / e_a), and dL/dh
            d_s = d_ss = dh = zero
            if want_vol:  # every slab scatters into the volume: no unclamped run
                ja = jb = j0
            if lane_steps > 0:
                sf, gb, gbs, gc, gcs = lane_sums
                jb = ja + lane_steps
            elif jb > ja:
                if sb == 1:
                    sf, gb, gbs, gc, gcs, done = _unclamped_grad_sums(flat, row, drow, pbf, dpb, pcf, dpc, smf, dsm,
                                                                      jb - ja, 1, sc)
                else:
                    sf, gb, gbs, gc, gcs, done = _unclamped_grad_sums(flat, row, drow, pbf, dpb, pcf, dpc, smf, dsm,
                                                                      jb - ja, sb, sc)
                jb = ja + done
            if jb > ja:
                # the general term below with w = 2 h and neither end of the slab clipped
                w2 = h + h
                dh += (sf + sf)
                d_s += w2 * (gb * eb + gc * ec)
                d_ss += w2 * (gbs * eb + gcs * ec)
                gb_o += w2 * gb
                gb_e += w2 * gbs
                gc_o += w2 * gc
                gc_e += w2 * gcs
            for j in range(j0, j1 + 1):
                if ja <= j < jb:
                    continue
                cj = j * k + c0
                m = min(cj, na - 1)
                sm = (np.float32(m) - oa) * inv
                sw = sm + np.float32(cj - m) * inv
                top, bot = sw + h, sw - h
                w = min(hi, top) - max(lo, bot)
                if w <= zero:
                    continue
                f, du0, du1, dcv, fb, fc, ib, ic, base, db, dc = _slice_bilinear(
                    flat, m, sm, ob, oc, eb, ec, nb, nc, sa, sb, sc)
                dfb = ib * ((_F1 - fc) * du0 + fc * du1)
                dfc = ic * dcv
                # w = min(hi, s_w + h) - max(lo, s_w - h): which end moves with what
                t_hi = hi < top
                t_lo = lo > bot
                if t_hi:
                    d_hi += f
                if t_lo:
                    d_lo -= f
                cw = (zero if t_hi else f) - (zero if t_lo else f)  # f dw/ds_w
                dh += (zero if t_hi else f) + (zero if t_lo else f)  # f dw/dh
                cp = w * (dfb * eb + dfc * ec)  # w df/ds_m
                d_s += cw + cp
                d_ss += cw * sw + cp * sm
                gb_o += w * dfb
                gb_e += w * dfb * sm
                gc_o += w * dfc
                gc_e += w * dfc * sm
                if want_vol:
                    wg = w * gr
                    buf[base] += wg * (_F1 - fb) * (_F1 - fc)
                    buf[base + db] += wg * fb * (_F1 - fc)
                    buf[base + dc] += wg * (_F1 - fb) * fc
                    buf[base + dc + db] += wg * fb * fc
            # ds/do_a = -1/e_a, ds/de_a = -s/e_a; h = k / (2 |e_a|), dh/de_a = -h/e_a
            ga_o = -inv * d_s
            ga_e = -inv * (d_ss + h * dh)
        return a, b, c, ga_o, ga_e, gb_o, gb_e, gc_o, gc_e, d_lo, d_hi

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _store_grad(r, gr, terms, go, ge, gs0, gs1):  # pragma: no cover - compiled
        a, b, c, ga_o, ga_e, gb_o, gb_e, gc_o, gc_e, d_lo, d_hi = terms
        go[r, a] = gr * ga_o
        ge[r, a] = gr * ga_e
        go[r, b] = gr * gb_o
        ge[r, b] = gr * gb_e
        go[r, c] = gr * gc_o
        ge[r, c] = gr * gc_e
        gs0[r] = gr * d_lo
        gs1[r] = gr * d_hi

    @njit(fastmath=FASTMATH, cache=True, error_model="numpy")
    def _joseph_backward_scatter(flat, dims, o, e, s0, s1, kk, g, buf, go, ge, gs0, gs1, blk,
                                 n_blocks):  # pragma: no cover - compiled
        """Block ``blk`` of :func:`_joseph_backward`'s schedule with the volume's gradient,
        scattered into ``buf``. (A call from the ``prange`` body, not inlined into it: Numba's
        parallel pass compiles a large body slowly, 80 s for the two paths inlined, 40 s for
        this one, 16 s for neither.)"""
        for r in range(blk, o.shape[0], n_blocks):
            terms = _joseph_grad_ray(flat, dims, o[r], e[r], s0[r], s1[r], kk[r], g[r], True, buf, 0,
                                     (_F0, _F0, _F0, _F0, _F0))
            _store_grad(r, g[r], terms, go, ge, gs0, gs1)

    @njit(fastmath=FASTMATH, cache=True, error_model="numpy")
    def _joseph_backward_lanes(flat, dims, o, e, s0, s1, kk, g, buf, go, ge, gs0, gs1, blk,
                               n_blocks):  # pragma: no cover - compiled
        """Block ``blk`` of :func:`_joseph_backward`'s schedule for pose gradients alone: tiles of
        rays as the forward pass (lanes). (A call from the ``prange`` body, as the scatter path.)"""
        lanes_i = np.zeros((5, _TILE), np.int64)
        # as the forward pass's, then s, f_b, f_c and the sums f_b, s f_b, f_c, s f_c
        lanes_f = np.zeros((17, _TILE), o.dtype)
        for tile in range(blk, _tiles(o.shape[0]), n_blocks):
            r0 = tile * _TILE
            n = min(o.shape[0], r0 + _TILE) - r0
            lanes, sb, sc = _tile_runs(flat, dims, o, e, s0, s1, kk, r0, n, lanes_i, lanes_f)
            _lanes_grad_sums(flat, lanes, sb, sc, lanes_i, lanes_f)
            for i in range(n):
                r, lane = r0 + i, lanes_i[4, i]
                steps, j = (lanes_i[2, lane], lane) if lane >= 0 else (0, 0)
                sums = (lanes_f[7, j], lanes_f[13, j], lanes_f[14, j], lanes_f[15, j], lanes_f[16, j])
                terms = _joseph_grad_ray(flat, dims, o[r], e[r], s0[r], s1[r], kk[r], g[r], False, buf, steps, sums)
                _store_grad(r, g[r], terms, go, ge, gs0, gs1)

    @njit(parallel=True, fastmath=FASTMATH, cache=True, error_model="numpy")
    def _joseph_backward(flat, dims, o, e, s0, s1, kk, g, want_vol, gvol, go, ge, gs0, gs1):  # pragma: no cover
        """Pose gradients alone: tiles of rays as the forward pass (lanes); with the volume's
        gradient, rays dealt one by one to the blocks' scatter buffers (the buffers' sums, and so
        the gradient's bits, depend on which block takes which ray: kept as it was)."""
        n_blocks = gvol.shape[0]
        for blk in prange(n_blocks):
            if want_vol:
                _joseph_backward_scatter(flat, dims, o, e, s0, s1, kk, g, gvol[blk], go, ge, gs0, gs1, np.int64(blk),
                                         n_blocks)
            else:
                _joseph_backward_lanes(flat, dims, o, e, s0, s1, kk, g, gvol[blk], go, ge, gs0, gs1, np.int64(blk),
                                       n_blocks)


def _in_numba_kernel(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` inside :func:`stereodrr.render.threads.numba_kernel` (threading layer chosen
    before Numba starts its threads, one call at a time)."""

    @functools.wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with numba_kernel():
            return fn(*args, **kwargs)

    return wrapped


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


def _volume_strides(data: Tensor) -> tuple[int, int] | None:
    """``(sy, sz)``, the element strides of rows and slices, when the kernels can index
    ``data``'s voxels in its storage (``x`` contiguous, rows and slices apart and not
    overlapping: a contiguous volume, or a crop or other view of one), else None."""
    nz, ny, nx = data.shape
    sz, sy, sx = data.stride()
    sy = sy if ny > 1 else nx  # a stride along an axis of one voxel is never used
    sz = sz if nz > 1 else (ny - 1) * sy + nx
    if (sx != 1 and nx > 1) or sy < nx or sz < (ny - 1) * sy + nx:
        return None
    return sy, sz


def _flat(data: Tensor) -> tuple[np.ndarray, tuple[int, int, int, int, int]]:
    """The volume as the kernels read it: its storage from voxel (0, 0, 0) to the last voxel as
    one flat array (read in place where the strides allow, so a view costs no copy per call)
    and ``(nx, ny, nz, sy, sz)``, voxel ``(i, j, k)`` at ``i + j sy + k sz``."""
    d = data.detach()
    nz, ny, nx = d.shape
    strides = _volume_strides(d)
    if strides is None:
        d = d.contiguous()
        strides = (nx, nx * ny)
    sy, sz = strides
    n = (nz - 1) * sz + (ny - 1) * sy + nx
    flat = torch.as_strided(d, (n,), (1,), d.storage_offset())
    return flat.numpy(), (nx, ny, nz, sy, sz)


def _volume_grad(gvol: np.ndarray, dims: tuple[int, int, int, int, int]) -> Tensor:
    """``(Z, Y, X)`` sum of the per-block scatter buffers, laid out as :func:`_flat`'s."""
    nx, ny, nz, sy, sz = dims
    g = gvol.sum(0)
    size = g.itemsize
    return torch.from_numpy(np.lib.stride_tricks.as_strided(g, (nz, ny, nx), (sz * size, sy * size, size)).copy())


def _run_forward(kernel: Callable[..., None], data: Tensor, o: Tensor, rays: tuple[Tensor, ...]) -> Tensor:
    """``L (N,)`` in ``o``'s dtype from a forward kernel ``kernel(flat, dims, o, *rays, out, n_blocks)``."""
    on = _np(o)
    out = np.zeros(o.shape[0], dtype=on.dtype)
    if o.shape[0]:
        args = (*_flat(data), on, *(_np(x) for x in rays), out, numba.get_num_threads())
        announce_compile(kernel, args)
        kernel(*args)
    return torch.from_numpy(out)


def _run_backward(kernel: Callable[..., None], grad: Tensor, data: Tensor, o: Tensor, rays: tuple[Tensor, ...],
                  want_data: bool, buffer_bytes: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(data or (0,), o, e, and the two segment inputs')`` gradients from a backward kernel
    ``kernel(flat, dims, o, *rays, grad, want_vol, gvol, go, ge, g_first, g_second)``, which
    scatters the volume's into :func:`_volume_grad_buffers` (``go, ge`` start at zero: a ray that
    misses writes one axis of them)."""
    on = _np(o)
    dtype, n = on.dtype, o.shape[0]
    flat, dims = _flat(data)
    gvol = _volume_grad_buffers(flat, dtype, want_data, buffer_bytes)
    go, ge = np.zeros((n, 3), dtype), np.zeros((n, 3), dtype)
    g_first, g_second = np.empty(n, dtype), np.empty(n, dtype)
    if n:
        args = (flat, dims, on, *(_np(x) for x in rays), _np(grad), want_data, gvol, go, ge, g_first, g_second)
        announce_compile(kernel, args)
        kernel(*args)
    g_data = _volume_grad(gvol, dims) if want_data else data.new_zeros(0)
    return g_data, torch.from_numpy(go), torch.from_numpy(ge), torch.from_numpy(g_first), torch.from_numpy(g_second)


def _volume_grad_buffers(flat: np.ndarray, dtype: np.dtype, want_data: bool, buffer_bytes: int) -> np.ndarray:
    """One volume-gradient scatter buffer per thread block, laid out as the flat volume ``flat``,
    at most ``buffer_bytes`` in all (``(blocks, 1)`` placeholders when the volume gradient is
    not wanted)."""
    n_blocks = numba.get_num_threads()
    if want_data:
        n_blocks = max(1, min(n_blocks, buffer_bytes // max(1, flat.size * np.dtype(dtype).itemsize)))
    return np.zeros((n_blocks, flat.size) if want_data else (n_blocks, 1), dtype=dtype)


@_in_numba_kernel
def forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor) -> Tensor:
    """``L (N,)`` for ``data (Z, Y, X)``, ``o, e (N, 3)``, ``s0, ds (N,)``, ``n (N,)`` int on CPU."""
    return _run_forward(_forward, data, o, (e, s0, ds, n))


@_in_numba_kernel
def backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor,
             want_data: bool, buffer_bytes: int = _GRAD_BUFFER_BYTES) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(data or (0,), o, e, s0, ds)`` of ``sum(grad * L)``.

    The volume gradient is scattered into one buffer per thread block (no atomics on CPU), at
    most ``buffer_bytes`` in all: many-core machines trade some parallelism for memory rather
    than copy the volume per core.
    """
    return _run_backward(_backward, grad.to(data.dtype), data, o, (e, s0, ds, n), want_data, buffer_bytes)


@_in_numba_kernel
def joseph_forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor) -> Tensor:
    """Joseph line integrals ``L (N,)`` (:func:`stereodrr.render.integrate.joseph_torch`'s
    definition) for ``data (Z, Y, X)``, ``o, e (N, 3)``, ``s0, s1 (N,)``, ``k (N,)`` int on CPU."""
    return _run_forward(_joseph_forward, data, o, (e, s0, s1, k))


@_in_numba_kernel
def joseph_backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor,
                    want_data: bool,
                    buffer_bytes: int = _GRAD_BUFFER_BYTES) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(data or (0,), o, e, s0, s1)`` of ``sum(grad * L)`` (scatter buffers as in
    :func:`backward`)."""
    return _run_backward(_joseph_backward, grad.to(data.dtype), data, o, (e, s0, s1, k), want_data, buffer_bytes)

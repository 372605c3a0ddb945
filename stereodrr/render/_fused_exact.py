"""Fused CPU kernel for the exact radiological path (Siddon/Jacobs, Numba), with its analytic
backward pass.

It evaluates :func:`stereodrr.render.integrate.exact_integral`'s sum
``L = sum_m mu[v_m] (a_{m+1} - a_m)`` (``a_m`` the voxel-plane crossings inside ``[s0, s1]``,
``v_m`` the voxel of each segment, indices clamped to the volume) by walking the voxels
incrementally (Jacobs' form): one thread per ray keeps the next crossing of each axis and steps
the axis whose plane comes first, so each segment costs a compare, a load and a multiply-add;
nothing is sorted or materialised. A crossing of axis ``a`` at plane ``c`` lies at
``a_m = (c - o_a) / e_a``, computed from the plane each time (no drift). The walk runs in
float64 whatever the volume's dtype: a float32 render then differs from the float64 reference
only through its float32 rays. Backward (``g`` the incoming gradient)::

    dL/dmu_v = sum of the segment lengths in voxel v
    dL/ds0   = -mu[first voxel]             dL/ds1   = mu[last voxel]
    dL/do_a  = -1/e_a sum_{m on a} D_m      dL/de_a  = -1/e_a sum_{m on a} a_m D_m

``D_m = mu[v_{m-1}] - mu[v_m]`` (the voxel before the crossing minus the one after). The
volume gradient is scattered into one buffer per thread block, then summed (as in
:mod:`stereodrr.render._fused`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._fused import _GRAD_BUFFER_BYTES, _in_numba_kernel, _np, _volume_grad_buffers, numba

__all__ = ["forward", "backward"]

if numba is not None:
    from numba import njit, prange

    _INF = np.inf

    @njit(inline="always", fastmath=True, cache=True)
    def _start(p, e, n):  # pragma: no cover - compiled
        """The voxel the ray is in just after index coordinate ``p`` (on a plane: the one it moves
        into), clamped to ``0 .. n - 1``, and the step ``+1 / -1 / 0`` of the walk along the axis."""
        if e > 0.0:
            i, step = int(np.floor(p + 0.5)), 1
        elif e < 0.0:
            i, step = int(np.ceil(p - 0.5)), -1
        else:
            i, step = int(np.floor(p + 0.5)), 0
        return min(max(i, 0), n - 1), step

    @njit(inline="always", fastmath=True, cache=True)
    def _leave(i, step, o, inv, n):  # pragma: no cover - compiled
        """Path length where the ray leaves voxel ``i`` of an axis; ``inf`` when it never does
        (parallel, or the next voxel is outside the box: the walk stays in the edge voxel, as the
        reference's clamped index does)."""
        if step == 0 or i + step < 0 or i + step > n - 1:
            return _INF
        return (np.float64(i) + 0.5 * np.float64(step) - o) * inv

    @njit(inline="always", fastmath=True, cache=True)
    def _ray(o, e, r, lo, nx, ny, nz):  # pragma: no cover - compiled
        """The walk's start for ray ``r`` entering at ``lo``: per axis the origin, ``1 / e``, the
        voxel, the step and the first crossing; and the flat index of the first voxel."""
        ox, oy, oz = np.float64(o[r, 0]), np.float64(o[r, 1]), np.float64(o[r, 2])
        ex, ey, ez = np.float64(e[r, 0]), np.float64(e[r, 1]), np.float64(e[r, 2])
        ix, sx = _start(ox + lo * ex, ex, nx)
        iy, sy = _start(oy + lo * ey, ey, ny)
        iz, sz = _start(oz + lo * ez, ez, nz)
        vx = 1.0 / ex if ex != 0.0 else 0.0
        vy = 1.0 / ey if ey != 0.0 else 0.0
        vz = 1.0 / ez if ez != 0.0 else 0.0
        return (ox, oy, oz, vx, vy, vz, ix, iy, iz, sx, sy, sz, _leave(ix, sx, ox, vx, nx),
                _leave(iy, sy, oy, vy, ny), _leave(iz, sz, oz, vz, nz), (iz * ny + iy) * nx + ix)

    @njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
    def _forward(vol, o, e, s0, s1, out):  # pragma: no cover - compiled
        nz, ny, nx = vol.shape
        flat = vol.ravel()
        sxy = nx * ny
        for r in prange(o.shape[0]):
            lo, hi = np.float64(s0[r]), np.float64(s1[r])
            acc = 0.0
            if hi > lo:
                ox, oy, oz, vx, vy, vz, ix, iy, iz, sx, sy, sz, tx, ty, tz, b = _ray(o, e, r, lo, nx, ny, nz)
                s = lo
                while True:
                    t = min(tx, ty, tz)
                    if t >= hi:
                        acc += flat[b] * (hi - s)
                        break
                    t = max(t, s)  # a first crossing rounded to just before the entry
                    acc += flat[b] * (t - s)
                    s = t
                    if tx <= t:
                        ix += sx
                        b += sx
                        tx = _leave(ix, sx, ox, vx, nx)
                    elif ty <= t:
                        iy += sy
                        b += sy * nx
                        ty = _leave(iy, sy, oy, vy, ny)
                    else:
                        iz += sz
                        b += sz * sxy
                        tz = _leave(iz, sz, oz, vz, nz)
            out[r] = acc

    @njit(parallel=True, fastmath=True, cache=True, error_model="numpy")
    def _backward(vol, o, e, s0, s1, g, want_vol, gvol, go, ge, gs0, gs1):  # pragma: no cover - compiled
        nz, ny, nx = vol.shape
        flat = vol.ravel()
        sxy = nx * ny
        n_blocks = gvol.shape[0]
        for blk in prange(n_blocks):
            buf = gvol[blk].ravel()
            for r in range(blk, o.shape[0], n_blocks):  # interleaved: blocks get similar ray lengths
                lo, hi, gr = np.float64(s0[r]), np.float64(s1[r]), np.float64(g[r])
                # per axis: sum of D_m and of a_m D_m over its crossings
                dx = dy = dz = hx = hy = hz = d_lo = d_hi = 0.0
                vx = vy = vz = 0.0
                if hi > lo:
                    ox, oy, oz, vx, vy, vz, ix, iy, iz, sx, sy, sz, tx, ty, tz, b = _ray(o, e, r, lo, nx, ny, nz)
                    s = lo
                    mu = np.float64(flat[b])
                    d_lo = -mu
                    while True:
                        t = min(tx, ty, tz)
                        if t >= hi:
                            if want_vol:
                                buf[b] += gr * (hi - s)
                            d_hi = mu
                            break
                        t = max(t, s)
                        if want_vol:
                            buf[b] += gr * (t - s)
                        s = t
                        if tx <= t:
                            ix += sx
                            b += sx
                            tx = _leave(ix, sx, ox, vx, nx)
                            nxt = np.float64(flat[b])
                            dx += mu - nxt
                            hx += t * (mu - nxt)
                        elif ty <= t:
                            iy += sy
                            b += sy * nx
                            ty = _leave(iy, sy, oy, vy, ny)
                            nxt = np.float64(flat[b])
                            dy += mu - nxt
                            hy += t * (mu - nxt)
                        else:
                            iz += sz
                            b += sz * sxy
                            tz = _leave(iz, sz, oz, vz, nz)
                            nxt = np.float64(flat[b])
                            dz += mu - nxt
                            hz += t * (mu - nxt)
                        mu = nxt
                go[r, 0] = -gr * vx * dx
                go[r, 1] = -gr * vy * dy
                go[r, 2] = -gr * vz * dz
                ge[r, 0] = -gr * vx * hx
                ge[r, 1] = -gr * vy * hy
                ge[r, 2] = -gr * vz * hz
                gs0[r] = gr * d_lo
                gs1[r] = gr * d_hi


@_in_numba_kernel
def forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    """Exact line integrals ``L (N,)`` in ``o``'s dtype for ``data (Z, Y, X)``, ``o, e (N, 3)``,
    ``s0, s1 (N,)`` on CPU."""
    out = np.zeros(o.shape[0], dtype=_np(o).dtype)
    if o.shape[0]:
        _forward(_np(data), _np(o), _np(e), _np(s0), _np(s1), out)
    return torch.from_numpy(out)


@_in_numba_kernel
def backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, want_data: bool,
             buffer_bytes: int = _GRAD_BUFFER_BYTES) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients ``(data or (0,), o, e, s0, s1)`` of ``sum(grad * L)`` (scatter buffers as in
    :func:`stereodrr.render._fused.backward`)."""
    dtype = _np(o).dtype
    gvol = _volume_grad_buffers(data, dtype, want_data, buffer_bytes)
    go, ge = np.empty((o.shape[0], 3), dtype), np.empty((o.shape[0], 3), dtype)
    gs0, gs1 = np.empty(o.shape[0], dtype), np.empty(o.shape[0], dtype)
    if o.shape[0]:
        _backward(_np(data), _np(o), _np(e), _np(s0), _np(s1), _np(grad.to(o.dtype)), want_data, gvol, go, ge, gs0, gs1)
    g_data = torch.from_numpy(gvol.sum(0)) if want_data else data.new_zeros(0)
    return g_data, torch.from_numpy(go), torch.from_numpy(ge), torch.from_numpy(gs0), torch.from_numpy(gs1)

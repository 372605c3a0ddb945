"""Fused CPU kernel for trilinear ray marching (Numba), with its analytic backward pass.

It evaluates exactly the samples of :func:`stereodrr.render.integrate.trilinear_torch`
(``L = ds sum_k f(p_k)``, ``p_k = o + (s0 + (k + 1/2) ds) e``, ``f`` the edge-clamped trilinear
interpolant) but never materialises them: one thread walks a ray and accumulates, so memory is
``O(rays)`` and the volume is read straight from cache. Backward::

    dL/do   = ds sum_k grad f(p_k)            dL/de  = ds sum_k s_k grad f(p_k)
    dL/ds0  = ds sum_k grad f(p_k) . e        dL/dds = sum_k f(p_k) + ds sum_k (k + 1/2) grad f(p_k) . e
    dL/dmu_v = ds sum_k w_v(p_k)              (w_v the trilinear weight of voxel v)

``grad f`` is zero along an axis where the sample lies in the clamped half voxel at the box
edge. The volume gradient is scattered into one buffer per thread block, then summed.
Numba is optional: without it (or off the CPU) the torch path runs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

try:  # Numba is an optional accelerator; the torch path is complete without it.
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None

__all__ = ["available", "TrilinearMarch"]


def available(data: Tensor) -> bool:
    """True when the fused CPU kernel can render ``data``."""
    return numba is not None and data.device.type == "cpu" and data.dtype in (torch.float32, torch.float64)


if numba is not None:

    @njit(inline="always", cache=True)
    def _axis(x: float, n: int) -> tuple[int, int, float, float]:
        """Clamped linear-interpolation cell of coordinate ``x`` on ``n`` samples:
        ``(i0, i1, frac, d frac/dx)``."""
        if x <= 0.0:
            return 0, min(1, n - 1), 0.0, 0.0
        if x >= n - 1:
            return max(n - 2, 0), n - 1, 1.0 if n > 1 else 0.0, 0.0
        i0 = int(x)
        return i0, i0 + 1, x - i0, 1.0

    @njit(parallel=True, cache=True, error_model="numpy")
    def _forward(vol, o, e, s0, ds, n, out):  # pragma: no cover - compiled
        nz, ny, nx = vol.shape
        for r in prange(o.shape[0]):
            acc = 0.0
            for k in range(n[r]):
                s = s0[r] + (k + 0.5) * ds[r]
                x0, x1, fx, _ = _axis(o[r, 0] + s * e[r, 0], nx)
                y0, y1, fy, _ = _axis(o[r, 1] + s * e[r, 1], ny)
                z0, z1, fz, _ = _axis(o[r, 2] + s * e[r, 2], nz)
                c00 = vol[z0, y0, x0] + fx * (vol[z0, y0, x1] - vol[z0, y0, x0])
                c01 = vol[z0, y1, x0] + fx * (vol[z0, y1, x1] - vol[z0, y1, x0])
                c10 = vol[z1, y0, x0] + fx * (vol[z1, y0, x1] - vol[z1, y0, x0])
                c11 = vol[z1, y1, x0] + fx * (vol[z1, y1, x1] - vol[z1, y1, x0])
                c0 = c00 + fy * (c01 - c00)
                c1 = c10 + fy * (c11 - c10)
                acc += c0 + fz * (c1 - c0)
            out[r] = acc * ds[r]

    @njit(parallel=True, cache=True, error_model="numpy")
    def _backward(vol, o, e, s0, ds, n, g, want_vol, gvol, go, ge, gs0, gds):  # pragma: no cover
        nz, ny, nx = vol.shape
        n_blocks = gvol.shape[0]
        for b in prange(n_blocks):
            buf = gvol[b]
            for r in range(b, o.shape[0], n_blocks):  # interleaved: blocks get similar ray lengths
                w = g[r] * ds[r]  # dL_total/d(sample value) for every sample of this ray
                sf = 0.0
                gx = gy = gz = 0.0
                hx = hy = hz = 0.0
                ke = 0.0
                for k in range(n[r]):
                    s = s0[r] + (k + 0.5) * ds[r]
                    x0, x1, fx, dx = _axis(o[r, 0] + s * e[r, 0], nx)
                    y0, y1, fy, dy = _axis(o[r, 1] + s * e[r, 1], ny)
                    z0, z1, fz, dz = _axis(o[r, 2] + s * e[r, 2], nz)
                    v000 = vol[z0, y0, x0]
                    v001 = vol[z0, y0, x1]
                    v010 = vol[z0, y1, x0]
                    v011 = vol[z0, y1, x1]
                    v100 = vol[z1, y0, x0]
                    v101 = vol[z1, y0, x1]
                    v110 = vol[z1, y1, x0]
                    v111 = vol[z1, y1, x1]
                    c00 = v000 + fx * (v001 - v000)
                    c01 = v010 + fx * (v011 - v010)
                    c10 = v100 + fx * (v101 - v100)
                    c11 = v110 + fx * (v111 - v110)
                    c0 = c00 + fy * (c01 - c00)
                    c1 = c10 + fy * (c11 - c10)
                    sf += c0 + fz * (c1 - c0)
                    # Spatial gradient of the interpolant (zero where the axis is clamped).
                    dfx = dx * ((1 - fz) * ((1 - fy) * (v001 - v000) + fy * (v011 - v010))
                                + fz * ((1 - fy) * (v101 - v100) + fy * (v111 - v110)))
                    dfy = dy * ((1 - fz) * (c01 - c00) + fz * (c11 - c10))
                    dfz = dz * (c1 - c0)
                    gx += dfx
                    gy += dfy
                    gz += dfz
                    hx += s * dfx
                    hy += s * dfy
                    hz += s * dfz
                    ke += (k + 0.5) * (dfx * e[r, 0] + dfy * e[r, 1] + dfz * e[r, 2])
                    if want_vol:
                        a = w * (1 - fz)
                        c = w * fz
                        buf[z0, y0, x0] += a * (1 - fy) * (1 - fx)
                        buf[z0, y0, x1] += a * (1 - fy) * fx
                        buf[z0, y1, x0] += a * fy * (1 - fx)
                        buf[z0, y1, x1] += a * fy * fx
                        buf[z1, y0, x0] += c * (1 - fy) * (1 - fx)
                        buf[z1, y0, x1] += c * (1 - fy) * fx
                        buf[z1, y1, x0] += c * fy * (1 - fx)
                        buf[z1, y1, x1] += c * fy * fx
                go[r, 0] = w * gx
                go[r, 1] = w * gy
                go[r, 2] = w * gz
                ge[r, 0] = w * hx
                ge[r, 1] = w * hy
                ge[r, 2] = w * hz
                gs0[r] = w * (gx * e[r, 0] + gy * e[r, 1] + gz * e[r, 2])
                gds[r] = g[r] * (sf + ds[r] * ke)


def _np(x: Tensor) -> np.ndarray:
    return x.detach().contiguous().numpy()


class TrilinearMarch(torch.autograd.Function):
    """``(data (Z,Y,X), o (N,3), e (N,3), s0 (N,), ds (N,), n (N,) int64) -> L (N,)`` on CPU."""

    @staticmethod
    def forward(ctx, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor) -> Tensor:  # type: ignore[override]
        out = np.empty(o.shape[0], dtype=_np(o).dtype)
        if o.shape[0]:
            _forward(_np(data), _np(o), _np(e), _np(s0), _np(ds), _np(n), out)
        ctx.save_for_backward(data, o, e, s0, ds, n)
        return torch.from_numpy(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        data, o, e, s0, ds, n = ctx.saved_tensors
        want_vol = bool(ctx.needs_input_grad[0])
        dtype = _np(o).dtype
        n_blocks = numba.get_num_threads()
        # One scatter buffer per thread when the volume needs a gradient (no atomics on CPU).
        gvol = np.zeros((n_blocks, *data.shape) if want_vol else (n_blocks, 1, 1, 1), dtype=dtype)
        go, ge = np.empty((o.shape[0], 3), dtype), np.empty((o.shape[0], 3), dtype)
        gs0, gds = np.empty(o.shape[0], dtype), np.empty(o.shape[0], dtype)
        if o.shape[0]:
            _backward(_np(data), _np(o), _np(e), _np(s0), _np(ds), _np(n), _np(grad.to(data.dtype)),
                      want_vol, gvol, go, ge, gs0, gds)
        g_data = torch.from_numpy(gvol.sum(0)) if want_vol else None
        return g_data, torch.from_numpy(go), torch.from_numpy(ge), torch.from_numpy(gs0), torch.from_numpy(gds), None


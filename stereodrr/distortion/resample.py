"""Area-preserving resampling: each output pixel the average of a source image over the pre-image
of its area.

A source image is taken as what its pixels are, area averages: constant over each pixel's
square. An output pixel's pre-image is the quadrilateral of its four corners mapped into the
source (straight sides: the map is smooth on the pixel scale; a side's curvature moves less than
``1e-4`` of a pixel's area for an intensifier). The average of the piecewise-constant source over that
quadrilateral is exact: by Green's theorem ``integral f = loop integral F dv`` with ``F`` the
running sum of ``f`` along each source row from a column left of the quadrilateral; ``F`` is
linear along each piece of a side between pixel boundaries, so each piece contributes its exact
share. Each source pixel's weight is thus its overlap area with the quadrilateral, over the
quadrilateral's area. Neighbouring output pixels share sides, so their pre-images tile the
source: the resampling conserves flux exactly.

The result is a sparse linear operator ``(H * W) x (Hs * Ws)``, built once per map and image size
and applied to any number of frames (numpy, or torch: differentiable in the image).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse
import torch

__all__ = ["pixel_corners", "AreaOperator", "area_operator"]


def pixel_corners(height: int, width: int) -> np.ndarray:
    """``(H + 1, W + 1, 2)`` the ``(u, v)`` corners of an ``H x W`` image's pixels (half-integers)."""
    v, u = np.mgrid[0:height + 1, 0:width + 1].astype(np.float64) - 0.5
    return np.stack([u, v], -1)


@dataclass
class AreaOperator:
    """The sparse averaging operator of :func:`area_operator`."""

    matrix: scipy.sparse.csr_matrix
    shape: tuple[int, int]
    source_shape: tuple[int, int]
    _torch: dict[Any, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def apply(self, image: Any) -> Any:
        """``(..., Hs, Ws)`` -> ``(..., H, W)``; numpy (float64) or torch (its floating dtype, float32
        for an integer tensor, and its device; differentiable in the image).

        Raises:
            ValueError: the image is not ``source_shape``.
        """
        if tuple(image.shape[-2:]) != self.source_shape:
            raise ValueError(f"image: expected (..., H, W) = (..., {self.source_shape[0]}, {self.source_shape[1]}), "
                             f"got shape {tuple(image.shape)}")
        batch = tuple(image.shape[:-2])
        n = self.source_shape[0] * self.source_shape[1]
        if isinstance(image, torch.Tensor):
            if not image.is_floating_point():  # torch's sparse product has no integer kernels
                image = image.float()
            key = (image.dtype, image.device)
            if key not in self._torch:
                m = self.matrix
                with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is all we use
                    warnings.simplefilter("ignore", UserWarning)
                    self._torch[key] = torch.sparse_csr_tensor(
                        torch.as_tensor(m.indptr.astype(np.int64)), torch.as_tensor(m.indices.astype(np.int64)),
                        torch.as_tensor(m.data), m.shape, check_invariants=False).to(dtype=image.dtype, device=image.device)
            x = image.reshape(-1, n).T
            return torch.sparse.mm(self._torch[key], x).T.reshape(*batch, *self.shape)
        arr = np.asarray(image, dtype=np.float64).reshape(-1, n)
        return np.asarray(self.matrix @ arr.T).T.reshape(*batch, *self.shape)


def area_operator(corners: np.ndarray, source_shape: tuple[int, int], scale: np.ndarray | None = None,
                  active: np.ndarray | None = None, block_rows: int = 64) -> AreaOperator:
    """The averaging operator for output pixels whose corners lie at ``corners`` in the source.

    Args:
        corners: ``(H + 1, W + 1, 2)`` source ``(u, v)`` of the output pixels' corners (NaN: an
            output pixel without data, which gets 0).
        source_shape: ``(Hs, Ws)``.
        scale: optional ``(H, W)`` factor per output pixel (e.g. its fraction inside a round field).
        active: optional ``(H, W)`` bool: the output pixels to build; the others get 0 (e.g. those
            whose pre-image lies outside a round field, where the source holds nothing).
        block_rows: output rows built at a time (bounds the memory).

    Returns:
        the operator (the source outside its bounds counts as 0).
    """
    c = np.asarray(corners, dtype=np.float64)
    if c.ndim != 3 or c.shape[-1] != 2 or min(c.shape[:2]) < 2:
        raise ValueError(f"corners: expected (H + 1, W + 1, 2), got shape {c.shape}")
    H, W = c.shape[0] - 1, c.shape[1] - 1
    rows, cols, vals = [], [], []
    for i0 in range(0, H, block_rows):
        i1 = min(H, i0 + block_rows)
        r, k, w = _block(c[i0:i1 + 1], source_shape, None if active is None else np.asarray(active[i0:i1]).ravel())
        rows.append(r + i0 * W)
        cols.append(k)
        vals.append(w)
    m = scipy.sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                shape=(H * W, source_shape[0] * source_shape[1]))
    if scale is not None:
        m = scipy.sparse.diags(np.asarray(scale, dtype=np.float64).ravel()) @ m
    m.eliminate_zeros()
    return AreaOperator(m.tocsr(), (H, W), source_shape)


def _block(c: np.ndarray, source_shape: tuple[int, int], active: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse entries ``(output pixel, source pixel, weight)`` for the (``active``) output pixels of
    a block of corner rows ``c (h + 1, W + 1, 2)`` (module docstring)."""
    Hs, Ws = source_shape
    quad = np.stack([c[:-1, :-1], c[:-1, 1:], c[1:, 1:], c[1:, :-1]], 2).reshape(-1, 4, 2)  # (n, 4, 2) in order
    good = np.all(np.isfinite(quad), axis=(1, 2))
    if active is not None:
        good &= active
    quad = np.where(good[:, None, None], quad, 0.0)
    a, b = quad, np.roll(quad, -1, axis=1)  # the four sides a -> b
    area = 0.5 * np.sum((a[..., 0] + b[..., 0]) * (b[..., 1] - a[..., 1]), axis=1)  # loop integral of u dv
    c0 = np.floor(quad[..., 0].min(1) + 0.5).astype(np.int64)  # F starts left of the quadrilateral
    # Break points of each side at pixel boundaries (u or v = k + 1/2), as fractions t in [0, 1].
    span = int(np.ceil(np.abs(b - a)[good].max())) + 1 if good.any() else 1
    ts = [np.zeros(a.shape[:2]), np.ones(a.shape[:2])]
    for ax in (0, 1):
        lo = np.minimum(a[..., ax], b[..., ax])
        first = np.floor(lo - 0.5) + 1.5  # the first boundary above lo
        d = b[..., ax] - a[..., ax]
        for k in range(span):
            x = first + k
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (x - a[..., ax]) / d
            ts.append(np.where((t > 0) & (t < 1), t, 1.0))
    t = np.sort(np.stack(ts, -1), axis=-1)  # (n, 4, K)
    ta, tb = t[..., :-1], t[..., 1:]
    dv = (tb - ta) * (b[..., 1] - a[..., 1])[..., None]
    # Only the pieces that move in v contribute; keep those of good pixels, compressed once.
    sel = (dv != 0) & good[:, None, None]
    pix, side, _ = np.nonzero(sel)
    dv = dv[sel]
    tm = 0.5 * (ta + tb)[sel]
    a_s, b_s = a[pix, side], b[pix, side]
    um = a_s[:, 0] + tm * (b_s[:, 0] - a_s[:, 0])
    vm = a_s[:, 1] + tm * (b_s[:, 1] - a_s[:, 1])
    row = np.floor(vm + 0.5).astype(np.int64)
    col = np.floor(um + 0.5).astype(np.int64)
    base = c0[pix]
    inrow = (row >= 0) & (row < Hs)
    out_r, out_k, out_w = [], [], []
    # F(u) = sum of f[row, c0 .. col - 1] + (u - col + 1/2) f[row, col]: each piece adds dv F(u_mid).
    part = inrow & (col >= 0) & (col < Ws)
    out_r.append(pix[part])
    out_k.append(row[part] * Ws + col[part])
    out_w.append(dv[part] * (um[part] - col[part] + 0.5))
    width = int((col - base).max()) if len(col) else 0
    for j in range(width):
        cc = base + j
        full = inrow & (cc < col) & (cc >= 0) & (cc < Ws)
        out_r.append(pix[full])
        out_k.append(row[full] * Ws + cc[full])
        out_w.append(dv[full])
    r = np.concatenate(out_r)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(good & (np.abs(area) > 1e-12), 1.0 / area, 0.0)
    return r, np.concatenate(out_k), np.concatenate(out_w) * inv[r]

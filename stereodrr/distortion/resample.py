"""Area-preserving resampling: each output pixel the average of a source image over the pre-image
of its area.

A source image is taken as what its pixels are, area averages: constant over each pixel's
square. An output pixel's square has a pre-image in the source (its four corners mapped there);
the map is smooth and near the identity on the pixel scale, so the pre-image is taken as the
axis-aligned rectangle whose sides are the means of the mapped corners along each side
(neighbouring output pixels share sides, so the rectangles tile the source without gaps along
rows and columns). The average of the piecewise-constant source over that rectangle is exact:
each overlapped source pixel weighs by its overlap area. The result is a sparse linear operator
``(H * W) x (Hs * Ws)``, built once per map and image size and applied to any number of frames
(numpy or torch; differentiable in the image).

The rectangle differs from the true pre-image (a near-parallelogram) by the field's shear and
rotation over one pixel (below 0.01 for an intensifier): a second-order blur, no shift.
"""

from __future__ import annotations

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
        """``(..., Hs, Ws)`` -> ``(..., H, W)``; numpy (float64) or torch (its dtype and device;
        differentiable in the image).

        Raises:
            ValueError: the image is not ``source_shape``.
        """
        if tuple(image.shape[-2:]) != self.source_shape:
            raise ValueError(f"image: expected (..., H, W) = (..., {self.source_shape[0]}, {self.source_shape[1]}), "
                             f"got shape {tuple(image.shape)}")
        batch = tuple(image.shape[:-2])
        n = self.source_shape[0] * self.source_shape[1]
        if isinstance(image, torch.Tensor):
            key = (image.dtype, image.device)
            if key not in self._torch:
                m = self.matrix.tocoo()
                idx = torch.as_tensor(np.vstack([m.row, m.col]).astype(np.int64))
                self._torch[key] = torch.sparse_coo_tensor(idx, torch.as_tensor(m.data), m.shape).to(
                    dtype=image.dtype, device=image.device).coalesce()
            x = image.reshape(-1, n).T
            return torch.sparse.mm(self._torch[key], x).T.reshape(*batch, *self.shape)
        arr = np.asarray(image, dtype=np.float64).reshape(-1, n)
        return np.asarray(self.matrix @ arr.T).T.reshape(*batch, *self.shape)


def area_operator(corners: np.ndarray, source_shape: tuple[int, int], scale: np.ndarray | None = None) -> AreaOperator:
    """The averaging operator for output pixels whose corners lie at ``corners`` in the source.

    Args:
        corners: ``(H + 1, W + 1, 2)`` source ``(u, v)`` of the output pixels' corners (NaN: an
            output pixel without data, which gets 0).
        source_shape: ``(Hs, Ws)``.
        scale: optional ``(H, W)`` factor per output pixel (e.g. its fraction inside a round field).

    Returns:
        the operator (the source outside its bounds counts as 0).
    """
    c = np.asarray(corners, dtype=np.float64)
    if c.ndim != 3 or c.shape[-1] != 2 or min(c.shape[:2]) < 2:
        raise ValueError(f"corners: expected (H + 1, W + 1, 2), got shape {c.shape}")
    H, W = c.shape[0] - 1, c.shape[1] - 1
    Hs, Ws = source_shape
    u0 = 0.5 * (c[:-1, :-1, 0] + c[1:, :-1, 0])
    u1 = 0.5 * (c[:-1, 1:, 0] + c[1:, 1:, 0])
    v0 = 0.5 * (c[:-1, :-1, 1] + c[:-1, 1:, 1])
    v1 = 0.5 * (c[1:, :-1, 1] + c[1:, 1:, 1])
    u0, u1 = np.minimum(u0, u1), np.maximum(u0, u1)
    v0, v1 = np.minimum(v0, v1), np.maximum(v0, v1)
    ok = np.isfinite(u0 + u1 + v0 + v1) & (u1 > u0) & (v1 > v0)
    ok &= (u1 > -0.5) & (u0 < Ws - 0.5) & (v1 > -0.5) & (v0 < Hs - 0.5)
    out = np.flatnonzero(ok)
    u0, u1, v0, v1 = (a.ravel()[out] for a in (u0, u1, v0, v1))
    weight = 1.0 / ((u1 - u0) * (v1 - v0))
    if scale is not None:
        weight = weight * np.asarray(scale, dtype=np.float64).ravel()[out]
    cols = _overlaps(u0, u1, Ws)
    rows = _overlaps(v0, v1, Hs)
    r_idx, c_idx, vals = [], [], []
    for ci, cw in cols:
        for ri, rw in rows:
            w = cw * rw * weight
            keep = w > 0
            r_idx.append(out[keep])
            c_idx.append(ri[keep] * Ws + ci[keep])
            vals.append(w[keep])
    m = scipy.sparse.csr_matrix((np.concatenate(vals), (np.concatenate(r_idx), np.concatenate(c_idx))),
                                shape=(H * W, Hs * Ws))
    return AreaOperator(m, (H, W), (Hs, Ws))


def _overlaps(lo: np.ndarray, hi: np.ndarray, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For intervals ``[lo, hi]`` (pixel units, pixel ``k`` spans ``k +- 1/2``): a list of
    ``(pixel index, overlap length)`` arrays, one per candidate pixel; out-of-range pixels get 0."""
    first = np.floor(lo + 0.5).astype(np.int64)
    count = int((np.floor(hi + 0.5).astype(np.int64) - first).max()) + 1
    res = []
    for k in range(count):
        idx = first + k
        ov = np.clip(np.minimum(hi, idx + 0.5) - np.maximum(lo, idx - 0.5), 0.0, None)
        ov = np.where((idx >= 0) & (idx < n), ov, 0.0)
        res.append((np.clip(idx, 0, n - 1), ov))
    return res

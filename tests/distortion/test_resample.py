"""The area-preserving resampling operator against brute-force overlap areas."""

import numpy as np
import pytest
import torch

from stereodrr.distortion.resample import area_operator, pixel_corners


def _inside_quad(pts, quad):
    """Points inside a convex quadrilateral (either orientation)."""
    s = []
    for k in range(4):
        a, b = quad[k], quad[(k + 1) % 4]
        s.append((b[0] - a[0]) * (pts[:, 1] - a[1]) - (b[1] - a[1]) * (pts[:, 0] - a[0]))
    s = np.stack(s)
    return np.all(s >= 0, axis=0) | np.all(s <= 0, axis=0)


def test_each_output_pixel_averages_the_source_over_its_quadrilateral():
    rng = np.random.default_rng(4)
    src = rng.uniform(0, 1, (12, 14))
    c = pixel_corners(6, 7)
    # A rotated, sheared, magnified and wobbling pre-image, inside the source.
    u, v = c[..., 0], c[..., 1]
    uu = 2.0 + 1.3 * u + 0.25 * v + 0.08 * np.sin(v + 2 * u)
    vv = 1.5 - 0.2 * u + 1.2 * v + 0.06 * np.cos(3 * u)
    corners = np.stack([uu, vv], -1)
    out = area_operator(corners, src.shape).apply(src)
    g = (np.arange(1600) + 0.5) / 1600
    for i, j in [(0, 0), (2, 3), (5, 6), (4, 1)]:
        quad = np.array([corners[i, j], corners[i, j + 1], corners[i + 1, j + 1], corners[i + 1, j]])
        lo, hi = quad.min(0), quad.max(0)
        gu, gv = np.meshgrid(lo[0] + g * (hi[0] - lo[0]), lo[1] + g * (hi[1] - lo[1]))
        pts = np.c_[gu.ravel(), gv.ravel()]
        inside = _inside_quad(pts, quad)
        vals = src[np.floor(pts[inside, 1] + 0.5).astype(int), np.floor(pts[inside, 0] + 0.5).astype(int)]
        assert out[i, j] == pytest.approx(vals.mean(), abs=2e-3)


def test_the_pre_images_tile_the_source_and_the_outside_counts_as_zero():
    rng = np.random.default_rng(5)
    src = rng.uniform(0, 1, (20, 20))
    c = pixel_corners(10, 10)
    corners = 0.5 + 1.7 * c + 0.03 * c[..., ::-1] ** 2 / 10  # covers the source's interior smoothly
    op = area_operator(corners, src.shape)
    out = op.apply(src)
    quad_area = op.matrix.sum(1).A.ravel()  # weights of a pixel fully inside sum to 1
    np.testing.assert_allclose(quad_area, 1.0, atol=1e-12)
    # Flux: the averages times the quadrilaterals' areas add up to the source over their union.
    a = corners
    areas = 0.5 * np.abs((a[:-1, :-1, 0] - a[1:, 1:, 0]) * (a[:-1, 1:, 1] - a[1:, :-1, 1])
                          - (a[:-1, 1:, 0] - a[1:, :-1, 0]) * (a[:-1, :-1, 1] - a[1:, 1:, 1]))
    ones = op.apply(np.ones_like(src))
    np.testing.assert_allclose(ones, 1.0, atol=1e-12)
    assert (out * areas).sum() == pytest.approx((op.matrix.T @ areas.ravel() * src.ravel()).sum(), rel=1e-12)
    shifted = area_operator(pixel_corners(4, 4) + [-1.25, 0.0], (4, 4)).apply(np.ones((4, 4)))
    np.testing.assert_allclose(shifted[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(shifted[:, 1], 0.75, atol=1e-12)
    np.testing.assert_allclose(shifted[:, 2:], 1.0, atol=1e-12)


def test_torch_batches_and_gradients():
    c = pixel_corners(8, 9) * 0.9 + 0.4
    op = area_operator(c, (8, 9))
    x = torch.rand(3, 8, 9, dtype=torch.float64, requires_grad=True)
    y = op.apply(x)
    np.testing.assert_allclose(y.detach().numpy(), op.apply(x.detach().numpy()), atol=1e-12)
    w = torch.rand(3, 8, 9, dtype=torch.float64)
    (y * w).sum().backward()
    np.testing.assert_allclose(x.grad.numpy().reshape(3, -1), (op.matrix.T @ w.numpy().reshape(3, -1).T).T, atol=1e-12)
    with pytest.raises(ValueError, match="expected"):
        op.apply(np.ones((8, 8)))

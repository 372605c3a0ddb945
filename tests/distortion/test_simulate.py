"""The forward model: pixel coverage, grid-plate images against the independent reference,
distorted images, sub-pixel sample points."""

import numpy as np
import pytest
import torch

from stereodrr.distortion import (
    GridPlate,
    distort_image,
    field_coverage,
    grid_image,
    intensifier_field,
    subpixel_points,
)
from stereodrr.distortion.coverage import edge_coverage

from . import reference as ref


@pytest.mark.parametrize("angle", [0.0, 17.0, 45.0, 71.0])
def test_edge_coverage_is_the_area_of_the_pixel_inside_a_straight_edge(angle):
    n = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    s = (np.arange(2000) + 0.5) / 2000 - 0.5
    u, v = np.meshgrid(s, s)
    for d in (-0.8, -0.4, -0.1, 0.0, 0.23, 0.5, 0.9):
        brute = np.mean(u * n[0] + v * n[1] < d)
        assert edge_coverage(np.array(d), np.abs(n[0]), np.abs(n[1])) == pytest.approx(brute, abs=2e-3)


def test_grid_image_agrees_with_the_reference_supersampler():
    N = 256
    field = intensifier_field("strong", N, N)
    mine = grid_image(field, GridPlate("hex", 16.0, 8.0, angle_deg=3.0))
    theirs = ref.plate_image(ref.strong(N), ref.Plate(pitch=16.0, diameter=8.0, angle_deg=3.0))
    v, u = np.mgrid[0:N, 0:N]
    inside = np.hypot(u - field.fov_center[0], v - field.fov_center[1]) < field.fov_radius - 2
    diff = (mine - theirs)[inside]
    # The reference ramps across its sub-squares where the simulator integrates them exactly: a few
    # 1e-3 at single edge pixels, nothing on average.
    assert np.abs(diff).max() < 4e-3 and np.abs(diff).mean() < 2e-4 and abs(diff.mean()) < 1e-4
    assert np.all(mine[~(np.hypot(u - field.fov_center[0], v - field.fov_center[1]) < field.fov_radius + 1)] == 0)


def test_photon_noise_is_seeded_and_unbiased():
    field = intensifier_field("mild", 96, 96)
    plate = GridPlate("square", 12.0, 6.0)
    clean = grid_image(field, plate)
    a = grid_image(field, plate, photons=1e4, seed=3)
    assert np.array_equal(a, grid_image(field, plate, photons=1e4, seed=3))
    assert abs(a.mean() - clean.mean()) < 5 * np.sqrt(clean.mean() / 1e4 / a.size)
    with pytest.raises(ValueError, match="photons"):
        grid_image(field, plate, photons=0)


def test_distort_image_averages_the_ideal_image_over_each_pixels_pre_image():
    N = 128
    field = intensifier_field("strong", N, N)
    v, u = np.mgrid[0:N, 0:N].astype(np.float64)
    inside = np.hypot(u - field.fov_center[0], v - field.fov_center[1]) < field.fov_radius - 2
    ones = distort_image(np.ones((N, N)), field)
    np.testing.assert_allclose(ones[inside], 1.0, atol=1e-12)  # averages: a constant stays constant
    assert ones[0, 0] == 0.0  # black outside the round field
    # A block of the ideal image keeps its area, scaled by the field's Jacobian (each recorded pixel
    # holds the fraction of it covered by the block's image; the pre-images tile the ideal image).
    for c in [(90.0, 40.0), (60.0, 64.0), (30.0, 100.0)]:
        block = ((np.abs(u - c[0]) <= 4) & (np.abs(v - c[1]) <= 4)).astype(np.float64)
        out = distort_image(block, field)
        t = np.linspace(-4.5, 4.5, 200, endpoint=False)
        edge = np.concatenate([np.c_[t, -4.5 + 0 * t], np.c_[4.5 + 0 * t, t], np.c_[-t, 4.5 + 0 * t],
                               np.c_[-4.5 + 0 * t, -t]]) + c
        assert out.sum() == pytest.approx(abs(_polygon_area(field.distort(edge))), rel=1e-4)
    ramp = 2.0 * u - 0.5 * v
    t = torch.tensor(ramp, requires_grad=True)
    out_t = distort_image(t, field)
    out_t.sum().backward()
    np.testing.assert_allclose(out_t.detach().numpy(), distort_image(ramp, field), atol=1e-9)
    assert t.grad is not None and t.grad.sum().item() == pytest.approx(ones.sum(), rel=1e-9)
    with pytest.raises(ValueError, match="field is for 128 x 128"):
        distort_image(np.ones((N, N + 1)), field)


def _polygon_area(pts):
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)


def test_subpixel_points_pull_each_pixel_back_through_the_field():
    field = intensifier_field("strong", 64, 48)
    pts = subpixel_points(field, 3)
    assert pts.shape == (48, 64, 9, 2)
    v, u = np.mgrid[0:48, 0:64].astype(np.float64)
    centre = field.undistort(np.stack([u, v], -1))
    np.testing.assert_allclose(pts[:, :, 4], centre, atol=1e-9)  # the middle sub-pixel of 3 x 3
    np.testing.assert_allclose(field.distort(pts[5, 7, 0]), [7 - 1 / 3, 5 - 1 / 3], atol=1e-8)
    # An analytic scene sampled there and averaged is the plate image, up to the sampling.
    plate = GridPlate("square", 12.0, 6.0)
    big = intensifier_field("strong", 96, 96)
    pts = subpixel_points(big, 8)
    o, B = plate.origin(96, 96), plate.basis()
    f = (pts - o) @ np.linalg.inv(B).T
    dist = np.hypot(*((f - np.round(f)) @ B.T).transpose(3, 0, 1, 2))
    t = np.where(dist < 3.0, plate.hole_transmission, plate.plate_transmission).mean(-1) * field_coverage(big)
    assert np.abs(t - grid_image(big, plate)).mean() < 2e-3

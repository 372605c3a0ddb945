"""Primitives: the implicit function is a true distance bound, ``contains`` agrees with it, and
the analytic volumes match Monte Carlo estimates."""

import math

import numpy as np
import pytest
import torch

from stereodrr.phantoms import Box, Cylinder, Ellipsoid, HollowBox, Sphere, brick_size, lego_brick
from stereodrr.phantoms.lego import STUD_PITCH

SHAPES = [
    Box((4.0, 2.0, 3.0)),
    HollowBox((31.8, 15.8, 9.6), 1.5, 1.0),
    Cylinder(2.4, 1.7),
    Cylinder((5.0, 3.0), 4.0),
    Cylinder(3.255, 8.6, inner_radius=2.4),
    Sphere(1.5),
    Ellipsoid((3.0, 2.0, 1.0)),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.kind)
def test_implicit_bounds_the_distance_and_agrees_with_contains(shape):
    gen = torch.Generator().manual_seed(0)
    half = torch.as_tensor(shape.half_extent(), dtype=torch.float64)
    p = (torch.rand(4000, 3, generator=gen, dtype=torch.float64) * 2 - 1) * half * 1.3
    g = shape.implicit(p)
    assert torch.equal(shape.contains(p), g <= 0)
    # No point closer than |g| may lie on the other side: probe 64 points on the sphere of radius 0.999 |g|.
    d = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    probes = p[:, None] + 0.999 * g.abs()[:, None, None] * d
    assert torch.equal(shape.contains(probes), (g <= 0)[:, None].expand(-1, 64))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.kind)
def test_volume_matches_monte_carlo(shape):
    gen = torch.Generator().manual_seed(1)
    half = torch.as_tensor(shape.half_extent(), dtype=torch.float64)
    n = 400_000
    p = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 - 1) * half
    frac = shape.contains(p).double().mean().item()
    box = float(torch.prod(2 * half))
    sigma = box * math.sqrt(frac * (1 - frac) / n)
    assert abs(frac * box - shape.volume()) < 5 * sigma + 1e-9


def test_sphere_distance_is_exact():
    s = Sphere(2.0)
    assert s.implicit(torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]])).tolist() == [1.0, -1.5]


def test_lego_brick_has_the_real_dimensions():
    bodies = lego_brick((4, 2))
    shell, studs, tubes = bodies[0], bodies[1:9], bodies[9:]
    assert shell.shape.size == pytest.approx((31.8, 15.8, 9.6)) and shell.shape.wall == 1.5
    assert len(studs) == 8 and len(tubes) == 3
    assert all(s.shape.radius == 2.4 and s.shape.height == 1.7 for s in studs)
    centres = np.array([s.pose[:3, 3] for s in studs])
    assert np.allclose(np.unique(np.round(centres[:, 0], 6)), [-12, -4, 4, 12])
    assert np.allclose(np.unique(np.round(centres[:, 1], 6)), [-4, 4])
    assert np.allclose(centres[:, 2], 9.6 / 2 + 1.7 / 2)  # studs stand on the top face
    assert np.diff(np.unique(centres[:, 0])) == pytest.approx([STUD_PITCH] * 3)
    assert all(t.shape.radius == pytest.approx(6.51 / 2) and t.shape.inner_radius == 2.4 for t in tubes)
    assert brick_size((2, 2), plates=1) == pytest.approx([15.8, 15.8, 3.2])


@pytest.mark.parametrize("make, field", [
    (lambda: Box((1.0, -2.0, 1.0)), "size"),
    (lambda: Sphere(-1.0), "radius"),
    (lambda: Ellipsoid((1.0, 0.0, 1.0)), "radii"),
    (lambda: Cylinder(1.0, float("nan")), "height"),
    (lambda: Cylinder(1.0, 2.0, inner_radius=1.5), "inner_radius"),
    (lambda: HollowBox((10.0, 10.0, 5.0), 6.0, 1.0), "wall"),
    (lambda: HollowBox((10.0, 10.0, 5.0), 1.0, 5.0), "top"),
    (lambda: lego_brick((4, 0)), "studs"),
])
def test_bad_sizes_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.kind)
def test_bounds_under_a_linear_map_are_tight(shape):
    # Map dense surface-near samples of the solid with A; their extent must fill the bound.
    gen = torch.Generator().manual_seed(2)
    A = np.diag([0.5, 2.0, 1.3]) @ np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    half = torch.as_tensor(shape.half_extent(), dtype=torch.float64)
    p = (torch.rand(300_000, 3, generator=gen, dtype=torch.float64) * 2 - 1) * half
    inside = p[shape.contains(p)].numpy() @ A.T
    bound = shape.half_extent_under(A)
    assert np.all(np.abs(inside) <= bound + 1e-9)
    assert np.all(np.abs(inside).max(0) > 0.95 * bound)

"""Holes and lattices of grid images made by the independent reference."""

import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from stereodrr.distortion import detect_holes, find_lattice

from . import reference as ref

IDENTITY = ref.Field(256, (127.5, 127.5), 128.0)  # no distortion, no round field


@pytest.mark.parametrize("dark", [False, True])
def test_hole_centres_of_an_undistorted_plate_are_exact(dark):
    plate = ref.Plate(pitch=20.0, diameter=10.0, angle_deg=7.0, offset=(0.37, -0.21))
    img = ref.plate_image(IDENTITY, plate, dark=dark)
    holes = detect_holes(img)
    truth = ref.true_centres(IDENTITY, plate)
    d, k = cKDTree(truth).query(holes.centers)
    # (the reference's own ramps at its 8 x 8 sub-squares account for about half of it)
    assert len(holes) > 100 and d.max() < 2e-3 and np.sqrt(np.mean(d ** 2)) < 8e-4
    np.testing.assert_allclose(holes.radii, 5.0, atol=2e-3)
    assert np.all(np.sign(holes.contrast) == (-1 if dark else 1))


def test_holes_cut_by_the_field_edge_are_rejected(small_field, small_plate, small_grid):
    holes = detect_holes(small_grid)
    assert holes.field_radius == pytest.approx(small_field.fov_r, abs=0.3)
    assert np.allclose(holes.field_center, small_field.fov_c, atol=0.3)
    assert sum(holes.rejected.values()) > 10  # cut holes: too small, off the ellipse, or at the edge
    # Every hole kept lies wholly inside the field: its edge, mapped through the field.
    truth = small_plate.centres(small_field.size)
    _, k = cKDTree(small_field.forward(truth)).query(holes.centers)
    ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    rim = truth[k][:, None, :] + small_plate.diameter / 2 * np.stack([np.cos(ang), np.sin(ang)], -1)
    reach = np.hypot(*(small_field.forward(rim) - small_field.fov_c).transpose(2, 0, 1)).max(1)
    assert reach.max() < small_field.fov_r


@pytest.mark.parametrize("t_plate", [0.2, 0.1, 0.05])
def test_the_field_is_found_behind_a_dark_plate(t_plate):
    """Bright holes on a plate a fifth to a twentieth of their level, the simulator's default
    plate among them: the plate read as outside at the frames' edge level and the field was missed
    (radius inf; `stereodrr demo --distortion strong` wrote no field), so cut holes and the map's
    coverage took the whole image."""
    from stereodrr.distortion import GridPlate, grid_image, intensifier_field

    field = intensifier_field("strong", 512, 512)
    image = grid_image(field, GridPlate("hex", 16, 8, plate_transmission=t_plate), photons=1e4)
    holes = detect_holes(image)
    assert holes.field_radius == pytest.approx(field.fov_radius, abs=0.5)
    assert np.allclose(holes.field_center, field.fov_center, atol=0.5)


@pytest.mark.parametrize("lattice", ["hex", "square"])
def test_the_lattice_is_found_and_indexed(lattice):
    field = ref.strong(256)
    plate = ref.Plate(lattice=lattice, pitch=15.0, diameter=7.0, angle_deg=-11.0)
    holes = detect_holes(ref.plate_image(field, plate))
    lat, which = find_lattice(holes.centers, center=holes.field_center)
    assert lat.kind == lattice and len(which) == len(holes)
    assert lat.spacing == pytest.approx(15.0, rel=0.02)
    # Neighbouring indices are neighbouring holes everywhere, distortion included.
    pos = {tuple(ix): holes.centers[w] for ix, w in zip(lat.index, which)}
    steps = [(1, 0), (0, 1)] + ([(1, -1)] if lattice == "hex" else [])
    for (i, j), q in pos.items():
        for di, dj in steps:
            if (i + di, j + dj) in pos:
                assert np.linalg.norm(pos[(i + di, j + dj)] - q) == pytest.approx(15.0, rel=0.06)
    with pytest.raises(ValueError, match="not lie on a"):  # the other kind
        find_lattice(holes.centers, "square" if lattice == "hex" else "hex", holes.field_center)


def test_bad_grid_images_are_refused_in_one_line():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="uniform"):
        detect_holes(np.full((100, 100), 7.0), name="flat.png")
    with pytest.raises(ValueError, match=r"noise.png: .*expected at least 25"):
        detect_holes(rng.integers(0, 255, (128, 128)).astype(np.uint8), name="noise.png")
    with pytest.raises(ValueError, match="at least 32 x 32"):
        detect_holes(np.zeros((20, 50)))
    with pytest.raises(ValueError, match="NaN"):
        detect_holes(np.full((64, 64), np.nan))
    scattered = np.full((300, 300), 40, np.uint8)
    for c in rng.uniform(15, 285, (70, 2)):
        cv2.circle(scattered, (int(c[0]), int(c[1])), 4, 220, -1)
    holes = detect_holes(scattered, name="dots.png")
    with pytest.raises(ValueError, match="dots.png: the holes form no hex or square lattice"):
        find_lattice(holes.centers, name="dots.png")



@pytest.mark.parametrize("preset, angle", [("none", 7.0), ("mild", 17.0)])
def test_the_field_edge_is_fitted_to_every_ray_not_to_the_outermost_holes(preset, angle):
    """Bright holes on the default plate (a fifth of their level, below the frames' edge level),
    480 x 360: at that level the rays end at the outermost holes, and a circle through the third of
    them at the rim passed the frames' consensus test and was taken, 1.6-2.2 px from the field's
    centre and 2.9-4.7 px short of its radius (undistort_image then blacked out a ring of data); the
    edge is now taken at the lower level where every ray reaches it."""
    from dataclasses import replace

    from stereodrr.distortion import GridPlate, grid_image, intensifier_field

    field = replace(intensifier_field(preset, 480, 360), fov_center=(240.8, 178.9), fov_radius=176.4)
    holes = detect_holes(grid_image(field, GridPlate("hex", 16, 8, angle_deg=angle)))
    assert np.hypot(*np.subtract(holes.field_center, field.fov_center)) < 0.1
    # the edge is read where a pixel is 0.4 inside (0.08 of the holes' level, the plate 0.2): ~0.15 px out
    assert 0.0 < holes.field_radius - field.fov_radius < 0.3

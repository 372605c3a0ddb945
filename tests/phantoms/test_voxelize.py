"""Voxelization: volumes and centroids against analytic truth, metal handling, labels, chunking,
oblique grids, files read back by SimpleITK, bad grids."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from stereodrr.geometry import rotvec_to_matrix, transform_points
from stereodrr.phantoms import (
    Body,
    Box,
    Marker,
    Phantom,
    Sphere,
    VoxelGrid,
    VoxelizeOptions,
    get_material,
    lego_brick,
    load_phantom,
    rigid_pose,
    save_voxelized,
    voxelize,
)
from stereodrr.phantoms.voxelize import phantom_grid
from stereodrr.volume import Volume

ROOT = Path(__file__).resolve().parents[2]
WATER, AIR = get_material("water"), get_material("air")
STEEL = get_material("stainless_steel")


def _filled_volume_mm3(vox, material) -> float:
    """Volume of ``material`` in air from the mu volume: sum of the covered fractions times the voxel volume."""
    mu_air, mu_m = AIR.mu(vox.energy_kev), material.mu(vox.energy_kev)
    frac = (vox.mu.data.double() - mu_air) / (mu_m - mu_air)
    return float(frac.sum()) * float(np.prod(vox.mu.spacing))


def _centroids_world(vox) -> np.ndarray:
    """Fraction-weighted centroids of the connected marker regions, in world mm."""
    frac = vox.marker_fraction.data.numpy()
    lab, n = ndimage.label(frac > 0)
    com = np.array(ndimage.center_of_mass(frac, lab, range(1, n + 1)))  # (k, j, i)
    return vox.mu.index_to_world(np.ascontiguousarray(com[:, ::-1]))


@pytest.mark.parametrize("radius, spacing", [(3.0, 0.5), (0.5, 0.5), (0.75, 0.5), (2.0, 0.3)])
def test_sphere_volume_within_1_percent(radius, spacing):
    ph = Phantom("ball", bodies=(Body(Sphere(radius), WATER, rigid_pose(translation_mm=(0.13, -0.07, 0.21))),))
    vox = voxelize(ph, spacing, progress=False)
    exact = 4 / 3 * math.pi * radius**3
    assert _filled_volume_mm3(vox, WATER) == pytest.approx(exact, rel=0.01)


def test_one_mm_ball_stays_round_at_half_mm_voxels():
    steel_ball = Marker(1, [0.11, 0.23, -0.17], 1.0, STEEL)
    vox = voxelize(Phantom("b", markers=(steel_ball,)), 0.5, progress=False)
    f = vox.marker_fraction.data.double()
    idx = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in f.shape], indexing="ij"), -1)
    w = f / f.sum()
    c = (w[..., None] * idx).sum((0, 1, 2))
    var = (w[..., None] * (idx - c) ** 2).sum((0, 1, 2))  # per-axis second moments (k, j, i)
    assert float(var.max() / var.min()) < 1.03  # isotropic: no axis-aligned blockiness
    assert float(f.sum()) * 0.125 == pytest.approx(math.pi / 6, rel=0.01)


def test_lego_marker_centres_are_voxel_centroids_within_a_tenth_voxel():
    # The marker fraction does not depend on the bricks, so the balls alone keep this test fast.
    ph = load_phantom(ROOT / "phantoms" / "lego_stereo.json")
    ph = Phantom("balls", markers=ph.markers, pose=ph.pose)
    vox = voxelize(ph, 0.5, progress=False)
    cents = _centroids_world(vox)
    truth = ph.marker_table()[["x", "y", "z"]].to_numpy()
    assert len(cents) == len(truth)  # every ball is its own region
    d = np.linalg.norm(cents[:, None] - truth[None], axis=-1)
    assert sorted(d.argmin(1).tolist()) == list(range(len(truth)))
    assert d.min(1).max() < 0.1 * 0.5


def test_metal_keeps_true_mu_and_clips_hu():
    ph = Phantom("b", bodies=tuple(lego_brick((2, 2))), markers=(Marker(1, [0.2, -0.1, 4.8], 2.0, STEEL),))
    vox = voxelize(ph, 0.5, progress=False)
    big = ph.marker_table().iloc[0]
    i, j, k = np.round(vox.mu.world_to_index(big[["x", "y", "z"]].to_numpy(float)[None])[0]).astype(int)
    assert float(vox.mu.data[k, j, i]) == pytest.approx(STEEL.mu(60.0), rel=1e-6)
    assert float(vox.hu.data[k, j, i]) == 3071.0
    assert float(vox.labels.data[k, j, i]) == 3
    assert float(vox.hu.data.min()) >= -1024 and float(vox.hu.data.max()) <= 3071
    assert set(torch.unique(vox.labels.data).tolist()) == {0.0, 1.0, 3.0}
    corner = vox.mu.data[0, 0, 0]
    assert float(corner) == pytest.approx(AIR.mu(60.0)) and float(vox.labels.data[0, 0, 0]) == 0


def test_unclipped_hu_and_carving():
    brick = lego_brick((2, 2))
    balls = (Marker(1, [0.0, 0.0, 4.8], 2.0, STEEL), Marker(2, [4.0, -4.0, 6.5], 1.5, STEEL))
    ph = Phantom("b", bodies=tuple(brick), markers=balls)
    inc = voxelize(ph, 0.5, options=VoxelizeOptions(hu_range=None), progress=False)
    assert float(inc.hu.data.max()) == pytest.approx(STEEL.hu(60.0), rel=1e-4)
    carve = voxelize(ph, 0.5, markers="carve", progress=False)
    excl = voxelize(ph, 0.5, markers="exclude", progress=False)
    dv = float(np.prod(inc.mu.spacing))
    ball_vol = sum(4 / 3 * math.pi * (m.diameter / 2) ** 3 for m in balls)
    # carve + analytic balls of (mu_steel - mu_air) = include
    added = float((inc.mu.data.double() - carve.mu.data.double()).sum()) * dv
    assert added == pytest.approx((STEEL.mu(60.0) - AIR.mu(60.0)) * ball_vol, rel=0.01)
    assert torch.equal(inc.marker_fraction.data, carve.marker_fraction.data)
    assert float(excl.labels.data.max()) == 1 and float(carve.labels.data.max()) == 1


def test_chunking_does_not_change_the_result():
    ph = Phantom("b", bodies=tuple(lego_brick((2, 2))), markers=(Marker(1, [0.0, 0.0, 4.8], 2.0, STEEL),))
    a = voxelize(ph, 0.5, progress=False)
    b = voxelize(ph, 0.5, options=VoxelizeOptions(max_chunk_voxels=5000), progress=False)
    for name in ("mu", "hu", "labels", "marker_fraction"):
        assert torch.equal(getattr(a, name).data, getattr(b, name).data), name


@pytest.mark.parametrize("D", [rotvec_to_matrix(np.array([0.2, -0.4, 0.3])), np.diag([-1.0, 1.0, 1.0])],
                         ids=["oblique", "improper"])
def test_oblique_grid_and_moved_phantom(D):
    T_box = rigid_pose((10, 20, 30))
    ball_centre = transform_points(T_box, np.array([[0.5, 0.3, -0.2]]))[0]  # well inside the box
    ph = Phantom("p", bodies=(Body(Box((8.0, 6.0, 4.0)), WATER, T_box),), markers=(Marker(7, ball_centre, 2.0, STEEL),))
    ph = ph.moved(rigid_pose((0, 0, 25), (40.0, -10.0, 5.0)))
    vox = voxelize(ph, 0.4, markers="exclude", grid=VoxelGrid(direction=D), progress=False)
    assert np.allclose(vox.mu.direction, D)
    assert np.linalg.norm(_centroids_world(vox) - ph.marker_centers) < 0.1 * 0.4
    assert _filled_volume_mm3(vox, WATER) == pytest.approx(8 * 6 * 4, rel=0.01)
    ball = float(vox.marker_fraction.data.double().sum()) * 0.4**3
    assert ball == pytest.approx(4 / 3 * math.pi, rel=0.01)


def test_reference_grid_is_used_exactly():
    ref = Volume.from_numpy(np.zeros((30, 20, 25), np.float32), spacing=(0.7, 0.8, 0.9), origin=(-8.0, -7.0, -12.0),
                            direction=rotvec_to_matrix(np.array([0.0, 0.0, 0.4])))
    ph = Phantom("p", bodies=(Body(Sphere(3.0), WATER),))
    vox = voxelize(ph, grid=ref, progress=False)
    assert vox.mu.size == ref.size
    assert np.array_equal(vox.mu.origin, ref.origin) and np.array_equal(vox.mu.spacing, ref.spacing)
    assert np.array_equal(vox.mu.direction, ref.direction)
    assert _filled_volume_mm3(vox, WATER) == pytest.approx(36 * math.pi, rel=0.01)


def test_grid_that_cannot_hold_the_phantom():
    ph = Phantom("p", bodies=(Body(Box((10.0, 10.0, 10.0)), WATER),))
    with pytest.raises(ValueError, match=r"grid 16x16x16 .* cannot hold phantom 'p'.*extends 1\.0"):
        voxelize(ph, 0.5, grid=VoxelGrid(size=(16, 16, 16)), progress=False)
    voxelize(ph, 0.5, grid=VoxelGrid(size=(20, 20, 20)), progress=False)  # exactly fits


@pytest.mark.parametrize("spacing, margin", [(1e-300, 5.0), (0.5, 1e300), (0.5, 1.7e308)])
def test_grid_too_large_to_count_is_refused(spacing, margin):
    """A voxel count past int64 (or infinite) wrapped round to a negative size, which passed the
    memory check and failed inside torch ('SymIntArrayRef expected to contain only concrete
    integers')."""
    ph = Phantom("p", bodies=(Body(Box((1.0, 1.0, 1.0)), WATER),))
    with pytest.raises(ValueError, match=re.escape(f"spacing {spacing:g} x {spacing:g} x {spacing:g} mm, margin "
                                                   f"{margin:g} mm: the grid would be ") + r"\S+ x \S+ x \S+ voxels; "
                                         "expected a coarser spacing or a smaller margin"):
        phantom_grid(ph, spacing, margin)


def test_bad_arguments():
    ph = Phantom("p", bodies=(Body(Box((1.0, 1.0, 1.0)), WATER),))
    for kwargs, pattern in [({"markers": "paint"}, "markers"), ({"supersample": 0}, "supersample"),
                            ({"hu_range": (10, -10)}, "hu_range"), ({"energy_kev": 900}, "energy_kev")]:
        with pytest.raises(ValueError, match=pattern):
            options = {k: kwargs.pop(k) for k in ("supersample", "hu_range") if k in kwargs}
            voxelize(ph, 0.5, options=VoxelizeOptions(**options), progress=False, **kwargs)
    with pytest.raises(ValueError, match="spacing"):
        voxelize(ph, -1.0, progress=False)
    with pytest.raises(ValueError, match="threads"):
        voxelize(ph, 0.5, options=VoxelizeOptions(threads=0), progress=False)


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    voxelize(Phantom("p", bodies=(Body(Box((1.0, 1.0, 1.0)), WATER),)), 0.5, options=VoxelizeOptions(threads=1),
             progress=False)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("fmt, tol", [("mha", 0.0), ("nii.gz", 1e-6)])
def test_files_read_back_with_identical_geometry(tmp_path, fmt, tol):
    D = rotvec_to_matrix(np.array([0.1, 0.2, -0.3]))
    ph = Phantom("p", bodies=tuple(lego_brick((2, 2))), markers=(Marker(1, [0.3, 0.0, 4.8], 2.0, STEEL),))
    vox = voxelize(ph, (0.5, 0.6, 0.7), grid=VoxelGrid(direction=D), progress=False)
    paths = save_voxelized(vox, tmp_path / "out", fmt=fmt, phantom=ph)
    for key, pixel in (("mu", sitk.sitkFloat32), ("hu", sitk.sitkInt16), ("labels", sitk.sitkUInt8)):
        img = sitk.ReadImage(str(paths[key]))
        assert img.GetPixelID() == pixel
        vol = getattr(vox, key)
        assert np.abs(np.array(img.GetOrigin()) - vol.origin).max() <= tol
        assert np.abs(np.array(img.GetSpacing()) - vol.spacing).max() <= tol
        assert np.abs(np.array(img.GetDirection()) - vol.direction.ravel()).max() <= tol
        arr = sitk.GetArrayFromImage(img)
        expected = vol.data.numpy()
        assert np.array_equal(arr, np.round(expected) if key != "mu" else expected)
    table = pd.read_csv(paths["markers"])
    assert np.allclose(table[["x", "y", "z"]].to_numpy(), vox.markers[["x", "y", "z"]].to_numpy(), atol=1e-6)
    assert "mip" not in paths  # the figure is the plot layer's (stereodrr phantom writes it)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


@pytest.mark.slow
def test_512_cubed_grid_within_memory_bound():
    """A 512^3 grid of the LEGO phantom (0.16 mm voxels); peak resident memory stays far below 24 GB."""
    import resource

    ph = load_phantom(ROOT / "phantoms" / "lego_stereo.json")
    vox = voxelize(ph, 0.16, grid=VoxelGrid(size=(512, 512, 512)), progress=True)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    assert vox.mu.size == (512, 512, 512)
    assert peak_gb < 24
    truth = ph.marker_table()[["x", "y", "z"]].to_numpy()
    cents = _centroids_world(vox)
    assert np.linalg.norm(cents[:, None] - truth[None], axis=-1).min(1).max() < 0.1 * 0.16


def test_phantoms_do_not_import_the_plot_layer():
    import subprocess
    import sys

    code = "import sys, stereodrr.phantoms; assert 'stereodrr.plot' not in sys.modules and 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_former_keywords_warn_and_mean_the_same():
    ph = Phantom("p", bodies=(Body(Box((1.0, 1.0, 1.0)), WATER),))
    new = voxelize(ph, 0.5, grid=VoxelGrid(margin_mm=2.0), options=VoxelizeOptions(supersample=2, device="cpu"),
                   progress=False)
    with pytest.warns(DeprecationWarning) as caught:
        old = voxelize(ph, 0.5, margin_mm=2.0, supersample=2, device="cpu", progress=False)
    assert sorted(str(w.message).split(": pass ")[1] for w in caught) == [
        "grid=VoxelGrid(margin_mm=...)", "options=VoxelizeOptions(supersample=..., device=...)"]
    assert all(w.filename == __file__ for w in caught)  # blamed on the caller's line
    assert old.mu.size == new.mu.size and torch.equal(old.mu.data, new.mu.data)
    with pytest.raises(TypeError, match="unexpected keyword argument 'spacing_mm'"):
        voxelize(ph, 0.5, spacing_mm=1.0, progress=False)
    with pytest.warns(DeprecationWarning, match=r"^voxelize\(reference=\) is deprecated: pass grid=<the reference "
                                                r"volume>$"):
        on_reference = voxelize(ph, reference=new.mu, progress=False)
    assert torch.equal(on_reference.mu.data, voxelize(ph, grid=new.mu, progress=False).mu.data)

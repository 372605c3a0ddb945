"""The definition files in phantoms/: real LEGO geometry, marker layouts that work in the default
stereo rig, the XMALab-style cube and the torso; the designs module regenerates them exactly."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stereodrr.geometry import StereoRig
from stereodrr.phantoms import load_phantom, voxelize
from stereodrr.phantoms.designs import lego_cube_spec, lego_stereo_spec, torso_spec

ROOT = Path(__file__).resolve().parents[2]
# The default rig of the project: 5 deg convergent, SID 750, SDD 1200, 0.3 mm pixels, 512 x 512.
RIG = StereoRig.convergent(5.0, sid=750.0, sdd=1200.0, pixel_spacing=0.3, width=512, height=512)


@pytest.fixture(scope="module")
def lego():
    return load_phantom(ROOT / "phantoms" / "lego_stereo.json")


def _shadows(ph, cam):
    """Shadow centres (N, 2) px and radii (N,) px: a ball of radius r at depth Z projects to f r / Z."""
    table = ph.marker_table()
    uv, depth = cam.project(table[["x", "y", "z"]].to_numpy())
    return uv, cam.K[0, 0] * table.diameter_mm.to_numpy() / 2 / depth


def test_files_are_what_the_designs_module_writes():
    for spec in (lego_stereo_spec(), lego_cube_spec(), torso_spec()):
        on_disk = json.loads((ROOT / "phantoms" / f"{spec['name']}.json").read_text())
        assert on_disk == json.loads(json.dumps(spec))


def test_lego_stereo_markers(lego):
    t = lego.marker_table()
    assert len(t) >= 20
    assert set(t.material) == {"stainless_steel"}
    assert t.diameter_mm.between(1.0, 2.0).all()
    # Heights: the brick layer (9.6 mm) each ball sits in; at least three distinct ones.
    layers = np.floor((t.z.to_numpy() + 24.0 - 1e-6) / 9.6).clip(0, 4)
    assert len(np.unique(layers)) >= 3


def test_lego_stereo_is_centred_and_fits_the_field(lego):
    lo, hi = lego.bounds()
    assert np.all(np.abs((lo + hi) / 2) < 5.0)
    assert np.all(hi - lo <= 150.0)


def test_lego_markers_are_non_coplanar(lego):
    c = lego.marker_centers
    s = np.linalg.svd(c - c.mean(0), compute_uv=False)
    # Stated fraction: the smallest singular value is at least half the largest (measured 0.76).
    assert s[-1] / s[0] >= 0.5


def test_no_two_lego_markers_share_a_distance_signature(lego):
    c = lego.marker_centers
    sig = np.sort(np.linalg.norm(c[:, None] - c[None], axis=-1), axis=1)[:, 1:]
    diff = np.abs(sig[:, None] - sig[None]).max(-1)
    np.fill_diagonal(diff, np.inf)
    assert diff.min() > 1.0  # mm: far above any calibration error


@pytest.mark.parametrize("view", ["left", "right"])
def test_lego_shadows_inside_the_detector_and_apart(lego, view):
    cam = RIG[view]
    uv, r = _shadows(lego, cam)
    assert np.all(uv - r[:, None] > 0) and np.all(uv + r[:, None] < [cam.width - 1, cam.height - 1])
    gap = np.linalg.norm(uv[:, None] - uv[None], axis=-1) - (r[:, None] + r[None])
    np.fill_diagonal(gap, np.inf)
    assert gap.min() > 3.0  # px between the edges of the two closest shadows


def test_lego_balls_sit_on_brick_surfaces(lego):
    # Each ball centre lies on the surface of a brick body (half pressed in): some body's exact
    # signed distance is ~0 at it.
    centres = torch.as_tensor(lego.marker_centers)
    best = torch.full((len(centres),), float("inf"), dtype=torch.float64)
    for b in lego.bodies:
        local = (centres - torch.tensor(b.pose[:3, 3])) @ torch.tensor(b.pose[:3, :3])
        best = torch.minimum(best, b.shape.implicit(local).abs())
    assert float(best.max()) < 1e-6


def test_lego_cube_lattice_and_references():
    ph = load_phantom(ROOT / "phantoms" / "lego_cube.json")
    t = ph.marker_table()
    assert len(t) == 64
    local = np.stack([m.center for m in ph.markers])
    for axis in range(3):
        assert np.allclose(np.unique(local[:, axis]), [-24, -8, 8, 24])
    refs = t[t.diameter_mm != 2.0]
    assert len(refs) == 4 and set(refs.marker_id) == {1, 2, 5, 17}
    for view in RIG:
        uv, r = _shadows(ph, RIG[view])
        gap = np.linalg.norm(uv[:, None] - uv[None], axis=-1) - (r[:, None] + r[None])
        np.fill_diagonal(gap, np.inf)
        assert gap.min() > 3.0


def test_torso_has_tissue_bone_and_lungs():
    ph = load_phantom(ROOT / "phantoms" / "torso.json")
    assert {b.material.name for b in ph.bodies} >= {"soft_tissue", "cortical_bone", "lung"}
    vox = voxelize(ph, 6.0, progress=False)
    assert set(torch.unique(vox.labels.data).tolist()) == {0.0, 1.0, 2.0, 4.0}
    lung = vox.hu.data[vox.labels.data == 4]
    assert float(lung.median()) == pytest.approx(-741, abs=30)


def test_torso_phantom_is_the_torso_file_as_a_ct():
    from stereodrr.phantoms import get_material, torso_phantom

    c = np.array([10.0, -5.0, 0.0])
    vol = torso_phantom((64, 42, 50), 5.0, center=c)  # 320 x 210 x 250 mm: scale (0.84, 0.8, 0.75)
    assert np.allclose(vol.center, c) and vol.size == (64, 42, 50)
    s = np.array([0.84, 0.80, 0.75])
    # interior points of the torso.json bodies (scaled, torso frame, mm) carry their material's HU at 60 keV
    for material, p in (("lung", (-70, 5, 30)), ("lung", (72, 10, 38)), ("soft_tissue", (25, -25, -30)),
                        ("adipose", (0, -101, 0)), ("soft_tissue", (-120, 0, -100)), ("air", (0, -118, 0)),
                        ("air", (165, 0, 0)), ("air", (0, 0, 160))):
        i, j, k = np.round(vol.world_to_index((np.array([p], dtype=float) * s) + c)[0]).astype(int)
        assert float(vol.data[k, j, i]) == pytest.approx(get_material(material).hu(60.0), abs=0.5), (material, p)
    assert float(vol.data.max()) > 900  # the thin cortical bones, partial-volume averaged at 5 mm
    # the scale-1 spec is the shipped file
    assert torso_spec((1, 1, 1)) == json.loads((ROOT / "phantoms" / "torso.json").read_text())

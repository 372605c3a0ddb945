"""``stereodrr render``: files written and readable by OpenCV and SimpleITK."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from stereodrr.cli import main
from stereodrr.geometry import StereoRig, load_rig, save_rig
from stereodrr.phantoms import torso_phantom
from stereodrr.render import Projector, render_rig
from stereodrr.volume import hu_to_mu, load_volume, save_volume

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["trilinear", "joseph"])
def test_render_ct(tmp_path, mode):
    save_volume(torso_phantom(size=(32, 24, 20), spacing=(5.0, 5.5, 6.0), supersample=1), tmp_path / "ct.nii.gz")
    rig = StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=4.0, width=40, height=32)
    save_rig(rig, tmp_path / "rig.json")
    out = tmp_path / "out"
    assert main(["render", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "rig.json"), "-o", str(out),
                 "--energy", "70", "--mode", mode]) == 0
    ct = load_volume(tmp_path / "ct.nii.gz")
    expected = render_rig(ct.with_data(hu_to_mu(ct.data, 70.0)), rig, projector=Projector(mode=mode))
    for name in rig.names:
        by_cv = cv2.imread(str(out / f"{name}.tif"), cv2.IMREAD_UNCHANGED)
        by_sitk = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{name}.tif")))
        assert by_cv.dtype == np.float32 and by_cv.shape == (32, 40)
        assert np.array_equal(by_cv, by_sitk)
        assert np.allclose(by_cv, expected[name].numpy(), rtol=1e-6, atol=1e-7)
        png = cv2.imread(str(out / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == (32, 40) and png.max() == 255
    assert load_rig(out / "rig.json") == rig


def test_render_phantom_with_exact_markers(tmp_path):
    rig = StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=0.8, width=64, height=48)
    save_rig(rig, tmp_path / "rig.json")
    out = tmp_path / "out"
    assert main(["render", "--phantom", str(ROOT / "phantoms" / "lego_cube.json"), "--rig", str(tmp_path / "rig.json"),
                 "-o", str(out), "--voxel", "2.0"]) == 0
    table = pd.read_csv(out / "markers_px.csv")
    assert set(table["view"]) == set(rig.names) and len(table) > 0
    img = cv2.imread(str(out / f"{rig.names[0]}.tif"), cv2.IMREAD_UNCHANGED)
    assert np.isfinite(img).all() and img.max() > 0


def test_render_needs_an_input(tmp_path, capsys):
    save_rig(StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=4.0, width=8, height=8), tmp_path / "rig.json")
    assert main(["render", "--rig", str(tmp_path / "rig.json"), "-o", str(tmp_path)]) == 2  # a usage error
    assert "--ct" in capsys.readouterr().err
    assert main(["render", "--ct", str(tmp_path / "missing.nii.gz"), "--rig", str(tmp_path / "rig.json"),
                 "-o", str(tmp_path)]) == 1


def test_render_refuses_a_rig_that_sees_nothing_of_the_ct(tmp_path, capsys):
    save_volume(torso_phantom(size=(16, 12, 10), spacing=10.0, supersample=1), tmp_path / "ct.nii.gz")
    rig = StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=4.0, width=16, height=16,
                               isocenter=(1000.0, 0.0, 0.0))
    save_rig(rig, tmp_path / "rig.json")
    out = tmp_path / "out"
    assert main(["render", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "rig.json"),
                 "-o", str(out)]) == 1
    assert "no ray of view 'left' meets the CT's box" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_render_phantom_aperture(tmp_path):
    """Balls are area-averaged by default: exp(-image) differs from the pixel-centre render only in
    the balls' shadows, by rim pixels, while both sum to the same transmitted flux (two quadratures
    of one integral)."""
    rig = StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=0.4, width=96, height=80)
    save_rig(rig, tmp_path / "rig.json")
    images = {}
    for aperture in (None, "area", "point"):
        out = tmp_path / f"out_{aperture}"
        extra = [] if aperture is None else ["--aperture", aperture]
        assert main(["render", "--phantom", str(ROOT / "phantoms" / "lego_cube.json"), "--rig", str(tmp_path / "rig.json"),
                     "-o", str(out), "--voxel", "2.0", *extra]) == 0
        images[aperture] = cv2.imread(str(out / f"{rig.names[0]}.tif"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    assert np.array_equal(images[None], images["area"])
    diff = np.abs(np.exp(-images["area"]) - np.exp(-images["point"]))
    assert diff.max() > 1e-2  # rim pixels differ
    assert (diff > 1e-6).mean() < 0.5  # ... and only in the shadows
    flux_area, flux_point = np.exp(-images["area"]).sum(), np.exp(-images["point"]).sum()
    assert abs(flux_area - flux_point) < 2e-4 * flux_point



def test_render_warns_of_a_ct_in_mu_and_of_saturated_views_and_refuses_path_view_names(tmp_path, capsys):
    """A CT of attenuation values given as --ct (read as HU: it renders as water) and a view whose
    counts saturate (its -log image reads air as attenuating) are warned about; a view name that
    is a path is refused before anything is written. (The saturation warning used to be silenced:
    spekpy's HVL search turns every warning of the process off, now undone.)"""
    import json
    import warnings

    ct = torso_phantom(size=(32, 24, 20), spacing=(5.0, 5.5, 6.0), supersample=1)
    save_volume(ct.with_data(hu_to_mu(ct.data, 70.0)), tmp_path / "mu.nii.gz")
    save_volume(ct, tmp_path / "hu.nii.gz")
    rig = StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=4.0, width=40, height=32)
    save_rig(rig, tmp_path / "rig.json")
    with pytest.warns(UserWarning, match=r"look like attenuation in 1/mm, but --ct reads Hounsfield units"):
        assert main(["render", "--ct", str(tmp_path / "mu.nii.gz"), "--rig", str(tmp_path / "rig.json"), "-o",
                     str(tmp_path / "mu")]) == 0
    before = list(warnings.filters)
    with pytest.warns(UserWarning, match=r"view '\w+': more than 1% of its pixels saturate at 65535 counts"):
        assert main(["render", "--ct", str(tmp_path / "hu.nii.gz"), "--rig", str(tmp_path / "rig.json"), "-o",
                     str(tmp_path / "sat"), "--preset", "fluoro80", "--photons", "1e6"]) == 0
    assert warnings.filters == before
    spec = json.loads((tmp_path / "rig.json").read_text())
    spec["views"][0]["name"] = "../escaped"
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    capsys.readouterr()
    assert main(["render", "--ct", str(tmp_path / "hu.nii.gz"), "--rig", str(tmp_path / "bad.json"), "-o",
                 str(tmp_path / "bad")]) == 1
    assert "view name '../escaped' cannot name a file" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() and not (tmp_path / "escaped.tif").exists()


def test_a_second_render_into_the_folder_leaves_none_of_the_first(tmp_path):
    """A three-view render with counts, then a two-view line-integral render into the same
    folder: the third view, the counts PNGs and detector.json of the first go (they would read
    as part of the second); the user's own file stays."""
    save_volume(torso_phantom(size=(32, 24, 20), spacing=(5.0, 5.5, 6.0), supersample=1), tmp_path / "ct.nii.gz")
    pair = StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=4.0, width=40, height=32)
    three = StereoRig({**pair.cameras, "third": pair["right"]}, pair.isocenter)
    save_rig(three, tmp_path / "three.json")
    save_rig(pair, tmp_path / "pair.json")
    out = tmp_path / "out"
    assert main(["render", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "three.json"), "-o", str(out),
                 "--preset", "fluoro80"]) == 0
    (out / "notes.txt").write_text("mine")
    assert {"third.tif", "left_counts.png", "detector.json"} <= {p.name for p in out.iterdir()}
    assert main(["render", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "pair.json"), "-o",
                 str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["left.png", "left.tif", "notes.txt", "rig.json", "right.png",
                                                     "right.tif"]

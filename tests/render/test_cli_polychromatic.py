"""``stereodrr render`` with physics options: -log(I / I_open) per view, the detector record,
the monochromatic limit through the CLI, water beam hardening, bad options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from stereodrr.cli import main
from stereodrr.geometry import StereoRig, save_rig
from stereodrr.phantoms import torso_phantom
from stereodrr.physics.attenuation import mass_attenuation
from stereodrr.volume import Volume, save_volume


def _read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture
def scene(tmp_path):
    save_volume(torso_phantom(size=(32, 24, 20), spacing=(5.0, 5.5, 6.0), supersample=1), tmp_path / "ct.nii.gz")
    rig = StereoRig.convergent(5.0, sid=600, sdd=1000, pixel_spacing=4.0, width=40, height=32)
    save_rig(rig, tmp_path / "rig.json")
    return tmp_path


def test_one_line_spectrum_through_the_cli_is_the_monochromatic_render(scene):
    (scene / "line.csv").write_text("energy_kev,fluence\n60,1\n")
    base = ["render", "--ct", str(scene / "ct.nii.gz"), "--rig", str(scene / "rig.json")]
    assert main(base + ["-o", str(scene / "mono")]) == 0
    assert main(base + ["--spectrum", str(scene / "line.csv"), "--detector", "ideal", "--scatter", "none",
                        "-o", str(scene / "poly")]) == 0
    for v in ("left", "right"):
        a, b = _read(scene / "mono" / f"{v}.tif"), _read(scene / "poly" / f"{v}.tif")
        assert a.max() > 1.0 and np.allclose(a, b, rtol=1e-6, atol=1e-6)
    rec = json.loads((scene / "poly" / "detector.json").read_text())
    assert rec["detector"]["spectrum"]["kind"] == "table" and rec["detector"]["layer"] is None
    assert rec["image"] == "-log(I / I_open)"


def test_kvp_filter_ideal_detector_on_a_water_block(tmp_path):
    # A 100 mm water cube seen head-on from far away: every ray through it crosses ~100 mm.
    hu = np.zeros((100, 100, 100), np.float32)
    save_volume(Volume.from_numpy(hu, spacing=(1, 1, 1), origin=(-49.5, -49.5, -49.5)), tmp_path / "w.nii.gz")
    rig = StereoRig.convergent(3.0, sid=20000, sdd=20400, pixel_spacing=1.0, width=9, height=9)
    save_rig(rig, tmp_path / "rig.json")
    assert main(["render", "--ct", str(tmp_path / "w.nii.gz"), "--rig", str(tmp_path / "rig.json"), "--kvp", "80",
                 "--filter", "Al:2.5", "--detector", "ideal", "--scatter", "none", "--decomposition", "water",
                 "-o", str(tmp_path / "o")]) == 0
    img = _read(tmp_path / "o" / "left.tif")
    rec = json.loads((tmp_path / "o" / "detector.json").read_text())["detector"]
    assert rec["spectrum"]["kvp"] == 80 and rec["spectrum"]["filters"] == "Al:2.5"
    # Independent: spekpy's spectrum x xraylib water, ideal energy-integrating detector, 100 mm.
    import spekpy

    s = spekpy.Spek(kvp=80, th=12, dk=1.0)
    s.filter("Al", 2.5)
    k, phi = s.get_spectrum()
    expected = -np.log((phi * k * np.exp(-mass_attenuation("Water, Liquid", k) * 10.0)).sum() / (phi * k).sum())
    assert float(img[4, 4]) == pytest.approx(expected, rel=2e-3)


def test_bad_physics_options(scene, capsys):
    base = ["render", "--ct", str(scene / "ct.nii.gz"), "--rig", str(scene / "rig.json"), "-o", str(scene / "x")]
    assert main(base + ["--kvp", "900"]) == 2  # bad arguments
    assert "kvp: 900 kV is outside spekpy's range" in capsys.readouterr().err
    assert main(base + ["--filter", "Al:1"]) == 2
    assert "--filter needs --kvp" in capsys.readouterr().err
    assert main(base + ["--preset", "nope"]) == 2
    assert "unknown detector preset 'nope'" in capsys.readouterr().err

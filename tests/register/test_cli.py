import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from stereodrr.cli import main
from stereodrr.geometry import StereoRig, save_rig
from stereodrr.register import RigidPose, load_pose, registration_errors, render_views, save_pose
from stereodrr.volume import hu_to_mu, save_volume, torso_phantom


def test_register_command_end_to_end(tmp_path, capsys):
    ct = torso_phantom(size=(48, 40, 32), spacing=6.0)
    save_volume(ct, tmp_path / "ct.nii.gz")
    rig = StereoRig.convergent(5.0, 750, 1200, 8.0, 64, 64)
    save_rig(rig, tmp_path / "rig.json")
    vol = ct.with_data(hu_to_mu(ct.data, 60.0))
    truth = RigidPose.from_degrees([1.0, 0.0, -1.5], [3.0, -2.0, 1.0], vol.center)
    paths = []
    for name, img in zip(rig.names, render_views(vol, rig, truth)):
        paths.append(str(tmp_path / f"{name}.tif"))
        sitk.WriteImage(sitk.GetImageFromArray(img.numpy().astype(np.float32)), paths[-1])
    save_pose(truth, tmp_path / "truth.json")
    out = tmp_path / "out"
    code = main(["register", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "rig.json"),
                 "--images", *paths, "--levels", "2:60:2,1:30:1", "--truth", str(tmp_path / "truth.json"),
                 "-o", str(out), "--quiet"])
    assert code == 0, capsys.readouterr()
    pose = load_pose(out / "pose.json")
    assert registration_errors(pose, truth, rig, vol.corners())["mtre_mm"] < 1.0
    table = pd.read_csv(out / "iterations.csv")
    assert {"loss_left", "loss_right", "rx_deg", "time_s", "mtre_mm"} <= set(table.columns)
    for fig in ("loss.png", "overlay.png", "errors.png"):
        assert (out / fig).stat().st_size > 1000


def test_register_command_bad_input(tmp_path, capsys):
    rig = StereoRig.convergent(5.0, 750, 1200, 8.0, 64, 64)
    save_rig(rig, tmp_path / "rig.json")
    ct = torso_phantom(size=(24, 20, 16), spacing=12.0)
    save_volume(ct, tmp_path / "ct.nii.gz")
    small = str(tmp_path / "small.tif")
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((32, 32)).astype(np.float32)), small)
    base = ["register", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "rig.json"), "-o", str(tmp_path / "o")]
    assert main(base + ["--images", small]) == 2  # a usage error
    assert "expected 2" in capsys.readouterr().err
    assert main(base + ["--images", small, small]) == 1
    assert "differs from the rig's view 'left'" in capsys.readouterr().err
    assert main(base + ["--images", small, str(tmp_path / "missing.tif")]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--images", small, small, "--optimizer", "sgd"])
    (tmp_path / "init.json").write_text(json.dumps({"schema": "stereodrr.pose/1", "center": [0, 0, 0]}))
    assert main(base + ["--images", small, small, "--init", str(tmp_path / "init.json")]) == 1


def test_levels_option_names_a_similarity_per_level():
    from stereodrr.cli.register import parse_levels
    from stereodrr.register import DEFAULT_LEVELS, Level

    assert parse_levels("4:150,2:100,1:100:gncc") == DEFAULT_LEVELS
    assert parse_levels("2:60:2, 1:30:1:ncc") == (Level(2, 60, 2), Level(1, 30, 1, "ncc"))
    for bad in ("2:60:x", "2", "1:30:1:2:gncc", "1:30:sad"):
        with pytest.raises(ValueError, match="--levels"):
            parse_levels(bad)

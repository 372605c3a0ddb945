import json
import re

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from stereodrr.cli import main
from stereodrr.geometry import StereoRig, save_rig
from stereodrr.phantoms import torso_phantom
from stereodrr.registration import RigidPose, load_pose, registration_errors, render_views, save_pose
from stereodrr.volume import hu_to_mu, save_volume


def _scene(tmp_path, frame=lambda line: line.numpy().astype(np.float32)):
    """A torso CT, a 5 deg rig and its views at a known pose written as ``frame(line integral)``:
    returns the rig, the mu volume, the true pose and the image paths."""
    ct = torso_phantom(size=(48, 40, 32), spacing=6.0)
    save_volume(ct, tmp_path / "ct.nii.gz")
    rig = StereoRig.convergent(5.0, 750, 1200, 8.0, 64, 64)
    save_rig(rig, tmp_path / "rig.json")
    vol = ct.with_data(hu_to_mu(ct.data, 60.0))
    truth = RigidPose.from_degrees([1.0, 0.0, -1.5], [3.0, -2.0, 1.0], vol.center)
    paths = []
    for name, line in zip(rig.names, render_views(vol, rig, truth)):
        paths.append(str(tmp_path / f"{name}.tif"))
        sitk.WriteImage(sitk.GetImageFromArray(frame(line)), paths[-1])
    save_pose(truth, tmp_path / "truth.json")
    return rig, vol, truth, paths


def test_register_command_end_to_end(tmp_path, capsys):
    rig, vol, truth, paths = _scene(tmp_path)
    out = tmp_path / "out"
    code = main(["register", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "rig.json"),
                 "--images", *paths, "--levels", "2:60:2,1:30:1", "--truth", str(tmp_path / "truth.json"),
                 "-o", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    status, message = printed.splitlines()[0].split(": ", 1)
    assert status in ("converged", "max_iterations") and not message.startswith(status), printed
    pose = load_pose(out / "pose.json")
    assert registration_errors(pose, truth, rig, vol.corners())["mtre_mm"] < 1.0
    table = pd.read_csv(out / "iterations.csv")
    assert {"loss_left", "loss_right", "rx_deg", "time_s", "mtre_mm"} <= set(table.columns)
    for fig in ("loss.png", "overlay.png", "errors.png"):
        assert (out / fig).stat().st_size > 1000


def test_register_command_exits_1_on_images_in_swapped_view_order(tmp_path, capsys):
    """The pair's images given right first: the fit is written, a warning names the pair and the
    exit status is 1, so a script does not take the pose as good."""
    _, _, _, paths = _scene(tmp_path)
    code = main(["register", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "rig.json"),
                 "--images", *paths[::-1], "--levels", "2:60:2,1:30:1", "-o", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "'left' and 'right' match better exchanged" in err, err
    assert (tmp_path / "out" / "pose.json").is_file()


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


def test_register_command_refuses_views_of_two_sizes_and_names_nan_pixels(tmp_path, capsys):
    from stereodrr.geometry import Camera

    rig = StereoRig.convergent(5.0, 750, 1200, 8.0, 64, 64)
    right = rig["right"]
    narrow = Camera(right.K, right.R, right.t, 56, 64, right.pixel_spacing, right.sdd)
    save_rig(StereoRig({"left": rig["left"], "right": narrow}, rig.isocenter), tmp_path / "two.json")
    ct = torso_phantom(size=(24, 20, 16), spacing=12.0)
    save_volume(ct, tmp_path / "ct.nii.gz")
    left, right_img = str(tmp_path / "l.tif"), str(tmp_path / "r.tif")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((64, 64), np.float32)), left)
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((64, 56), np.float32)), right_img)
    base = ["register", "--ct", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "o")]
    assert main(base + ["--rig", str(tmp_path / "two.json"), "--images", left, right_img]) == 1
    assert "share one detector size" in capsys.readouterr().err
    save_rig(rig, tmp_path / "rig.json")
    nan = np.ones((64, 64), np.float32)
    nan[3, 4:7] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(tmp_path / "nan.tif"))
    assert main(base + ["--rig", str(tmp_path / "rig.json"), "--images", str(tmp_path / "nan.tif"), left]) == 1
    assert "nan.tif: 3 pixel(s) are NaN or inf" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_levels_option_names_a_similarity_per_level():
    from stereodrr.cli.register import format_levels, parse_levels
    from stereodrr.registration import Level, default_levels

    for n in (1, 2):
        assert parse_levels(format_levels(default_levels(n))) == default_levels(n)
    assert parse_levels("2:60:2, 1:30:1:ncc") == (Level(2, 60, 2), Level(1, 30, 1, "ncc"))
    assert parse_levels("4:150:8x8x2,1:40:wncc:lbfgs") == (Level(4, 150, (8, 8, 2)), Level(1, 40, None, "wncc", "lbfgs"))
    assert parse_levels("1:12:2x2x1:1vox:gncc:lbfgs,1:30:0.5vox") == (
        Level(1, 12, (2, 2, 1), "gncc", "lbfgs", step_voxels=1.0), Level(1, 30, step_voxels=0.5))
    for bad in ("2:60:x", "2", "1:30:1:2:gncc", "1:30:sad", "2:60:2x2", "1:30:lbfgs:gncc", "1:30:0vox", "1:30:xvox",
                "1:30:1vox:2"):
        with pytest.raises(ValueError, match="--levels"):
            parse_levels(bad)


def test_register_command_converts_raw_16bit_frames(tmp_path, capsys):
    from stereodrr.imaging import detect, to_uint16

    # Raw flat-panel frames.
    rig, vol, truth, paths = _scene(tmp_path, lambda line: to_uint16(detect(line, 3e4, seed=2).clamp_min(0), 1.0)[0])
    args = ["register", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "rig.json"), "--images", *paths,
            "--levels", "2:60:2,1:30:1", "-o", str(tmp_path / "out"), "--quiet"]
    assert main(args) == 0
    assert "read as raw intensity (uint16)" in capsys.readouterr().out
    assert registration_errors(load_pose(tmp_path / "out" / "pose.json"), truth, rig, vol.corners())["mtre_mm"] < 1.0
    assert main(args[:-3] + ["--kind", "line_integral", "-o", str(tmp_path / "o2"), "--quiet"]) == 1
    assert "is a raw frame, not a line integral" in capsys.readouterr().err


def _intensifier_scene(tmp_path):
    """Raw frames recorded through a strong intensifier (the views rendered 4x finer, then each
    recorded pixel the mean over its pre-image: ~2 px at the edge of 64^2) and the field's map:
    the rig, volume, truth, frame paths and the register arguments."""
    import math

    import torch

    from stereodrr.distortion import distort_image, intensifier_field, save_distortion
    from stereodrr.geometry import oversampled_camera
    from tests.distortion.reference import map_of_field

    rig, vol, truth, paths = _scene(tmp_path)
    field = intensifier_field("strong", 64, 64, fov_radius=math.inf, k1=0.1, s_deg=2.0)
    fine = StereoRig({n: oversampled_camera(rig[n], 4) for n in rig.names}, rig.isocenter)
    for path, line in zip(paths, render_views(vol, fine, truth)):
        counts = distort_image(3e4 * torch.exp(-line.double()), field).numpy()
        sitk.WriteImage(sitk.GetImageFromArray(np.clip(np.rint(counts), 0, 65535).astype(np.uint16)), path)
    save_distortion(map_of_field(field, step=4, degree=4), tmp_path / "map.json")
    args = ["register", "--ct", str(tmp_path / "ct.nii.gz"), "--rig", str(tmp_path / "rig.json"), "--images", *paths,
            "--levels", "2:60:2,1:30:1", "--quiet"]
    return rig, vol, truth, args, 2 * [str(tmp_path / "map.json")]


def _mtre(tmp_path, name, rig, vol, truth):
    return registration_errors(load_pose(tmp_path / name / "pose.json"), truth, rig, vol.corners())["mtre_mm"]


def test_register_command_records_its_drrs_through_the_intensifier_maps(tmp_path, capsys):
    """With each view's map (the default route: each DRR recorded through it) the pose is found
    as well as from undistorted frames (0.96 mm on this scene of ~5 mm pixel footprints; 1.01 mm
    measured)."""
    rig, vol, truth, args, maps = _intensifier_scene(tmp_path)
    assert main([*args, "-o", str(tmp_path / "render"), "--distortion", *maps]) == 0
    assert _mtre(tmp_path, "render", rig, vol, truth) < 1.5


@pytest.mark.slow
def test_register_command_corrects_intensifier_frames_or_ignores_them(tmp_path, capsys):
    """The other route, frames corrected through the maps, finds the pose to within a pixel's
    footprint (2.99 mm measured: the correction's resampling blurs pixels this coarse); without
    maps 33 mm off."""
    rig, vol, truth, args, maps = _intensifier_scene(tmp_path)
    assert main([*args, "-o", str(tmp_path / "correct"), "--distortion", *maps, "--distortion-route", "correct"]) == 0
    assert main([*args, "-o", str(tmp_path / "without")]) == 0
    err = {k: _mtre(tmp_path, k, rig, vol, truth) for k in ("correct", "without")}
    assert err["correct"] < 4.0 and err["without"] > 5 * err["correct"], err


def test_raw_intensifier_frames_are_masked_inside_the_band_where_they_dim(capsys):
    """Air next to an intensifier's edge is dimmed: its -log reads as a bright ring that no DRR
    explains, so the mask of a raw frame ends where the picture has recovered (0.9 of the drawn
    30 px fall-off inside the fitted edge, tests/trial/test_trial.py), not at the edge."""
    from dataclasses import replace

    from stereodrr.cli.register import _field_masks
    from stereodrr.distortion import field_of_view
    from tests.trial.test_trial import _falling_off_field

    image = _falling_off_field((400, 420), (205.3, 198.6), 190.0, 30.0)
    masks = _field_masks({"left": image, "right": image}, "auto")
    assert masks is not None
    fov = field_of_view(image)
    out = capsys.readouterr().out
    margin = float(re.search(r"and the (\d+) px band inside its edge where the picture dims", out)[1])
    assert abs(margin - 27.0) <= 2.0
    np.testing.assert_array_equal(masks["left"] > 0, replace(fov, margin=margin).mask(image.shape))

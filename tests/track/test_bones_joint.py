"""Several bones together: a neighbour explained away, bead bodies assigned to bones, bead
motion as the prediction; the ``stereodrr track`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stereodrr.cli import main
from stereodrr.geometry import RigidPose
from stereodrr.interop import load_autoscoper_volume, load_tra, read_trial_file
from stereodrr.registration import render_views
from stereodrr.track.bone_fit import TrackOptions
from stereodrr.track.bone_joint import JointOptions, _predictor, explain_away
from stereodrr.track.bones import BoneTrack
from stereodrr.track.outputs import bead_check

from .test_bones import LEVELS, _render_exact, _truth, wrist  # noqa: F401 (fixture)

DATA = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist"


@pytest.fixture(scope="module")
def ulna():
    v = read_trial_file(DATA / "wrist.cfg").volumes[1]
    ct = load_autoscoper_volume(v.path, v.voxel_size, v.flip)
    return ct.with_data(ct.data * (0.02 / 1000))


def _band(a, lo=2.0, hi=16.0):
    import cv2

    a = a.astype(np.float32)
    return cv2.GaussianBlur(a, (0, 0), lo) - cv2.GaussianBlur(a, (0, 0), hi)


def test_explain_away_removes_the_neighbour(wrist, ulna):  # noqa: F811
    rig, radius = wrist
    T_r = _truth(radius, rig, 1)[0]
    T_u = T_r.copy()
    T_u[:3, 3] += 25.0 * rig["cam1"].R[0]  # the ulna beside it in cam1
    rng = np.random.default_rng(0)
    both = _render_exact(radius, rig, T_r, rng)
    neighbour = render_views(ulna, rig, RigidPose.from_matrix(T_u, ulna.center), 1, mode="exact").numpy()
    frames = {n: both[n] + 1.7 * neighbour[i] for i, n in enumerate(rig.names)}  # the frame's own scale
    left = explain_away(frames, rig, [(ulna, T_u)])
    for i, n in enumerate(rig.names):
        support = neighbour[i] > 0
        before = np.abs(_band(frames[n] - both[n])[support]).mean()
        after = np.abs(_band(left[n] - both[n])[support]).mean()
        assert after < 0.2 * before, (n, before, after)  # the bone itself, overlapping, biases the fit a little
    # A neighbour with no pose is left alone.
    same = explain_away(frames, rig, [(ulna, np.full((4, 4), np.nan))])
    np.testing.assert_array_equal(same[rig.names[0]], frames[rig.names[0]].astype(np.float32))


def _moved(cam, T):
    """The camera that sees the volume moved by ``T`` as ``cam`` sees it unmoved: ``E' = E T``."""
    E = np.r_[np.c_[cam.R, cam.t], [[0.0, 0.0, 0.0, 1.0]]] @ T
    return cam.with_pose(E[:3, :3], E[:3, 3])


def test_explain_away_with_cameras_of_different_sizes():
    """A trial's cameras may differ in size (Autoscoper and XMALab allow it): each view's DRR is
    removed at its own frame size (before: every view was rendered at the first camera's size, and
    a 3rd camera of 104 x 80 px failed with an IndexError); the DRRs here come from the renderer's
    own per-view path (``render_rig`` of the moved cameras), not from ``explain_away``'s."""
    from stereodrr.geometry import Camera, StereoRig
    from stereodrr.registration import render_each_view
    from stereodrr.render import Projector, render_rig
    from stereodrr.volume import Volume

    z, y, x = np.mgrid[0:24, 0:20, 0:16].astype(float)
    blob = (((z - 11.5) / 10) ** 2 + ((y - 9.5) / 6) ** 2 + ((x - 7.5) / 5) ** 2 < 1) * 0.02
    volume = Volume.from_numpy(blob, spacing=(2.0, 2.0, 2.0), origin=(-15.0, -19.0, -23.0))
    arc = StereoRig.arc(3, 60.0, 750.0, 1200.0, 1.2, 96, 96)
    c2 = arc["view2"]
    cams = {"cam1": arc["view0"], "cam2": arc["view1"],
            "cam3": Camera.look_at(c2.center, arc.isocenter, c2.sdd, (1.2, 1.2), 104, 80, up=-c2.R[1])}
    rig = StereoRig(cams, arc.isocenter)
    T = RigidPose(np.radians([10.0, -5.0, 20.0]), np.array([3.0, -2.0, 4.0]), volume.center).matrix
    truth = {n: d.numpy() for n, d in
             render_rig(volume, {n: _moved(c, T) for n, c in cams.items()}, Projector("exact")).items()}
    assert truth["cam3"].shape == (80, 104) and truth["cam3"].max() > 0.1
    yy = {n: np.mgrid[0:c.height, 0:c.width][0] / c.height for n, c in cams.items()}
    background = {n: (0.3 + 0.05 * yy[n]).astype(np.float32) for n in cams}
    frames = {n: background[n] + 1.7 * truth[n] for n in cams}
    left = explain_away(frames, rig, [(volume, T)], mode="exact")
    for n in cams:
        assert left[n].shape == frames[n].shape
        support = truth[n] > 0
        before = np.abs(_band(frames[n] - background[n])[support]).mean()
        after = np.abs(_band(left[n] - background[n])[support]).mean()
        assert after < 0.1 * before, (n, before, after)
    drrs = render_each_view(volume, rig, RigidPose.from_matrix(T, volume.center), mode="exact")
    for n in cams:
        np.testing.assert_allclose(drrs[n].numpy(), truth[n], atol=1e-5)
    with pytest.raises(ValueError, match="one detector size.*cam3 104x80.*render_each_view"):
        render_views(volume, rig, RigidPose.from_matrix(T, volume.center))


def test_bead_motion_predicts_from_the_nearest_good_frame():
    rng = np.random.default_rng(2)
    motion = np.stack([np.eye(4)] * 4)
    for k in range(1, 4):
        motion[k, :3, :3] = RigidPose(rng.normal(0, 0.2, 3), np.zeros(3), np.zeros(3)).matrix[:3, :3]
        motion[k, :3, 3] = rng.normal(0, 5, 3)
    bone0 = np.eye(4)
    bone0[:3, 3] = (10.0, 20.0, 30.0)
    truth = np.stack([motion[k] @ bone0 for k in range(4)])  # the bone moves with its beads
    prior = BoneTrack(np.where(np.arange(4)[:, None, None] == 2, truth, np.nan), np.full(4, 0.5), np.zeros((4, 2)),
                      ["a", "b"], ["converged"] * 4, np.array([True, True, False, True]), [""] * 4, [""] * 4,
                      np.zeros(4))
    predict = _predictor(prior, motion)
    np.testing.assert_allclose(predict(2, truth[:2]), truth[2])  # the earlier pass's own pose
    np.testing.assert_allclose(predict(0, truth[:0]), truth[0], atol=1e-9)  # from frame 2, by the beads
    np.testing.assert_allclose(predict(3, truth[:3]), truth[3], atol=1e-9)
    assert _predictor(prior, None)(0, truth[:0]) is None


def test_bead_check_compares_relative_motions():
    rng = np.random.default_rng(3)
    beads = rng.normal(0, 10, (5, 3))
    poses, positions = [], []
    for _ in range(3):
        T = np.eye(4)
        T[:3, :3] = RigidPose(rng.normal(0, 0.1, 3), np.zeros(3), np.zeros(3)).matrix[:3, :3]
        T[:3, 3] = rng.normal(0, 3, 3)
        poses.append(T)
        positions.append(beads @ T[:3, :3].T + T[:3, 3])
    poses_a = np.stack(poses)
    table = bead_check(poses_a, np.stack(positions), np.zeros(3, bool), frame_numbers=[4, 5, 6])
    assert list(table["frames"]) == ["4->5", "5->6"]
    assert table["centroid_error_mm"].max() < 1e-9 and table["rotation_error_deg"].max() < 1e-6
    off = poses_a.copy()
    off[2, :3, 3] += (0.3, 0.0, 0.0)
    assert bead_check(off, np.stack(positions), np.zeros(3, bool))["centroid_error_mm"].iloc[1] == pytest.approx(0.3)


def test_joint_options_are_checked():
    with pytest.raises(ValueError, match="passes"):
        JointOptions(passes=-1)
    with pytest.raises(ValueError, match="sigma"):
        JointOptions(sigma_low_px=5, sigma_high_px=2)
    TrackOptions(levels=LEVELS)


def test_track_command_bad_input(tmp_path, capsys):
    cfg = str(DATA / "wrist.cfg")
    assert main(["track", "--trial", cfg, "--volume", "2", "-o", str(tmp_path / "o")]) == 2
    assert "volumes 0..1 (rad_dcm_cropped, uln_dcm_cropped)" in capsys.readouterr().err
    assert main(["track", "--trial", cfg, "--volume", "0", "1", "--init", str(tmp_path / "p.json"), "-o",
                 str(tmp_path / "o")]) == 2
    assert "one pose per volume" in capsys.readouterr().err
    for device, message in (("gpu", "expected a torch device"), ("cuda:99", "CUDA device(s) available")):
        with pytest.raises(SystemExit) as exc:  # argparse's usage error
            main(["track", "--trial", cfg, "--volume", "0", "--device", device, "-o", str(tmp_path / "o")])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    (tmp_path / "a.tra").write_text(",".join(["NaN"] * 16) + "\n")
    assert main(["track", "--trial", cfg, "--volume", "0", "--init", str(tmp_path / "a.tra"), "-o",
                 str(tmp_path / "o"), "--no-beads"]) == 1
    assert "holds no pose for frame 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_init_from_a_tra_of_one_or_all_volumes(tmp_path):
    """``--init`` takes a ``.tra`` of the tracked volume, or Autoscoper's export of every volume
    (16 columns each; the tracked volume's are used); a non-rigid row names the file."""
    from stereodrr.cli.track import _init_pose
    from stereodrr.geometry import StereoRig, rotvec_to_matrix
    from stereodrr.interop import save_tra
    from stereodrr.volume import Volume

    volume = Volume.from_numpy(np.zeros((4, 5, 6), np.float32))
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, 1.0, 64, 64)  # sees the volume at every pose below
    poses = np.tile(np.eye(4), (2, 3, 1, 1))  # 2 frames, 3 volumes
    for v in range(3):
        poses[:, v, :3, :3] = rotvec_to_matrix(np.array([0.1 * v, 0.2, 0.0]))
        poses[:, v, :3, 3] = (10.0 * v, 1.0, 2.0)
    save_tra(poses[:, 1], tmp_path / "one.tra")
    save_tra(poses, tmp_path / "all.tra")
    np.testing.assert_allclose(_init_pose(str(tmp_path / "one.tra"), 1, volume, 1, 3, rig), poses[1, 1], atol=1e-12)
    np.testing.assert_allclose(_init_pose(str(tmp_path / "all.tra"), 1, volume, 2, 3, rig), poses[1, 2], atol=1e-12)
    with pytest.raises(ValueError, match="expected 16"):  # all volumes' file, but the trial has one
        _init_pose(str(tmp_path / "all.tra"), 1, volume, 0, 1, rig)
    bad = poses[:, 1].copy()
    bad[:, 0, 0] = 2.0  # a scaled row: Autoscoper's export is rigid, a hand-edited file may not be
    (tmp_path / "bad.tra").write_text("".join(",".join(f"{x:.12g}" for x in m.ravel()) + "\n" for m in bad))
    with pytest.raises(ValueError, match=r"bad\.tra: frame 0: .*rigid"):
        _init_pose(str(tmp_path / "bad.tra"), 0, volume, 1, 3, rig)


@pytest.mark.slow
def test_track_command_on_the_wrist(tmp_path, capsys):
    """Two frames of the radius from a start near the anatomy's (the tracker's own result on
    frame 0099, rounded), with the beads' predictions; Autoscoper-readable output."""
    start = np.array([[0.9546, 0.2678, -0.1308, 92.72], [-0.1607, 0.0930, -0.9826, 115.63],
                      [-0.2509, 0.9590, 0.1318, 59.24], [0.0, 0.0, 0.0, 1.0]])
    u, _, vt = np.linalg.svd(start[:3, :3])
    start[:3, :3] = u @ vt
    np.savetxt(tmp_path / "start.tra", np.r_[np.full((1, 16), np.nan), start.reshape(1, 16)], delimiter=",")
    out = tmp_path / "t"
    rc = main(["track", "--trial", str(DATA / "wrist.cfg"), "--volume", "0", "--frames", "1:3", "--init",
               str(tmp_path / "start.tra"), "-o", str(out), "--no-figures"])
    printed = capsys.readouterr().out
    assert "rad_dcm_cropped frame 1: converged" in printed, printed
    poses = pd.read_csv(out / "rad_dcm_cropped" / "poses.csv")
    frames = pd.read_csv(out / "rad_dcm_cropped" / "frames.csv")
    assert list(poses["frame"]) == [1, 2] and frames["m00"].notna().all()  # frames.csv keeps every fit
    trusted = ~frames["doubtful"].to_numpy(bool)
    assert poses[trusted].notna().all().all() and poses.loc[~trusted, "m00"].isna().all()
    tra = load_tra(out / "rad_dcm_cropped" / "rad_dcm_cropped.tra")
    assert tra.shape == (3, 1, 4, 4) and np.isnan(tra[0]).all()
    assert [bool(np.isfinite(tra[k]).all()) for k in (1, 2)] == list(trusted)
    summary = json.loads((out / "track.json").read_text())
    assert summary["frames"] == [1, 2] and summary["bones"][0]["tracked"] == 2
    assert rc in (0, 1)  # 1 only with a doubtful frame, which frames.csv would name


def test_track_polarity_of_frames_without_a_round_field(tmp_path):
    """A flat panel's frames have no dark outside ring to tell an inverted export by: ``auto``
    says so (a warning), and ``--polarity dark_air`` reads the inverted export as its raw frame."""
    import shutil
    import warnings

    import tifffile

    from stereodrr.cli._args import with_polarity
    from stereodrr.trial import load_trial

    yy, xx = np.mgrid[0:1760, 0:1760]
    raw = 200.0 * np.exp(-0.5 - 1.0 * np.exp(-(((yy - 880) / 400.0) ** 2)) - 0.8 * (((xx - 700) ** 2 + (yy - 900) ** 2)
                                                                                     < 150**2))
    trials = {}
    for kind, image in (("raw", raw), ("inverted", 255.0 - raw)):
        root = tmp_path / kind
        shutil.copytree(DATA, root)
        for d in sorted((root / "XMA_UND").iterdir()):
            for f in d.glob("*.tif"):
                tifffile.imwrite(f, np.round(image).astype(np.uint8))
        trials[kind] = load_trial(root / "wrist.cfg", volumes=False)
    with pytest.warns(UserWarning, match="no round intensifier field"):
        auto = with_polarity(trials["inverted"], "auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dark = with_polarity(trials["inverted"], "dark_air")
    expected = trials["raw"].line_integrals(0)[0]["cam1"]
    assert np.corrcoef(dark.line_integrals(0)[0]["cam1"].ravel(), expected.ravel())[0, 1] > 0.99
    assert np.corrcoef(auto.line_integrals(0)[0]["cam1"].ravel(), expected.ravel())[0, 1] < -0.9  # what auto reads


def test_track_one_camera_goes_markerless_and_prints_warnings(tmp_path, capsys):
    """A trial of one camera cannot triangulate beads: ``track`` tracks the bones without them
    (it used to stop with the bead step's two-camera error), and the warnings the run collects
    reach the terminal, not only track.json."""
    from stereodrr.cli.track import _report, _track_beads
    from stereodrr.trial import load_trial

    keys = ("mayaCam_csv", "CameraRootDir", "VolumeFile")
    lines = [" ".join((line.split()[0], str(DATA / line.split()[1]))) if line.startswith(keys) else line
             for line in (DATA / "wrist.cfg").read_text().splitlines() if "cam02" not in line]
    (tmp_path / "one.cfg").write_text("\n".join(lines) + "\n")
    trial = load_trial(tmp_path / "one.cfg", volumes=False)
    assert trial.rig.names == ["cam1"]
    with pytest.warns(UserWarning, match=r"one camera \('cam1'\).*tracked without them"):
        assert _track_beads(trial, [0, 1]) is None
    summary = {"bones": [], "seconds": 1.0, "warnings": ["rig: one view ('cam1'): weakly fixed"]}
    assert _report(summary, tmp_path) == 0
    assert "warning: rig: one view ('cam1'): weakly fixed" in capsys.readouterr().err

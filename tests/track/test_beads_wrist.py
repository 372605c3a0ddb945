"""The bead pipeline on real frames: the Autoscoper wrist sample (frames 0002, 0099 and 0158 of
two image intensifiers 110 degrees apart, XMALab's calibrations). Its 17 tantalum beads: six in
the radius, six (three pairs) in the ulna and five in the hand."""

from pathlib import Path

import numpy as np
import pytest

from stereodrr.geometry import StereoRig
from stereodrr.track.bead_rigid import POSE_COLUMNS
from stereodrr.track.beads import BeadTracking, BeadTrackOptions, track_beads
from stereodrr.trial import load_trial, read_frame

WRIST = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist" / "wrist.cfg"


@pytest.fixture(scope="module")
def wrist():
    trial = load_trial(WRIST)
    frames = [[read_frame(p) for p in trial.frames[c]] for c in trial.rig.names]
    masks = [trial.field(c).mask(frames[k][0].shape) for k, c in enumerate(trial.rig.names)]
    return trial.rig, frames, masks


@pytest.fixture(scope="module")
def tracking(wrist) -> BeadTracking:
    rig, frames, masks = wrist
    return track_beads(frames, rig, masks, BeadTrackOptions(progress=False))


def test_every_bead_in_every_frame(tracking):
    seen = tracking.points3d.dropna(subset=["x"])
    per_frame = seen.groupby("frame").size()
    assert list(per_frame.index) == [0, 1, 2] and (per_frame >= 17).all(), per_frame
    assert (seen["views"] == 2).all()
    # Each matched detection carries its bead; each bead is seen in both views of every frame.
    det = tracking.detections
    assert set(det["camera"]) == {"cam1", "cam2"}
    matched = det[det["bead"] >= 0]
    assert len(matched) == 2 * len(seen)


def test_reprojection_median(tracking):
    p = tracking.points3d
    residuals = p[["residual_cam1", "residual_cam2"]].to_numpy().ravel()
    assert np.nanmedian(residuals) <= 0.2
    # XMALab's beads lie 0.2-0.4 px (median) from their epipolar lines with these calibrations.
    assert p["epipolar_px"].median() <= 0.4


def test_three_rigid_bodies(tracking):
    bodies = tracking.bodies
    sizes = sorted(bodies[bodies["body"] >= 0].groupby("body").size().tolist())
    # Hand (5), radius and ulna (6 each); no bead outside a body.
    assert sizes == [5, 6, 6] and (bodies["body"] >= 0).all()
    rms = tracking.rigidity_rms_mm()
    # Radius and ulna are rigid within 0.05 mm; the hand's beads drift apart by up to 0.26 mm
    # between frames where its beads lie ~1 px off their epipolar lines (calibration).
    assert (rms < 0.1).all() and np.sort(rms.to_numpy())[1] < 0.05, rms
    poses = tracking.poses
    assert len(poses) == 9 and poses[list(POSE_COLUMNS)].notna().all(axis=None)
    first = poses[poses["frame"] == 0][list(POSE_COLUMNS)].to_numpy().reshape(-1, 4, 4)
    assert np.allclose(first, np.eye(4), atol=1e-9)
    # The hand moves most between frames 0002 and 0099 (centimetres), the forearm little.
    moved = poses[poses["frame"] == 1].set_index("body")[["m03", "m13", "m23"]]
    travel = np.linalg.norm(moved.to_numpy(), axis=1)
    assert travel.max() > 10.0


def test_positions_table_has_every_frame_and_bead(tracking):
    X = tracking.positions()
    assert X.shape == (3, len(tracking.bodies), 3)
    assert len(tracking.points3d) == X.shape[0] * X.shape[1]


def test_frame_reader_and_errors(wrist):
    rig, frames, masks = wrist
    calls = []

    def read(camera: int, frame: int) -> np.ndarray:
        calls.append((camera, frame))
        return frames[camera][frame + 1]  # frame 0099 alone

    got = track_beads(read, rig, masks=lambda c, f: masks[c],
                      options=BeadTrackOptions(progress=False, refine=0), n_frames=1)
    assert sorted(calls) == [(0, 0), (1, 0)]
    assert got.points3d["x"].notna().sum() >= 17
    # One frame holds no evidence of rigidity: no bodies, no poses.
    assert (got.bodies["body"] == -1).all() and len(got.poses) == 0
    with pytest.raises(ValueError, match="n_frames: expected the number of frames"):
        track_beads(read, rig)
    with pytest.raises(ValueError, match="frames: expected one sequence of frames per camera"):
        track_beads(frames[:1], rig)
    with pytest.raises(ValueError, match="frames: expected the same number"):
        track_beads([frames[0], frames[1][:2]], rig)
    with pytest.raises(ValueError, match="masks: expected one mask"):
        track_beads(frames, rig, masks=[None])
    blank = np.full((64, 64), 200, np.uint8)
    empty = track_beads([[blank, blank], [blank, blank]], rig, options=BeadTrackOptions(progress=False))
    assert empty.frames == 2 and empty.positions().shape == (2, 0, 3)
    assert len(empty.detections) == len(empty.points3d) == len(empty.poses) == 0
    one = StereoRig({"cam1": rig["cam1"]}, rig.isocenter)
    with pytest.raises(ValueError, match="rig: expected at least 2 cameras"):
        track_beads(frames[:1], one)
    with pytest.raises(ValueError, match="refine"):
        BeadTrackOptions(refine=-1)


def test_frame_figure(wrist, tracking, tmp_path):
    import matplotlib.image

    from stereodrr.plot.beads import plot_bead_frame

    rig, frames, _ = wrist
    path = plot_bead_frame({c: frames[k][1] for k, c in enumerate(rig.names)}, tracking, 1, rig, tmp_path / "frame.png")
    image = matplotlib.image.imread(path)
    assert image.shape[1] > image.shape[0] > 500  # two views side by side


@pytest.mark.slow
def test_wrist_experiment(tmp_path):
    import sys

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
    import beads_wrist

    assert beads_wrist.main(["--out", str(tmp_path)]) == 0
    beads = pd.read_csv(tmp_path / "beads.csv")
    assert (beads.dropna(subset=["x"]).groupby("frame").size() >= 17).all()
    assert sorted(pd.read_csv(tmp_path / "bodies.csv").groupby("body").size()) == [5, 6, 6]
    assert all((tmp_path / f"frame_{f}.png").stat().st_size > 0 for f in range(3))


def test_a_mirrored_camera_is_not_matched_quietly(wrist, recwarn):
    """cam2's frames mirrored left-right (a wrong export): a few detections still fall near an
    epipolar line by chance; so few matches out of 17 beads per view is said, not passed."""
    rig, frames, masks = wrist
    with pytest.warns(RuntimeWarning, match=r"of the \d+ beads the views could share were matched"):
        track_beads([frames[0][1:2], [f[:, ::-1] for f in frames[1][1:2]]], rig, [masks[0], masks[1][:, ::-1]],
                    BeadTrackOptions(progress=False, refine=0))
    recwarn.clear()
    track_beads([frames[0][1:2], frames[1][1:2]], rig, masks, BeadTrackOptions(progress=False, refine=0))
    assert not [w for w in recwarn if "could share" in str(w.message)]


def test_bodies_from_two_frames_come_with_a_warning(wrist):
    rig, frames, masks = wrist
    with pytest.warns(RuntimeWarning, match="rigid bodies from two frames"):
        got = track_beads([f[1:] for f in frames], rig, masks, BeadTrackOptions(progress=False))
    assert (got.bodies["body"] >= 0).any()

"""Bone tracking with the volumes on a device other than the CPU, the ``meta`` device standing in
for CUDA (tests/meta_device.py): a tensor made on the CPU and mixed with a volume's raises, as it
would on a GPU, and so does ``.numpy()`` without ``.cpu()``. The placeholder values steer the
tracker's branches; the tests check that every path runs (search, warm starts, registration,
joint passes, outputs), not what it finds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stereodrr.cli.track import _write_overlays
from stereodrr.geometry import RigidPose
from stereodrr.registration import Level
from stereodrr.track import bone_joint
from stereodrr.track.bead_rigid import POSE_COLUMNS
from stereodrr.track.beads import BeadTracking
from stereodrr.track.bone_fit import BoneSupport, JointOptions, TrackOptions, register_frame
from stereodrr.track.bone_init import InitOptions
from stereodrr.track.bone_views import cut_volume, support_corners
from stereodrr.track.bones import BoneTrack, track_bone
from stereodrr.track.outputs import write_bone_results
from stereodrr.trial import load_trial

from ..meta_device import ValuesOnHost, torch_backend_without_checkpoints  # noqa: F401 (a fixture)
from .test_bones import synthetic, wrist  # noqa: F401 (fixtures)

DATA = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist"

# The placeholders give a loss of 1 per view and steps of about 1: a bound above the loss (and no
# bound on the share of the bone in the field) keeps the fits and trusts the frames (so trusted poses explain the frames for the other bone), a
# tolerance above the steps ends each registration at once. Adam: L-BFGS would measure the
# curvature by finite differences first (tests/registration/test_device.py runs it), and a meta
# step costs a tenth of a second.
LEVEL = Level(2, 3, volume_factor=1, optimizer="adam")
ON_META = dict(levels=(LEVEL,), progress=False, max_view_loss=10.0, min_in_field=0.0, rotation_tol_deg=1e6,
               translation_tol_mm=1e6, init=InitOptions(scale=4, rotations=32, refine=2, first_level=LEVEL), device="meta")


def _beads(truth: list[np.ndarray], volume) -> BeadTracking:
    """Three beads on one rigid body that moves with the bone."""
    local = volume.center + np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    points, poses = [], []
    for k, T in enumerate(truth):
        X = local @ T[:3, :3].T + T[:3, 3]
        points += [{"frame": k, "bead": b, "x": x, "y": y, "z": z} for b, (x, y, z) in enumerate(X)]
        M = T @ np.linalg.inv(truth[0])
        poses.append({"frame": k, "body": 0, "beads": 3, **dict(zip(POSE_COLUMNS, M.ravel())), "rms_mm": 0.0})
    bodies = pd.DataFrame({"bead": [0, 1, 2], "body": [0, 0, 0]})
    return BeadTracking(("cam1", "cam2"), len(truth), pd.DataFrame(), pd.DataFrame(points), bodies, pd.DataFrame(poses))


def test_track_device_option_is_checked():
    with pytest.raises(ValueError, match="device: expected a torch device"):
        TrackOptions(device="gpu7")


@pytest.mark.filterwarnings("ignore::UserWarning")  # the placeholders make poor fits
def test_track_bone_runs_on_the_options_device(wrist, synthetic, tmp_path,  # noqa: F811
                                               torch_backend_without_checkpoints):  # noqa: F811
    rig, volume = wrist
    truth, frames = synthetic
    with ValuesOnHost():
        searched = track_bone(volume, rig, frames[:1], TrackOptions(**ON_META))
        track = track_bone(volume, rig, frames, TrackOptions(**ON_META), init=truth[0])
        # The CT's cut faces left out (the placeholders find none on the volume itself).
        support = BoneSupport(support_corners(volume), cut_volume(volume).to("meta"))
        register_frame(volume.to("meta"), rig, frames[0], None, RigidPose.from_matrix(truth[0], volume.center),
                       TrackOptions(**ON_META), support, caught=[])
    assert searched.start == ["search"] and searched.init is not None
    assert track.start == ["given", "previous", "constant_velocity"]
    paths = write_bone_results(track, tmp_path, "radius", frames=[0, 1, 2], n_frames=3)
    assert all(p.exists() for p in paths.values())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_track_bones_runs_on_the_options_device(wrist, synthetic, monkeypatch,  # noqa: F811
                                                torch_backend_without_checkpoints):  # noqa: F811
    rig, volume = wrist
    truth, frames = synthetic
    removed = []
    on_device = bone_joint.explain_away

    def explain_away(images, rig, others, *args):
        removed.append(len(others))
        return on_device(images, rig, others, *args)

    monkeypatch.setattr(bone_joint, "explain_away", explain_away)
    with ValuesOnHost():
        tracks = bone_joint.track_bones([volume, volume], rig, frames[:2],
                                        TrackOptions(**ON_META, joint=JointOptions(passes=1)),
                                        beads=_beads(truth[:2], volume), inits=[truth[0], truth[0]])
    assert [t.start for t in tracks] == [["predict"] * 2] * 2  # the joint pass, from the first's poses
    assert removed and all(n == 1 for n in removed)  # each bone's neighbour rendered and removed


def test_overlays_render_on_the_volumes_device(tmp_path, torch_backend_without_checkpoints):  # noqa: F811
    trial = load_trial(DATA / "wrist.cfg")
    tv = trial.volume(0)
    pose = RigidPose(np.radians([80.0, -60.0, 40.0]), trial.rig.isocenter - tv.volume.center, tv.volume.center).matrix
    track = BoneTrack(pose[None], np.array([0.5]), np.zeros((1, 2)), trial.rig.names, ["converged"], np.array([False]),
                      [""], ["given"], np.ones(1))
    with ValuesOnHost():
        _write_overlays(trial, [0], [tv], [tv.volume.to("meta")], [track], tmp_path)
    assert (tmp_path / "overlays" / "frame_0000.png").exists()

"""Bone tracking on frames rendered from the real radius CT through the real wrist cameras.

The truth is independent of the tracker's own model: frames are rendered with the exact
(Siddon) projector where the tracker uses Joseph's, on a smooth soft-tissue-like background with
noise. The cameras are the wrist sample's, binned 4x (440 x 440 px, 0.66 mm at the bone) to
keep the tests fast.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from stereodrr.calib.dlt import rig_isocenter
from stereodrr.geometry import Camera, RigidPose, StereoRig, crop_camera
from stereodrr.interop import load_autoscoper_volume, load_mayacam, read_trial_file
from stereodrr.registration import Level, render_views, scale_intrinsics
from stereodrr.render import Projector, render_rig
from stereodrr.track.bone_fit import BoneSupport, TrackOptions, frame_loss, predict_pose, register_frame
from stereodrr.track.bone_init import InitOptions, initial_pose, so3_grid, template_candidates
from stereodrr.track.bone_views import crop_image, cut_volume, dilate, projected_boxes, support_corners
from stereodrr.track.bones import _flag_outliers, track_bone

DATA = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist"
BIN = 4
LEVELS = (Level(2, 20, volume_factor=1, optimizer="lbfgs"), Level(1, 20, volume_factor=1, optimizer="lbfgs"))


def _binned(c: Camera, s: int) -> Camera:
    K = scale_intrinsics(torch.tensor(c.K), s).numpy()
    return Camera(K, c.R, c.t, c.width // s, c.height // s, (c.pixel_spacing[0] * s, c.pixel_spacing[1] * s), c.sdd)


@pytest.fixture(scope="module")
def wrist():
    trial = read_trial_file(DATA / "wrist.cfg")
    cams = {f"cam{i + 1}": _binned(load_mayacam(p), BIN) for i, p in enumerate(trial.cameras)}
    rig = StereoRig(cams, rig_isocenter(cams))
    v = trial.volumes[0]
    ct = load_autoscoper_volume(v.path, v.voxel_size, v.flip)
    return rig, ct.with_data(ct.data * (0.02 / 1000))  # 0-4095 -> attenuation-like values


def _render_exact(volume, rig, pose: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A frame: the exact DRR of the bone (rendered on a crop around it, pasted) on a smooth
    background, plus noise."""
    H, W = rig[rig.names[0]].height, rig[rig.names[0]].width
    yy, xx = np.mgrid[0:H, 0:W]
    p = RigidPose.from_matrix(pose, volume.center)
    out = {}
    for name, box in projected_boxes(support_corners(volume), rig, p).items():
        img = 0.3 * np.exp(-(((xx - 0.5 * W) / (0.3 * W)) ** 2)) + 0.05 * yy / H
        if np.all(np.isfinite(box)):
            u0, v0 = int(math.floor(box[0])) - 2, int(math.floor(box[1])) - 2
            w, h = int(math.ceil(box[2])) - u0 + 3, int(math.ceil(box[3])) - v0 + 3
            cam = crop_camera(rig[name], u0, v0, w, h)
            d = render_views(volume, StereoRig({name: cam}, rig.isocenter), p, 1, mode="exact")[0].numpy()
            r0, r1, c0, c1 = max(v0, 0), min(v0 + h, H), max(u0, 0), min(u0 + w, W)
            if r1 > r0 and c1 > c0:
                img[r0:r1, c0:c1] += d[r0 - v0:r1 - v0, c0 - u0:c1 - u0]
        out[name] = (img + rng.normal(0.0, 0.01, img.shape)).astype(np.float32)
    return out


def _truth(volume, rig, n: int, seed: int = 0) -> list[np.ndarray]:
    """Poses of a forearm-like radius near the isocenter moving by ~2 deg / ~1.5 mm per frame."""
    rng = np.random.default_rng(seed)
    T = RigidPose(np.radians([80.0, -60.0, 40.0]), rig.isocenter - volume.center, volume.center).matrix
    out = [T]
    for _ in range(n - 1):
        out.append(RigidPose(np.radians(rng.normal(0, 2.0, 3)), rng.normal(0, 1.5, 3), volume.center).matrix @ out[-1])
    return out


@pytest.fixture(scope="module")
def synthetic(wrist):
    rig, volume = wrist
    truth = _truth(volume, rig, 3)
    rng = np.random.default_rng(1)
    return truth, [_render_exact(volume, rig, T, rng) for T in truth]


def _errors(T: np.ndarray, truth: np.ndarray, center: np.ndarray) -> tuple[float, float]:
    """Rotation error (deg) and the error at the moved volume centre (mm)."""
    d = T @ np.linalg.inv(truth)
    ang = math.degrees(math.acos(float(np.clip((np.trace(d[:3, :3]) - 1) / 2, -1, 1))))
    c = truth[:3, :3] @ center + truth[:3, 3]
    return ang, float(np.linalg.norm(d[:3, :3] @ c + d[:3, 3] - c))


# ----------------------------------------------------------------------------- cropped cameras
def test_cropped_camera_renders_the_full_renders_crop(wrist):
    rig, volume = wrist
    pose = RigidPose(np.radians([80.0, -60.0, 40.0]), rig.isocenter - volume.center, volume.center)
    moved = {n: c.with_pose(*(lambda E: (E[:3, :3], E[:3, 3]))(np.r_[np.c_[c.R, c.t], [[0, 0, 0, 1]]] @ pose.matrix))
             for n, c in rig.cameras.items()}
    full = render_rig(volume, moved, Projector("joseph"))
    boxes = projected_boxes(support_corners(volume), rig, pose)
    for name in rig.names:
        b = boxes[name]
        # One crop around the bone, one that reaches past the detector's left and top edges.
        for u0, v0 in ((int(b[0]) - 5, int(b[1]) - 7), (-30, -20)):
            w, h = int(b[2]) + 9 - u0, int(b[3]) + 11 - v0
            crop = render_rig(volume, {name: crop_camera(moved[name], u0, v0, w, h)}, Projector("joseph"))[name].numpy()
            expected = crop_image(full[name].numpy(), u0, v0, w, h)
            inside = crop_image(np.ones(full[name].shape, np.float32), u0, v0, w, h) > 0
            assert expected.max() > 0.1 and crop.shape == (h, w)  # the bone is in the crop
            np.testing.assert_allclose(crop[inside], expected[inside], rtol=1e-4, atol=1e-5)


def test_crop_camera_rejects_bad_sizes(wrist):
    rig, _ = wrist
    with pytest.raises(ValueError, match="crop size"):
        crop_camera(rig["cam1"], 0, 0, 0, 10)
    with pytest.raises(ValueError, match="crop u0"):
        crop_camera(rig["cam1"], 0.5, 0, 10, 10)  # type: ignore[arg-type]


def test_cut_volume_marks_the_cut_face_only(wrist):
    _, volume = wrist
    cut = cut_volume(volume)
    assert cut is not None
    on = cut.data > 0
    assert bool(on[-2:].any()) and not bool(on[:-2].any())  # the bone touches only the last pages
    assert cut_volume(volume.with_data(torch.nn.functional.pad(volume.data, (1, 1, 1, 1, 1, 1))[1:-1, 1:-1, 1:-1]
                                       * 0)) is None


# ----------------------------------------------------------------------------- tracking
def test_track_recovers_known_poses(wrist, synthetic):
    rig, volume = wrist
    truth, frames = synthetic
    start = RigidPose(np.radians([2.0, -1.5, 1.0]), [1.0, -1.0, 1.5], volume.center).matrix @ truth[0]
    track = track_bone(volume, rig, frames, TrackOptions(levels=LEVELS, progress=False, reinit=False), init=start)
    assert track.status == ["converged"] * 3
    assert not track.doubtful.any(), track.reasons
    assert track.start == ["given", "previous", "constant_velocity"]
    for k in range(3):
        ang, mm = _errors(track.poses[k], truth[k], volume.center)
        assert ang < 0.3 and mm < 0.1, (k, ang, mm)
    table = track.table()
    assert list(table["frame"]) == [0, 1, 2] and {"loss_cam1", "loss_cam2", "m00", "m33"} <= set(table.columns)
    np.testing.assert_array_equal(table[["in_field_cam1", "in_field_cam2"]].to_numpy(), 1.0)  # no masks: all in view


def test_frames_as_a_callable_and_a_prediction_hook(wrist, synthetic):
    rig, volume = wrist
    truth, frames = synthetic
    calls = []

    def hook(k: int, poses: np.ndarray) -> np.ndarray:
        calls.append((k, poses.shape))
        return truth[k]  # e.g. the bone's motion from its beads

    track = track_bone(volume, rig, lambda k: frames[k], TrackOptions(levels=LEVELS, progress=False, predict=hook,
                                                                      reinit=False),
                       init=truth[0], n_frames=2)
    assert calls == [(0, (0, 4, 4)), (1, (1, 4, 4))]  # every frame, with the poses before it
    assert track.start == ["given", "predict"]
    with pytest.raises(ValueError, match="n_frames"):
        track_bone(volume, rig, lambda k: frames[k], TrackOptions(levels=LEVELS, progress=False), init=truth[0])


def test_bone_outside_every_view_gives_nan_and_a_flag(wrist, synthetic):
    rig, volume = wrist
    truth, frames = synthetic
    away = truth[0].copy()
    away[:3, 3] += 5000.0 * rig["cam1"].R[0]  # far to the side of both detectors
    track = track_bone(volume, rig, frames[:1], TrackOptions(levels=LEVELS, progress=False, reinit=False), init=away)
    assert np.isnan(track.poses[0]).all() and np.isnan(track.losses[0])
    assert track.status == ["not_visible"] and track.doubtful[0]
    assert "no view" in track.reasons[0]


def test_a_bone_mostly_outside_a_views_field_is_doubtful(wrist, synthetic):
    """A view whose field shows under half of the bone cannot confirm its pose (a small bone fitted
    to the bright rim of an intensifier's field did so, unflagged): the fit reports each view's
    share of the bone's outline in its field, measured here on the exact render, and tracking
    flags the frame."""
    rig, volume = wrist
    truth, frames = synthetic
    pose = RigidPose.from_matrix(truth[0], volume.center)
    outline = render_views(volume, rig, pose, 1, mode="exact").numpy()[1] > 0
    per_column = np.cumsum(outline.sum(axis=0))
    edge = int(np.searchsorted(per_column, 0.3 * per_column[-1]))  # cam2's field ends at this column
    field = np.zeros(outline.shape, np.float32)
    field[:, :edge] = 1.0
    masks = {"cam1": np.ones_like(field), "cam2": field}
    expected = outline[:, :edge].sum() / outline.sum()
    fit = register_frame(volume, rig, frames[0], masks, pose, TrackOptions(levels=LEVELS, progress=False), caught=[])
    assert fit.in_field["cam1"] == pytest.approx(1.0, abs=1e-9)
    assert fit.in_field["cam2"] == pytest.approx(expected, abs=0.03) and 0.25 < expected < 0.35
    opts = TrackOptions(levels=LEVELS, progress=False, reinit=False)
    track = track_bone(volume, rig, frames[:1], opts, init=truth[0], masks=masks)
    inside = re.search(r"bone mostly outside the field \(inside: cam2 (\d+) %\)", track.reasons[0])
    assert track.doubtful[0] and inside and abs(int(inside[1]) - 100 * expected) <= 5, track.reasons
    assert track.table()["in_field_cam2"][0] == pytest.approx(int(inside[1]) / 100, abs=0.005)
    lenient = track_bone(volume, rig, frames[:1], replace(opts, min_in_field=0.2), init=truth[0], masks=masks)
    assert not lenient.doubtful[0], lenient.reasons
    with pytest.raises(ValueError, match="min_in_field"):
        TrackOptions(min_in_field=1.5)


def test_a_view_without_contrast_around_the_bone_is_left_out(wrist, synthetic):
    """A pose that puts the bone over open air (0 in a line-integral frame, the field's dimmed
    rim masked) leaves that view nothing to compare: it is not used, where the registration would
    have refused the constant image and ended the whole tracking run."""
    rig, volume = wrist
    truth, frames = synthetic
    pose = RigidPose.from_matrix(truth[0], volume.center)
    outline = render_views(volume, rig, pose, 1, mode="exact").numpy()[1] > 0
    around = dilate(outline, TrackOptions().bone_mask_px + 4)
    # cam2 reads 0 around the bone and keeps its contrast in the rest of the crop.
    blank = {"cam1": frames[0]["cam1"], "cam2": np.where(around, 0.0, frames[0]["cam2"]).astype(np.float32)}
    fit = register_frame(volume, rig, blank, None, pose, TrackOptions(levels=LEVELS, progress=False), caught=[])
    assert fit.views == ["cam1"] and set(fit.view_losses) == {"cam1"}
    none = {n: np.zeros_like(f) for n, f in frames[0].items()}
    assert register_frame(volume, rig, none, None, pose, TrackOptions(levels=LEVELS, progress=False),
                          caught=[]).status == "not_visible"


def test_register_frame_reports_views_and_loss(wrist, synthetic):
    rig, volume = wrist
    truth, frames = synthetic
    fit = register_frame(volume, rig, frames[0], None, RigidPose.from_matrix(truth[0], volume.center),
                         TrackOptions(levels=LEVELS, progress=False), caught=[])
    assert fit.views == ["cam1", "cam2"] and fit.pose is not None
    assert 0 <= fit.loss < 0.1 and set(fit.view_losses) == {"cam1", "cam2"}


@pytest.mark.parametrize("change, match", [
    (lambda f: {**f, "cam1": f["cam1"][:-1]}, r"frames\[0\] image 'cam1': expected the view's detector size"),
    (lambda f: {**f, "cam2": np.full_like(f["cam2"], np.nan)}, r"frames\[0\] image 'cam2': .* NaN"),
    (lambda f: {"cam1": f["cam1"]}, r"frames\[0\]: expected one image per rig view .* missing \['cam2'\]"),
])
def test_bad_frames_raise_naming_the_input(wrist, synthetic, change, match):
    rig, volume = wrist
    truth, frames = synthetic
    with pytest.raises(ValueError, match=match):
        track_bone(volume, rig, [change(frames[0])], TrackOptions(levels=LEVELS, progress=False), init=truth[0])


def test_bad_masks_times_and_init_raise(wrist, synthetic):
    rig, volume = wrist
    truth, frames = synthetic
    opts = TrackOptions(levels=LEVELS, progress=False)
    negative = {n: -np.ones_like(frames[0][n]) for n in rig.names}
    with pytest.raises(ValueError, match=r"frames\[0\] mask 'cam1': expected non-negative"):
        track_bone(volume, rig, frames[:1], opts, init=truth[0], masks=negative)
    with pytest.raises(ValueError, match="times"):
        track_bone(volume, rig, frames[:2], opts, init=truth[0], times=[1.0, 1.0])
    with pytest.raises(ValueError, match="pose matrix"):
        track_bone(volume, rig, frames[:1], opts, init=np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="margin_px"):
        TrackOptions(margin_px=-1)


def test_one_view_warns_that_depth_is_weakly_fixed(wrist, synthetic):
    rig, volume = wrist
    truth, frames = synthetic
    one = StereoRig({"cam1": rig["cam1"]}, rig.isocenter)
    bad = {"cam1": np.full_like(frames[0]["cam1"], np.nan)}  # stops the run before any fit
    with pytest.warns(RuntimeWarning, match=r"one view .*\(depth\)"), pytest.raises(ValueError, match="NaN"):
        track_bone(volume, one, [bad], TrackOptions(levels=LEVELS, progress=False), init=truth[0])


# ----------------------------------------------------------------------------- prediction, flags
def test_constant_velocity_prediction_continues_a_screw_motion():
    step = RigidPose(np.radians([3.0, -2.0, 5.0]), [1.0, 2.0, -0.5], [10.0, 0.0, 5.0]).matrix
    T0 = RigidPose(np.radians([20.0, 0.0, 0.0]), [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]).matrix
    poses = np.full((4, 4, 4), np.nan)
    poses[0], poses[1] = T0, step @ T0
    times = np.array([0.0, 1.0, 3.0, 4.0])  # frame 2 comes two steps after frame 1
    np.testing.assert_allclose(predict_pose(poses, times, 2), step @ step @ step @ T0, atol=1e-9)
    np.testing.assert_allclose(predict_pose(poses, times, 2, "previous"), poses[1])
    assert predict_pose(np.full((3, 4, 4), np.nan), np.arange(3.0), 2) is None


def test_outlier_losses_are_flagged():
    losses = np.array([0.5, 0.52, 1.2, 0.49, np.nan, 0.51])
    doubtful = np.zeros(6, bool)
    reasons = [""] * 6
    _flag_outliers(losses, doubtful, reasons, 1.5)
    assert doubtful.tolist() == [False, False, True, False, False, False]
    assert "neighbours' median" in reasons[2]


# ----------------------------------------------------------------------------- global search
def test_so3_grid_covers_rotations():
    R = so3_grid(500)
    assert R.shape == (500, 3, 3)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    # Every random rotation lies within 30 deg of a grid rotation (covering radius ~ 25 deg at 500).
    rng = np.random.default_rng(3)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    from stereodrr.geometry import quaternion_to_matrix
    Q = quaternion_to_matrix(q)
    cos = (np.einsum("aij,bij->ab", Q, R) - 1) / 2
    assert np.degrees(np.arccos(np.clip(cos.max(1), -1, 1))).max() < 30


@pytest.mark.slow
def test_initial_pose_finds_the_synthetic_bone(wrist, synthetic):
    rig, volume = wrist
    truth, frames = synthetic
    opts = TrackOptions(levels=(Level(4, 20, volume_factor=1, optimizer="lbfgs"), *LEVELS), progress=False)
    support = BoneSupport.of(volume)

    def refine(start: RigidPose):
        f = register_frame(volume, rig, frames[0], None, start, opts, support, caught=[])
        return f.pose, f.loss, f.status

    res = initial_pose(volume, rig, frames[0], None, refine, InitOptions(scale=2, rotations=1500), progress=False)
    assert res.status == "found", res.message
    assert res.margin > 0.3  # the next distinct candidate fits far worse
    assert res.pose is not None
    ang, mm = _errors(res.pose.matrix, truth[0], volume.center)
    assert ang < 1.0 and mm < 0.5, (ang, mm)


@pytest.mark.slow  # 10-19 s: kept out of the default run's 10 minutes
@pytest.mark.filterwarnings("ignore::UserWarning")  # search candidates that leave the views
def test_a_frame_without_the_bone_gives_nan_not_a_silent_pose(wrist):
    rig, volume = wrist
    rng = np.random.default_rng(5)
    H, W = rig["cam1"].height, rig["cam1"].width
    yy, xx = np.mgrid[0:H, 0:W]
    empty = {n: (0.3 * np.exp(-(((xx - 0.5 * W) / (0.3 * W)) ** 2)) + rng.normal(0, 0.01, (H, W))).astype(np.float32)
             for n in rig.names}
    # Few orientations: nothing is there to find, within the frames or padded.
    opts = TrackOptions(levels=LEVELS, progress=False, init=InitOptions(rotations=40, refine=2, scale=4))
    track = track_bone(volume, rig, [empty], opts)
    assert np.isnan(track.poses[0]).all()
    assert track.status[0] in ("init_ambiguous", "init_failed") and track.doubtful[0]
    assert track.init is not None and track.init.status != "found"


def test_frames_before_the_first_good_one_are_tracked_backwards(wrist, synthetic):
    rig, volume = wrist
    truth, frames = synthetic
    away = truth[0].copy()
    away[:3, 3] += 5000.0 * rig["cam1"].R[0]  # a first start that shows the bone nowhere

    def hook(k: int, poses: np.ndarray) -> np.ndarray | None:
        return truth[1] if k == 1 else None

    opts = TrackOptions(levels=LEVELS, progress=False, predict=hook, reinit=False)
    track = track_bone(volume, rig, frames[:2], opts, init=away)
    assert track.start == ["next", "predict"] and not track.doubtful.any(), track.reasons
    ang, mm = _errors(track.poses[0], truth[0], volume.center)
    assert ang < 0.3 and mm < 0.1, (ang, mm)


def test_doubtful_frames_are_nan_where_other_tools_read_poses(tmp_path):
    """poses.csv and the .tra (Autoscoper has no flag to read) hold trusted poses only; frames.csv
    keeps every fit with its doubtful flag."""
    import pandas as pd

    from stereodrr.interop import load_tra
    from stereodrr.track.bones import BoneTrack
    from stereodrr.track.outputs import write_bone_results

    poses = np.stack([np.eye(4)] * 3)
    poses[:, :3, 3] = [[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]
    poses[2] = np.nan  # failed
    track = BoneTrack(poses, np.array([0.4, 0.9, np.nan]), np.zeros((3, 2)), ["cam1", "cam2"],
                      ["converged", "converged", "failed"], np.array([False, True, True]), ["", "loss far above", "no fit"],
                      ["search", "previous", ""], np.ones(3))
    paths = write_bone_results(track, tmp_path, "radius", frames=[2, 5, 6], n_frames=8)
    table = pd.read_csv(paths["poses"])
    assert list(table["frame"]) == [2, 5, 6] and table.iloc[0, 1:].notna().all() and table.iloc[1:, 1:].isna().all().all()
    tra = load_tra(paths["tra"])[:, 0]
    assert np.allclose(tra[2], poses[0]) and np.isnan(tra[[0, 1, 3, 4, 5, 6, 7]]).all()
    frames = pd.read_csv(paths["frames"])
    assert list(frames["doubtful"]) == [False, True, True] and frames.loc[1, "m13"] == 5.0


def test_search_and_frame_loss_keep_to_the_volumes_device(wrist, synthetic):
    # The meta device stands in for CUDA (tests/meta_device.py): a CPU tensor mixed in raises.
    from ..meta_device import ValuesOnHost

    rig, volume = wrist
    truth, frames = synthetic
    with ValuesOnHost():
        on_device = volume.to("meta")
        template_candidates(on_device, rig, frames[0], None, InitOptions(scale=2, rotations=50), progress=False)
        frame_loss(on_device, rig, frames[0], None, RigidPose.from_matrix(truth[0], volume.center),
                   TrackOptions(levels=LEVELS, progress=False))


def test_search_finds_a_bone_near_the_frame_edge(wrist):
    """A bone whose projection reaches past the frame (a femur leaving a knee trial's field): the
    template search must still place its support centre there, not only where the whole template
    window fits inside the frame."""
    rig, volume = wrist
    rotations = so3_grid(60)
    centre = support_corners(volume).mean(0)
    # Perpendicular to both viewing directions: the bone moves towards an edge of both frames.
    n = np.cross(rig["cam1"].R[2], rig["cam2"].R[2])
    X = rig.isocenter + 135.0 * n / np.linalg.norm(n)
    truth = RigidPose.from_matrix(np.r_[np.c_[rotations[17], X - rotations[17] @ centre], [[0, 0, 0, 1]]],
                                  volume.center)
    for name, b in projected_boxes(support_corners(volume), rig, truth).items():
        assert b[0] < 0 or b[1] < 0 or b[2] > rig[name].width - 1 or b[3] > rig[name].height - 1  # it leaves the frame
    frames = _render_exact(volume, rig, truth.matrix, np.random.default_rng(7))
    cands = template_candidates(volume, rig, frames, None, InitOptions(rotations=60, scale=2), progress=False, pad=True)
    best = cands[0]
    assert np.allclose(best.rotation, rotations[17]) and np.linalg.norm(best.position - X) < 8.0, \
        (best.score, best.position - X)


def test_the_search_pads_the_frames_only_when_it_finds_nothing_within_them(wrist, monkeypatch):
    """Padding admits partial matches at the frames' edges (on the real wrist two poses then fit
    about equally well): the search pads only when the search within the frames finds no pose."""
    from stereodrr.track import bone_init

    rig, volume = wrist
    calls: list[bool] = []

    def candidates(*args, pad=False, **kwargs):
        calls.append(pad)
        # Within the frames nothing; padded, one candidate at the isocenter.
        return [] if not pad else [bone_init.Candidate(np.eye(3), rig.isocenter.copy(), 1.0, (1.0, 1.0))]

    monkeypatch.setattr(bone_init, "template_candidates", candidates)
    res = bone_init.initial_pose(volume, rig, {}, None, lambda s: (s, 0.3, "converged"), InitOptions(), False)
    assert calls == [False, True] and res.status == "found"
    calls.clear()
    monkeypatch.setattr(bone_init, "template_candidates", lambda *a, pad=False, **k: calls.append(pad) or [
        bone_init.Candidate(np.eye(3), rig.isocenter.copy(), 1.0, (1.0, 1.0))])
    assert bone_init.initial_pose(volume, rig, {}, None, lambda s: (s, 0.3, "converged"), InitOptions(),
                                  False).status == "found" and calls == [False]  # found within: no padding


def test_default_binnings_follow_the_pixel_footprint(wrist, synthetic):
    """The default pyramid and search binnings keep the footprints they were tuned at on the wrist
    sample's 1760 x 1760 frames, so that a 440 x 440 camera of the same field is fitted at its
    full resolution, not at 1/4 and 1/2 of it."""
    rig, volume = wrist
    trial = read_trial_file(DATA / "wrist.cfg")
    cams = {f"cam{i + 1}": load_mayacam(p) for i, p in enumerate(trial.cameras)}
    o = TrackOptions.for_rig(StereoRig(cams, rig_isocenter(cams)))
    d = TrackOptions()
    assert [lv.scale for lv in o.levels] == [lv.scale for lv in d.levels] == [4, 2]
    assert o.init.scale == d.init.scale == 8 and o.cut_margin_px == d.cut_margin_px == 12
    b = TrackOptions.for_rig(rig, progress=False)
    assert [lv.scale for lv in b.levels] == [1, 1] and b.init.scale == 2 and b.init.first_level.scale == 2
    # The last level stops at the wrist's last-level step (0.01 x 2^2), not 4x below it.
    assert o.rotation_tol_deg == d.rotation_tol_deg == 0.01 and b.rotation_tol_deg == b.translation_tol_mm == 0.04
    truth, frames = synthetic
    start = RigidPose(np.radians([2.0, -1.5, 1.0]), [1.0, -1.0, 1.5], volume.center).matrix @ truth[0]
    track = track_bone(volume, rig, frames[:1], init=start)  # the defaults
    ang, mm = _errors(track.poses[0], truth[0], volume.center)
    assert ang < 0.3 and mm < 0.1, (ang, mm)
    assert track.status == ["converged"] and not track.doubtful.any()

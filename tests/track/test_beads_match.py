"""Bead matching and triangulation on points projected through the real wrist cameras (XMALab's
MayaCam calibrations of the Autoscoper wrist sample, 110 degrees apart)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stereodrr.geometry import Camera, StereoRig, epipolar_lines, fundamental_from_cameras
from stereodrr.interop import load_mayacam, read_trial_file
from stereodrr.track.bead_match import BeadMatchOptions, epipolar_distances, match_beads

WRIST = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist" / "wrist.cfg"


@pytest.fixture(scope="module")
def cameras() -> dict[str, Camera]:
    trial = read_trial_file(WRIST)
    return {f"cam{i + 1}": load_mayacam(p) for i, p in enumerate(trial.cameras)}


def _wrist_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """Points in a 40 mm box around where the wrist's beads are (world mm)."""
    return np.array([120.0, 140.0, 90.0]) + rng.uniform(-20.0, 20.0, (n, 3))


def _detections(cam: Camera, X: np.ndarray, rng: np.random.Generator, noise_px: float,
                order: np.ndarray) -> pd.DataFrame:
    uv = cam.project(X)[0] + rng.normal(0.0, noise_px, (len(X), 2))
    return pd.DataFrame({"u": uv[order, 0], "v": uv[order, 1]})


def test_epipolar_distance_of_true_pairs_is_zero(cameras):
    X = _wrist_points(np.random.default_rng(0), 10)
    d = epipolar_distances(cameras["cam1"], cameras["cam2"], cameras["cam1"].project(X)[0], cameras["cam2"].project(X)[0])
    assert d.shape == (10, 10)
    assert np.abs(np.diag(d)).max() < 1e-6
    # Distances are symmetric in the two views.
    d21 = epipolar_distances(cameras["cam2"], cameras["cam1"], cameras["cam2"].project(X)[0], cameras["cam1"].project(X)[0])
    assert np.allclose(d21, d.T, atol=1e-9)


def test_matches_shuffled_beads_with_clutter(cameras):
    rng = np.random.default_rng(1)
    X = _wrist_points(rng, 17)
    o1, o2 = rng.permutation(17), rng.permutation(17)
    d1 = _detections(cameras["cam1"], X, rng, 0.1, o1)
    d2 = _detections(cameras["cam2"], X, rng, 0.1, o2)
    # A clutter detection in each view, far from any epipolar line of the beads.
    d1.loc[17] = (100.0, 100.0)
    d2.loc[17] = (1700.0, 100.0)
    m = match_beads({"cam1": d1, "cam2": d2}, cameras)
    assert len(m) == 17
    # Every match pairs the same true bead.
    assert np.array_equal(o1[m["det_cam1"]], o2[m["det_cam2"]])
    err = np.linalg.norm(m[["x", "y", "z"]].to_numpy() - X[o1[m["det_cam1"]]], axis=1)
    assert err.max() < 0.1
    assert m["residual_cam1"].max() < 0.5 and (m["views"] == 2).all()
    assert np.allclose(m["u_cam1"], d1["u"].to_numpy()[m["det_cam1"]])


def test_expected_beads_settle_an_epipolar_ambiguity(cameras):
    # Two beads 6 mm apart, almost in one epipolar plane (through both sources): their epipolar
    # lines in the second view run 1.8 px apart.
    c1, c2 = cameras["cam1"].center, cameras["cam2"].center
    X1 = np.array([120.0, 140.0, 90.0])
    normal = np.cross(c2 - c1, X1 - c1)
    normal /= np.linalg.norm(normal)
    along = np.cross(normal, c2 - c1)
    X = np.stack([X1, X1 + 6.0 * along / np.linalg.norm(along) + 0.3 * normal])
    uv1, uv2 = cameras["cam1"].project(X)[0], cameras["cam2"].project(X)[0]
    lines = epipolar_lines(fundamental_from_cameras(cameras["cam1"], cameras["cam2"]), uv1, which=1)
    # Errors that move each second-view bead 70 % of the way to the other bead's line.
    for k, other in ((0, 1), (1, 0)):
        uv2[k] -= 0.7 * (lines[other, :2] @ uv2[k] + lines[other, 2]) * lines[other, :2]
    cost = epipolar_distances(cameras["cam1"], cameras["cam2"], uv1, uv2)
    assert cost[0, 1] + cost[1, 0] < cost[0, 0] + cost[1, 1] < 2 * BeadMatchOptions().gate_px
    dets = {"cam1": pd.DataFrame(uv1, columns=["u", "v"]), "cam2": pd.DataFrame(uv2, columns=["u", "v"])}
    # Epipolar geometry alone picks the swapped pairing ...
    plain = match_beads(dets, cameras)
    assert set(zip(plain["det_cam1"], plain["det_cam2"])) == {(0, 1), (1, 0)}
    # ... the beads a rigid body expects there pick the true one.
    settled = match_beads(dets, cameras, expected=X)
    assert set(zip(settled["det_cam1"], settled["det_cam2"])) == {(0, 0), (1, 1)}
    err = np.linalg.norm(settled[["x", "y", "z"]].to_numpy() - X[settled["det_cam1"]], axis=1)
    assert err.max() < 0.5


def test_gate_rejects_far_pairs(cameras):
    X = _wrist_points(np.random.default_rng(3), 3)
    d1 = pd.DataFrame(cameras["cam1"].project(X)[0], columns=["u", "v"])
    d2 = pd.DataFrame(cameras["cam2"].project(X)[0] + [0.0, 5.0], columns=["u", "v"])
    assert len(match_beads({"cam1": d1, "cam2": d2}, cameras, BeadMatchOptions(gate_px=1.0))) == 0
    assert len(match_beads({"cam1": d1, "cam2": d2}, cameras, BeadMatchOptions(gate_px=10.0))) == 3


def test_three_views(cameras):
    rng = np.random.default_rng(4)
    X = _wrist_points(rng, 8)
    # A third view: the first camera turned 40 degrees about the rig's isocenter's vertical.
    rig = StereoRig(cameras, np.array([120.0, 140.0, 90.0]))
    theta = np.deg2rad(40.0)
    Rz = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    c1 = cameras["cam1"]
    c3 = c1.with_pose(c1.R @ Rz.T, c1.t + c1.R @ (Rz.T @ rig.isocenter - rig.isocenter))
    cams = {**cameras, "cam3": c3}
    dets = {n: pd.DataFrame(c.project(X)[0] + rng.normal(0, 0.05, (8, 2)), columns=["u", "v"]) for n, c in cams.items()}
    dets["cam3"] = dets["cam3"].drop(index=[2]).reset_index(drop=True)  # one bead hidden in the third view
    m = match_beads(dets, cams)
    assert len(m) == 8
    assert sorted(m["views"].tolist()) == [2] + [3] * 7
    err = np.linalg.norm(m[["x", "y", "z"]].to_numpy() - X[m["det_cam1"]], axis=1)
    assert err.max() < 0.05
    assert np.isnan(m.loc[m["views"] == 2, "residual_cam3"]).all()


def test_bad_input_raises(cameras):
    d = pd.DataFrame({"u": [1.0], "v": [2.0]})
    with pytest.raises(ValueError, match="at least 2 cameras"):
        match_beads({"cam1": d}, cameras)
    with pytest.raises(ValueError, match="no calibration for camera"):
        match_beads({"cam1": d, "camX": d}, cameras)
    with pytest.raises(ValueError, match=r"detections\['cam2'\]: expected columns u, v"):
        match_beads({"cam1": d, "cam2": pd.DataFrame({"x": [1.0]})}, cameras)
    with pytest.raises(ValueError, match="gate_px"):
        BeadMatchOptions(gate_px=0.0)
    empty = match_beads({"cam1": d.iloc[:0], "cam2": d.iloc[:0]}, cameras)
    assert len(empty) == 0 and {"x", "det_cam1", "residual_cam2"} <= set(empty.columns)

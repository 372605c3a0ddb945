import cv2
import numpy as np
import pytest

from stereodrr.calib.fundamental import METHODS, detect_degeneracy, estimate_fundamental
from stereodrr.calib.validate import (
    compare_fundamental,
    point_line_distances,
    sampson_distance,
    symmetric_epipolar_distance,
    validate_epipolar,
)
from stereodrr.geometry import StereoRig, fundamental_from_cameras


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_recovers_the_analytic_F(rig5, points3d, method, project):
    uv = project(rig5, points3d)
    est = estimate_fundamental(uv["left"], uv["right"], method=method)
    assert est.method_used == method and est.note == "" and est.degeneracy is None
    F_true = fundamental_from_cameras(rig5["left"], rig5["right"])
    # Held-out points, not used for the estimate.
    held = np.random.default_rng(1).uniform(-25, 25, (50, 3))
    hv = project(rig5, held)
    cmp = compare_fundamental(est.F, F_true, hv["left"], hv["right"])
    assert cmp["mean_symmetric_px_ref"] < 1e-9
    assert cmp["mean_symmetric_px_est"] < 1e-3
    assert cmp["line_discrepancy_px"] < 1e-3
    assert est.inliers.all()


def test_ransac_below_15_points_reports_lmeds(rig5, points3d, project):
    uv = project(rig5, points3d[:14])
    est = estimate_fundamental(uv["left"], uv["right"], method="ransac")
    assert est.method_used == "lmeds" and "below 15 points" in est.note
    assert symmetric_epipolar_distance(est.F, uv["left"], uv["right"]).max() < 1e-3
    # Below 14 points LMedS can pick a 7-point model that fits only its own sample: say so.
    few = estimate_fundamental(uv["left"][:12], uv["right"][:12], method="lmeds")
    assert "unreliable below 14" in few.note


def test_float64_centring_beats_raw_float32_on_large_coordinates(project):
    # A 4096 px detector: pixel coordinates in the thousands lose ~1e-4 px in float32.
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, 0.05, 4096, 4096)
    X = np.random.default_rng(2).uniform(-20, 20, (40, 3))
    uv = project(rig, X)
    est = estimate_fundamental(uv["left"], uv["right"], method="8point")
    raw, _ = cv2.findFundamentalMat(uv["left"].astype(np.float32), uv["right"].astype(np.float32), cv2.FM_8POINT)
    err = symmetric_epipolar_distance(est.F, uv["left"], uv["right"]).mean()
    assert err < 1e-5
    assert err < 0.2 * symmetric_epipolar_distance(raw, uv["left"], uv["right"]).mean()


def test_robust_methods_reject_outliers(rig5, points3d, project):
    uv = project(rig5, points3d)
    rng = np.random.default_rng(3)
    u1 = uv["left"] + rng.normal(0, 0.05, uv["left"].shape)
    u2 = uv["right"] + rng.normal(0, 0.05, uv["right"].shape)
    bad = [2, 11, 20]
    u2[bad] += rng.uniform(15, 30, (3, 2))
    for method in ("ransac", "lmeds", "magsac", "accurate"):
        est = estimate_fundamental(u1, u2, method=method, threshold_px=0.5)
        assert not est.inliers[bad].any(), method
        good = np.setdiff1d(np.arange(len(u1)), bad)
        assert symmetric_epipolar_distance(est.F, u1[good], u2[good]).mean() < 0.2, method
    # The 8-point algorithm has no outlier rejection: the report flags the damage.
    rep = validate_epipolar(estimate_fundamental(u1, u2, method="8point").F, u1, u2)
    assert rep.max_symmetric_px > 1.0


def test_errors_match_hand_computed_geometry():
    # Parallel rectified pair: F = [[0,0,0],[0,0,-1],[0,1,0]]: epipolar lines are rows v = const.
    F = np.array([[0.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    p1 = np.array([[10.0, 20.0], [5.0, 7.0]])
    p2 = np.array([[3.0, 23.0], [9.0, 7.0]])
    d1, d2 = point_line_distances(F, p1, p2)
    np.testing.assert_allclose(d1, [3.0, 0.0])
    np.testing.assert_allclose(d2, [3.0, 0.0])
    np.testing.assert_allclose(symmetric_epipolar_distance(F, p1, p2), [3.0, 0.0])
    # Sampson: |v2 - v1| / sqrt(2), the distance to the nearest pair with v1 = v2.
    np.testing.assert_allclose(sampson_distance(F, p1, p2), [3.0 / np.sqrt(2), 0.0])


def test_validation_report_passes_fails_and_lists_points(rig5, points3d, project):
    uv = project(rig5, points3d)
    F = fundamental_from_cameras(rig5["left"], rig5["right"])
    u2 = uv["right"].copy()
    u2[5, 1] += 4.0  # 4 px off the epipolar line (lines are near-horizontal)
    rep = validate_epipolar(F, uv["left"], u2, ids=np.arange(100, 130))
    assert rep.passed and rep.failing == [105]
    assert rep.table().loc[5, "ok"] == False  # noqa: E712
    strict = validate_epipolar(F, uv["left"], u2, threshold_px=0.05)
    assert not strict.passed and "FAIL" in strict.summary()


def test_degeneracy_is_detected(rig5, project):
    rng = np.random.default_rng(4)
    plane = np.c_[rng.uniform(-30, 30, (20, 2)), np.zeros(20)] @ np.array([[1, 0, 0], [0, 0.3, 1], [0, 1, 0]])
    uv = project(rig5, plane)
    assert detect_degeneracy(uv["left"], uv["right"]).startswith("planar")
    est = estimate_fundamental(uv["left"], uv["right"], method="8point")
    assert est.degeneracy is not None and "planar" in est.degeneracy
    line = np.c_[np.linspace(-30, 30, 12), np.linspace(-10, 10, 12), np.linspace(5, -5, 12)]
    uv = project(rig5, line)
    assert detect_degeneracy(uv["left"], uv["right"]).startswith("collinear")


def test_bad_input(rig5, points3d, project):
    uv = project(rig5, points3d)
    with pytest.raises(ValueError, match="at least 8"):
        estimate_fundamental(uv["left"][:7], uv["right"][:7])
    with pytest.raises(ValueError, match="mismatched"):
        estimate_fundamental(uv["left"][:10], uv["right"][:12])
    nan = uv["left"].copy()
    nan[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*rows \[3\]"):
        estimate_fundamental(nan, uv["right"])
    with pytest.raises(ValueError, match="method"):
        estimate_fundamental(uv["left"], uv["right"], method="5point")
    with pytest.raises(ValueError, match="shape"):
        symmetric_epipolar_distance(np.eye(3), uv["left"][:, :1], uv["right"])
    with pytest.raises(ValueError, match="3x3"):
        validate_epipolar(np.eye(4), uv["left"], uv["right"])

import numpy as np
import pytest

from stereodrr.calib.triangulate import (
    METHODS,
    crossing_line_distance,
    error_table,
    predicted_error,
    projection_jacobian,
    split_error,
    triangulate,
    triangulate_nview,
)
from stereodrr.geometry import Camera, StereoRig


@pytest.mark.parametrize("method", METHODS)
def test_exact_points_are_recovered(rig5, points3d, project, method):
    tri = triangulate(rig5.cameras, project(rig5, points3d), method)
    np.testing.assert_allclose(tri.points, points3d, atol=1e-9)
    assert tri.reprojection_px.max() < 1e-9 and tri.crossing_mm.max() < 1e-9


def test_crossing_distance_of_a_known_offset(rig5):
    # Move the right image point along v by 1 px: the rays miss each other vertically by
    # 1 px * pixel pitch * (depth / SDD) at the isocenter (lines are nearly perpendicular to v).
    X = np.zeros((1, 3))
    uv1 = rig5["left"].project(X)[0]
    uv2 = rig5["right"].project(X)[0] + [0.0, 1.0]
    d = crossing_line_distance(rig5["left"], rig5["right"], uv1, uv2)
    np.testing.assert_allclose(d, 0.3 * 750 / 1200, rtol=1e-3)


def test_jacobian_matches_finite_differences(rig5, points3d):
    P = rig5["left"].P
    J = projection_jacobian(P, points3d[:5])
    h = 1e-4
    for k in range(3):
        dX = np.zeros(3)
        dX[k] = h
        num = (rig5["left"].project(points3d[:5] + dX)[0] - rig5["left"].project(points3d[:5] - dX)[0]) / (2 * h)
        np.testing.assert_allclose(J[:, :, k], num, rtol=1e-6, atol=1e-9)


def test_noise_statistics_match_prediction_and_rig_depth_resolution(rig5, project):
    rng = np.random.default_rng(0)
    X = rng.uniform(-20, 20, (3000, 3))
    sigma = 0.1
    uv = {n: u + rng.normal(0, sigma, u.shape) for n, u in project(rig5, X).items()}
    for method in METHODS:
        tab = error_table(triangulate(rig5.cameras, uv, method), X, rig5.cameras, sigma_px=sigma)
        depth_rms = np.sqrt(np.mean(tab.depth_mm**2))
        inplane_rms = np.sqrt(np.mean(tab.inplane_mm**2))
        pred_d = np.sqrt(np.mean(tab.predicted_depth_mm**2))
        pred_i = np.sqrt(np.mean(tab.predicted_inplane_mm**2))
        assert abs(depth_rms / pred_d - 1) < 0.05, method
        assert abs(inplane_rms / pred_i - 1) < 0.05, method
    # The independent parallel-stereo formula dZ = Z^2 dd / (B f) with dd = sqrt(2) sigma.
    np.testing.assert_allclose(pred_d, rig5.depth_resolution(np.sqrt(2) * sigma), rtol=0.02)


def test_nview_uses_all_views_and_split_is_orthogonal(project):
    rig = StereoRig.arc(4, 20.0, 750, 1200, 0.3, 512, 512)
    X = np.random.default_rng(1).uniform(-20, 20, (50, 3))
    uv = project(rig, X)
    np.testing.assert_allclose(triangulate_nview([rig[n].P for n in rig], [uv[n] for n in rig]), X, atol=1e-9)
    err = np.random.default_rng(2).normal(0, 0.1, X.shape)
    depth, inplane = split_error(X + err, X, list(rig.cameras.values()))
    np.testing.assert_allclose(depth**2 + inplane**2, np.sum(err**2, axis=1), rtol=1e-10)
    d4, _ = predicted_error(list(rig.cameras.values()), X, 0.1)
    d2, _ = predicted_error([rig["view1"], rig["view2"]], X, 0.1)
    assert np.all(d4 < d2)  # more and wider views: better depth


def test_predicted_error_per_view_and_axis_matches_biplanar_closed_form():
    # Two views at 90 deg of a point at the isocenter: the frontal view (along +y) measures x with
    # its u and z with its v, the lateral one (along -x) y and z, each at s = SDD / (du SID) px/mm.
    sid, sdd, du = 700.0, 1000.0, 0.2
    up = np.array([0.0, 0.0, 1.0])
    cams = [Camera.look_at(np.array([0.0, -sid, 0.0]), np.zeros(3), sdd, (du, du), 101, 101, up=up),
            Camera.look_at(np.array([sid, 0.0, 0.0]), np.zeros(3), sdd, (du, du), 101, 101, up=up)]
    sigma = np.array([[[0.01, 0.02]], [[0.03, 0.04]]])  # (view, point, axis)
    s = sdd / (du * sid)
    var = [(0.01 / s) ** 2, (0.03 / s) ** 2, 1 / (s**2 / 0.02**2 + s**2 / 0.04**2)]
    depth, inplane = predicted_error(cams, np.zeros((1, 3)), sigma)
    np.testing.assert_allclose(depth**2 + inplane**2, sum(var), rtol=1e-9)
    # The depth direction bisects the rays (x - y)/sqrt(2) in the xy-plane, so depth^2 = (var_x + var_y) / 2.
    np.testing.assert_allclose(depth**2, (var[0] + var[1]) / 2, rtol=1e-9)
    with pytest.raises(ValueError, match="sigma_px"):
        predicted_error(cams, np.zeros((1, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="sigma_px"):
        predicted_error(cams, np.zeros((1, 3)), -1.0)


def test_bad_input(rig5, points3d, project):
    uv = project(rig5, points3d)
    with pytest.raises(ValueError, match="mismatched"):
        triangulate(rig5.cameras, {"left": uv["left"], "right": uv["right"][:-1]})
    with pytest.raises(ValueError, match="at least 2 views"):
        triangulate(rig5.cameras, {"left": uv["left"]})
    nan = uv["left"].copy()
    nan[4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        triangulate(rig5.cameras, {"left": nan, "right": uv["right"]}, "linear")
    with pytest.raises(ValueError, match="method"):
        triangulate(rig5.cameras, uv, "midpoint")
    with pytest.raises(ValueError, match="no camera"):
        triangulate(rig5.cameras, {"left": uv["left"], "centre": uv["right"]})

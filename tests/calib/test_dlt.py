import numpy as np
import pytest

from stereodrr.calib.dlt import (
    calibrate_rig,
    opencv_crosscheck,
    projection_from_points,
    reprojection_errors,
    rig_isocenter,
)
from stereodrr.geometry import Camera, StereoRig, decompose_projection


def _krt_close(cam: Camera, ref: Camera, tol_k: float, tol_c_mm: float) -> None:
    np.testing.assert_allclose(cam.K, ref.K, atol=tol_k)
    assert np.linalg.norm(cam.center - ref.center) < tol_c_mm
    np.testing.assert_allclose(cam.R, ref.R, atol=tol_c_mm / 100)


def test_linear_dlt_recovers_P_K_R_t(rig5, points3d, project):
    uv = project(rig5, points3d)
    for name, cam in rig5.cameras.items():
        P = projection_from_points(points3d, uv[name])
        K, R, t = decompose_projection(P)
        np.testing.assert_allclose(K, cam.K, rtol=1e-8, atol=1e-6)
        np.testing.assert_allclose(R, cam.R, atol=1e-10)
        np.testing.assert_allclose(t, cam.t, atol=1e-6)
        assert reprojection_errors(P, points3d, uv[name]).max() < 1e-8


def test_dlt_with_exactly_six_points(rig5, project):
    X = np.array([[0, 0, 0], [30, 0, 0], [0, 30, 0], [0, 0, 30], [20, 25, -10], [-15, 10, 20.0]])
    uv = project(rig5, X)["left"]
    P = projection_from_points(X, uv)
    assert reprojection_errors(P, X, uv).max() < 1e-6


def test_joint_refinement_with_noise_beats_linear_and_shares_intrinsics(rig5, points3d, project):
    rng = np.random.default_rng(11)
    uv = {n: u + rng.normal(0, 0.2, u.shape) for n, u in project(rig5, points3d).items()}
    corr = {n: (points3d, uv[n]) for n in rig5}
    cal = calibrate_rig(corr, rig5.cameras)
    for v in cal.views.values():
        assert 0.1 < v.rms_px < 0.3  # ~ the noise, less the fitted degrees of freedom
        assert v.camera.K[0, 1] == 0.0
    # With the skew free, the refinement has the DLT's 11 parameters and minimises the image
    # error the linear DLT only approximates: never worse.
    for v in calibrate_rig(corr, rig5.cameras, skew=True).views.values():
        assert v.rms_px <= v.rms_linear_px + 1e-12
    shared = calibrate_rig(corr, rig5.cameras, shared_intrinsics=True)
    np.testing.assert_array_equal(shared.rig["left"].K, shared.rig["right"].K)
    assert shared.rms_px >= cal.rms_px - 1e-12  # fewer parameters fit no better
    # Noise-free: exact recovery, isocenter where the principal rays meet.
    exact = calibrate_rig({n: (points3d, u) for n, u in project(rig5, points3d).items()}, rig5.cameras)
    assert exact.rms_px < 1e-8
    for n in rig5:
        _krt_close(exact.rig[n], rig5[n], 1e-6, 1e-6)
    np.testing.assert_allclose(exact.rig.isocenter, rig5.isocenter, atol=1e-6)


def test_skew_and_unrefined_keep_the_linear_solution(rig5, points3d, project):
    uv = project(rig5, points3d)
    cal = calibrate_rig({"left": (points3d, uv["left"])}, rig5.cameras, refine=False)
    v = cal.views["left"]
    np.testing.assert_allclose(v.camera.P / np.linalg.norm(v.camera.P),
                               v.P_linear / np.linalg.norm(v.P_linear), atol=1e-12)
    sk = calibrate_rig({"left": (points3d, uv["left"])}, rig5.cameras, skew=True)
    assert abs(sk.rig["left"].K[0, 1]) < 1e-6


def test_opencv_crosscheck_agrees(rig5, points3d, project):
    uv = project(rig5, points3d)["right"]
    chk = opencv_crosscheck(rig5["right"], points3d, uv)
    assert chk["pnp_rms_px"] < 1e-6 and chk["pnp_center_diff_mm"] < 1e-6 and chk["pnp_rotation_diff_deg"] < 1e-8
    assert chk["calibrate_rms_px"] < 1e-3 and chk["calibrate_focal_rel_diff"] < 1e-4
    assert chk["calibrate_center_diff_mm"] < 0.05


def test_other_rig_and_oblique_world(project):
    # Biplanar rig around an off-origin isocenter, non-square pixels, offset principal point.
    cam = Camera.look_at([300, -700, 50], [20, 10, -15], 1100, (0.2, 0.25), 640, 480, up=(0.1, 0, 1),
                         principal_offset_mm=(3.0, -2.0))
    rig = StereoRig({"a": cam, "b": StereoRig.biplanar(700, 1100, 0.2, 640, 480, isocenter=(20, 10, -15))["lateral"]},
                    np.array([20.0, 10.0, -15.0]))
    X = np.random.default_rng(5).uniform(-25, 25, (20, 3)) + [20, 10, -15]
    uv = project(rig, X)
    cal = calibrate_rig({n: (X, uv[n]) for n in rig}, rig.cameras)
    for n in rig:
        _krt_close(cal.rig[n], rig[n], 1e-5, 1e-5)


def test_bad_input(rig5, points3d, project):
    uv = project(rig5, points3d)["left"]
    with pytest.raises(ValueError, match="at least 6"):
        projection_from_points(points3d[:5], uv[:5])
    with pytest.raises(ValueError, match="mismatched"):
        projection_from_points(points3d[:10], uv[:9])
    flat = points3d.copy()
    flat[:, 1] = 4.0
    with pytest.raises(ValueError, match="coplanar"):
        projection_from_points(flat, project(rig5, flat)["left"])
    bad = uv.copy()
    bad[0, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        projection_from_points(points3d, bad)
    with pytest.raises(ValueError, match="no detector"):
        calibrate_rig({"middle": (points3d, uv)}, rig5.cameras)


def test_opencv_crosscheck_reports_a_camera_opencv_refuses_instead_of_failing():
    """cv2.calibrateCamera will not start from a principal point outside the image (a DLT of
    uncorrected intensifier images gave one): the cross-check says so and PnP still runs."""
    from stereodrr.calib.dlt import opencv_crosscheck
    from stereodrr.geometry import Camera

    cam = Camera.look_at(np.array([0.0, -800.0, 0.0]), np.zeros(3), sdd=1200, pixel_spacing=0.5, width=200,
                         height=200)
    K = cam.K.copy()
    K[0, 2] = -150.0  # outside the 200 px wide image
    odd = Camera(K=K, R=cam.R, t=cam.t, width=200, height=200, pixel_spacing=0.5, sdd=1200)
    X = np.random.default_rng(0).uniform(-40, 40, (20, 3))
    uv = odd.project(X)[0]
    out = opencv_crosscheck(odd, X, uv)
    assert np.isnan(out["calibrate_rms_px"]) and "refused" in out["note"]
    assert out["pnp_rms_px"] < 1e-6


def _rsa_camera(x_mm: float, tilt_deg: float, cx: float) -> Camera:
    """A uniplanar RSA source 1000 mm above the detector plane z = 0 (axis +z, tilted about y),
    its principal point moved so that its 96 x 64 image is centred on the object at the origin."""
    a = np.radians(tilt_deg)
    R = np.array([[np.cos(a), 0.0, -np.sin(a)], [0.0, 1.0, 0.0], [np.sin(a), 0.0, np.cos(a)]])
    K = np.array([[2000.0, 0.0, cx], [0.0, 2000.0, 31.5], [0.0, 0.0, 1.0]])
    return Camera(K=K, R=R, t=-R @ np.array([x_mm, 0.0, -1000.0]), width=96, height=64, pixel_spacing=(0.5, 0.5))


@pytest.mark.parametrize("tilt_deg", [0.0, 0.01, 0.5, -0.5])
def test_isocenter_of_a_rig_with_parallel_axes_lies_between_its_sources(tilt_deg, project):
    """Uniplanar RSA: two sources side by side above one detector, principal axes parallel
    (up to a calibration's tilt). Their closest point is undetermined (exactly parallel) or lies
    metres past the detector or behind the sources; the isocenter is then the mean of the axes'
    points at half the SDD, and the rig calibrates from exact correspondences."""
    cams = {"a": _rsa_camera(-150.0, 0.0, 272.5), "b": _rsa_camera(150.0, tilt_deg, -177.5)}
    iso = rig_isocenter(cams)
    np.testing.assert_allclose(iso, [0.0, 0.0, -500.0], atol=5.0)
    rig = StereoRig(cams, iso)
    X = np.random.default_rng(2).uniform(-10.0, 10.0, (20, 3))
    uv = project(rig, X)
    cal = calibrate_rig({n: (X, uv[n]) for n in rig}, rig.cameras)
    np.testing.assert_allclose(cal.rig.isocenter, iso, atol=1e-3)
    for n in rig:
        _krt_close(cal.rig[n], rig[n], 1e-5, 1e-5)


def test_isocenter_of_converging_and_diverging_axes(rig5):
    # A convergent pair: its axes meet at the isocenter (0, 0, 0) the rig was built around.
    np.testing.assert_allclose(rig_isocenter(rig5.cameras), [0.0, 0.0, 0.0], atol=1e-9)
    # Cameras that look away from each other (a misread file): their axes' closest point lies
    # behind the sources and the rig is refused, not moved in front of them.
    away = {"a": _rsa_camera(-150.0, -40.0, 47.5), "b": _rsa_camera(150.0, 40.0, 47.5)}
    assert (rig_isocenter(away) - away["a"].center) @ away["a"].principal_ray < 0
    with pytest.raises(ValueError, match="behind the source"):
        StereoRig(away, rig_isocenter(away))

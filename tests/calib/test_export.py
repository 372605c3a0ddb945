import cv2
import numpy as np
import pytest

from stereodrr.calib.export import export_calibration, load_opencv_yaml
from stereodrr.geometry import fundamental_from_cameras, load_dlt_csv, load_rig, projection_from_dlt


def test_export_round_trips(rig5, tmp_path, points3d, project):
    paths = export_calibration(rig5, tmp_path / "cal")
    assert load_rig(paths["rig"]) == rig5
    L = load_dlt_csv(paths["dlt"])
    uv = project(rig5, points3d)
    for i, name in enumerate(rig5):
        P = projection_from_dlt(L[:, i], rig5[name].height)
        np.testing.assert_allclose(rig5[name].project(points3d)[0], uv[name], atol=1e-9)
        from stereodrr.geometry import project_points
        np.testing.assert_allclose(project_points(P, points3d)[0], uv[name], atol=1e-8)
    back = load_opencv_yaml(paths["yaml"])
    for name in rig5:
        np.testing.assert_allclose(back[name].P, rig5[name].P, atol=1e-12)
    fs = cv2.FileStorage(str(paths["yaml"]), cv2.FILE_STORAGE_READ)
    F = fs.getNode("F").mat()
    E = fs.getNode("E").mat()
    R, T = fs.getNode("R").mat(), fs.getNode("T").mat().ravel()
    fs.release()
    np.testing.assert_allclose(F, fundamental_from_cameras(rig5["left"], rig5["right"]), atol=1e-12)
    # E and F agree: F ~ K2^-T E K1^-1; and x2 = R x1 + T maps camera-1 to camera-2 coordinates.
    K1, K2 = rig5["left"].K, rig5["right"].K
    F2 = np.linalg.inv(K2).T @ E @ np.linalg.inv(K1)
    np.testing.assert_allclose(F2 / np.linalg.norm(F2) * np.sign(F2[2, 2] * F[2, 2]), F, atol=1e-9)
    x1 = points3d @ rig5["left"].R.T + rig5["left"].t
    np.testing.assert_allclose(x1 @ R.T + T, points3d @ rig5["right"].R.T + rig5["right"].t, atol=1e-9)


def test_missing_yaml(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_opencv_yaml(tmp_path / "none.yaml")


def test_exported_mayacam_files_show_the_phantom_in_autoscoper(rig5, tmp_path, points3d):
    """Read by a transliteration of Autoscoper's ``loadMayaCam2``, every exported camera sees the
    points in front of it (negative z of its OpenGL camera frame) where stereodrr projects them."""
    from tests.interop.autoscoper_readers import AutoscoperCamera
    from tests.interop.test_mayacam import autoscoper_pixel

    paths = export_calibration(rig5, tmp_path / "cal")
    for name, cam in rig5.cameras.items():
        auto = AutoscoperCamera(paths[f"mayacam_{name}"])
        assert all(auto.film_plane(X)[2] < 0 for X in points3d)
        got = np.array([autoscoper_pixel(auto, X) for X in points3d])
        np.testing.assert_allclose(got, cam.project(points3d)[0], atol=1e-6)


def test_export_carries_the_distortion_maps_the_rig_was_calibrated_through(rig5, tmp_path):
    import math

    from stereodrr.distortion import intensifier_field, load_distortion
    from tests.distortion.reference import map_of_field

    name = rig5.names[0]
    cam = rig5[name]
    field = intensifier_field("strong", cam.width, cam.height, fov_radius=math.inf)
    dmap = map_of_field(field, step=32, degree=3)
    paths = export_calibration(rig5, tmp_path / "cal", {name: dmap})
    assert paths[f"distortion_{name}"].name == f"distortion_{name}.json"
    back = load_distortion(paths[f"distortion_{name}"])
    q = np.random.default_rng(0).uniform(50, min(cam.width, cam.height) - 50, (40, 2))
    np.testing.assert_array_equal(back.undistort_points(q), dmap.undistort_points(q))
    # Still the recorded -> ideal map of the field (not some other map that round-trips).
    np.testing.assert_allclose(back.undistort_points(np.asarray(field.distort(q))), q, atol=0.2)
    assert np.abs(np.asarray(field.distort(q)) - q).max() > 2.0
    assert not any(k.startswith("distortion_") for k in export_calibration(rig5, tmp_path / "plain"))
    # Calibrated again into the same folder without maps: the earlier map does not stay beside
    # the new rig (a user would take it as the new rig's); a file of no view of the rig does.
    (tmp_path / "cal" / "distortion_other.json").write_text("{}")
    export_calibration(rig5, tmp_path / "cal")
    assert sorted(p.name for p in (tmp_path / "cal").glob("distortion_*")) == ["distortion_other.json"]


def test_export_refuses_a_map_of_another_size_before_writing(rig5, tmp_path):
    import math

    from stereodrr.distortion import intensifier_field
    from tests.distortion.reference import map_of_field

    small = map_of_field(intensifier_field("mild", 64, 64, fov_radius=math.inf), step=8, degree=3)
    with pytest.raises(ValueError, match=f"the map of view '{rig5.names[1]}' is for 64x64 images"):
        export_calibration(rig5, tmp_path / "cal", {rig5.names[1]: small})
    assert not (tmp_path / "cal").exists() or not any((tmp_path / "cal").iterdir())


def test_view_names_the_files_cannot_keep_apart_are_refused_before_writing(rig5, tmp_path):
    """"cam 1" and "cam-1" would share the YAML's ``cam_1_*`` nodes (cv2 returns the first) and
    one MayaCam file name; a comma would split the YAML's view list."""
    from stereodrr.geometry import StereoRig

    cams = list(rig5.cameras.values())
    for names, match in ((("cam 1", "cam-1"), "cam_1"), (("a,b", "c"), "commas")):
        rig = StereoRig(dict(zip(names, cams)), rig5.isocenter)
        with pytest.raises(ValueError, match=match) as info:
            export_calibration(rig, tmp_path / "cal")
        assert "\n" not in str(info.value)
        assert not (tmp_path / "cal").exists() or not any((tmp_path / "cal").iterdir())
    # Names OpenCV's YAML writer cannot take as keys (non-ASCII) are written under ASCII keys.
    rig = StereoRig(dict(zip(("links_ü", "rechts"), cams)), rig5.isocenter)
    back = load_opencv_yaml(export_calibration(rig, tmp_path / "ok")["yaml"])
    assert back.names == ["links_ü", "rechts"]
    for name in rig.names:
        np.testing.assert_allclose(back[name].P, rig[name].P, atol=1e-12)

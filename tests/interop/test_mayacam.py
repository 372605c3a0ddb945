"""MayaCam files: XMALab's own files load to the cameras they hold, and every file stereodrr
writes is read by a transliteration of Autoscoper's reader (tests/interop/autoscoper_readers.py)
into a camera that projects like stereodrr's within 1e-6 px."""

import json
from pathlib import Path

import numpy as np
import pytest

from stereodrr.geometry import Camera, StereoRig, look_at_rotation
from stereodrr.interop import (
    MAYACAM_TOLERANCE_PX,
    VTK_CAMERA_SCHEMA,
    load_mayacam,
    load_mayacam1,
    load_vtk_camera,
    save_mayacam,
    save_mayacam1,
)

from .autoscoper_readers import AutoscoperCamera

DATA = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist"
XMALAB_FILES = sorted((DATA / "Calibration").glob("xr_calib_*.txt"))


def _file_blocks(path):
    """The numbers of an XMALab MayaCam 2.0 file, by line position (independent of stereodrr)."""
    lines = path.read_text().splitlines()
    rows = lambda a, b: np.array([[float(x) for x in lines[i].split(",")] for i in range(a, b)])  # noqa: E731
    return rows(1, 2)[0], rows(4, 7), rows(9, 12), rows(14, 17).ravel()


def autoscoper_pixel(cam: AutoscoperCamera, X):
    """A world point's pixel in Autoscoper's camera model: film-plane coordinates through its
    principal point and focal lengths (y up from ``H - 1 - cy``, as ``loadMayaCam2`` sets it), turned
    back to rows counted downwards."""
    cx, cy_up, fx, fy = cam._principal
    xf, yf, _ = cam.film_plane(X)
    return np.array([cx + 0.5 * fx * xf, cam.size_[1] - 1 - (cy_up + 0.5 * fy * yf)])


def _cameras():
    """Cameras unlike the sample's: non-square detectors, fx != fy, off-centre principal points,
    sources on every side, a convergent and a biplanar rig."""
    rng = np.random.default_rng(7)
    cams = list(StereoRig.convergent(5, 750, 1200, 0.3, 640, 480).cameras.values())
    cams += list(StereoRig.biplanar(1000, 1500, 0.2, 300, 500).cameras.values())
    for _ in range(4):
        src = rng.normal(size=3)
        src *= rng.uniform(600, 1500) / np.linalg.norm(src)
        K = np.array([[rng.uniform(2000, 7000), 0, rng.uniform(100, 900)], [0, 0, rng.uniform(100, 700)], [0, 0, 1]])
        K[1, 1] = K[0, 0] * rng.uniform(0.97, 1.03)
        R = look_at_rotation(src, rng.normal(scale=20, size=3), rng.normal(size=3))
        cams.append(Camera(K=K, R=R, t=-R @ src, width=int(rng.integers(200, 1000)), height=int(rng.integers(200, 800))))
    return cams


@pytest.mark.parametrize("path", XMALAB_FILES, ids=lambda p: p.stem)
def test_xmalab_sample_files_load_to_the_cameras_they_hold(path):
    size, K, R, t = _file_blocks(path)
    cam = load_mayacam(path)
    assert (cam.width, cam.height) == (int(size[0]), int(size[1]))
    np.testing.assert_array_equal(cam.K, K)
    np.testing.assert_array_equal(cam.R, R)
    np.testing.assert_array_equal(cam.t, t)
    # Autoscoper's reading of the same file projects like stereodrr's camera.
    auto = AutoscoperCamera(path)
    rng = np.random.default_rng(0)
    X = rng.normal(scale=40, size=(20, 3))
    uv, depth = cam.project(X)
    assert np.all(depth > 0)
    got = np.array([autoscoper_pixel(auto, x) for x in X])
    np.testing.assert_allclose(got, uv, atol=MAYACAM_TOLERANCE_PX)


def test_wrist_files_form_a_rig_in_front_of_the_bones():
    cams = {f"cam{i}": load_mayacam(DATA / "Calibration" / f"xr_calib_wrist_cam0{i}.txt") for i in (1, 2)}
    rig = StereoRig(cams, np.zeros(3))  # the calibration cube's origin lies between the sources
    assert 100 < rig.stereo_angle_deg() < 120


@pytest.mark.parametrize("i", range(8))
def test_written_cameras_read_by_autoscoper_project_like_stereodrr(tmp_path, i):
    cam = _cameras()[i]
    path = save_mayacam(cam, tmp_path / "cam.txt")
    lines = path.read_text().split("\n")
    assert lines[0] == "image size" and lines[1] == f"{cam.width},{cam.height}" and lines[3] == "camera matrix"
    assert lines[8] == "rotation" and lines[13] == "translation" and len(lines) == 18 and lines[17] == ""
    auto = AutoscoperCamera(path)
    rng = np.random.default_rng(i)
    X = rig_points = rng.normal(scale=30, size=(50, 3))
    uv, depth = cam.project(rig_points)
    X = X[depth > 0]
    got = np.array([autoscoper_pixel(auto, x) for x in X])
    np.testing.assert_allclose(got, uv[depth > 0], atol=MAYACAM_TOLERANCE_PX)
    # Autoscoper samples the radiograph at normalised texture coordinates (s, t) = (u / W, (v + 1) / H):
    # with texel centres at half-integers that is half a pixel left of and below the OpenCV position.
    st = np.array([auto.texture(x) for x in X])
    np.testing.assert_allclose(st * [cam.width, cam.height], uv[depth > 0] + [0.0, 1.0], atol=1e-6)
    back = load_mayacam(path)
    np.testing.assert_array_equal(back.K, cam.K)
    np.testing.assert_array_equal(back.R, cam.R)
    np.testing.assert_array_equal(back.t, cam.t)


def test_skew_is_refused_because_autoscoper_drops_it(tmp_path):
    cam = _cameras()[0]
    K = cam.K.copy()
    K[0, 1] = 0.01
    skewed = Camera(K=K, R=cam.R, t=cam.t, width=cam.width, height=cam.height)
    with pytest.raises(ValueError, match="skew"):
        save_mayacam(skewed, tmp_path / "cam.txt")
    assert not (tmp_path / "cam.txt").exists()


def test_xmalab_undistortion_block_is_read_and_reported(tmp_path):
    text = (XMALAB_FILES[0].read_text().rstrip("\n") + "\n\nundistortion\n"
            + "\n".join(["0.01", "0", "0", "0", "0", "0", "0", "0"]) + "\n")
    (tmp_path / "d.txt").write_text(text)
    with pytest.warns(UserWarning, match="distortion"):
        cam = load_mayacam(tmp_path / "d.txt")
    np.testing.assert_array_equal(cam.K, load_mayacam(XMALAB_FILES[0]).K)


@pytest.mark.parametrize("text, match", [
    ("image size\n1760,1760\n\ncamera matrix\n1,0,1\n0,1,1\n0,0,1\n", "rotation"),
    ("image size\n1760\n\n", "2 finite"),
    ("image size\n1760,1760.5\n\ncamera matrix\n1,0,1\n0,1,1\n0,0,1\n\nrotation\n1,0,0\n0,1,0\n0,0,1\n\n"
     "translation\n0\n0\n1\n", "positive integers"),
    ("image size\n10,10\n\ncamera matrix\n1,0,1\n0,1,1\n0,0,1\n\nrotation\n1,0,0\n0,1,0\n0,0,2\n\n"
     "translation\n0\n0\n1\n", "rotation"),
    ("image size\n10,10\n\ncamera matrix\n1,0,1\n0,1,x\n0,0,1\n", "numbers"),
])
def test_malformed_mayacam_gives_one_line_errors(tmp_path, text, match):
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_mayacam(tmp_path / "bad.txt")
    assert "\n" not in str(info.value) and "bad.txt" in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_mayacam(tmp_path / "none.txt")


def _xmalab_mayacam1(cam: Camera) -> str:
    """XMALab's ``Camera::getMayaCam`` (Camera.cpp 565-621 at ce5f06ec): y-inverted pose
    ``D R, D t`` with ``D = diag(-1, 1, -1)``, ``cy' = H - 1 - cy`` (line 586), ``C = (D R)^T``;
    angles ``rx = atan2(-C21, C22)``, ``ry = atan2(C20, hypot(C21, C22))``,
    ``rz = atan2(-C10, -C00)``; ``f = -(fx + fy) / 2``; film plane
    ``((W/2 - (cx + 1)) near, (H/2 - (cy' + 1)) near, near f)`` (lines 608-610); precision 12."""
    D = np.diag([-1.0, 1.0, -1.0])
    C = (D @ cam.R).T
    pos = -cam.R.T @ cam.t
    cx, cy = cam.K[0, 2], cam.height - 1 - cam.K[1, 2]
    f = -0.5 * (cam.K[0, 0] + cam.K[1, 1])
    rx = np.degrees(np.arctan2(-C[2, 1], C[2, 2]))
    ry = np.degrees(np.arctan2(C[2, 0], np.hypot(C[2, 1], C[2, 2])))
    rz = np.degrees(np.arctan2(-C[1, 0], -C[0, 0]))
    rows = [pos, (rx, ry, rz), ((0.5 * cam.width - (cx + 1)) * 0.1, (0.5 * cam.height - (cy + 1)) * 0.1, 0.1 * f),
            (cx + 1, cy + 1, f), (0.1, cam.width, cam.height)]
    return "".join(",".join(f"{v:.12g}" for v in r) + "\n" for r in rows)


def _square(cam: Camera) -> Camera:
    K = cam.K.copy()
    K[1, 1] = K[0, 0]
    return Camera(K=K, R=cam.R, t=cam.t, width=cam.width, height=cam.height)


@pytest.mark.parametrize("i", range(8))
def test_mayacam1_written_reads_in_autoscoper_and_xmalab_files_read_here(tmp_path, i):
    cam = _square(_cameras()[i])
    path = save_mayacam1(cam, tmp_path / "cam.csv")
    auto = AutoscoperCamera(path)
    X = np.random.default_rng(i).normal(scale=30, size=(40, 3))
    uv, depth = cam.project(X)
    got = np.array([autoscoper_pixel(auto, x) for x in X[depth > 0]])
    np.testing.assert_allclose(got, uv[depth > 0], atol=MAYACAM_TOLERANCE_PX)
    # XMALab's own MayaCam 1.0 (12 significant digits) reads back to the camera.
    (tmp_path / "xma.csv").write_text(_xmalab_mayacam1(cam))
    back = load_mayacam1(tmp_path / "xma.csv")
    uv_back, _ = back.project(X[depth > 0])
    np.testing.assert_allclose(uv_back, uv[depth > 0], atol=1e-5)
    assert load_mayacam(tmp_path / "xma.csv").width == cam.width  # version chosen by the first line
    # Every number as XMALab writes it, the film plane (line 3, unread by Autoscoper) included.
    ours = np.loadtxt(path, delimiter=",")
    np.testing.assert_allclose(ours, np.loadtxt(tmp_path / "xma.csv", delimiter=","), rtol=1e-10, atol=1e-8)


def test_mayacam1_refuses_cameras_it_cannot_hold(tmp_path):
    cam = _cameras()[5]
    assert abs(cam.K[0, 0] - cam.K[1, 1]) > 1
    with pytest.raises(ValueError, match="one focal length"):
        save_mayacam1(cam, tmp_path / "cam.csv")


def _vtk_camera(rng, width, height):
    eye = rng.normal(size=3)
    eye *= rng.uniform(600, 1500) / np.linalg.norm(eye)
    return {"@schema": VTK_CAMERA_SCHEMA, "version": 1.0, "camera-position": eye.tolist(),
            "focal-point": rng.normal(scale=20, size=3).tolist(), "view-up": rng.normal(size=3).tolist(),
            "view-angle": float(rng.uniform(5, 40)), "image-width": width, "image-height": height,
            "clipping-range": [0.1, 5000.0]}


@pytest.mark.parametrize("size", [(1760, 1760), (640, 480), (301, 517)])
def test_vtk_camera_reads_as_autoscoper_projects_it(tmp_path, size):
    """SlicerAutoscoperM's VTK camera: every world point lands where Autoscoper's camera
    (``loadVTKCamera``, transliterated) puts it; a trial's camera file ending in .json is one."""
    rng = np.random.default_rng(size[0])
    for i in range(4):
        path = tmp_path / f"cam{i}.json"
        path.write_text(json.dumps(_vtk_camera(rng, *size)))
        cam = load_mayacam(path)
        assert (cam.width, cam.height) == size
        auto = AutoscoperCamera(path)
        X = np.asarray(json.loads(path.read_text())["focal-point"]) + rng.normal(scale=40, size=(50, 3))
        uv, depth = cam.project(X)
        assert (depth > 0).all()
        np.testing.assert_allclose(uv, np.array([autoscoper_pixel(auto, x) for x in X]), atol=1e-6)


def test_vtk_camera_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    good = _vtk_camera(rng, 512, 512)
    cases = [("not json", "not a JSON"), ({**good, "@schema": "x"}, "@schema"), ({**good, "version": 2}, "version"),
             ({**good, "view-angle": 0}, "view-angle"), ({**good, "view-up": [1, 2]}, "view-up"),
             ({k: v for k, v in good.items() if k != "image-width"}, "image-width"),
             ({**good, "view-up": [a - b for a, b in zip(good["focal-point"], good["camera-position"])]}, "degenerate"),
             ({**good, "image-height": 0}, "image size")]
    for i, (doc, match) in enumerate(cases):
        path = tmp_path / f"c{i}.json"
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        with pytest.raises(ValueError, match=match) as info:
            load_vtk_camera(path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)

"""Every camera writer against its consumer for seeded random cameras unlike the hand-picked ones
of the other tests: any rotation (identity, 180 deg about each axis, the Z-Y-X angles of MayaCam
1.0 and ``.tra`` at pitch +-90 and yaw/roll +-180), fx != fy, principal points far outside the
image, odd and non-square images, focal lengths from 1 to 1e6 px, sources on every side at 1e-2
to 1e5 mm; convergent, biplanar, parallel and N-view rigs. Consumers are the transliterations
of autoscoper_readers.py and test_dlt.py."""

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stereodrr.calib.export import load_opencv_yaml, save_opencv_yaml
from stereodrr.geometry import (
    Camera,
    DltConvention,
    StereoRig,
    euler_to_matrix,
    load_dlt_csv,
    load_rig,
    look_at_rotation,
    projection_from_dlt,
    save_dlt_csv,
    save_rig,
)
from stereodrr.interop import load_mayacam, load_tra, save_mayacam, save_mayacam1, save_tra, xyzypr_to_matrix

from .autoscoper_readers import AutoscoperCamera, load_tracking_results, save_tracking_results
from .test_dlt import dlt_inverse
from .test_mayacam import autoscoper_pixel

GL = np.diag([1.0, -1.0, -1.0])  # Autoscoper's camera frame from OpenCV's


def _special_rotations() -> list[np.ndarray]:
    """World -> camera rotations where angle conventions break: the axes' 0/90/180 deg turns and
    the cameras whose MayaCam 1.0 angles (camera(GL) -> world, Z-Y-X) sit at or next to pitch
    +-90 or at yaw/roll +-180."""
    out = [np.eye(3)] + [Rotation.from_euler(a, d, degrees=True).as_matrix() for a in "xyz" for d in (90, 180)]
    for yaw, pitch, roll in [(0, 90, 0), (30, 90, -20), (170, -90, -120), (180, -90, 180), (-180, 89.9999999, 45),
                             (180, 10, -180), (179.9999999, -30, -179.9999999)]:
        out.append(GL @ euler_to_matrix(np.radians([yaw, pitch, roll]), "ZYX").T)
    return out


def _camera(rng: np.random.Generator, R: np.ndarray | None = None, square: bool = False) -> Camera:
    W, H = (int(rng.choice(s)) for s in ([1, 2, 17, 301, 640, 1023, 4097], [1, 5, 99, 480, 517, 3001]))
    fx = 10 ** rng.uniform(*[(0, 1), (2, 4.5), (5, 6)][rng.integers(3)])
    fy = fx if square or rng.random() < 0.3 else fx * rng.uniform(0.5, 2.0)
    cx, cy = (rng.choice([(n - 1) / 2, rng.uniform(-3 * n, 4 * n), -1e4, 1e4 + n]) for n in (W, H))
    R = Rotation.random(random_state=int(rng.integers(1 << 31))).as_matrix() if R is None else R
    d = rng.normal(size=3)
    C = d / np.linalg.norm(d) * 10 ** rng.uniform(-2, 5)
    return Camera(K=[[fx, 0, cx], [0, fy, cy], [0, 0, 1]], R=R, t=-R @ C, width=W, height=H)


def _cameras(seed: int, n_random: int, square: bool = False) -> list[Camera]:
    rng = np.random.default_rng(seed)
    return [_camera(rng, R, square) for R in _special_rotations()] + [_camera(rng, None, square) for _ in range(n_random)]


def _points(rng: np.random.Generator, cam: Camera, n: int = 12) -> np.ndarray:
    """World points in front of the camera that project into its image, at 0.2 to 5 times the
    source's distance from the world origin."""
    uv1 = np.c_[rng.uniform(-0.5, cam.width - 0.5, n), rng.uniform(-0.5, cam.height - 0.5, n), np.ones(n)]
    z = rng.uniform(0.2, 5, n) * max(1.0, float(np.linalg.norm(cam.center)))
    return (np.linalg.solve(cam.K, uv1.T) * z - cam.t[:, None]).T @ cam.R


@pytest.mark.parametrize("version", [2, 1])
def test_any_camera_through_mayacam_reads_in_autoscoper(tmp_path: Path, version: int) -> None:
    """MayaCam 2.0 keeps K, R, t at 17 digits (read back exactly); 1.0 keeps the centre and the
    Z-Y-X angles in degrees at 17 digits."""
    rng = np.random.default_rng(version)
    for i, cam in enumerate(_cameras(10 + version, 25, square=version == 1)):
        path = (save_mayacam if version == 2 else save_mayacam1)(cam, tmp_path / f"c{i}.txt")
        X = _points(rng, cam)
        uv, depth = cam.project(X)
        assert (depth > 0).all()
        auto = AutoscoperCamera(path)
        got = np.array([autoscoper_pixel(auto, x) for x in X])
        # Autoscoper's own float arithmetic (film plane, viewport) loses ~1e-16 of |uv| + f.
        tol = 1e-6 + 1e-13 * (np.abs(uv).max() + cam.K[0, 0])
        np.testing.assert_allclose(got, uv, atol=tol, rtol=0, err_msg=f"camera {i}")
        back = load_mayacam(path)
        np.testing.assert_allclose(back.project(X)[0], uv, atol=tol, rtol=0, err_msg=f"camera {i}")
        np.testing.assert_allclose(back.center, cam.center, atol=1e-12 * max(1.0, np.abs(cam.center).max()))
        if version == 2:
            assert np.array_equal(back.K, cam.K) and np.array_equal(back.R, cam.R) and np.array_equal(back.t, cam.t)


@pytest.mark.parametrize("convention", ["xmalab", "dltdv8"])
def test_any_camera_through_dlt_projects_as_dltdv(tmp_path: Path, convention: DltConvention) -> None:
    rng = np.random.default_rng(3)
    for i, cam in enumerate(_cameras(20, 25)):
        if cam.K[0, 0] < 10:  # decompose_projection calls f ~ 1 px with c ~ 1e4 px singular
            continue
        X = _points(rng, cam)
        uv = cam.project(X)[0]
        L = save_dlt_csv(StereoRig({"v": cam}, X[0]), tmp_path / "dlt.csv", convention)[:, 0]
        assert np.array_equal(load_dlt_csv(tmp_path / "dlt.csv")[:, 0], L)
        want = uv + 1 if convention == "dltdv8" else np.c_[uv[:, 0] + 1, cam.height - uv[:, 1]]
        tol = 1e-6 + 1e-13 * (np.abs(uv).max() + cam.K[0, 0])
        np.testing.assert_allclose(dlt_inverse(L, X), want, atol=tol, rtol=0, err_msg=f"camera {i}")
        back = Camera.from_projection(projection_from_dlt(L, cam.height, convention), cam.width, cam.height)
        uv_back, depth = back.project(X)
        assert (depth > 0).all()
        np.testing.assert_allclose(uv_back, uv, atol=tol, rtol=0, err_msg=f"camera {i}")
        np.testing.assert_allclose(back.center, cam.center, rtol=1e-9, atol=1e-9)


def _rigs() -> dict[str, StereoRig]:
    rng = np.random.default_rng(8)
    rigs = {"convergent 3": StereoRig.convergent(3, 750, 1200, (0.2, 0.25), 301, 517, isocenter=(1e4, -50, 3)),
            "convergent 7": StereoRig.convergent(7, 1500, 1800, 0.15, 1024, 1, central_direction=(1, 1, 1)),
            "biplanar": StereoRig.biplanar(1000, 1500, 0.3, 640, 481, central_direction=(0, 0, -1), up=(1, 0, 0)),
            "arc 5": StereoRig.arc(5, 200, 900, 1300, 0.15, 1023, 99)}
    R = Rotation.random(random_state=1).as_matrix()
    K = np.array([[3000.0, 0, 320], [0, 3100, 240], [0, 0, 1]])
    # Parallel principal rays (no nearest point) and rays that meet behind a source: valid rigs.
    par = {n: Camera(K=K, R=R, t=-R @ np.array([x, 0, 0]), width=640, height=480) for n, x in (("L", -50), ("R", 50))}
    rigs["parallel"] = StereoRig(par, par["L"].center + 800 * R[2])
    iso = np.array([10.0, -20, 30])
    div = {}
    for n, src in (("a", (-900.0, -100, 0)), ("b", (900.0, -100, 0)), ("c", (0, -900.0, 50))):
        Ra = look_at_rotation(np.asarray(src), iso + rng.normal(scale=700, size=3), np.array([0, 0, 1.0]))
        div[n] = Camera(K=K, R=Ra, t=-Ra @ np.asarray(src), width=640, height=480)
    rigs["off-axis"] = StereoRig({n: c for n, c in div.items() if c.project(iso[None])[1][0] > 0}, iso)
    return rigs


@pytest.mark.parametrize("name", list(_rigs()))
def test_any_rig_round_trips_rig_json_and_opencv_yaml(tmp_path: Path, name: str) -> None:
    rig = _rigs()[name]
    assert load_rig(save_rig(rig, tmp_path / "rig.json")) == rig
    back = load_opencv_yaml(save_opencv_yaml(rig, tmp_path / "opencv.yaml"))
    assert back == rig  # K, R, t, detector and the isocenter, bit for bit


@pytest.mark.parametrize("names", [["true"], ["null"], ["1.5"], ["yes", "no"], ["~", "false"]])
def test_opencv_yaml_keeps_view_names_yaml_reads_as_values(tmp_path: Path, names: list[str]) -> None:
    """OpenCV's YAML reader turns an unquoted ``true`` into 1 and ``null`` into nothing: a view
    so named must still come back by name."""
    cams = list(_rigs()["convergent 3"].cameras.values())
    rig = StereoRig(dict(zip(names, cams)), np.array([1e4, -50, 3.0]))
    assert load_opencv_yaml(save_opencv_yaml(rig, tmp_path / "opencv.yaml")) == rig


def test_xyzypr_at_pitch_90_rebuilds_autoscopers_pose(tmp_path: Path) -> None:
    """Autoscoper writes a pose at pitch +-90 as a matrix whose zero entries are rounding noise;
    converted to xyzypr here, Autoscoper must read the same pose back (only yaw -+ roll is fixed
    there, and it was lost)."""
    frames = [[1.0, 2.0, 3.0, 30.0, 90.0, 10.0], [0.0, -5.0, 7.0, -120.0, -90.0, 45.0], [4.0, 4.0, 4.0, 180, 90, -180]]
    save_tracking_results(frames, tmp_path / "matrix.tra")
    save_tra(load_tra(tmp_path / "matrix.tra"), tmp_path / "xyzypr.tra", layout="xyzypr")
    read = load_tracking_results(tmp_path / "xyzypr.tra", len(frames), save_as_matrix=False)
    for xyzypr, row in zip(frames, read):
        np.testing.assert_allclose(np.reshape(row[0].to_matrix(), (4, 4)).T, xyzypr_to_matrix(xyzypr), atol=1e-12)


def test_mayacam1_of_a_camera_at_pitch_90_reads_in_autoscoper(tmp_path: Path) -> None:
    """A camera whose image x axis is vertical (a portrait detector) with R rounded as a file
    holds it: its MayaCam 1.0 angles sit at pitch 90 and must still rebuild R."""
    rng = np.random.default_rng(0)
    for k in range(3):
        M = euler_to_matrix(np.radians([rng.uniform(-180, 180), 90.0, rng.uniform(-180, 180)]), "ZYX")
        R = np.round(GL @ M.T, 12)
        cam = Camera(K=[[5000.0, 0, 511.5], [0, 5000.0, 383.5], [0, 0, 1]], R=R, t=-R @ [0, -1000.0, 20],
                     width=1024, height=768)
        X = _points(rng, cam)
        auto = AutoscoperCamera(save_mayacam1(cam, tmp_path / f"c{k}.txt"))
        got = np.array([autoscoper_pixel(auto, x) for x in X])
        np.testing.assert_allclose(got, cam.project(X)[0], atol=1e-6, rtol=0)


def test_mayacam1_refuses_fx_fy_that_move_a_far_pixel(tmp_path: Path) -> None:
    """fx and fy 1.5e-9 apart move pixels 8e-6 px when the principal point lies 1e4 px off the
    image: past MAYACAM_TOLERANCE_PX, so refused, not written."""
    K = [[5000.0, 0, -1e4], [0, 5000.0 * (1 + 1.5e-9), 383.5], [0, 0, 1]]
    cam = Camera(K=K, R=np.eye(3), t=[0, 0, 1000.0], width=1024, height=768)
    with pytest.raises(ValueError, match="one focal length"):
        save_mayacam1(cam, tmp_path / "c.txt")
    assert not (tmp_path / "c.txt").exists()
    centred = Camera(K=[[5000.0, 0, 511.5], [0, 5000.0 * (1 + 1e-10), 383.5], [0, 0, 1]], R=np.eye(3),
                     t=[0, 0, 1000.0], width=1024, height=768)
    X = _points(np.random.default_rng(1), centred)
    auto = AutoscoperCamera(save_mayacam1(centred, tmp_path / "ok.txt"))
    got = np.array([autoscoper_pixel(auto, x) for x in X])
    np.testing.assert_allclose(got, centred.project(X)[0], atol=1e-6, rtol=0)


def test_dlt_refusal_names_the_view(tmp_path: Path) -> None:
    rig = _rigs()["convergent 3"]
    # Move the world origin into the right camera's principal plane: L12 = 0, no 11-term DLT.
    shift = rig["right"].center + 100 * rig["right"].R[0]
    cams = {n: c.with_pose(c.R, c.t + c.R @ shift) for n, c in rig.cameras.items()}
    with pytest.raises(ValueError, match="'right'.*principal plane") as info:
        save_dlt_csv(StereoRig(cams, rig.isocenter - shift), tmp_path / "dlt.csv")
    assert "\n" not in str(info.value) and "dlt.csv" in str(info.value)
    assert not (tmp_path / "dlt.csv").exists()


def test_export_calibration_writes_every_format_or_none(tmp_path: Path) -> None:
    """A rig that one format cannot hold (the DLT, world origin in a view's principal plane)
    leaves the output folder as it was: no rig.json without its DLT, an older file kept."""
    from stereodrr.calib.export import export_calibration

    rig = _rigs()["convergent 3"]
    shift = rig["right"].center + 100 * rig["right"].R[0]
    cams = {n: c.with_pose(c.R, c.t + c.R @ shift) for n, c in rig.cameras.items()}
    (tmp_path / "rig.json").write_text("an earlier calibration")
    with pytest.raises(ValueError, match="'right'.*principal plane"):
        export_calibration(StereoRig(cams, rig.isocenter - shift), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rig.json"]
    assert (tmp_path / "rig.json").read_text() == "an earlier calibration"
    paths = export_calibration(rig, tmp_path)
    assert set(paths) >= {"rig", "dlt", "yaml"} and all(p.parent == tmp_path and p.is_file() for p in paths.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())

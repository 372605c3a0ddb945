"""Files saved by Windows tools: a UTF-8 byte-order mark, CRLF line ends and a last line of
spaces (as Notepad or a spreadsheet's re-save leaves them) read as the plain file does."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stereodrr.geometry import StereoRig, load_dlt_csv, load_rig, save_dlt_csv, save_rig
from stereodrr.interop import (
    load_mayacam,
    load_mayacam1,
    load_points2d,
    load_points3d,
    load_rigid_body_transforms,
    load_tra,
    read_trial_file,
    save_mayacam1,
    save_points2d,
    save_points3d,
    save_rigid_body_transforms,
    save_tra,
)
from stereodrr.physics import Spectrum

WRIST = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist"


def _windows(src, dst):
    """``src`` as a Windows editor saves it: BOM, CRLF, a trailing line of blanks."""
    text = src.read_text(encoding="utf-8")
    dst.write_bytes(b"\xef\xbb\xbf" + (text.replace("\n", "\r\n") + " \t\r\n").encode("utf-8"))
    return dst


def _same(a, b):
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif hasattr(a, "K"):  # a Camera
        for f in ("K", "R", "t"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
        assert (a.width, a.height) == (b.width, b.height)
    elif isinstance(a, StereoRig):
        np.testing.assert_array_equal(a.isocenter, b.isocenter)
        for n in a:
            _same(a[n], b[n])
    elif isinstance(a, Spectrum):
        np.testing.assert_array_equal(a.fluence, b.fluence)
        np.testing.assert_array_equal(a.energies_kev, b.energies_kev)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def _cases(tmp_path):
    cam = load_mayacam(WRIST / "Calibration" / "xr_calib_wrist_cam01.txt")
    rig = StereoRig({"cam1": cam, "cam2": load_mayacam(WRIST / "Calibration" / "xr_calib_wrist_cam02.txt")},
                    np.array([100.0, 120.0, 130.0]))
    rng = np.random.default_rng(0)
    pts2 = pd.DataFrame([(f, m, c, *rng.uniform(0, 1000, 2)) for f in range(3) for m in range(2) for c in (0, 1)],
                        columns=["frame", "marker", "camera", "u", "v"])
    pts3 = pd.DataFrame([(f, m, *rng.normal(size=3)) for f in range(3) for m in range(2)],
                        columns=["frame", "marker", "x", "y", "z"])
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, 3] = rng.normal(size=(3, 3))
    (tmp_path / "spectrum.csv").write_text("energy_kev,fluence\n20,1.5\n30,2.5\n40,0.5\n")
    K = cam.K.copy()
    K[1, 1] = K[0, 0]  # MayaCam 1.0 holds one focal length
    save_mayacam1(dataclasses.replace(cam, K=K), tmp_path / "maya1.txt")
    save_points2d(pts2, tmp_path / "p2.csv", (1760, 1760), n_frames=3)
    save_points3d(pts3, tmp_path / "p3.csv", n_frames=3)
    save_rigid_body_transforms(poses.reshape(3, 1, 4, 4), tmp_path / "rb.csv")
    save_tra(poses, tmp_path / "bone.tra")
    save_dlt_csv(rig, tmp_path / "dlt.csv")
    save_rig(rig, tmp_path / "rig.json")
    return {
        "mayacam2": (WRIST / "Calibration" / "xr_calib_wrist_cam01.txt", load_mayacam),
        "mayacam1": (tmp_path / "maya1.txt", load_mayacam1),
        "points2d": (tmp_path / "p2.csv", lambda p: load_points2d(p, (1760, 1760))),
        "points3d": (tmp_path / "p3.csv", load_points3d),
        "rigid_bodies": (tmp_path / "rb.csv", load_rigid_body_transforms),
        "tra": (tmp_path / "bone.tra", load_tra),
        "dlt": (tmp_path / "dlt.csv", load_dlt_csv),
        "rig_json": (tmp_path / "rig.json", load_rig),
        "spectrum": (tmp_path / "spectrum.csv", Spectrum.from_csv),
    }


@pytest.mark.parametrize("kind", ["mayacam2", "mayacam1", "points2d", "points3d", "rigid_bodies", "tra", "dlt",
                                  "rig_json", "spectrum"])
def test_a_file_saved_on_windows_reads_as_the_plain_one(tmp_path, kind):
    path, load = _cases(tmp_path)[kind]
    _same(load(path), load(_windows(path, tmp_path / f"win_{path.name}")))


def test_a_trial_file_with_a_byte_order_mark_keeps_its_version_line(tmp_path):
    """A BOM before ``Version 1.1`` must not turn the file into version 1.0, whose relative
    paths resolve against the working directory first."""
    trial = tmp_path / "trial"
    shutil.copytree(WRIST, trial)
    plain = read_trial_file(trial / "wrist.cfg")
    win = read_trial_file(_windows(trial / "wrist.cfg", trial / "win.cfg"))
    assert win.version == plain.version == (1, 1)
    assert dataclasses.replace(win, source=plain.source) == plain

"""``stereodrr beads`` on the Autoscoper wrist sample: XMALab files that hold what was tracked,
one row per trial frame; bad input ends in one line."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stereodrr.cli import main
from stereodrr.interop import load_points2d, load_points3d, load_rigid_body_transforms

WRIST = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist" / "wrist.cfg"


def test_beads_command_writes_xmalab_files(tmp_path, capsys):
    out = tmp_path / "beads"
    assert main(["beads", "--trial", str(WRIST), "-o", str(out), "--frames", "1:3", "--no-figures"]) == 0
    printed = capsys.readouterr().out
    assert "frame 1: beads found" in printed and "reprojection median" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [f["frame"] for f in summary["frames"]] == [1, 2]
    assert all(f["triangulated"] >= 17 for f in summary["frames"]) and summary["reprojection_median_px"] < 0.2
    beads = pd.read_csv(out / "beads.csv")
    assert set(beads["frame"]) == {1, 2}
    # XMALab's 2D points: one row per trial frame (frame 0 untracked: NaN), the beads' detections.
    p2 = load_points2d(out / "points2d.csv", [1760, 1760], "matlab")
    assert set(p2["frame"]) == {1, 2}
    b = beads.dropna(subset=["u_cam1"]).sort_values(["frame", "bead"])
    got = p2[p2["camera"] == 0].sort_values(["frame", "marker"])
    np.testing.assert_allclose(got[["u", "v"]].to_numpy(), b[["u_cam1", "v_cam1"]].to_numpy(), atol=1e-8)
    p3 = load_points3d(out / "points3d.csv")
    assert len(p3) == beads["x"].notna().sum()
    names, T = load_rigid_body_transforms(out / "rigid_bodies.csv")
    assert names == ["RigidBody001", "RigidBody002", "RigidBody003"] and T.shape == (3, 3, 4, 4)
    assert np.isnan(T[0]).all() and np.allclose(T[1], np.eye(4), atol=1e-9)  # frame 1 is each body's reference
    bodies = pd.read_csv(out / "bodies.csv")
    assert set(bodies["body_name"]) == set(names)


def test_beads_command_bad_input(tmp_path, capsys):
    assert main(["beads", "--trial", str(tmp_path / "none.cfg"), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.cfg" in err[0]
    assert main(["beads", "--trial", str(WRIST), "-o", str(tmp_path / "o"), "--frames", "2:9"]) == 2
    assert "frames 0..2" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_beads_command_needs_no_volumes(tmp_path, capsys):
    """Bead tracking reads only the cameras and frames: a trial whose volumes are absent (the
    knee and ankle samples' CTs are too large for many copies of the data) or not listed still
    runs; bone tracking still refuses it."""
    data = WRIST.parent
    lines = [f"mayaCam_csv {data / 'Calibration' / f'xr_calib_wrist_cam0{c}.txt'}" for c in (1, 2)]
    lines += [f"CameraRootDir {data / 'XMA_UND' / f'xr_data_wrist_cam0{c}'}" for c in (1, 2)]
    for name, extra in (("absent", ["VolumeFile missing.tif", "VoxelSize 0.4 0.4 0.6"]), ("unlisted", [])):
        cfg = tmp_path / f"{name}.cfg"
        cfg.write_text("\n".join(lines + extra) + "\n")
        out = tmp_path / name
        assert main(["beads", "--trial", str(cfg), "-o", str(out), "--frames", "1", "--no-figures"]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["frames"][0]["triangulated"] >= 17
    capsys.readouterr()
    assert main(["track", "--trial", str(tmp_path / "absent.cfg"), "--volume", "0", "-o", str(tmp_path / "t")]) == 1
    assert "missing.tif" in capsys.readouterr().err

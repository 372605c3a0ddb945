"""``stereodrr phantom``: files written, geometry exact, errors reported as one line."""

from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from stereodrr.cli import main
from stereodrr.phantoms import load_phantom

ROOT = Path(__file__).resolve().parents[2]


def test_phantom_command_writes_volumes_truth_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["phantom", str(ROOT / "phantoms" / "lego_stereo.json"), "--spacing", "1.5", "--markers", "carve",
               "--rotate", "0", "0", "30", "--translate", "5", "0", "0", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "stainless_steel" in text and "grid" in text
    for name in ("mu.mha", "hu.mha", "labels.mha", "markers.csv", "mip.png", "voxelize.json"):
        assert (out / name).is_file(), name
    assert (out / "mip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "markers.csv")
    ph = load_phantom(ROOT / "phantoms" / "lego_stereo.json")
    R = np.array([[np.cos(np.pi / 6), -np.sin(np.pi / 6), 0], [np.sin(np.pi / 6), np.cos(np.pi / 6), 0], [0, 0, 1]])
    assert np.allclose(table[["x", "y", "z"]].to_numpy(), ph.marker_centers @ R.T + [5, 0, 0], atol=1e-5)
    img = sitk.ReadImage(str(out / "labels.mha"))
    assert img.GetSpacing() == (1.5, 1.5, 1.5)
    assert sitk.GetArrayFromImage(img).max() == 1  # balls carved out


def test_phantom_command_reports_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "stereodrr.phantom/1",\n "name": "x",, }')
    assert main(["phantom", str(bad), "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "malformed JSON at line 2, column" in err and str(bad) in err
    assert main(["phantom", str(ROOT / "phantoms" / "torso.json"), "--spacing", "4", "--size", "10", "10", "10",
                 "-o", str(tmp_path / "o")]) == 1
    assert "cannot hold phantom 'torso'" in capsys.readouterr().err


def test_a_rerun_in_another_format_removes_the_earlier_volumes(tmp_path, capsys):
    """mha then nii.gz into one folder left mu.mha (the earlier run's) beside mu.nii.gz; a file
    of the user's there, not in the earlier run's voxelize.json, stays."""
    out = tmp_path / "out"
    assert main(["phantom", "lego_cube", "--spacing", "4", "--supersample", "1", "-o", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["phantom", "lego_cube", "--spacing", "4", "--supersample", "1", "--format", "nii.gz",
                 "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["hu.nii.gz", "labels.nii.gz", "markers.csv", "mip.png",
                                                     "mu.nii.gz", "notes.txt", "voxelize.json"]

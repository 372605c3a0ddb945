import json
import subprocess
import sys

from stereodrr import __version__
from stereodrr.cli import main
from stereodrr.geometry import load_dlt_csv, load_rig


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "stereodrr", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"stereodrr {__version__}"
    out = subprocess.run([sys.executable, "-m", "stereodrr", "--help"], capture_output=True, text=True, check=True)
    assert "rig" in out.stdout


def test_rig_command(tmp_path, capsys):
    rc = main(["rig", "--angle", "5", "--sid", "750", "--sdd", "1200", "--pixel", "0.3", "--size", "512", "512",
               "-o", str(tmp_path / "rig.json"), "--dlt", str(tmp_path / "dlt.csv")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "baseline       65.43 mm" in text
    assert "depth resolution at the isocenter for 0.1 px disparity error: 0.2149 mm" in text
    rig = load_rig(tmp_path / "rig.json")
    assert abs(rig.stereo_angle_deg() - 5) < 1e-9
    assert load_dlt_csv(tmp_path / "dlt.csv").shape == (11, 2)
    assert json.loads((tmp_path / "rig.json").read_text())["schema"] == "stereodrr.rig/1"


def test_rig_command_bad_input(tmp_path, capsys):
    rc = main(["rig", "--sid", "1300", "--sdd", "1200", "-o", str(tmp_path / "r.json")])
    assert rc == 1
    assert "SID < SDD" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_written_files_have_default_permissions(tmp_path):
    import os
    import stat

    main(["rig", "-o", str(tmp_path / "rig.json")])
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "rig.json").stat().st_mode) == 0o666 & ~mask

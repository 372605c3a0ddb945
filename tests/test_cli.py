import json
import subprocess
import sys

import pytest

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


def test_rig_figure_draws_the_rig_beside_another_with_markers(tmp_path, capsys):
    import numpy as np

    from stereodrr.geometry import StereoRig
    from stereodrr.plot.rig import detector_corners

    rig = StereoRig.convergent(5, 750, 1200, 0.3, 512, 400)
    corners = detector_corners(rig["left"])
    # the corners lie on the detector plane (z = SDD in the camera frame) and project to the pixel edges
    uv, depth = rig["left"].project(corners)
    assert np.allclose(depth, 1200) and np.allclose(uv, [[-0.5, -0.5], [511.5, -0.5], [511.5, 399.5], [-0.5, 399.5]])
    main(["rig", "--angle", "7", "-o", str(tmp_path / "other.json")])
    capsys.readouterr()
    rc = main(["rig", "-o", str(tmp_path / "rig.json"), "--figure", str(tmp_path / "rig.png"), "--phantom", "lego_stereo",
               "--compare", str(tmp_path / "other.json")])
    assert rc == 0 and (tmp_path / "rig.png").stat().st_size > 10_000
    assert f"rig.json, {tmp_path / 'rig.png'}" in capsys.readouterr().out
    # --phantom and --compare need --figure (a usage error); a missing --compare file is named; nothing is written
    assert main(["rig", "-o", str(tmp_path / "x.json"), "--phantom", "lego_stereo"]) == 2
    assert main(["rig", "-o", str(tmp_path / "y.json"), "--figure", str(tmp_path / "y.png"),
                 "--compare", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert "--figure rig.png" in err and "missing.json" in err
    assert not any((tmp_path / n).exists() for n in ("x.json", "y.json", "y.png"))


def test_rig_command_bad_input(tmp_path, capsys):
    rc = main(["rig", "--sid", "1300", "--sdd", "1200", "-o", str(tmp_path / "r.json")])
    assert rc == 1
    assert "SID < SDD" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
    # two options naming one file: the nominal rig over the --compare'd calibration, a DLT table over the rig
    calib = tmp_path / "rig.json"
    assert main(["rig", "--angle", "6", "-o", str(calib)]) == 0
    before = calib.read_bytes()
    capsys.readouterr()
    assert main(["rig", "-o", str(calib), "--figure", str(tmp_path / "c.png"), "--compare", str(calib)]) == 2
    assert "-o and --compare name one file" in capsys.readouterr().err
    assert main(["rig", "-o", str(tmp_path / "r.json"), "--dlt", str(tmp_path / "r.json")]) == 2
    assert "-o and --dlt name one file" in capsys.readouterr().err
    # a rig whose DLT or depth resolution cannot be computed fails before anything is written over
    assert main(["rig", "--kind", "arc", "--isocenter", "0", "750", "0", "-o", str(calib), "--dlt",
                 str(tmp_path / "d.csv")]) == 1
    assert "principal plane" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="outside the recommended"):
        assert main(["rig", "--angle", "1e-300", "-o", str(calib)]) == 1
    assert "arc_deg: views 0 and 1 of 2 coincide" in capsys.readouterr().err
    assert calib.read_bytes() == before
    assert not any((tmp_path / n).exists() for n in ("r.json", "d.csv", "c.png"))


def test_written_files_have_default_permissions(tmp_path):
    import os
    import stat

    main(["rig", "-o", str(tmp_path / "rig.json")])
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "rig.json").stat().st_mode) == 0o666 & ~mask


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path):
    """`stereodrr rig ... | head -1`: the reader closes the pipe before the table is printed; the
    command stops with the shell's SIGPIPE status and no error line or traceback."""
    cmd = [sys.executable, "-m", "stereodrr", "rig", "--angle", "5", "-o", str(tmp_path / "rig.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even started: every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == ""
    assert (tmp_path / "rig.json").exists()  # the work was done; only the printing stopped


def test_one_file_for_two_views_is_a_usage_error(tmp_path, capsys):
    """The same image (here through a symlink) for both views: calibrate failed deep in the
    F estimation ("a homography maps view 1 onto view 2"), register ran to a pose without
    depth and exited 0; both now refuse it as a bad argument, writing nothing."""
    import numpy as np
    import SimpleITK as sitk

    from stereodrr.geometry import StereoRig, save_rig
    from stereodrr.phantoms import torso_phantom
    from stereodrr.volume import save_volume

    save_rig(StereoRig.convergent(5.0, 750, 1200, 8.0, 64, 64), tmp_path / "rig.json")
    image = tmp_path / "a b é.tif"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((64, 64)).astype(np.float32)), str(image))
    (tmp_path / "link.tif").symlink_to(image)
    twice = ["--images", str(image), str(tmp_path / "link.tif"), "--rig", str(tmp_path / "rig.json"),
             "-o", str(tmp_path / "out")]
    assert main(["calibrate", "--phantom", "lego_stereo", *twice]) == 2
    assert "are one file, given for views 'left' and 'right'" in capsys.readouterr().err
    save_volume(torso_phantom(size=(24, 20, 16), spacing=12.0), tmp_path / "ct.nii.gz")
    assert main(["register", "--ct", str(tmp_path / "ct.nii.gz"), "--quiet", *twice]) == 2
    assert "are one file, given for views 'left' and 'right'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_render_physics_options_are_usage_errors(tmp_path, capsys):
    """An unknown preset, a tube potential outside spekpy's range, conflicting options: bad
    arguments (exit 2), not failures (they exited 1, as a corrupt file does)."""
    from stereodrr.geometry import StereoRig, save_rig

    save_rig(StereoRig.convergent(5.0, 750, 1200, 8.0, 16, 16), tmp_path / "rig.json")
    (tmp_path / "s.csv").write_text("energy_kev,fluence\n60,1\n")
    base = ["render", "--phantom", "lego_cube", "--rig", str(tmp_path / "rig.json"), "-o", str(tmp_path / "out")]
    for extra, said in ((["--preset", "nope"], "unknown detector preset 'nope'"),
                        (["--kvp", "900"], "outside spekpy's range"),
                        (["--kvp", "80", "--filter", "Unobtainium:1"], "unknown material"),
                        (["--kvp", "80", "--spectrum", str(tmp_path / "s.csv")], "give --kvp or --spectrum"),
                        (["--filter", "Al:1"], "--filter needs --kvp")):
        assert main(base + extra) == 2, extra
        assert said in capsys.readouterr().err
    for command in (["demo", "--preset", "nope", "-o", str(tmp_path / "out")],
                    ["calibrate", "--images", str(tmp_path / "s.csv"), str(tmp_path / "rig.json"), "--phantom",
                     "lego_stereo", "--rig", str(tmp_path / "rig.json"), "--preset", "nope", "-o", str(tmp_path / "out")]):
        assert main(command) == 2, command
        assert "unknown detector preset 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_quoted_tilde_is_the_home_folder(tmp_path, monkeypatch):
    """-o "~/r.json" (quoted, or --output=~/r.json, which the shell leaves alone) wrote into a
    folder named ~ under the working directory, and --compare "~/..." was not found."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["rig", "--size", "16", "16", "--output=~/r.json"]) == 0
    assert (tmp_path / "home" / "r.json").is_file() and not (tmp_path / "~").exists()
    assert main(["rig", "--size", "16", "16", "-o", "~/s.json", "--figure", "~/f.png", "--compare", "~/r.json"]) == 0
    assert (tmp_path / "home" / "f.png").is_file() and not (tmp_path / "~").exists()

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from stereodrr.cli import main
from stereodrr.dataset import complete_items, load_manifest, rebuild_manifest


def _write(tmp_path, raw):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(raw))
    return path


def test_cli_generates_in_process_by_default_and_refuses(tmp_path, tiny_raw, capsys, monkeypatch):
    cfg = _write(tmp_path, tiny_raw)
    out = tmp_path / "ds"
    # The default renders in this process: it works on a plain install, where Dask is missing.
    import stereodrr.extras
    available = stereodrr.extras.available
    monkeypatch.setattr(stereodrr.extras, "available", lambda module: module != "distributed" and available(module))
    assert main(["dataset", "--config", str(cfg), "-o", str(out), "--n", "2", "--quiet"]) == 0
    assert "2 item(s) written" in capsys.readouterr().out
    assert len(load_manifest(out)) == 4
    assert main(["dataset", "--config", str(cfg), "-o", str(out), "--n", "2", "--workers", "0", "--quiet"]) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert main(["dataset", "--config", str(cfg), "-o", str(out), "--n", "3", "--workers", "0", "--quiet",
                 "--resume", "--shard", "0/1"]) == 0
    assert "1 item(s) written, 2 already complete" in capsys.readouterr().out


def test_cli_bad_config_names_the_key(tmp_path, tiny_raw, capsys):
    tiny_raw["rig"]["sdd_mm"] = [1000, 900]
    rc = main(["dataset", "--config", str(_write(tmp_path, tiny_raw)), "-o", str(tmp_path / "ds"), "--n", "1"])
    assert rc == 1 and "rig.sdd_mm" in capsys.readouterr().err
    rc = main(["dataset", "--config", str(tmp_path / "missing.json"), "-o", str(tmp_path / "ds"), "--n", "1"])
    assert rc == 1 and "missing.json" in capsys.readouterr().err
    rc = main(["dataset", "--config", str(_write(tmp_path, {})), "-o", str(tmp_path / "ds"), "--n", "1",
               "--shard", "3/2"])
    assert rc == 2 and "--shard" in capsys.readouterr().err


def test_items_that_cannot_image_their_subject_are_not_offered_for_a_retry(tmp_path, tiny_raw, capsys):
    """An item is a function of the seed and its index: one whose pose puts the subject off the
    detector fails on every run, so --resume is not suggested for it (it was, forever)."""
    tiny_raw["seed"] = 4
    tiny_raw["pose"] = {"translation_mm": [[-400, 400]] * 3}
    cfg, out = _write(tmp_path, tiny_raw), tmp_path / "ds"
    assert main(["dataset", "--config", str(cfg), "-o", str(out), "--n", "8", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "item 1 failed: ItemGeometryError: item 1, view 'left': the subject projects" in err
    assert "5 item(s) cannot image the subject with this config's pose and rig ranges" in err
    assert "--resume" not in err
    assert complete_items(out) == [0, 5, 7]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path, tiny_raw):
    """A run killed with SIGKILL leaves only complete items in the manifest; --resume finishes it
    with the bytes of an uninterrupted run."""
    tiny_raw["subject"]["size"] = [48, 36, 32]
    tiny_raw["subject"]["spacing_mm"] = 6.0
    tiny_raw["rig"]["detector_px"] = [128, 96]
    tiny_raw["rig"]["pixel_spacing_mm"] = 1.6
    cfg = _write(tmp_path, tiny_raw)
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "stereodrr", "dataset", "--config", str(cfg), "-o", str(out), "--n", "12",
           "--workers", "0", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(complete_items(out)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = complete_items(out)
    assert 3 <= len(done) < 12
    m = rebuild_manifest(out, verify=True)
    assert sorted(m["item"].unique()) == done
    assert subprocess.run(cmd + ["--resume"], capture_output=True).returncode == 0
    ref = tmp_path / "ref"
    assert subprocess.run(cmd[:7] + [str(ref)] + cmd[8:], capture_output=True).returncode == 0
    a, b = load_manifest(out), load_manifest(ref)
    assert list(a["sha256"]) == list(b["sha256"]) and len(a) == 24

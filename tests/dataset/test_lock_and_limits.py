"""Dataset folder locks, a full disk during the manifest rebuild, and limits checked up front."""

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stereodrr.cli import main
from stereodrr.dataset import generate as gen
from stereodrr.dataset import generate_dataset, load_manifest, rebuild_manifest, validate_config
from stereodrr.dataset.lock import LOCK_DIR, DatasetBusyError, dataset_lock, shards_overlap
from stereodrr.dataset.manifest import remove_incomplete


def test_shards_overlap_matches_brute_force():
    for n in range(1, 7):
        for m in range(1, 7):
            for i in range(n):
                for j in range(m):
                    for items in (0, 3, 50):
                        truth = bool(set(range(i, items, n)) & set(range(j, items, m)))
                        assert shards_overlap((i, n, items), (j, m, items)) == truth


def test_second_run_on_the_same_items_is_refused(tmp_path, tiny_config):
    root = tmp_path / "ds"
    with dataset_lock(root, (0, 1), 4):
        with pytest.raises(DatasetBusyError, match=f"pid {os.getpid()}"):
            generate_dataset(tiny_config, root, 4, workers=0, progress=False)
        assert not (root / "items").exists()  # the refused run touched nothing
        # Another shard's items are disjoint from shard 1/2 of a run holding shard 0/2 only.
    with dataset_lock(root, (0, 2), 4):
        report = generate_dataset(tiny_config, root, 4, shard=(1, 2), workers=0, progress=False)
        assert report.written == 2
    assert not (root / LOCK_DIR).exists()  # released, and the folder removed with the last lock


def test_stale_lock_of_a_killed_run_is_recovered(tmp_path, tiny_config):
    root = tmp_path / "ds"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (root / LOCK_DIR).mkdir(parents=True)
    (root / LOCK_DIR / f"{socket.gethostname()}.{dead.stdout.strip()}.json").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": int(dead.stdout), "proc_start": 0.0, "shard": [0, 1], "n_items": 9}))
    (root / LOCK_DIR / "garbled.json").write_text('{"host": ')  # cut short by a crash
    report = generate_dataset(tiny_config, root, 2, workers=0, progress=False)
    assert report.written == 2 and not (root / LOCK_DIR).exists()


def test_lock_of_another_host_is_respected(tmp_path, tiny_config, capsys):
    root = tmp_path / "ds"
    (root / LOCK_DIR).mkdir(parents=True)
    lock = root / LOCK_DIR / "elsewhere.1.json"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "shard": [0, 1], "n_items": 9, "started": "then"}))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_config))
    assert main(["dataset", "--config", str(cfg), "-o", str(root), "--n", "2", "--workers", "0", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "in use by another run" in err and "elsewhere" in err and str(lock) in err
    assert lock.exists()


def test_full_disk_during_manifest_rebuild_keeps_the_previous_manifest(tmp_path, tiny_config, monkeypatch, capsys):
    root = tmp_path / "ds"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_config))
    args = ["dataset", "--config", str(cfg), "-o", str(root), "--workers", "0", "--quiet"]
    assert main([*args, "--n", "2"]) == 0
    before = load_manifest(root)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq, "write_table", full)
    assert main([*args, "--n", "3", "--resume"]) == 1
    captured = capsys.readouterr()
    assert "1 item(s) written" in captured.out and "manifest NOT rebuilt" in captured.out
    err = [ln for ln in captured.err.splitlines() if "error:" in ln]
    assert len(err) == 1 and "No space left on device" in err[0] and "previous manifest" in err[0]
    pd.testing.assert_frame_equal(load_manifest(root), before)  # intact
    assert not list(root.glob(".manifest.parquet.*"))  # no temporary left
    monkeypatch.undo()
    assert main([*args, "--n", "3", "--resume"]) == 0  # space again: the third item joins
    assert sorted(set(load_manifest(root)["item"])) == [0, 1, 2]



def _in_a_thread(fn, *args):
    """Run ``fn(*args)`` in a thread; returns the thread and a list that gets the result or error."""
    out = []

    def target():
        try:
            out.append(fn(*args))
        except Exception as exc:  # handed to the test
            out.append(exc)

    t = threading.Thread(target=target)
    t.start()
    return t, out


@pytest.mark.parametrize("same_config", [True, False])
def test_shards_started_at_once_create_one_dataset_json(tmp_path, tiny_config, tiny_raw, monkeypatch, same_config):
    """Two runs starting together into a new folder: the second waits for the first's
    dataset.json, then joins it (a shard of the same config) or is refused (another config),
    never refused for the first's temporary file nor writing its own config over the first's
    (two datasets' items in one folder)."""
    root = tmp_path / "ds"
    root.mkdir()
    other = tiny_config if same_config else validate_config({**tiny_raw, "seed": 4})
    writing, real = threading.Event(), gen.atomic_write_text

    def slow_write(path, text):  # the first run, caught between its check and its rename
        if not writing.is_set():
            tmp = root / ".dataset.json.abc.json"  # with its temporary file written, or not yet
            if same_config:
                tmp.write_text(text[:10])
            writing.set()
            time.sleep(0.5)
            tmp.unlink(missing_ok=True)
        real(path, text)

    monkeypatch.setattr(gen, "atomic_write_text", slow_write)
    first, first_out = _in_a_thread(gen.prepare_output, root, tiny_config, [0], False)
    assert writing.wait(10)
    second, second_out = _in_a_thread(gen.prepare_output, root, other, [1], False)
    first.join()
    second.join()
    assert first_out == [root]
    if same_config:
        assert second_out == [root]
    else:
        assert isinstance(second_out[0], ValueError) and "holds another dataset" in str(second_out[0])
    assert json.loads((root / "dataset.json").read_text())["config"] == json.loads(json.dumps(tiny_config))


def test_a_run_ending_does_not_delete_another_runs_manifest_in_progress(tmp_path, tiny_config, monkeypatch):
    """A shard that ends (sweeping its interrupted items) while another shard writes the manifest
    leaves that write alone; a killed run's temporary manifest is still removed."""
    root = tmp_path / "ds"
    generate_dataset(tiny_config, root, 2, workers=0, progress=False)
    (root / ".manifest.parquet.killed.parquet").write_bytes(b"PAR1")
    writing, real = threading.Event(), pq.write_table

    def slow_write_table(table, where, **kw):
        real(table, where, **kw)
        writing.set()
        time.sleep(0.5)

    monkeypatch.setattr(pq, "write_table", slow_write_table)
    rebuild, out = _in_a_thread(rebuild_manifest, root)
    assert writing.wait(10)
    # What the other shard does when it ends: sweep its own unfinished items, rebuild the manifest.
    remove_incomplete(root, [1])
    rebuild_manifest(root)
    rebuild.join()
    assert len(out[0]) == 4 and sorted(load_manifest(root)["item"].unique()) == [0, 1]
    assert not list(root.glob(".manifest.parquet.*"))

def test_config_bounds_name_the_key(tiny_raw):
    for section, key, value, bound in [("detector", "blur_px", 1e6, "64"), ("render", "step_mm", 1e-7, "0.01"),
                                       ("rig", "pixel_spacing_mm", 1e-6, "0.005")]:
        raw = json.loads(json.dumps(tiny_raw))
        raw.setdefault(section, {})[key] = value
        with pytest.raises(ValueError, match=rf"{section}\.{key}.*{bound}"):
            validate_config(raw)
    with pytest.raises(ValueError, match=r"seed.*2\^63"):
        validate_config({**tiny_raw, "seed": 2**80})
    assert validate_config({**tiny_raw, "seed": 2**63 - 1})["seed"] == 2**63 - 1


def test_items_over_the_memory_budget_are_refused_before_writing(tmp_path, tiny_raw, monkeypatch):
    monkeypatch.setenv("STEREODRR_MEMORY_BUDGET", "64M")
    tiny_raw["rig"]["detector_px"] = [2048, 2048]
    with pytest.raises(ValueError, match=r"2048 x 2048 px.*over the budget of 64\.0 MiB"):
        generate_dataset(validate_config(tiny_raw), tmp_path / "ds", 2, workers=0, progress=False)
    assert not (tmp_path / "ds").exists()

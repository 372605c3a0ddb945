import errno
import json
import os

import cv2
import numpy as np
import pytest
import torch

from stereodrr.dataset import (
    complete_items,
    generate_dataset,
    item_dir,
    item_rig,
    load_manifest,
    parse_shard,
    rebuild_manifest,
    sample_item,
    shard_indices,
    validate_config,
)
from stereodrr.dataset import generate as gen
from stereodrr.dataset.manifest import sha256_file


def _checksums(root):
    m = load_manifest(root)
    return dict(zip(zip(m["item"], m["view"]), m["sha256"]))


def _pixel_differences(a, b):
    """Per differing image: pixels that differ and the largest difference (for the failure message)."""
    out = {}
    for f in load_manifest(a)["file"]:
        x, y = (cv2.imread(str(r / f), cv2.IMREAD_UNCHANGED).astype(np.int64) for r in (a, b))
        if not np.array_equal(x, y):
            out[f] = (int((x != y).sum()), int(np.abs(x - y).max()))
    return out


def _leftovers(root):
    """Every file on disk that no complete item or dataset file accounts for."""
    listed = {str(root / f) for f in load_manifest(root)["file"]}
    listed |= {str(root / "dataset.json"), str(root / "manifest.parquet")}
    listed |= {str(item_dir(root, i) / "item.json") for i in complete_items(root)}
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and str(p) not in listed)


def test_generate_writes_images_and_manifest(tmp_path, tiny_config):
    report = generate_dataset(tiny_config, tmp_path / "ds", 3, workers=0, progress=False)
    assert (report.requested, report.written, report.skipped, report.failed) == (3, 3, 0, {})
    m = load_manifest(tmp_path / "ds")
    assert len(m) == report.manifest_rows == 6 and list(m["view"][:2]) == ["left", "right"]
    for _, row in m.iterrows():
        path = tmp_path / "ds" / row["file"]
        assert sha256_file(path) == row["sha256"] and path.stat().st_size == row["bytes"]
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint16 and img.shape == (24, 32) and img.max() == 65535
        cam = item_rig(sample_item(tiny_config, int(row["item"])), np.zeros(3))[row["view"]]
        assert np.array_equal(np.reshape(row["K"], (3, 3)), cam.K)
        assert np.array_equal(np.reshape(row["R"], (3, 3)), cam.R) and np.array_equal(row["t"], cam.t)
        assert np.allclose(np.reshape(row["P"], (3, 4)), cam.P, rtol=1e-12)
    assert _leftovers(tmp_path / "ds") == []


def test_tiff32_stores_counts(tmp_path, tiny_raw):
    tiny_raw["output"] = {"format": "tiff32"}
    tiny_raw["detector"] = {"noise": "none", "photons_per_pixel": 1000}
    generate_dataset(validate_config(tiny_raw), tmp_path / "ds", 1, workers=0, progress=False)
    row = load_manifest(tmp_path / "ds").iloc[0]
    img = cv2.imread(str(tmp_path / "ds" / row["file"]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.float32 and row["scale"] == 1.0
    # Noise-free counts lie between I0 exp(-L_max) and I0 (air).
    assert 0 < img.min() < img.max() <= 1000 * (1 + 1e-6)


def test_noise_free_counts_keep_the_bit_depth(tmp_path, tiny_raw):
    """``noise: none`` with a ``bit_depth``: the expected counts rounded and clipped like the
    noisy ones (they were stored far above 4095 for 12 bits, unrounded in tiff32)."""
    import warnings

    tiny_raw["detector"] = {"noise": "none", "photons_per_pixel": 1e5, "bit_depth": 12}
    for fmt in ("png16", "tiff32"):
        tiny_raw["output"] = {"format": fmt}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # Python's own: each text once per place
            generate_dataset(validate_config(tiny_raw), tmp_path / fmt, 2, workers=0, progress=False)
        # The clipped air is said once per view, not once per item.
        said = sorted(str(w.message).split(":")[0] for w in caught if "saturate at 4095 counts" in str(w.message))
        assert said == ["view 'left'", "view 'right'"], [str(w.message) for w in caught]
        row = load_manifest(tmp_path / fmt).iloc[0]
        img = cv2.imread(str(tmp_path / fmt / row["file"]), cv2.IMREAD_UNCHANGED).astype(np.float64)
        assert row["scale"] == 1.0 and img.max() == 4095 and np.array_equal(img, np.round(img))
        assert 0 < img.min() < 4095  # the body is darker than the clipped air


def test_an_edited_subject_file_is_read_again_and_refused_on_resume(tmp_path, tiny_raw):
    """The subject's CT is cached per process on its path and its file's time and size, and a
    dataset records its input files' SHA-256: an edited CT renders anew (it rendered the old
    one in the same process), and --resume refuses to mix the two into one dataset."""
    from stereodrr.phantoms import torso_phantom
    from stereodrr.volume import save_volume

    ct = torso_phantom(size=(24, 18, 16), spacing=(12.0, 12.0, 12.0))
    save_volume(ct, tmp_path / "ct.mha")
    tiny_raw["subject"] = {"kind": "volume", "path": str(tmp_path / "ct.mha")}
    config = validate_config(tiny_raw)
    generate_dataset(config, tmp_path / "a", 1, workers=0, progress=False)
    save_volume(ct.with_data(ct.data * 0.5 - 500.0), tmp_path / "ct.mha")
    os.utime(tmp_path / "ct.mha", ns=(1, 1))  # even on a file system with a coarse clock
    generate_dataset(config, tmp_path / "b", 1, workers=0, progress=False)
    assert _checksums(tmp_path / "a") != _checksums(tmp_path / "b")
    with pytest.raises(ValueError, match=r"ct\.mha has changed since this dataset was started"):
        generate_dataset(config, tmp_path / "a", 2, resume=True, workers=0, progress=False)
    assert complete_items(tmp_path / "a") == [0]


def test_shards_and_workers_give_the_same_bytes(tmp_path, tiny_config):
    generate_dataset(tiny_config, tmp_path / "full", 5, workers=0, progress=False)
    for k in range(3):
        r = generate_dataset(tiny_config, tmp_path / "sharded", 5, shard=(k, 3), workers=0, progress=False)
        assert r.requested == len(shard_indices(5, (k, 3)))
    assert _checksums(tmp_path / "full") == _checksums(tmp_path / "sharded")
    assert shard_indices(10, (1, 4)) == [1, 5, 9]
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/2", "1-2", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    for bad_shard in ((3, 2), (0, 0), (-1, 2)):  # the Python API checks what parse_shard does
        with pytest.raises(ValueError, match=r"shard: expected \(i, n\) with 0 <= i < n"):
            generate_dataset(tiny_config, tmp_path / "bad", 4, shard=bad_shard, workers=0, progress=False)
    with pytest.raises(ValueError, match=r"validate_config .* section\(s\) \['detector'"):
        generate_dataset({"seed": 1, "rig": {}}, tmp_path / "bad", 1, workers=0, progress=False)
    assert not (tmp_path / "bad").exists()


def test_resume_skips_complete_items(tmp_path, tiny_config):
    generate_dataset(tiny_config, tmp_path / "ds", 2, workers=0, progress=False)
    before = _checksums(tmp_path / "ds")
    r = generate_dataset(tiny_config, tmp_path / "ds", 4, resume=True, workers=0, progress=False)
    assert (r.skipped, r.written, r.manifest_rows) == (2, 2, 8)
    after = _checksums(tmp_path / "ds")
    assert all(after[k] == v for k, v in before.items())
    generate_dataset(tiny_config, tmp_path / "ref", 4, workers=0, progress=False)
    assert after == _checksums(tmp_path / "ref")
    # Resumed with a smaller n: the items past it stay listed, and the run says so.
    with pytest.warns(UserWarning, match=r"holds 2 item\(s\) at or past n = 2 \(first: 2\) from an earlier"):
        r = generate_dataset(tiny_config, tmp_path / "ds", 2, resume=True, workers=0, progress=False)
    assert (r.skipped, r.written, r.manifest_rows) == (2, 0, 8)


def test_output_folder_holding_another_dataset_is_refused(tmp_path, tiny_config, tiny_raw):
    out = tmp_path / "ds"
    generate_dataset(tiny_config, out, 2, workers=0, progress=False)
    with pytest.raises(ValueError, match="pass --resume"):
        generate_dataset(tiny_config, out, 2, workers=0, progress=False)
    tiny_raw["rig"]["stereo_angle_deg"] = [4, 6]
    for resume in (False, True):
        with pytest.raises(ValueError, match="another dataset.*'rig.stereo_angle_deg'"):
            generate_dataset(validate_config(tiny_raw), out, 2, resume=resume, workers=0, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no stereodrr dataset"):
        generate_dataset(tiny_config, tmp_path / "other", 1, workers=0, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        generate_dataset(tiny_config, tmp_path / "file", 1, workers=0, progress=False)
    # A new shard may join the same dataset without --resume.
    generate_dataset(tiny_config, out, 6, shard=(2, 3), workers=0, progress=False)
    assert complete_items(out) == [0, 1, 2, 5]


def test_full_disk_mid_item_leaves_no_partial_files(tmp_path, tiny_config, monkeypatch):
    real_write = gen._write_image
    calls = []

    def disk_fills(path, image):
        calls.append(path)
        if "0000001" in str(path) and path.name.startswith("right"):
            # As a full disk would: part of the file is on disk when the write fails.
            path.with_name(f".{path.name}.partial").write_bytes(b"\x89PNG")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, image)

    monkeypatch.setattr(gen, "_write_image", disk_fills)
    r = generate_dataset(tiny_config, tmp_path / "ds", 3, workers=0, progress=False)
    assert list(r.failed) == [1] and "No space left" in r.failed[1] and r.written == 2
    assert not item_dir(tmp_path / "ds", 1).exists()
    assert sorted(load_manifest(tmp_path / "ds")["item"].unique()) == [0, 2]
    assert _leftovers(tmp_path / "ds") == []
    monkeypatch.setattr(gen, "_write_image", real_write)
    r = generate_dataset(tiny_config, tmp_path / "ds", 3, resume=True, workers=0, progress=False)
    assert (r.written, r.skipped, r.failed) == (1, 2, {})
    generate_dataset(tiny_config, tmp_path / "ref", 3, workers=0, progress=False)
    assert _checksums(tmp_path / "ds") == _checksums(tmp_path / "ref")


def test_killed_worker_leftovers_are_ignored_then_redone(tmp_path, tiny_config):
    out = tmp_path / "ds"
    generate_dataset(tiny_config, out, 3, workers=0, progress=False)
    ref = _checksums(out)
    # What a worker killed mid-item leaves: one finished image, a temporary file, no record;
    # and a killed manifest rewrite leaves its temporary file.
    d = item_dir(out, 2)
    (d / "item.json").unlink()
    (d / ".right.png.abc123.png").write_bytes(b"\x89PNG\r\n")
    (out / ".manifest.parquet.xyz.parquet").write_bytes(b"PAR1")
    assert sorted(rebuild_manifest(out)["item"].unique()) == [0, 1]
    r = generate_dataset(tiny_config, out, 3, resume=True, workers=0, progress=False)
    assert (r.skipped, r.written) == (2, 1)
    assert _checksums(out) == ref and _leftovers(out) == []


def test_corrupt_item_record_is_named(tmp_path, tiny_config):
    out = tmp_path / "ds"
    generate_dataset(tiny_config, out, 1, workers=0, progress=False)
    (item_dir(out, 0) / "item.json").write_text("{")
    with pytest.raises(ValueError, match="item.json: malformed JSON at line 1"):
        rebuild_manifest(out)
    (item_dir(out, 0) / "item.json").write_text(json.dumps({"schema": "x"}))
    with pytest.raises(ValueError, match="expected schema"):
        rebuild_manifest(out)


def test_local_dask_cluster(tmp_path, tiny_config):
    generate_dataset(tiny_config, tmp_path / "serial", 3, workers=0, progress=False)
    environ = dict(os.environ)
    r = generate_dataset(tiny_config, tmp_path / "dask", 3, workers=1, progress=False)
    assert (r.written, r.failed) == (3, {})
    assert _checksums(tmp_path / "dask") == _checksums(tmp_path / "serial"), _pixel_differences(
        tmp_path / "dask", tmp_path / "serial")
    # distributed's Nanny sets OMP_NUM_THREADS=1 etc. in the parent before spawning: put back
    assert dict(os.environ) == environ


def test_phantom_markers_ground_truth(tmp_path):
    from pathlib import Path

    from stereodrr.geometry import transform_points
    from stereodrr.phantoms import load_phantom

    phantom_file = Path(__file__).resolve().parents[2] / "phantoms" / "lego_cube.json"
    cfg = validate_config({"subject": {"kind": "phantom", "path": str(phantom_file), "voxel_mm": 3.0},
                           "rig": {"detector_px": [48, 48], "pixel_spacing_mm": 3.0}})
    generate_dataset(cfg, tmp_path / "ds", 2, workers=0, progress=False)
    truth = load_phantom(phantom_file).marker_table()
    m = load_manifest(tmp_path / "ds")
    for _, row in m.iterrows():
        assert list(row["marker_ids"]) == list(truth["marker_id"])
        T = np.reshape(row["pose"], (4, 4))
        xyz = np.reshape(row["markers_xyz"], (-1, 3))
        assert np.allclose(xyz, transform_points(T, truth[["x", "y", "z"]].to_numpy()), atol=1e-9)
        # Exact projected centres: x ~ P (X, 1).
        P = np.reshape(row["P"], (3, 4))
        h = np.c_[xyz, np.ones(len(xyz))] @ P.T
        assert np.allclose(np.reshape(row["markers_uv"], (-1, 2)), h[:, :2] / h[:, 2:], atol=1e-8)
        assert len(row["markers_in_image"]) == len(xyz)


@pytest.mark.slow
def test_running_scheduler_address(tmp_path, tiny_config):
    from distributed import LocalCluster

    generate_dataset(tiny_config, tmp_path / "serial", 4, workers=0, progress=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        r = generate_dataset(tiny_config, tmp_path / "ds", 4, workers=cluster.scheduler_address, progress=False)
    assert (r.written, r.failed) == (4, {})
    assert _checksums(tmp_path / "ds") == _checksums(tmp_path / "serial"), _pixel_differences(
        tmp_path / "ds", tmp_path / "serial")


def test_items_of_a_dead_worker_are_swept_at_the_end(tmp_path, tiny_config, monkeypatch):
    """A worker killed mid-item cannot delete its partial folder (Dask then reports the task
    failed); the run removes it once all of its tasks have ended."""
    real_item = gen.write_item

    def worker_dies(root, config, index, threads=None):
        if index == 1:  # the net effect of a worker killed after writing one view
            folder = item_dir(root, index)
            folder.mkdir(parents=True)
            (folder / "left.png").write_bytes(b"\x89PNG partial")
            raise RuntimeError("KilledWorker: worker died while running the task")
        return real_item(root, config, index, threads)

    monkeypatch.setattr(gen, "write_item", worker_dies)
    r = generate_dataset(tiny_config, tmp_path / "ds", 3, workers=0, progress=False)
    assert list(r.failed) == [1] and "KilledWorker" in r.failed[1]
    assert not item_dir(tmp_path / "ds", 1).exists() and _leftovers(tmp_path / "ds") == []
    assert sorted(load_manifest(tmp_path / "ds")["item"].unique()) == [0, 2]


def test_render_device(tmp_path, tiny_raw):
    for bad in ("gpu", "mps"):  # mps: no float64, which the spheres and the detector chain use
        tiny_raw["render"] = {"device": bad}
        with pytest.raises(ValueError, match="render.device: expected 'cpu', 'cuda' or 'cuda:N'"):
            validate_config(tiny_raw)
    tiny_raw["render"] = {"device": "cuda"}
    cfg = validate_config(tiny_raw)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            generate_dataset(cfg, tmp_path / "ds", 1, workers=0, progress=False)
        return
    # On a CUDA machine the GPU render matches the CPU one to float32 rounding.
    tiny_raw["detector"] = {"noise": "none", "photons_per_pixel": 1000}
    tiny_raw["output"] = {"format": "tiff32"}
    gpu = gen.render_item(validate_config(tiny_raw), 0)
    tiny_raw["render"] = {"device": "cpu"}
    cpu = gen.render_item(validate_config(tiny_raw), 0)
    for name in cpu.views:
        assert np.allclose(gpu.views[name].image, cpu.views[name].image, rtol=1e-4)


def test_malformed_dataset_json_is_named_with_its_line(tmp_path, tiny_config):
    root = tmp_path / "ds"
    root.mkdir()
    (root / "dataset.json").write_text('{"config":\n  {"seed": 1,,}}\n')
    with pytest.raises(ValueError, match=r"dataset\.json is unreadable \(.*line 2, column 14.*\); not a stereodrr"):
        gen.prepare_output(root, tiny_config, [0], resume=False)
    (root / "dataset.json").write_text('{"no_config": 1}\n')
    with pytest.raises(ValueError, match=r"dataset\.json is unreadable; not a stereodrr dataset folder"):
        gen.prepare_output(root, tiny_config, [0], resume=False)


@pytest.mark.parametrize("change, match", [
    ({"pose": {"translation_mm": [[5000, 5000], [0, 0], [0, 0]]}}, "off the 32 x 24 detector"),
    ({"rig": {"detector_px": [32, 24], "pixel_spacing_mm": 6.4, "sid_mm": [60, 60], "sdd_mm": [90, 90]}},
     "reaches the X-ray source"),
])
def test_a_rig_that_cannot_image_its_subject_is_refused_before_writing(tmp_path, tiny_raw, change, match):
    """A camera that sees nothing, or a source inside the subject, fails on the first item's
    geometry before the folder exists (it used to write the folder, then fail every item)."""
    tiny_raw.update(change)
    cfg = validate_config(tiny_raw)
    with pytest.raises(ValueError, match=match) as info:
        generate_dataset(cfg, tmp_path / "ds", 2, workers=0, progress=False)
    assert "\n" not in str(info.value) and not (tmp_path / "ds").exists()


"""SHA-256 of every result the command line makes, to show a refactoring changed no byte.

Runs, in a scratch folder, through ``python -m stereodrr`` (the package on ``PYTHONPATH``):

* ``demo`` at seed 0: default (noisy 16-bit frames), ``--no-noise`` and ``--preset fluoro80``
  (images, the calibrated ``rig.json``, ``report.json`` without its timings and file paths);
* ``calibrate`` on the default and the fluoro80 demo's images (``report.json`` as above,
  ``rig.json``);
* ``render`` of a CT (the built-in torso voxelized by ``stereodrr phantom``) and of the
  ``lego_stereo`` phantom, monochromatic and ``--kvp 80 --preset fluoro80``;
* ``dataset --n 3 --workers 0`` with a monochromatic and a polychromatic detector;
* ``register`` of a coarse torso CT to its own DRRs from a pose 2 deg / 3 mm off, once with Adam
  then BFGS (mncc, wncc) and once BFGS only (gncc, with a mask), a small fixed iteration budget
  (``pose.json``, ``iterations.csv`` without its ``time_s`` column).

Usage::

    PYTHONPATH=. python experiments/result_hashes.py --work /tmp/hashes --write experiments/result_hashes.json
    PYTHONPATH=. python experiments/result_hashes.py --work /tmp/hashes --check experiments/result_hashes.json

``--check`` exits 1 naming every hash that differs. ``--only demo render`` runs some groups.
Takes a few minutes on two cores (the demos dominate).

``result_hashes.json`` holds the hashes of main after the fused CPU ray set-up (2026-12-06; torch
2.13.0+cpu, numba 0.68.1, numpy 2.4.6 on an AMD EPYC machine). That change moved the rays'
directions by float rounding (at most 2.4e-7 of a component): 51 of the 75 results changed, the
renders by at most 7e-6 of their range, noisy frames in 0.4 % of their pixels, and the two
fixed-budget registrations, which stop before converging, by up to 0.03 mm and 0.015°. Earlier
refactorings (the imaging pipeline, the registration package) reproduced every byte of the tree
before them. Other library versions or another CPU may round differently: compare two trees on
one machine, as above (``--write`` with one, ``--check`` with the other).
The ``rig.json`` and ``report.json`` of the demos and calibrations do not depend on the core
count: the ball fits run OpenBLAS on one thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

# report.json keys that are timings or paths of this run, not results.
VOLATILE = {"seconds", "render_seconds", "files", "images"}

DATASET_MONO = {
    "seed": 7,
    "subject": {"kind": "torso", "size": [48, 36, 32], "spacing_mm": 6.0},
    "rig": {"pixel_spacing_mm": 1.6, "detector_px": [[96, 80]]},
    "detector": {"photons_per_pixel": [1e3, 1e4], "electronic_sigma": [0, 2], "blur_px": [0, 1]},
    "render": {"mode": "joseph"},
}
DATASET_POLY = {
    "seed": 3,
    "subject": {"kind": "phantom", "path": "lego_stereo", "voxel_mm": 1.5},
    "rig": {"kind": "arc", "views": 3, "pixel_spacing_mm": 1.2, "detector_px": [[96, 96]],
            "sid_mm": 750, "sdd_mm": 1200},
    "pose": {"rotation_deg": [[-3, 3], [-3, 3], [-3, 3]], "translation_mm": [[-2, 2], [-2, 2], [-2, 2]]},
    "detector": {"photons_per_pixel": 1e4, "spectrum": {"kvp": 80, "filter": "Al:2.5"}, "layer": "csi",
                 "scatter": "grid", "bit_depth": 16, "offset": 100, "focal_spot_blur_px": [0, 0.5]},
}
DATASET_MARKERS = {
    "seed": 11,
    "subject": {"kind": "phantom", "path": "lego_stereo", "voxel_mm": 1.5},
    "rig": {"pixel_spacing_mm": 1.0, "detector_px": [[112, 96]], "sid_mm": 750, "sdd_mm": 1200},
    "pose": {"rotation_deg": [[-3, 3], [-3, 3], [-3, 3]], "translation_mm": [[-2, 2], [-2, 2], [-2, 2]]},
    "detector": {"noise": "none", "blur_px": [0, 0.7], "subpixels": 4},
    "output": {"format": "tiff32"},
}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def csv_sha(path: Path, drop: str = "time_s") -> str:
    """SHA-256 of a CSV without the column ``drop`` (a timing)."""
    rows = [line.split(",") for line in path.read_text().splitlines()]
    col = rows[0].index(drop)
    return hashlib.sha256("\n".join(",".join(r[:col] + r[col + 1:]) for r in rows).encode()).hexdigest()


def report_sha(path: Path) -> str:
    """SHA-256 of a report.json without its timings and paths (canonical JSON)."""
    r = {k: v for k, v in json.loads(path.read_text()).items() if k not in VOLATILE}
    return hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()


def fresh(folder: Path) -> Path:
    """``folder``, emptied (a run's outputs refuse a folder that holds an older run's)."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def run(*args: str, ok: tuple[int, ...] = (0,)) -> None:
    cmd = [sys.executable, "-m", "stereodrr", *args]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    print(f"  {time.perf_counter() - t0:6.1f} s  stereodrr {' '.join(args)}", file=sys.stderr)
    if p.returncode not in ok:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")


def files(folder: Path, key: str, patterns: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pat in patterns:
        for f in sorted(folder.glob(pat)):
            rel = f.relative_to(folder).as_posix()
            out[f"{key}/{rel}"] = report_sha(f) if f.name == "report.json" else sha(f)
    return out


def demo(work: Path) -> dict[str, str]:
    out = {}
    for key, extra in (("demo", []), ("demo_nonoise", ["--no-noise"]), ("demo_fluoro80", ["--preset", "fluoro80"])):
        d = fresh(work / key)
        run("demo", "-o", str(d), "--seed", "0", *extra)
        out.update(files(d, key, ("images/*.tif", "rig.json", "report.json")))
    return out


def calibrate(work: Path) -> dict[str, str]:
    out = {}
    for key, demo_dir, extra in (("calibrate", "demo", []), ("calibrate_fluoro80", "demo_fluoro80",
                                                               ["--preset", "fluoro80"])):
        src = work / demo_dir
        if not (src / "images").is_dir():
            raise SystemExit(f"calibrate: run the demo group first ({src} missing)")
        d = fresh(work / key)
        run("calibrate", "--images", str(src / "images/left.tif"), str(src / "images/right.tif"),
            "--phantom", "lego_stereo", "--rig", str(src / "nominal_rig.json"), "-o", str(d), *extra, ok=(0, 1))
        out.update(files(d, key, ("rig.json", "report.json")))
    return out


def render(work: Path) -> dict[str, str]:
    out = {}
    ct = fresh(work / "ct")
    run("phantom", "torso", "--spacing", "4", "--supersample", "2", "--format", "mha", "-o", str(ct))
    out.update(files(ct, "ct", ("hu.mha",)))
    rig = work / "render_rig.json"
    run("rig", "--angle", "5", "--size", "160", "128", "--pixel", "1.2", "-o", str(rig))
    poly = ["--kvp", "80", "--preset", "fluoro80"]
    for key, src, extra in (("render_ct", ["--ct", str(ct / "hu.mha")], []),
                            ("render_ct_fluoro80", ["--ct", str(ct / "hu.mha")], poly),
                            ("render_phantom", ["--phantom", "lego_stereo", "--voxel", "1.0"], []),
                            ("render_phantom_fluoro80", ["--phantom", "lego_stereo", "--voxel", "1.0"], poly)):
        d = fresh(work / key)
        run("render", *src, "--rig", str(rig), "-o", str(d), "--device", "cpu", *extra)
        out.update(files(d, key, ("*.tif", "*.png", "markers_px.csv", "detector.json")))
    return out


def dataset(work: Path) -> dict[str, str]:
    out = {}
    for key, cfg in (("dataset_mono", DATASET_MONO), ("dataset_poly", DATASET_POLY),
                     ("dataset_markers", DATASET_MARKERS)):
        path = work / f"{key}.json"
        path.write_text(json.dumps(cfg))
        d = fresh(work / key)
        run("dataset", "--config", str(path), "-o", str(d), "--n", "3", "--workers", "0", "--quiet")
        out.update(files(d, key, ("items/*/*/*.png", "items/*/*/*.tiff", "items/*/*/item.json")))
    return out


def register(work: Path) -> dict[str, str]:
    out = {}
    ct = fresh(work / "register_ct")
    run("phantom", "torso", "--spacing", "6", "--supersample", "1", "--format", "mha", "-o", str(ct))
    rig = work / "register_rig.json"
    run("rig", "--angle", "5", "--size", "96", "80", "--pixel", "1.6", "-o", str(rig))
    images = fresh(work / "register_images")
    run("render", "--ct", str(ct / "hu.mha"), "--rig", str(rig), "-o", str(images), "--device", "cpu",
        "--mode", "trilinear")
    center = [0.0, 0.0, 0.0]
    init = {"schema": "stereodrr.pose/1", "center": center, "rotvec_deg": [2.0, -1.0, 1.5],
            "translation_mm": [3.0, -2.0, 1.0]}
    (work / "register_init.json").write_text(json.dumps(init))
    truth = {"schema": "stereodrr.pose/1", "center": center, "rotvec_deg": [0.0, 0.0, 0.0],
             "translation_mm": [0.0, 0.0, 0.0]}
    (work / "register_truth.json").write_text(json.dumps(truth))
    mask = work / "register_mask.tif"
    m = np.ones((80, 96), np.float32)
    m[:8] = 0.0
    sitk.WriteImage(sitk.GetImageFromArray(m), str(mask))
    common = ["--ct", str(ct / "hu.mha"), "--rig", str(rig), "--images", str(images / "left.tif"),
              str(images / "right.tif"), "--init", str(work / "register_init.json"), "--truth",
              str(work / "register_truth.json"), "--device", "cpu", "--threads", "1", "--quiet"]
    for key, extra in (("register_adam", ["--levels", "4:15,2:10:2,1:6:1x1x1:1vox:wncc:lbfgs"]),
                       ("register_lbfgs", ["--levels", "2:8:2:lbfgs,1:6:1:lbfgs", "--similarity", "gncc",
                                           "--masks", str(mask), str(mask)])):
        d = fresh(work / key)
        run("register", *common, "-o", str(d), *extra, ok=(0, 3))
        out[f"{key}/pose.json"] = sha(d / "pose.json")
        out[f"{key}/iterations.csv"] = csv_sha(d / "iterations.csv")
    return out


GROUPS = {"demo": demo, "calibrate": calibrate, "render": render, "dataset": dataset, "register": register}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/stereodrr_hashes", help="scratch folder (emptied first)")
    p.add_argument("--only", nargs="*", choices=list(GROUPS), default=list(GROUPS))
    p.add_argument("--write", help="write the hashes to this JSON file")
    p.add_argument("--check", help="compare with the hashes in this JSON file")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("STEREODRR_MEMORY_BUDGET", "0.9")
    hashes: dict[str, str] = {}
    for g in args.only:
        print(f"{g}:", file=sys.stderr)
        hashes.update(GROUPS[g](work))
    if args.write:
        Path(args.write).write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    if args.check:
        want = json.loads(Path(args.check).read_text())
        bad = [k for k in sorted(hashes) if want.get(k) != hashes[k]] + [
            k for k in sorted(want) if k.split("/")[0] in {h.split("/")[0] for h in hashes} and k not in hashes]
        for k in bad:
            print(f"DIFFERS {k}: {want.get(k)} -> {hashes.get(k)}")
        print(f"{len(hashes) - len([k for k in bad if k in hashes])} of {len(hashes)} hashes equal")
        return 1 if bad else 0
    print(json.dumps(hashes, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

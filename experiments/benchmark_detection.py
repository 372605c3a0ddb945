"""Ball detection per 1024² demo image: this tree against an older commit, timed in one run (issue 25).

Renders the demo's two views once (``stereodrr demo`` at seed 0: LEGO stereo phantom, 5° rig,
1024 x 1024 x 0.15 mm, 1e4 photons/px, read-out noise 2, blur 0.5 px, 16-bit frames), then times
``detect_markers`` on each image as the calibration calls it, in child processes: one imports
this tree's ``stereodrr``, the other the ``--old`` commit's (``git archive`` into a scratch
folder), alternating ``--repeat`` times so both see the same load. Prints, per image and
version, the median seconds, the ratio old / new, and the detection RMS against the exact
projected centres (the renderer's), and the largest centre difference between the versions.

    PYTHONPATH=. python experiments/benchmark_detection.py [--old f697fa7] [--repeat 3]

f697fa7 is main before issue 25's speed-up (ball fits with OpenBLAS on every core).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ("left", "right")


def render(folder: Path) -> None:
    """The demo's images, nominal rig and exact centres into ``folder``."""
    from stereodrr.calib.scene import flat_panel, perturbed_rig, render_calibration_images
    from stereodrr.geometry import StereoRig, save_rig
    from stereodrr.phantoms import load_phantom

    nominal = StereoRig.convergent(5.0, 750.0, 1200.0, 0.15, 1024, 1024)
    shots = render_calibration_images(load_phantom("lego_stereo"), perturbed_rig(nominal, seed=0),
                                      flat_panel(1e4, 2.0, 0.5, aperture="area"), seed=0)
    save_rig(nominal, folder / "nominal_rig.json")
    for n in VIEWS:
        np.save(folder / f"{n}.npy", shots.images[n])
        np.save(folder / f"{n}_centres.npy", shots.centres_px[n])
    (folder / "kind.txt").write_text(shots.kind)


def worker(folder: Path) -> None:
    """In a child process (``PYTHONPATH`` picks the version): time each image's detection and
    print the seconds and centres as JSON."""
    from stereodrr.calib.detect import detect_markers
    from stereodrr.calib.pipeline import _expected_diameters_px
    from stereodrr.geometry import load_rig
    from stereodrr.phantoms import load_phantom

    dmin, dmax = _expected_diameters_px(load_phantom("lego_stereo").marker_table(), load_rig(folder / "nominal_rig.json"))
    kind = (folder / "kind.txt").read_text()
    out = {}
    for n in VIEWS:
        image = np.load(folder / f"{n}.npy")
        t0 = time.perf_counter()
        det = detect_markers(image, kind=kind, diameter_px=(dmin, dmax), aperture="area")
        out[n] = {"seconds": time.perf_counter() - t0, "uv": det[["u", "v"]].to_numpy().tolist()}
    print(json.dumps(out))


def _rms_vs_truth(uv: np.ndarray, truth: np.ndarray) -> float:
    """RMS distance of each exact centre to its nearest detection (px)."""
    d = np.linalg.norm(truth[:, None, :] - uv[None, :, :], axis=-1).min(axis=1)
    return float(np.sqrt(np.mean(d**2)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="f697fa7", help="the commit to compare with (default f697fa7)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each version (alternating)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(Path(args.worker))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench_detect_") as tmp:
        folder, old_tree = Path(tmp) / "images", Path(tmp) / "old"
        folder.mkdir()
        old_tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        render(folder)
        trees = {"old": old_tree, "new": ROOT}
        runs: dict[str, list[dict]] = {k: [] for k in trees}
        for _ in range(args.repeat):
            for version, tree in trees.items():
                env = {**os.environ, "PYTHONPATH": str(tree)}
                p = subprocess.run([sys.executable, __file__, "--worker", str(folder)], env=env, capture_output=True,
                                   text=True, check=True)
                runs[version].append(json.loads(p.stdout.strip().splitlines()[-1]))
        load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
        print(f"ball detection per 1024^2 demo image, {args.repeat} runs each (medians), old = {args.old}; "
              f"{os.cpu_count()} cores, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
        for n in VIEWS:
            truth = np.load(folder / f"{n}_centres.npy")
            t = {k: float(np.median([r[n]["seconds"] for r in v])) for k, v in runs.items()}
            uv = {k: np.asarray(v[-1][n]["uv"]) for k, v in runs.items()}
            moved = (float(np.abs(uv["old"] - uv["new"]).max()) if uv["old"].shape == uv["new"].shape
                     else float("nan"))
            print(f"  {n:5s}  old {t['old']:6.2f} s  new {t['new']:6.2f} s  ratio old/new {t['old'] / t['new']:5.2f}  "
                  f"RMS vs exact centres old {_rms_vs_truth(uv['old'], truth):.4f} px, new "
                  f"{_rms_vs_truth(uv['new'], truth):.4f} px; largest centre difference {moved:.2g} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Speed of the distortion stage on one core (issue 23: fit a 1024^2 grid in under 10 s, undistort
a 1024^2 frame in under 0.2 s).

A 1024^2 strong-field hex grid (the package's simulator, 1e4 photons/px) is fitted ``--repeats``
times (detection, lattice, curvature correction, both maps with their held-out scores). Each map
then corrects frames: the first frame builds the map's resampling operator (the exact inverse on
a grid every 8 px, the quadrilateral overlaps; cached on the map), the next ``--frames`` reuse it
(numpy uint16 in, float64 out; and a torch float32 tensor). Points: ``--points`` random points
through ``undistort_points`` and back through ``distort_points``. Times are wall-clock and
CPU (this process), the median of the repeats, single-threaded (OMP, torch); on a shared machine
the CPU time is the one core's work.

    PYTHONPATH=. python experiments/benchmark_distortion.py --out out/benchmark_distortion
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stereodrr.distortion import GridPlate, fit_maps, grid_image, intensifier_field, measure_grid  # noqa: E402
from stereodrr.fileio import atomic_path  # noqa: E402


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3, help="fits timed")
    ap.add_argument("--frames", type=int, default=10, help="frames timed after the first")
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--out", default="out/benchmark_distortion")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    n = args.size
    field = intensifier_field("strong", n, n)
    plate = GridPlate("hex", 32.0 * n / 1024, 16.0 * n / 1024, angle_deg=3.0)
    rows = []

    def add(what: str, wall: float, cpu: float, note: str = "") -> None:
        rows.append({"what": what, "wall_s": wall, "cpu_s": cpu, "note": note})
        print(f"{what:<56} {wall:8.3f} s wall {cpu:8.3f} s cpu  {note}", flush=True)

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, numpy {np.__version__}, "
          f"threads: torch {torch.get_num_threads()}, OMP {os.environ.get('OMP_NUM_THREADS')}")
    image = np.zeros((n, n), np.uint16)

    def simulate() -> None:
        image[:] = np.round(grid_image(field, plate, photons=1e4, seed=0) * 1e4)

    add(f"simulate the {n}^2 grid (grid_image, 1e4 photons)", *_time(simulate, 1))
    fitted = {}

    def fit() -> None:
        fitted["maps"], fitted["chosen"] = fit_maps(measure_grid(image))

    add(f"fit the {n}^2 grid (both maps, held-out choice)", *_time(fit, args.repeats),
        f"median of {args.repeats}")
    maps, chosen = fitted["maps"], fitted["chosen"]
    print(f"chosen: {chosen}")
    rng = np.random.default_rng(0)
    frames = [np.round(rng.poisson(image.astype(np.float64))).astype(np.uint16) for _ in range(3)]
    pts = rng.uniform(0, n - 1, (args.points, 2))
    for name, m in maps.items():
        add(f"{name}: first {n}^2 frame (builds the operator)", *_time(lambda m=m: m.undistort_image(frames[0]), 1))
        add(f"{name}: each further frame, numpy uint16 -> float64",
            *_time(lambda m=m: m.undistort_image(frames[1]), args.frames), f"median of {args.frames}")
        ft = torch.tensor(frames[2].astype(np.float32))
        add(f"{name}: each further frame, torch float32", *_time(lambda m=m, ft=ft: m.undistort_image(ft), args.frames),
            f"median of {args.frames}")
        add(f"{name}: undistort_points, {args.points} points", *_time(lambda m=m: m.undistort_points(pts), 3))
        p = m.undistort_points(pts)
        add(f"{name}: distort_points (Newton), {args.points} points", *_time(lambda m=m, p=p: m.distort_points(p), 3))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "benchmark_distortion.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.4f")
    print(f"wrote {out / 'benchmark_distortion.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

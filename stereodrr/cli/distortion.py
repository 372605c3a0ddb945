"""``stereodrr distortion``: measure an image intensifier's distortion from a perforated-plate image.

Finds the holes (hex or square lattice, bright or dark), fits the ideal lattice from the central
holes, fits a global polynomial map and XMALab's local weighted mean, scores both on held-out
holes and keeps the better (or the one ``--model`` names). Writes ``distortion.json`` (the map,
the lattice, every model's residuals) and ``distortion.png`` into the output folder, and prints
the residual RMS of each model and the choice.
"""

from __future__ import annotations

import argparse
import math
import time

from ..distortion import CORRECTIONS, FitOptions, fit_maps, measure_grid, save_distortion
from ..plot.distortion import plot_distortion
from ..trial import read_image
from ._args import input_file, integer, output_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("distortion", help="measure an image intensifier's distortion from a grid (perforated plate) image",
                       description="Detect the holes of a perforated-plate image, index their lattice, fit the ideal "
                                   "lattice from the central holes and fit correction maps (global polynomial and "
                                   "XMALab's local weighted mean), chosen by held-out holes. Writes distortion.json "
                                   "and distortion.png.")
    p.add_argument("--grid", required=True, metavar="GRID", help="the grid image (TIFF, PNG or JPEG; one grey channel)")
    p.add_argument("-o", "--output", default="out", help="output folder (default out)")
    p.add_argument("--lattice", choices=["auto", "hex", "square"], default="auto", help="the holes' lattice (default auto)")
    p.add_argument("--holes", choices=["auto", "bright", "dark"], default="auto",
                   help="the holes' polarity: bright in X-ray frames, dark in inverted exports (default auto)")
    p.add_argument("--model", choices=["auto", *CORRECTIONS], default="auto",
                   help="the correction kept: the lower held-out RMS (auto, the default) or the one named")
    d = FitOptions()
    p.add_argument("--neighbours", type=integer(5, 200, what="neighbour count"), default=d.lwm_neighbours,
                   help=f"neighbours of each local quadratic of the LWM map (default {d.lwm_neighbours})")
    p.add_argument("--folds", type=integer(2, 100, what="fold count"), default=d.folds,
                   help=f"cross-validation folds of the held-out residuals (default {d.folds})")
    p.add_argument("--seed", type=integer(0, 2**32 - 1, what="seed"), default=0, help="seed of the folds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = output_folder(args.output)
    grid_path = input_file(args.grid, "--grid", "grid image")
    image = read_image(grid_path)
    options = FitOptions(lattice=args.lattice, holes=args.holes, model=args.model, lwm_neighbours=args.neighbours,
                         folds=args.folds, seed=args.seed)
    meas = measure_grid(image, options, name=f"--grid {grid_path}")
    maps, chosen = fit_maps(meas, options)
    dmap = maps[chosen]
    # Everything is computed before anything is written: a failure leaves the folder as it was.
    out.mkdir(parents=True, exist_ok=True)
    save_distortion(dmap, out / "distortion.json")
    plot_distortion(dmap, out / "distortion.png", image=image, title=f"{grid_path.name}: {chosen} map")
    holes = meas.holes
    H, W = image.shape
    field = (f"field of view centre ({holes.field_center[0]:.1f}, {holes.field_center[1]:.1f}) radius "
             f"{holes.field_radius:.1f} px" if math.isfinite(holes.field_radius) else "no round field of view")
    rejected = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in holes.rejected.items() if n)
    print(f"grid {grid_path}: {W} x {H}, {meas.lattice.kind} lattice, spacing {meas.lattice.spacing:.2f} px, "
          f"{len(meas.recorded)} holes used of {len(holes)} fitted (rejected: {rejected or 'none'}; "
          f"{meas.outliers} off the lattice), {field}")
    for name, r in dmap.residuals.items():
        setting = f"degree {r['degree']}" if "degree" in r else f"{r['neighbours']} neighbours"
        print(f"{name:>10} ({setting}): residual RMS {r['rms_px']:.5f} px (max {r['max_px']:.4f}), "
              f"held-out RMS {r['heldout_rms_px']:.5f} px (max {r['heldout_max_px']:.4f})")
    why = "lower held-out RMS" if dmap.choice == "held-out" else "--model"
    print(f"choice: {chosen} ({why})")
    print(f"wrote {out / 'distortion.json'}, {out / 'distortion.png'} ({time.perf_counter() - t0:.1f} s)")
    return 0

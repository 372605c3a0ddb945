"""Calibration phantom design: how the number and spread of markers set the DLT's conditioning,
the calibrated cameras' error and the triangulation error they cause; and the LEGO stereo
phantom against the XMALab-style calibration cube.

Per design, a 5 deg convergent rig (SID 750, SDD 1200 mm, 0.3 mm pixels) images the markers;
Gaussian noise of 0.1 px per coordinate is added; the rig is calibrated by
:func:`stereodrr.calib.calibrate_rig` (linear DLT, then joint refinement). The calibrated rig is
judged on 200 test points filling the 60 mm measurement cube around the isocenter, projected
*without* noise, so every error below comes from the calibration alone:

- ``dlt_reprojection_px``: RMS distance between the calibrated and true projections of the
  test points (refined cameras; ``linear_reprojection_px`` for the linear DLT);
- ``triangulation_mm``: RMS 3D error of the test points triangulated with the calibrated
  cameras (optimal two-view method), split into depth and in-plane parts;
- ``condition``: condition number of the 11-parameter DLT in the units of the measurement
  volume (:func:`dlt_condition_number`); the larger of the two views.

Grid: markers uniform in a cube of half-width ``spread`` (10-40 mm) around the isocenter,
6-64 markers, several trials. Phantoms: the marker tables of ``phantoms/lego_stereo.json``
and ``phantoms/lego_cube.json`` (and 24 random balls of the cube, to compare at equal count),
centred on the isocenter.

    python experiments/phantom_design.py --out out/studies [--quick]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stereodrr.calib import calibrate_rig, split_error, triangulate
from stereodrr.fileio import atomic_path
from stereodrr.geometry import Camera, StereoRig, project_points
from stereodrr.phantoms import load_phantom
from stereodrr.plot.studies import plot_phantom_design

SEED = 11
RIG = dict(sid=750.0, sdd=1200.0, pixel_spacing=0.3, width=1024, height=1024)
SIGMA_PX = 0.1
COUNTS = [6, 8, 12, 16, 24, 32, 48, 64]
# Below ~10 mm (a sixth of the measurement volume) the refinement diverges (tens of seconds
# per fit, rarely a usable rig), so the grid starts there.
SPREADS = [10.0, 20.0, 30.0, 40.0]
TEST_HALF_WIDTH_MM = 30.0
N_TEST = 200
PHANTOM_DIR = Path(__file__).resolve().parents[1] / "phantoms"


def dlt_condition_number(camera: Camera, X: np.ndarray, center: np.ndarray, half_width_mm: float) -> float:
    """Condition number of the 11-parameter DLT of markers ``X`` ``(N, 3)`` seen by ``camera``,
    in the units of the measurement volume (a cube of ``half_width_mm`` about ``center``).

    World coordinates are taken relative to ``center`` in units of ``half_width_mm`` and pixels
    relative to the projected centre in units of the volume's image half-width, so ``P``'s
    entries are dimensionless and O(1); ``P`` is scaled to ``P[2, 3] = 1`` and ``J`` is the
    Jacobian of all marker projections w.r.t. the other 11 entries (central differences of
    :func:`stereodrr.geometry.project_points`). Returns ``s_max / s_min`` of ``J``. Markers that
    span a small part of the volume leave the perspective entries weakly determined (their
    columns shrink as the squared spread) and the number grows; adding markers of the same
    spread scales every column alike and leaves it unchanged (it lowers the error as 1/sqrt(N)
    instead).
    """
    P = camera.P
    c_uv, depth = camera.project(center[None])
    scale_px = camera.K[0, 0] * half_width_mm / depth[0]
    to_world = np.eye(4)
    to_world[:3, :3] *= half_width_mm
    to_world[:3, 3] = center
    to_norm = np.diag([1 / scale_px, 1 / scale_px, 1.0])
    to_norm[:2, 2] = -c_uv[0] / scale_px
    Pn = to_norm @ P @ to_world
    Pn = Pn / Pn[2, 3]
    Xn = (X - center) / half_width_mm
    cols = []
    for r, c in itertools.product(range(3), range(4)):
        if (r, c) == (2, 3):
            continue  # fixed at 1: the DLT's 11 parameters
        dP = np.zeros((3, 4))
        dP[r, c] = 1e-6
        cols.append(((project_points(Pn + dP, Xn)[0] - project_points(Pn - dP, Xn)[0]) / 2e-6).ravel())
    s = np.linalg.svd(np.stack(cols, axis=1), compute_uv=False)
    return float(s[0] / s[-1])


def evaluate(rig: StereoRig, markers: np.ndarray, rng: np.random.Generator, test: np.ndarray) -> dict:
    names = rig.names
    cams = [rig[n] for n in names]
    corr = {n: (markers, c.project(markers)[0] + rng.normal(0, SIGMA_PX, size=(len(markers), 2)))
            for n, c in zip(names, cams)}
    spread = np.linalg.svd(markers - markers.mean(axis=0), compute_uv=False) / np.sqrt(len(markers))
    row = {
        "n_markers": len(markers),
        "rms_radius_mm": float(np.sqrt(np.mean(np.sum((markers - markers.mean(axis=0)) ** 2, axis=1)))),
        "thinnest_axis_mm": float(spread[-1]),
        "condition": max(dlt_condition_number(c, markers, rig.isocenter, TEST_HALF_WIDTH_MM) for c in cams),
    }
    try:
        calib = calibrate_rig(corr, rig.cameras, refine=True)
    except ValueError as exc:  # a calibration too wrong to form a rig counts as failed (infinite error)
        return {**row, "failed": str(exc)[:100], **{k: np.inf for k in (
            "fit_rms_px", "dlt_reprojection_px", "linear_reprojection_px", "triangulation_mm", "depth_mm", "inplane_mm")}}
    true_uv = {n: c.project(test)[0] for n, c in zip(names, cams)}
    reproj = np.concatenate([np.linalg.norm(calib.rig[n].project(test)[0] - true_uv[n], axis=1) for n in names])
    linear = np.concatenate([np.linalg.norm(project_points(calib.views[n].P_linear, test)[0] - true_uv[n], axis=1)
                             for n in names])
    tri = triangulate(calib.rig.cameras, true_uv, method="optimal")
    depth, inplane = split_error(tri.points, test, cams)
    return {
        **row, "failed": "",
        "fit_rms_px": calib.rms_px,
        "dlt_reprojection_px": float(np.sqrt(np.mean(reproj**2))),
        "linear_reprojection_px": float(np.sqrt(np.mean(linear**2))),
        "triangulation_mm": float(np.sqrt(np.mean(np.sum((tri.points - test) ** 2, axis=1)))),
        "depth_mm": float(np.sqrt(np.mean(depth**2))),
        "inplane_mm": float(np.sqrt(np.mean(inplane**2))),
    }


def phantom_markers(name: str) -> np.ndarray:
    X = load_phantom(PHANTOM_DIR / f"{name}.json").marker_table()[["x", "y", "z"]].to_numpy()
    return X - X.mean(axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/studies", help="folder for the CSVs and phantom_design.png")
    ap.add_argument("--quick", action="store_true", help="fewer designs and trials")
    ap.add_argument("--trials", type=int, default=6, help="noise trials per design")
    args = ap.parse_args()
    counts, spreads, trials = (([6, 12, 24, 64], [10.0, 40.0], 2) if args.quick
                               else (COUNTS, SPREADS, args.trials))
    rig = StereoRig.convergent(5.0, **RIG)
    rng = np.random.default_rng(SEED)
    test = rig.isocenter + rng.uniform(-TEST_HALF_WIDTH_MM, TEST_HALF_WIDTH_MM, size=(N_TEST, 3))
    grid_rows = []
    for n, s, t in tqdm(list(itertools.product(counts, spreads, range(trials))), desc="design grid", unit="calib"):
        markers = rig.isocenter + rng.uniform(-s, s, size=(n, 3))
        grid_rows.append({"spread_mm": s, "trial": t, **evaluate(rig, markers, rng, test)})
    grid = pd.DataFrame(grid_rows)

    lego, cube = phantom_markers("lego_stereo"), phantom_markers("lego_cube")
    designs = {"LEGO stereo (24)": lambda: lego, f"cube ({len(cube)})": lambda: cube,
               "cube, 24 random balls": lambda: cube[rng.choice(len(cube), 24, replace=False)]}
    ph_rows = []
    n_ph = max(trials, 3) * 2
    for (name, pick), t in tqdm(list(itertools.product(designs.items(), range(n_ph))), desc="phantoms", unit="calib"):
        ph_rows.append({"design": name, "trial": t, **evaluate(rig, rig.isocenter + pick(), rng, test)})
    phantoms = pd.DataFrame(ph_rows)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("phantom_design_grid.csv", grid), ("phantom_design_phantoms.csv", phantoms)):
        with atomic_path(out / name) as p:
            df.to_csv(p, index=False, float_format="%.6g")
    fig = plot_phantom_design(grid, phantoms, out / "phantom_design.png")
    cols = ["condition", "dlt_reprojection_px", "triangulation_mm", "depth_mm", "inplane_mm"]
    print("grid (median over trials):")
    print(grid.groupby(["spread_mm", "n_markers"])[cols].median().reset_index()
          .to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("phantoms (median over trials):")
    print(phantoms.groupby("design", sort=False)[["n_markers", "rms_radius_mm", "thinnest_axis_mm"] + cols].median()
          .to_string(float_format=lambda v: f"{v:.4g}"))
    failed = grid[grid["failed"] != ""]
    if len(failed):
        print(f"{len(failed)} of {len(grid)} grid calibrations failed (counted as infinite error): "
              + ", ".join(f"{int(n)} markers +-{s:g} mm" for (n, s), _ in failed.groupby(["n_markers", "spread_mm"])))
    print(f"wrote {out / 'phantom_design_grid.csv'}, {out / 'phantom_design_phantoms.csv'} and {fig}")


if __name__ == "__main__":
    main()

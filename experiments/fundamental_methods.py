"""Fundamental-matrix methods under noise, outliers and few markers: the epipolar error of the
estimated F on held-out points, and where each method breaks.

Full factorial: the OpenCV methods of :func:`stereodrr.calib.estimate_fundamental` (8-point,
RANSAC, LMedS, MAGSAC, USAC_ACCURATE) x detection noise x outlier fraction x marker count,
several trials each. A 5 deg convergent rig (SID 750, SDD 1200 mm) images markers spread in a
60 mm cube around the isocenter; each image coordinate gets Gaussian noise, and a fraction of
the view-2 points is replaced by uniformly random pixels (wrong matches). F is scored by the
mean symmetric point-to-epipolar-line distance of 500 held-out points projected without noise,
so the score measures F itself: 0 for the true F. A method *breaks* in a cell when the median
score over the trials exceeds 1 px (the pass threshold of
:func:`stereodrr.calib.validate_epipolar`). Robust methods use an inlier threshold of
``max(1, 3 sigma)`` px.

    python experiments/fundamental_methods.py --out out/studies [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stereodrr.calib import F_METHODS, estimate_fundamental, symmetric_epipolar_distance
from stereodrr.fileio import atomic_path
from stereodrr.geometry import StereoRig
from stereodrr.plot.studies import plot_fundamental_methods

SEED = 7
RIG = dict(sid=750.0, sdd=1200.0, pixel_spacing=0.3, width=1024, height=1024)
NOISE = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]
OUTLIERS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
MARKERS = [8, 10, 12, 16, 24, 48, 96]
HALF_WIDTH_MM = 30.0
HELDOUT = 500
BREAK_PX = 1.0
# The slices drawn in the figure.
SLICE = dict(noise_px=0.25, outliers=0.2, markers=24)


def run_trial(rig: StereoRig, method: str, noise: float, outliers: float, n: int,
              rng: np.random.Generator, heldout: tuple[np.ndarray, np.ndarray], trial: int) -> dict:
    cam1, cam2 = rig[rig.names[0]], rig[rig.names[1]]
    X = rig.isocenter + rng.uniform(-HALF_WIDTH_MM, HALF_WIDTH_MM, size=(n, 3))
    p1 = cam1.project(X)[0] + rng.normal(0, noise, size=(n, 2))
    p2 = cam2.project(X)[0] + rng.normal(0, noise, size=(n, 2))
    n_out = int(round(outliers * n))
    bad = rng.choice(n, size=n_out, replace=False)
    p2[bad] = rng.uniform([0, 0], [cam2.width - 1, cam2.height - 1], size=(n_out, 2))
    row = {"method": method, "noise_px": noise, "outlier_fraction": outliers, "n_markers": n, "trial": trial}
    try:
        est = estimate_fundamental(p1, p2, method=method, threshold_px=max(1.0, 3.0 * noise), seed=trial)
    except (ValueError, cv2.error) as exc:  # no F (or an OpenCV assertion inside USAC): counts as broken
        return {**row, "heldout_px": np.inf, "method_used": method, "degenerate": False, "failed": str(exc)[:80],
                "inlier_recall": np.nan, "outliers_kept": np.nan}
    err = symmetric_epipolar_distance(est.F, *heldout)
    good = np.ones(n, bool)
    good[bad] = False
    return {**row, "heldout_px": float(np.mean(err)), "method_used": est.method_used,
            "degenerate": est.degeneracy is not None, "failed": "",
            "inlier_recall": float(est.inliers[good].mean()),
            "outliers_kept": float(est.inliers[bad].mean()) if n_out else 0.0}


def breakdown(df: pd.DataFrame) -> pd.DataFrame:
    """Per method: the fewest markers, the largest noise and the largest outlier fraction at
    which the median held-out error stays within 1 px, with the other factors at the slice values."""
    med = df.groupby(["method", "noise_px", "outlier_fraction", "n_markers"])["heldout_px"].median().reset_index()
    rows = []
    for method, g in med.groupby("method", sort=False):
        ok = g["heldout_px"] <= BREAK_PX

        def limit(col: str, fixed: dict, pick, ok=ok, g=g) -> float:
            m = ok & np.logical_and.reduce([g[k] == v for k, v in fixed.items()])
            vals = g.loc[m, col]
            return float(pick(vals)) if len(vals) else np.nan

        rows.append({
            "method": method,
            "min_markers_ok": limit("n_markers", {"noise_px": SLICE["noise_px"], "outlier_fraction": SLICE["outliers"]}, min),
            "max_noise_ok_px": limit("noise_px", {"outlier_fraction": SLICE["outliers"], "n_markers": SLICE["markers"]}, max),
            "max_outliers_ok": limit("outlier_fraction", {"noise_px": SLICE["noise_px"], "n_markers": SLICE["markers"]}, max),
            "cells_ok": int(ok.sum()), "cells": int(len(g)),
            "median_px_at_slice": float(g.loc[(g["noise_px"] == SLICE["noise_px"]) & (g["outlier_fraction"] == SLICE["outliers"])
                                              & (g["n_markers"] == SLICE["markers"]), "heldout_px"].iloc[0]),
        })
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/studies", help="folder for the CSVs and fundamental_methods.png")
    ap.add_argument("--quick", action="store_true", help="fewer levels and trials")
    ap.add_argument("--trials", type=int, default=5, help="trials per cell")
    args = ap.parse_args()
    noise, outl, markers, trials = NOISE, OUTLIERS, MARKERS, args.trials
    if args.quick:
        noise, outl, markers, trials = [0.0, 0.25, 1.0], [0.0, 0.2, 0.4], [8, 12, 24, 48], 2
    rig = StereoRig.convergent(5.0, **RIG)
    rng = np.random.default_rng(SEED)
    Xh = rig.isocenter + rng.uniform(-HALF_WIDTH_MM, HALF_WIDTH_MM, size=(HELDOUT, 3))
    heldout = (rig[rig.names[0]].project(Xh)[0], rig[rig.names[1]].project(Xh)[0])
    methods = list(F_METHODS)
    cells = list(itertools.product(methods, noise, outl, markers, range(trials)))
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method, s, o, n, t in tqdm(cells, desc="F methods", unit="fit"):
            rows.append(run_trial(rig, method, s, o, n, rng, heldout, t))
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "fundamental_methods.csv") as p:
        df.to_csv(p, index=False, float_format="%.6g")
    summary = breakdown(df)
    with atomic_path(out / "fundamental_breakdown.csv") as p:
        summary.to_csv(p, index=False, float_format="%.4g")
    slice_ = SLICE if not args.quick else dict(noise_px=0.25, outliers=0.2, markers=24)
    fig = plot_fundamental_methods(df, out / "fundamental_methods.png", slice_["noise_px"], slice_["outliers"],
                                   slice_["markers"])
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    failed = df[df["failed"] != ""]
    if len(failed):
        print(f"{len(failed)} fits raised (counted as broken): "
              + "; ".join(f"{m}: {g['failed'].iloc[0]} ({len(g)}x)" for m, g in failed.groupby("method")))
    fallback = df[df["method"] != df["method_used"]]
    if len(fallback):
        print(f"OpenCV ran another method in {len(fallback)} fits: "
              + ", ".join(f"{a} -> {b} (n <= {g['n_markers'].max()})"
                          for (a, b), g in fallback.groupby(["method", "method_used"])))
    print(f"wrote {out / 'fundamental_methods.csv'}, {out / 'fundamental_breakdown.csv'} and {fig}")


if __name__ == "__main__":
    main()

"""Figures of the calibration studies (experiments/angle_sweep.py, fundamental_methods.py,
phantom_design.py): each takes the study's result table and writes one PNG atomically."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..geometry import depth_inplane_ratio  # noqa: E402
from ._save import save_figure  # noqa: E402

__all__ = ["plot_angle_sweep", "plot_fundamental_methods", "plot_phantom_design"]


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    return save_figure(fig, path, dpi=110, bbox_inches="tight")


def _require(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing or df.empty:
        raise ValueError(f"{what}: expected a non-empty table with columns {columns}; missing {missing}")


def plot_angle_sweep(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Depth and in-plane RMS triangulation error against the stereo angle (log-log), one colour
    per noise level, with the analytic ``dZ = Z^2 dd / (B f)``; right: the depth / in-plane ratio
    with :func:`stereodrr.geometry.depth_inplane_ratio`."""
    _require(df, ["angle_deg", "sigma_px", "depth_rms_mm", "inplane_rms_mm", "analytic_dz_mm",
                  "ratio_depth_inplane"], "angle sweep")
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, df["sigma_px"].nunique()))
    for c, (sigma, g) in zip(colors, df.groupby("sigma_px")):
        g = g.sort_values("angle_deg")
        ax.plot(g["angle_deg"], g["analytic_dz_mm"], "-", color=c, lw=1)
        ax.plot(g["angle_deg"], g["depth_rms_mm"], "o", color=c, ms=4, label=f"depth, sigma={sigma:g} px")
        ax.plot(g["angle_deg"], g["inplane_rms_mm"], "s--", color=c, ms=3, lw=0.8, mfc="none")
    ax.plot([], [], "k-", lw=1, label="analytic dZ = Z^2 dd/(B f), dd = sqrt(2) sigma")
    ax.plot([], [], "ks--", ms=3, lw=0.8, mfc="none", label="in-plane (simulated)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("stereo angle (deg; 90 = biplanar)")
    ax.set_ylabel("RMS triangulation error (mm)")
    ax.axvspan(3, 7, color="0.9", zorder=0)
    ax.set_title("triangulation error vs stereo angle (grey: 3-7 deg band)")
    ax.legend(fontsize=7)
    ratio = df.groupby("angle_deg")["ratio_depth_inplane"].agg(["mean", "min", "max"]).reset_index()
    bx.errorbar(ratio["angle_deg"], ratio["mean"], yerr=[ratio["mean"] - ratio["min"], ratio["max"] - ratio["mean"]],
                fmt="o", ms=4, label="simulated (range over noise levels)")
    th = np.geomspace(ratio["angle_deg"].min(), ratio["angle_deg"].max(), 200)
    bx.plot(th, [depth_inplane_ratio(t) for t in th], "k-", lw=1, label="1 / (sqrt(2) sin(theta/2))")
    bx.set_xscale("log")
    bx.set_yscale("log")
    bx.set_xlabel("stereo angle (deg)")
    bx.set_ylabel("depth / in-plane RMS error")
    bx.set_title("depth / in-plane error ratio")
    bx.legend(fontsize=8)
    return _save(fig, path)


def plot_fundamental_methods(df: pd.DataFrame, path: str | os.PathLike[str], noise_px: float, outliers: float,
                             markers: int) -> Path:
    """Median held-out epipolar error of each F method along three slices of the factorial
    grid: against outlier fraction, noise and marker count, the other factors held at
    ``noise_px``, ``outliers``, ``markers``; the 1 px pass threshold dashed."""
    _require(df, ["method", "noise_px", "outlier_fraction", "n_markers", "heldout_px"], "fundamental methods")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True)
    slices = [
        ("outlier_fraction", (df["noise_px"] == noise_px) & (df["n_markers"] == markers),
         f"noise {noise_px:g} px, {markers} markers"),
        ("noise_px", (df["outlier_fraction"] == outliers) & (df["n_markers"] == markers),
         f"{outliers:.0%} outliers, {markers} markers"),
        ("n_markers", (df["noise_px"] == noise_px) & (df["outlier_fraction"] == outliers),
         f"noise {noise_px:g} px, {outliers:.0%} outliers"),
    ]
    for ax, (x, mask, title) in zip(axes, slices):
        sub = df[mask]
        for method, g in sub.groupby("method", sort=False):
            med = g.groupby(x)["heldout_px"].median()
            q = g.groupby(x)["heldout_px"].quantile([0.25, 0.75]).unstack()
            ax.plot(med.index, med.values, "o-", ms=4, label=method)
            ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.15)
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set_yscale("log")
        if x == "n_markers":
            ax.set_xscale("log")
            ticks = sorted(sub[x].unique())
            ax.set_xticks(ticks, [str(int(t)) for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(x.replace("_", " "))
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("held-out symmetric epipolar error (px, median, IQR)")
    axes[0].legend(fontsize=8)
    fig.suptitle("fundamental matrix estimation: where each method breaks (dashed: 1 px)")
    return _save(fig, path)


def plot_phantom_design(grid: pd.DataFrame, phantoms: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Marker count x spread: triangulation error and DLT condition number (left, middle), and
    the LEGO stereo phantom against the calibration cube (right)."""
    _require(grid, ["n_markers", "spread_mm", "triangulation_mm", "condition"], "phantom design grid")
    _require(phantoms, ["design", "triangulation_mm", "dlt_reprojection_px"], "phantom comparison")
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(16, 4.6))
    finite = grid["triangulation_mm"][np.isfinite(grid["triangulation_mm"])]
    ceiling = 1.5 * float(finite.max()) if len(finite) else 1.0
    for spread, g in grid.groupby("spread_mm"):
        med = g.groupby("n_markers")[["triangulation_mm", "condition"]].median()
        line, = ax.plot(med.index, med["triangulation_mm"].where(np.isfinite(med["triangulation_mm"])), "o-", ms=4,
                        label=f"spread +-{spread:g} mm")
        broken = med.index[~np.isfinite(med["triangulation_mm"])]
        ax.plot(broken, np.full(len(broken), ceiling), "x", color=line.get_color(), ms=8)
        bx.plot(med.index, med["condition"], "o-", ms=4, label=f"spread +-{spread:g} mm")
    ax.plot([], [], "kx", label="calibration failed (median)")
    ticks = sorted(grid["n_markers"].unique())
    for a, label in ((ax, "3D error of test points (mm, median)"), (bx, "DLT condition number (median)")):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xticks(ticks, [str(int(t)) for t in ticks])
        a.minorticks_off()
        a.set_xlabel("markers")
        a.set_ylabel(label)
        a.legend(fontsize=8)
    ax.set_title("triangulation error from the calibrated rig")
    bx.set_title("conditioning of the DLT")
    designs = list(dict.fromkeys(phantoms["design"]))
    data = [phantoms.loc[phantoms["design"] == d, "triangulation_mm"].to_numpy() for d in designs]
    cx.boxplot(data, showfliers=False)
    cx.set_xticks(range(1, len(designs) + 1), designs, rotation=15, fontsize=8)
    cx.set_yscale("log")
    cx.set_ylabel("3D error of test points (mm)")
    cx.set_title("phantoms (same rig and noise)")
    return _save(fig, path)

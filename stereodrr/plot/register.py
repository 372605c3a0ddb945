"""Registration figures: loss curve, per-view edge overlays, errors against iteration, and the
mono-vs-stereo study summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ._save import save_figure  # noqa: E402

__all__ = ["plot_loss", "plot_overlay", "plot_errors", "plot_registration_study", "plot_depth_information", "edge_map"]

_ERRORS = (("mtre_mm", "mTRE (mm)"), ("depth_error_mm", "depth error (mm)"),
           ("inplane_error_mm", "in-plane error (mm)"), ("rotation_error_deg", "rotation error (deg)"))


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    return save_figure(fig, path, dpi=120)


def _level_starts(history: pd.DataFrame) -> list[int]:
    return history.groupby("level")["iteration"].min().tolist()[1:]


def plot_loss(history: pd.DataFrame, path: str | os.PathLike[str], title: str = "registration loss") -> Path:
    """Total and per-view loss (``1 - similarity``) against iteration, pyramid levels marked."""
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.semilogy(history["iteration"], history["loss"].clip(lower=1e-8), "k-", lw=1.6, label="sum over views")
    for col in [c for c in history.columns if c.startswith("loss_")]:
        ax.semilogy(history["iteration"], history[col].clip(lower=1e-8), lw=0.9, label=col[5:])
    for i, it in enumerate(_level_starts(history)):
        ax.axvline(it, color="0.6", ls=":", label="next pyramid level" if i == 0 else None)
    ax.set(xlabel="iteration", ylabel="loss = 1 - similarity", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def edge_map(image: np.ndarray) -> np.ndarray:
    """Canny edges (``(H, W)`` bool) of an image scaled to 8 bits; thresholds from its Otsu level."""
    a = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    u8 = np.clip((a - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return cv2.Canny(cv2.GaussianBlur(u8, (3, 3), 0), 0.25 * otsu, 0.5 * otsu) > 0


def plot_overlay(targets: Mapping[str, np.ndarray], rendered: Mapping[str, np.ndarray],
                 path: str | os.PathLike[str], initial: Mapping[str, np.ndarray] | None = None,
                 title: str = "target with DRR edges") -> Path:
    """Per view: the target image with the edges of the registered DRR (green) and, when given,
    of the initial DRR (red)."""
    names = list(targets)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.4), constrained_layout=True, squeeze=False)
    for ax, name in zip(axes[0], names):
        t = np.asarray(targets[name], dtype=np.float64)
        lo, hi = np.percentile(t, [0.5, 99.5])
        rgb = np.repeat(np.clip((t - lo) / max(hi - lo, 1e-12), 0, 1)[..., None], 3, -1)
        if initial is not None:
            rgb[edge_map(initial[name])] = (1.0, 0.2, 0.2)
        rgb[edge_map(rendered[name])] = (0.1, 1.0, 0.1)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name + (" (red: initial, green: registered)" if initial is not None else " (green: registered)"),
                     fontsize=8)
        ax.set_axis_off()
    fig.suptitle(title)
    return _save(fig, path)


def plot_errors(history: pd.DataFrame, path: str | os.PathLike[str], title: str = "error against iteration") -> Path:
    """Errors against iteration when the history carries them (a known truth), otherwise the
    pose's distance from the final pose (rotation vector and translation components)."""
    has_truth = "mtre_mm" in history.columns
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), constrained_layout=True, sharex=True)
    if has_truth:
        for ax, (col, label) in zip(axes.ravel(), _ERRORS):
            ax.semilogy(history["iteration"], history[col].clip(lower=1e-4), "k-", lw=1.2)
            ax.set(ylabel=label)
        axes[0, 0].axhline(1.0, color="tab:red", ls="--", lw=0.8, label="success (mTRE < 1 mm)")
        axes[0, 0].legend(fontsize=8)
    else:
        last = history.iloc[-1]
        for ax, cols, label in ((axes[0, 0], ("rx_deg", "ry_deg", "rz_deg"), "rotation vector - final (deg)"),
                                (axes[0, 1], ("tx_mm", "ty_mm", "tz_mm"), "translation - final (mm)")):
            for c in cols:
                ax.plot(history["iteration"], history[c] - last[c], lw=1.0, label=c)
            ax.set(ylabel=label)
            ax.legend(fontsize=8)
        axes[1, 0].semilogy(history["iteration"], history["loss"].clip(lower=1e-8), "k-")
        axes[1, 0].set(ylabel="loss")
        axes[1, 1].plot(history["iteration"], history["lr_translation_mm"], label="translation step (mm)")
        axes[1, 1].plot(history["iteration"], history["lr_rotation_deg"], label="rotation step (deg)")
        axes[1, 1].set(ylabel="step size")
        axes[1, 1].legend(fontsize=8)
    for ax in axes.ravel():
        for it in _level_starts(history):
            ax.axvline(it, color="0.7", ls=":")
    for ax in axes[1]:
        ax.set(xlabel="iteration")
    fig.suptitle(title + ("" if has_truth else " (no truth given: pose relative to the result)"))
    return _save(fig, path)


def plot_registration_study(results: pd.DataFrame, path: str | os.PathLike[str], title: str = "") -> Path:
    """Study summary: per setup, the distributions of mTRE, depth, in-plane and rotation error
    (log scale, success threshold marked), with success rate and median time in the labels."""
    setups = list(dict.fromkeys(results["setup"]))
    labels = []
    for s in setups:
        r = results[results["setup"] == s]
        labels.append(f"{s}\n{100 * r['success'].mean():.0f}% ok\n{r['seconds'].median():.0f} s")
    fig, axes = plt.subplots(1, 4, figsize=(4 * 4, 4.6), constrained_layout=True)
    rng = np.random.default_rng(0)
    for ax, (col, label) in zip(axes, _ERRORS):
        data = [results.loc[results["setup"] == s, col].clip(lower=1e-3).to_numpy() for s in setups]
        ax.boxplot(data, showfliers=False)
        for i, d in enumerate(data):
            ax.plot(i + 1 + rng.uniform(-0.15, 0.15, len(d)), d, "o", ms=3, alpha=0.6)
        ax.set_yscale("log")
        ax.set_xticks(range(1, len(setups) + 1), labels, fontsize=8)
        ax.set_title(label)
        if col == "mtre_mm":
            ax.axhline(1.0, color="tab:red", ls="--", lw=0.8)
    fig.suptitle(title or "registration: single view vs stereo vs biplanar")
    return _save(fig, path)


def plot_depth_information(bounds: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Depth gain of a convergent pair over one view against stereo angle, one line per field fan
    angle (columns ``fan_deg, stereo_deg, depth_gain``, e.g. from ``experiments/depth_information.py``);
    the recommended 3-7 deg band, the sqrt(2) of two identical views and a 5x gain are marked."""
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for fan, g in bounds.groupby("fan_deg", sort=True):
        g = g.sort_values("stereo_deg")
        ax.loglog(g["stereo_deg"], g["depth_gain"], "o-", ms=3, label=f"field fan {fan:.1f} deg")
    ax.axvspan(3, 7, color="0.9", label="stereo 3-7 deg")
    ax.axhline(np.sqrt(2), color="0.4", ls=":", lw=1, label="two identical views")
    ax.axhline(5.0, color="tab:red", ls="--", lw=0.8, label="5x")
    ticks = [1, 1.41, 2, 3, 5, 10, 20, 50, 100]
    ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks([1, 3, 5, 7, 10, 20, 45, 90], ["1", "3", "5", "7", "10", "20", "45", "90"])
    ax.minorticks_off()
    ax.set(xlabel="stereo angle (deg)", ylabel="depth error bound: single / pair",
           title="Cramér–Rao depth gain of a convergent pair over one cone-beam view")
    ax.legend(fontsize=8)
    return _save(fig, path)

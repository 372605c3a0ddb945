"""Calibration figures: the stereo pair with detected markers and epipolar lines, and the 3D
error of every triangulated marker (depth vs in-plane, against the rig's prediction)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..calib.detect import attenuation_image  # noqa: E402
from ..geometry import epipolar_lines  # noqa: E402
from ._save import save_figure  # noqa: E402

__all__ = ["plot_stereo_pair", "plot_marker_errors"]


def _clip_line(line: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """End points of ``a u + b v + c = 0`` inside the image box, or None when it misses."""
    a, b, c = line
    pts = []
    for u in (-0.5, width - 0.5):
        if abs(b) > 1e-12:
            v = -(a * u + c) / b
            if -0.5 <= v <= height - 0.5:
                pts.append((u, v))
    for v in (-0.5, height - 0.5):
        if abs(a) > 1e-12:
            u = -(b * v + c) / a
            if -0.5 <= u <= width - 0.5:
                pts.append((u, v))
    return np.array(pts[:2]) if len(pts) >= 2 else None


def plot_stereo_pair(
    images: Mapping[str, np.ndarray],
    detections: Mapping[str, pd.DataFrame],
    identified: Mapping[str, pd.DataFrame],
    F: np.ndarray,
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Two views side by side (attenuation, markers bright): every detection circled, each
    identified marker labelled with its id, and the epipolar line of each marker of one view
    drawn in the other (``l2 = F x1``, ``l1 = F^T x2``).

    Args:
        images: the first two views' ``(H, W)`` images (any kind :func:`attenuation_image` reads).
        detections: view -> table with ``u, v``; identified: view -> table with ``marker_id, u, v``.
        F: ``(3, 3)`` with ``x2^T F x1 = 0`` between the first and the second view.
    """
    names = list(images)[:2]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.8))
    cmap = plt.get_cmap("tab20")
    for k, (ax, n) in enumerate(zip(axes, names)):
        a, _ = attenuation_image(images[n])
        lo, hi = np.percentile(a, [1, 99.8])
        ax.imshow(a, cmap="gray", vmin=lo, vmax=hi)
        H, W = a.shape
        other = names[1 - k]
        ids_other = identified[other]
        lines = epipolar_lines(F, ids_other[["u", "v"]].to_numpy(), which=2 if k == 0 else 1)
        for j, line in enumerate(lines):
            seg = _clip_line(line, W, H)
            if seg is not None:
                ax.plot(seg[:, 0], seg[:, 1], "-", lw=0.6, color=cmap(j % 20), alpha=0.8)
        det = detections[n]
        ax.plot(det["u"], det["v"], "o", ms=9, mfc="none", mec="yellow", mew=0.8, label="detections")
        for row in identified[n].itertuples():
            ax.annotate(str(row.marker_id), (row.u, row.v), xytext=(5, -5), textcoords="offset points",
                        color="cyan", fontsize=6)
        ax.set_xlim(-0.5, W - 0.5)
        ax.set_ylim(H - 0.5, -0.5)
        ax.set_title(f"{n}: {len(det)} detected, {len(identified[n])} identified; epipolar lines of {other}",
                     fontsize=9)
        ax.set_xlabel("u (px)")
        ax.set_ylabel("v (px)")
    axes[0].legend(loc="lower right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_marker_errors(errors: pd.DataFrame, path: str | os.PathLike[str], title: str = "",
                       heldout: pd.DataFrame | None = None) -> Path:
    """Per marker: signed depth error and in-plane error (mm) with the predicted depth standard
    deviation as a band; below, reprojection error (px) and crossing-line distance (mm).

    Args:
        errors: :func:`stereodrr.calib.triangulate.error_table` output (with the predicted columns).
        heldout: optional leave-one-out table of the same form, drawn as markers.
    """
    x = np.arange(len(errors))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    ax1.bar(x - 0.2, errors["depth_mm"], 0.4, label="depth (signed)", color="tab:red")
    ax1.bar(x + 0.2, errors["inplane_mm"], 0.4, label="in-plane", color="tab:blue")
    if "predicted_depth_mm" in errors:
        sd = errors["predicted_depth_mm"].to_numpy()
        ax1.fill_between(x, -sd, sd, step="mid", color="tab:red", alpha=0.12, label="predicted depth +-1 sd")
    if heldout is not None:
        ax1.plot(x, heldout["depth_mm"], "k_", ms=10, label="depth, marker left out of the DLT")
    ax1.axhline(0, color="k", lw=0.5)
    ax1.set_ylabel("3D error (mm)")
    rms = float(np.sqrt(np.mean(errors["error_mm"] ** 2)))
    ax1.set_title((title + "\n" if title else "") + f"triangulation RMS {rms:.4f} mm", fontsize=10)
    ax1.legend(fontsize=7, ncol=2)
    ax2.bar(x - 0.2, errors["reprojection_px"], 0.4, color="tab:green", label="reprojection RMS (px)")
    ax2.set_ylabel("reprojection (px)")
    ax3 = ax2.twinx()
    ax3.plot(x, errors["crossing_mm"], "o", color="tab:purple", ms=4, label="crossing-line distance (mm)")
    ax3.set_ylabel("crossing-line distance (mm)")
    ax2.legend(loc="upper left", fontsize=7)
    ax3.legend(loc="upper right", fontsize=7)
    ax2.set_xticks(x)
    ax2.set_xticklabels([str(i) for i in errors["id"]], fontsize=7)
    ax2.set_xlabel("marker id")
    fig.tight_layout()
    return save_figure(fig, path)

"""Distortion figures: the measured correction field over the grid image, the residual of every
hole under the chosen map, and the residuals of every model (in-sample and held-out)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..distortion import DistortionMap  # noqa: E402
from ._save import save_figure  # noqa: E402

__all__ = ["plot_distortion"]


def plot_distortion(dmap: DistortionMap, path: str | os.PathLike[str], image: np.ndarray | None = None,
                    title: str = "") -> Path:
    """Three panels: (1) the correction ``|undistort(q) - q|`` over the field with arrows (on the
    grid image when given), (2) each hole's residual vector under the chosen map, magnified,
    (3) the residual RMS of each model, at the holes and held out.

    Args:
        dmap: a map measured from a grid (``dmap.grid`` set).
        image: the grid image ``(H, W)``, drawn under panel 1.
    """
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.6))
    _plot_correction(fig, axes[0], dmap, image)
    _plot_hole_residuals(axes[1], dmap)
    _plot_model_residuals(axes[2], dmap)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _plot_correction(fig: plt.Figure, ax: plt.Axes, dmap: DistortionMap, image: np.ndarray | None) -> None:
    """Panel 1: the correction's magnitude over the field (on ``image`` when given), with arrows."""
    W, H = dmap.width, dmap.height
    step = max(W, H) / 48
    uu, vv = np.meshgrid(np.arange(0.0, W, step / 4), np.arange(0.0, H, step / 4))
    q = np.stack([uu, vv], -1)
    disp = dmap.undistort_points(q) - q
    mag = np.hypot(disp[..., 0], disp[..., 1])
    inside = np.ones(mag.shape, dtype=bool)
    if math.isfinite(dmap.field_radius):
        inside = np.hypot(uu - dmap.field_center[0], vv - dmap.field_center[1]) <= dmap.field_radius
    if image is not None:
        lo, hi = np.percentile(image, [1, 99.5])
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, extent=(-0.5, W - 0.5, H - 0.5, -0.5))
    im = ax.imshow(np.where(inside, mag, np.nan), extent=(-step / 8, W - step / 8, H - step / 8, -step / 8),
                   cmap="viridis", alpha=0.6 if image is not None else 1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, label="correction (px)")
    sub = (slice(4, None, 8), slice(4, None, 8))
    sel = inside[sub]
    ax.quiver(uu[sub][sel], vv[sub][sel], disp[sub][..., 0][sel], disp[sub][..., 1][sel], color="w",
              angles="xy", scale_units="xy", scale=0.25, width=0.003)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_title(f"correction field (arrows x4), max {np.nanmax(np.where(inside, mag, np.nan)):.2f} px", fontsize=9)
    ax.set_xlabel("u (px)")
    ax.set_ylabel("v (px)")


def _plot_hole_residuals(ax: plt.Axes, dmap: DistortionMap) -> None:
    """Panel 2: each hole's residual vector under the chosen map, magnified (empty without a grid)."""
    W, H = dmap.width, dmap.height
    if dmap.grid is not None:
        g = dmap.grid
        r = dmap.undistort_points(g.recorded) - g.ideal
        rm = np.hypot(r[:, 0], r[:, 1])
        gain = 0.5 * g.spacing_px / max(float(np.percentile(rm, 99)), 1e-9)
        ax.quiver(g.recorded[:, 0], g.recorded[:, 1], r[:, 0], r[:, 1], rm, angles="xy", scale_units="xy",
                  scale=1.0 / gain, cmap="magma_r", width=0.003)
        ax.plot(g.recorded[g.central, 0], g.recorded[g.central, 1], ".", ms=2, color="tab:blue",
                label="holes fitting the ideal lattice")
        ax.legend(loc="lower right", fontsize=7)
        ax.set_title(f"{dmap.model}: residual at {len(rm)} holes (x{gain:.0f}), RMS "
                     f"{math.sqrt(float(np.mean(rm ** 2))):.4f} px", fontsize=9)
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("u (px)")


def _plot_model_residuals(ax: plt.Axes, dmap: DistortionMap) -> None:
    """Panel 3: the residual RMS of each model, at the holes and held out."""
    names = list(dmap.residuals)
    x = np.arange(len(names))
    fit = [dmap.residuals[n]["rms_px"] for n in names]
    held = [dmap.residuals[n]["heldout_rms_px"] for n in names]
    ax.bar(x - 0.2, fit, 0.4, label="at the holes")
    ax.bar(x + 0.2, held, 0.4, label="held out")
    ax.set_xticks(x)
    ax.set_xticklabels([n + (" (chosen)" if n == dmap.model else "") for n in names])
    ax.set_ylabel("residual RMS (px)")
    ax.legend(fontsize=8)
    ax.set_title("residuals of each model", fontsize=9)

"""Bone-tracking figures: the rendered bone's outline on each view of a frame, and the per-frame
losses of a track."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ._save import save_figure  # noqa: E402
from .register import edge_map  # noqa: E402

__all__ = ["plot_track_overlay", "plot_track_losses", "outline"]


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    return save_figure(fig, path, dpi=110)


def _window(drr: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Rows and columns of the DRR's support grown by ``margin`` (the whole image without one)."""
    on = np.nonzero(drr > 1e-3 * max(float(drr.max()), 1e-30))
    if len(on[0]) == 0:
        return slice(None), slice(None)
    r0, r1 = max(0, on[0].min() - margin), min(drr.shape[0], on[0].max() + margin + 1)
    c0, c1 = max(0, on[1].min() - margin), min(drr.shape[1], on[1].max() + margin + 1)
    return slice(r0, r1), slice(c0, c1)


def outline(drr: np.ndarray, level: float = 0.05) -> np.ndarray:
    """``(H, W)`` bool: the boundary pixels of the DRR's support (above ``level`` times its maximum)."""
    on = (drr > level * max(float(drr.max()), 1e-30)).astype(np.uint8)
    return (on - cv2.erode(on, np.ones((3, 3), np.uint8))) > 0


def plot_track_overlay(images: Mapping[str, np.ndarray], drrs: Mapping[str, Sequence[np.ndarray] | np.ndarray],
                       path: str | os.PathLike[str], title: str = "", margin_px: int = 60,
                       labels: Sequence[str] | None = None) -> Path:
    """Per view, the frame around the bones with each rendered bone's edges on top.

    Args:
        images: per view the frame ``(H, W)`` (any contrast; shown with a percentile window).
        drrs: per view one DRR ``(H, W)`` or a list of them (one per bone), at the frame's size
            and the tracked pose (zeros where the bone does not project); each is drawn as its
            support's outline (solid) and its Canny edges (faint).
        path: PNG to write.
        title: figure title; margin_px: pixels shown around the bones' support.
        labels: one name per bone for the legend.
    """
    names = list(images)
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 6.4), constrained_layout=True, squeeze=False)
    colours = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00")
    for ax, name in zip(axes[0], names):
        layers = drrs[name]
        layers = [layers] if isinstance(layers, np.ndarray) else list(layers)
        total = np.sum([np.nan_to_num(d) for d in layers], axis=0) if layers else np.zeros_like(images[name])
        rows, cols = _window(total, margin_px)
        img = np.asarray(images[name], dtype=np.float64)[rows, cols]
        lo, hi = np.percentile(img, [1, 99.5])
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        for i, d in enumerate(layers):
            crop = np.nan_to_num(d)[rows, cols]
            if crop.max() <= 0:
                continue
            rgba = np.zeros((*crop.shape, 4))
            rgba[..., :3] = matplotlib.colors.to_rgb(colours[i % len(colours)])
            rgba[..., 3] = np.maximum(0.9 * outline(crop), 0.35 * edge_map(crop))
            ax.imshow(rgba)
            if labels is not None:
                ax.plot([], [], color=colours[i % len(colours)], label=labels[i])
        if labels:
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{name}  (rows {rows.start}-{rows.stop}, cols {cols.start}-{cols.stop})", fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_track_losses(losses: Mapping[str, np.ndarray], path: str | os.PathLike[str],
                      doubtful: Mapping[str, np.ndarray] | None = None, title: str = "tracking loss") -> Path:
    """Loss per frame (sum over views of ``1 - similarity``) of each bone, doubtful frames circled.

    Args:
        losses: bone -> ``(F,)`` (NaN for a failed frame).
        doubtful: bone -> ``(F,)`` booleans.
    """
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for name, loss in losses.items():
        f = np.arange(len(loss))
        line, = ax.plot(f, loss, "o-", label=name)
        if doubtful is not None and name in doubtful:
            d = np.asarray(doubtful[name], bool)
            ax.plot(f[d], np.asarray(loss)[d], "o", ms=12, mfc="none", color=line.get_color())
    ax.set(xlabel="frame", ylabel="loss = sum over views of 1 - similarity", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)

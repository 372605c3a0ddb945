"""Bead tracking figures: one frame's views with every detection, the matched beads coloured by
rigid body and labelled, and the reprojection residual of each triangulated bead (magnified)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..geometry import StereoRig  # noqa: E402
from ..track.beads import BeadTracking  # noqa: E402
from ._save import save_figure  # noqa: E402

__all__ = ["plot_bead_frame"]


def plot_bead_frame(images: Mapping[str, np.ndarray], tracking: BeadTracking, frame: int, rig: StereoRig,
                    path: str | os.PathLike[str], title: str = "", margin_px: int = 80,
                    residual_scale: float = 50.0) -> Path:
    """The views of one frame side by side, cropped to the beads (plus ``margin_px``): every
    detection circled in yellow, each matched bead circled in its body's colour (grey: no body)
    with its id, and a line from its detected centre towards its reprojected 3D position,
    ``residual_scale`` times longer than the residual.

    Args:
        images: camera name -> ``(H, W)`` frame (bright = air).
        tracking: :func:`~stereodrr.track.beads.track_beads` output; frame: its frame index.
        rig: the cameras the beads were triangulated with.
    """
    names = [n for n in tracking.cameras if n in images]
    points = tracking.points3d[(tracking.points3d["frame"] == frame) & tracking.points3d["x"].notna()]
    dets = tracking.detections[tracking.detections["frame"] == frame]
    cmap = plt.get_cmap("tab10")
    fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), 6.8), squeeze=False)
    for ax, n in zip(axes[0], names):
        img = np.asarray(images[n], dtype=np.float64)
        d = dets[dets["camera"] == n]
        uv = np.concatenate([d[["u", "v"]].to_numpy(), points[[f"u_{n}", f"v_{n}"]].dropna().to_numpy()])
        H, W = img.shape
        if len(uv):
            u0, v0 = np.maximum(uv.min(axis=0) - margin_px, 0).astype(int)
            u1, v1 = np.minimum(uv.max(axis=0) + margin_px, [W - 1, H - 1]).astype(int)
        else:
            u0, v0, u1, v1 = 0, 0, W - 1, H - 1
        crop = img[v0:v1 + 1, u0:u1 + 1]
        lo, hi = np.percentile(crop, [0.5, 99.5])
        ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi, extent=(u0 - 0.5, u1 + 0.5, v1 + 0.5, v0 - 0.5))
        ax.plot(d["u"], d["v"], "o", ms=12, mfc="none", mec="yellow", mew=0.7, label="detections")
        seen = points[points[f"u_{n}"].notna()]
        reproj = rig[n].project(seen[["x", "y", "z"]].to_numpy())[0] if len(seen) else np.zeros((0, 2))
        for row, r in zip(seen.itertuples(), reproj):
            colour = cmap(int(row.body) % 10) if row.body >= 0 else "0.6"
            u, v = getattr(row, f"u_{n}"), getattr(row, f"v_{n}")
            ax.plot(u, v, "o", ms=7, mfc="none", mec=colour, mew=1.4)
            ax.plot([u, u + residual_scale * (r[0] - u)], [v, v + residual_scale * (r[1] - v)], "-", color=colour, lw=1.2)
            ax.annotate(str(int(row.bead)), (u, v), xytext=(6, -6), textcoords="offset points", color=colour, fontsize=7)
        for b in sorted(set(seen["body"].astype(int))):
            ax.plot([], [], "o", mfc="none", mec=cmap(b % 10) if b >= 0 else "0.6", label=f"body {b}" if b >= 0 else "no body")
        residual = seen[f"residual_{n}"]
        ax.set_title(f"{n}, frame {frame}: {len(d)} detected, {len(seen)} matched; "
                     f"reprojection median {residual.median():.3f} px (lines x{residual_scale:g})", fontsize=9)
        ax.set_xlabel("u (px)")
        ax.set_ylabel("v (px)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=5, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)

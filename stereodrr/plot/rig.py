"""The rig in 3D: sources, detectors, central rays, isocenter and the phantom's markers.

Users of stereo and biplanar systems check a calibration first by looking at it: each source
(a dot) with its principal ray to its detector (a rectangle at the source-to-detector distance,
its first pixel row drawn thicker so a flipped or rotated panel shows), the isocenter, and the
marker balls. Several rigs (a nominal one and a calibrated one) are drawn side by side on the
same axes limits, so a source that moved or a detector that tilted is seen at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..geometry import Camera, StereoRig  # noqa: E402
from ._save import save_figure  # noqa: E402

__all__ = ["detector_corners", "plot_rig"]

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def detector_corners(camera: Camera) -> np.ndarray:
    """``(4, 3)`` world positions (mm) of the detector's corners, in the order pixel
    ``(0, 0)``, ``(W, 0)``, ``(W, H)``, ``(0, H)`` (pixel edges), on the detector plane at the
    camera's source-to-detector distance."""
    w, h = camera.width - 0.5, camera.height - 0.5
    uv1 = np.array([[-0.5, -0.5, 1.0], [w, -0.5, 1.0], [w, h, 1.0], [-0.5, h, 1.0]])
    x_cam = camera.sdd * (np.linalg.inv(camera.K) @ uv1.T).T  # z = sdd in the camera frame
    return (camera.R.T @ (x_cam - camera.t).T).T


def _draw(ax, rig: StereoRig, markers: np.ndarray | None) -> np.ndarray:
    """Draw one rig on a 3D axis; returns every point drawn (for common limits)."""
    points = [np.asarray(rig.isocenter, dtype=float)[None]]
    for i, name in enumerate(rig.names):
        cam = rig[name]
        colour = _COLOURS[i % len(_COLOURS)]
        c = cam.center
        corners = detector_corners(cam)
        principal = cam.center + cam.sdd * cam.principal_ray
        ring = np.vstack([corners, corners[:1]])
        ax.plot(*ring.T, color=colour, lw=1.0)
        ax.plot(*corners[:2].T, color=colour, lw=2.5)  # the first pixel row
        ax.plot(*np.vstack([c, principal]).T, color=colour, lw=0.8, ls="--")
        for corner in corners:
            ax.plot(*np.vstack([c, corner]).T, color=colour, lw=0.3, alpha=0.5)
        ax.scatter(*c, color=colour, s=25)
        ax.text(*c, f" {name}", color=colour, fontsize=8)
        points += [c[None], corners]
    iso = np.asarray(rig.isocenter, dtype=float)
    ax.scatter(*iso, color="k", marker="+", s=40)
    if markers is not None and len(markers):
        ax.scatter(*np.asarray(markers, dtype=float).T, color="0.3", s=4, depthshade=False)
        points.append(np.asarray(markers, dtype=float))
    ax.set_xlabel("x (mm, L)")
    ax.set_ylabel("y (mm, P)")
    ax.set_zlabel("z (mm, S)")
    return np.vstack(points)


def plot_rig(rigs: StereoRig | Mapping[str, StereoRig], path: str | os.PathLike[str], *,
             markers: np.ndarray | None = None, title: str = "") -> Path:
    """Draw one rig, or several side by side (e.g. ``{"nominal": a, "calibrated": b}``), in 3D.

    Args:
        rigs: a rig, or rigs by title (one panel each, the same axis limits).
        path: the PNG to write.
        markers: optional ``(N, 3)`` world positions (mm) of the phantom's balls.
        title: the figure's title.

    Returns:
        The path written.
    """
    panels = {"": rigs} if isinstance(rigs, StereoRig) else dict(rigs)
    if not panels:
        raise ValueError("rigs: expected at least one rig")
    fig = plt.figure(figsize=(5.5 * len(panels), 5.5))
    axes = [fig.add_subplot(1, len(panels), i + 1, projection="3d") for i in range(len(panels))]
    pts = np.vstack([_draw(ax, rig, markers) for ax, rig in zip(axes, panels.values())])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    mid, half = (lo + hi) / 2, (hi - lo).max() / 2 * 1.05
    for ax, name in zip(axes, panels):
        ax.set_xlim(mid[0] - half, mid[0] + half)
        ax.set_ylim(mid[1] - half, mid[1] + half)
        ax.set_zlim(mid[2] - half, mid[2] + half)
        ax.set_box_aspect((1, 1, 1))
        ax.view_init(elev=20, azim=-60)
        if name:
            ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95) if title else (0, 0, 1, 1))  # the panels' titles below the figure's
    return save_figure(fig, path)

"""Three orthogonal maximum-intensity projections of a volume (marker centres overlaid) and
the three central slices."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..phantoms.voxelize import VoxelizedPhantom  # noqa: E402
from ..volume import Volume  # noqa: E402
from ._save import save_figure  # noqa: E402

__all__ = ["plot_mips", "plot_voxelized"]


def plot_mips(volume: Volume, path: str | os.PathLike[str], title: str = "", markers: pd.DataFrame | None = None,
              window: tuple[float, float] | None = None) -> Path:
    """Save axial, coronal and sagittal maximum-intensity projections of ``volume`` as a PNG,
    with the central slices below them.

    The projections are maxima along the array axes k, j, i. Panels are drawn in world mm
    (x = L, y = P, z = S) for an identity direction, else in ``index * spacing`` mm; anterior
    up in axial panels, superior up in the others. Marker centres (``x, y, z`` columns,
    world mm) are mapped to the same axes and circled on the projections.

    Args:
        volume: any volume (e.g. HU).
        path: PNG to write (atomically).
        title: figure title.
        markers: optional ground-truth table.
        window: display range; default the volume's 0.5 and 100 percentiles of the MIPs.

    Returns:
        The written path.
    """
    data = volume.data.detach().float().cpu()
    nx, ny, nz = volume.size
    # (name, reduce axis of the (Z, Y, X) array, index axes drawn horizontally / vertically)
    views = [("axial", 0, (0, 1)), ("coronal", 1, (0, 2)), ("sagittal", 2, (1, 2))]
    mips = [data.amax(ax).numpy() for _, ax, _ in views]
    mids = [data.select(ax, n // 2).numpy() for (_, ax, _), n in zip(views, (nz, ny, nx))]
    # Axes in mm: world coordinates for an identity direction, index * spacing otherwise.
    ident = np.allclose(volume.direction, np.eye(3))
    names = ("x (L)", "y (P)", "z (S)") if ident else ("i", "j", "k")
    start = volume.origin if ident else np.zeros(3)
    ext = [(start[a] - 0.5 * volume.spacing[a], start[a] + (n - 0.5) * volume.spacing[a]) for a, n in enumerate((nx, ny, nz))]
    if window is None:
        allv = np.concatenate([m.ravel() for m in mips])
        window = (float(np.percentile(allv, 0.5)), float(allv.max()))
    mk = None
    if markers is not None and len(markers):
        mk = np.asarray(volume.world_to_index(markers[["x", "y", "z"]].to_numpy(np.float64))) * volume.spacing + start
    fig, axes = plt.subplots(2, 3, figsize=(15, 10))
    for row, (images, kind) in enumerate(((mips, "maximum"), (mids, "central slice"))):
        for ax, img, (view, red, (h, v)) in zip(axes[row], images, views):
            (h0, h1), (v0, v1) = ext[h], ext[v]
            # Row r of the image is v index r; the axial panel is flipped so anterior is up,
            # the others keep superior up.
            ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], extent=(h0, h1, v0, v1),
                      origin="lower", interpolation="nearest")
            if view == "axial":
                ax.set_ylim(v1, v0)
            if mk is not None and row == 0:
                ax.scatter(mk[:, h], mk[:, v], s=60, facecolors="none", edgecolors="tab:red", linewidths=0.8)
            ax.set_title(f"{view} {kind} ({'ijk'[2 - red]} axis)" if row == 0 else f"{view} {kind}")
            ax.set_xlabel(f"{names[h]} mm")
            ax.set_ylabel(f"{names[v]} mm")
            ax.set_aspect("equal")
    fig.suptitle(title or "maximum-intensity projections")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_voxelized(vox: VoxelizedPhantom, path: str | os.PathLike[str], name: str = "phantom") -> Path:
    """The MIP figure of a voxelized phantom (HU, with its markers), titled with ``name``."""
    return plot_mips(vox.hu, path, title=f"{name}: HU MIPs ({vox.energy_kev:g} keV)", markers=vox.markers)

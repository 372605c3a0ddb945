"""Three orthogonal maximum-intensity projections of a volume, with marker centres overlaid."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .._io import atomic_path  # noqa: E402
from ..volume import Volume  # noqa: E402

__all__ = ["plot_mips"]


def plot_mips(volume: Volume, path: str | os.PathLike[str], title: str = "", markers: pd.DataFrame | None = None,
              window: tuple[float, float] | None = None) -> Path:
    """Save axial, coronal and sagittal maximum-intensity projections of ``volume`` as a PNG.

    The projections are maxima along the array axes k, j, i. Panels are drawn in mm along the
    index axes (``index * spacing``; with an identity direction these are world x = L, y = P,
    z = S offsets from the origin), superior / posterior up. Marker centres (``x, y, z``
    columns, world mm) are mapped to the same axes and circled.

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
    mips = {"axial (max over k)": data.amax(0).numpy(), "coronal (max over j)": data.amax(1).numpy(),
            "sagittal (max over i)": data.amax(2).numpy()}
    sx, sy, sz = volume.spacing
    nx, ny, nz = volume.size
    ident = np.allclose(volume.direction, np.eye(3))
    names = ("x (L)", "y (P)", "z (S)") if ident else ("i", "j", "k")
    ext = [(-0.5 * s, (n - 0.5) * s) for n, s in ((nx, sx), (ny, sy), (nz, sz))]
    # (MIP, index axes drawn horizontally / vertically, keep superior up)
    panels = [
        ("axial (max over k)", (0, 1), False),
        ("coronal (max over j)", (0, 2), True),
        ("sagittal (max over i)", (1, 2), True),
    ]
    if window is None:
        allv = np.concatenate([m.ravel() for m in mips.values()])
        window = (float(np.percentile(allv, 0.5)), float(allv.max()))
    mk = None
    if markers is not None and len(markers):
        mk = np.asarray(volume.world_to_index(markers[["x", "y", "z"]].to_numpy(np.float64))) * volume.spacing
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    for ax, (key, (h, v), flip) in zip(axes, panels):
        img = mips[key]
        (h0, h1), (v0, v1) = ext[h], ext[v]
        # Row r of the MIP is v index r, drawn at v = r * spacing; the axial panel is flipped so
        # that anterior is up, the others keep superior up.
        ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], extent=(h0, h1, v0, v1),
                  origin="lower", interpolation="nearest")
        if not flip:
            ax.set_ylim(v1, v0)
        if mk is not None:
            ax.scatter(mk[:, h], mk[:, v], s=60, facecolors="none", edgecolors="tab:red", linewidths=0.8)
        ax.set_title(key)
        ax.set_xlabel(f"{names[h]} mm")
        ax.set_ylabel(f"{names[v]} mm")
        ax.set_aspect("equal")
    fig.suptitle(title or "maximum-intensity projections")
    fig.tight_layout()
    p = Path(path)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return p

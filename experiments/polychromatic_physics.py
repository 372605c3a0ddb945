"""The same phantom at 60 keV monochromatic and at 80 kVp polychromatic with scatter: images, a
line profile through a steel ball, and how well the balls' centres are located on each.

Scene: the LEGO stereo phantom (ABS bricks voxelized, 2 mm steel balls analytic) inside a 100 mm
water cylinder (a patient-like background that hardens the beam and scatters), the left view of
the 5 deg convergent rig (SID 750, SDD 1200 mm, 0.3 mm pixels). Models:

* ``mono60``: one line at 60 keV, ideal detector, no scatter -- today's monochromatic render;
* ``poly80``: 80 kVp W (12 deg) with Al:2.5 + Cu:0.1, 600 um CsI, scatter behind a 10:1 grid
  (the ``fluoro80`` preset), noise-free so that only physics moves the centres;
  ``poly80_noscatter`` the same without scatter (beam hardening only).

Marker centres are detected with :func:`stereodrr.calib.detect_markers` on the ``-log`` image
(``-log``); for the polychromatic images also with the beam's own transmission curve in the ball
fit (``fitted_curve``: scatter removed by :func:`~stereodrr.imaging.beam.remove_scatter`,
then ``transmission=ball_transmission(detector)``) and on the metal thickness of
:func:`~stereodrr.imaging.beam.metal_thickness`. Errors are against the exact projections
and, to tell physics from detection on this background, against the centres found on the
monochromatic image (``vs_mono``). Writes ``polychromatic_markers.csv`` (summary),
``polychromatic_markers_per_ball.csv``, ``polychromatic_profile.csv`` and the figure.

    python experiments/polychromatic_physics.py --out out/studies [--size 512] [--figure docs/figures/polychromatic.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stereodrr.calib.detect import detect_markers
from stereodrr.fileio import atomic_path
from stereodrr.geometry import StereoRig
from stereodrr.imaging import (
    Balls,
    DetectorModel,
    Scene,
    Voxels,
    ball_transmission,
    detector_preset,
    metal_thickness,
    remove_scatter,
    render_polychromatic,
)
from stereodrr.phantoms import VoxelGrid, load_phantom, voxelize
from stereodrr.volume import mu_to_hu

ROOT = Path(__file__).resolve().parents[1]


def scene(size: int, voxel_mm: float):
    """HU volume (phantom in a water cylinder), spheres, the left camera."""
    ph = load_phantom(ROOT / "phantoms" / "lego_stereo.json")
    vox = voxelize(ph, voxel_mm, energy_kev=60.0, markers="carve", grid=VoxelGrid(margin_mm=30.0), progress=False)
    hu = mu_to_hu(vox.mu.data, 60.0)
    # Water cylinder (axis along the phantom's z) filling the air of the grid: a 100 mm background.
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in vox.mu.size], indexing="ij"), -1).reshape(-1, 3)
    xyz = vox.mu.index_to_world(ijk.astype(np.float64)).reshape(*vox.mu.size, 3).transpose(2, 1, 0, 3)
    c = vox.mu.center
    inside = (xyz[..., 0] - c[0]) ** 2 + (xyz[..., 1] - c[1]) ** 2 <= 50.0**2
    hu = torch.where(torch.as_tensor(inside) & (hu < -500), torch.zeros_like(hu), hu)
    m = ph.marker_arrays(60.0)
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, 0.3 * 1024 / size, size, size, isocenter=c)
    return vox.mu.with_data(hu), (m.centers, m.diameters, [mk.material.name for mk in ph.markers]), rig["left"]


def centres(image: np.ndarray, exact: np.ndarray, dpx: tuple[float, float], transmission=None) -> np.ndarray:  # noqa: ANN001
    """``(N, 2)`` detected centre nearest each exact projection inside the image (8 px margin)."""
    found = detect_markers(image, kind="line_integral", diameter_px=dpx,
                           transmission=transmission)[["u", "v"]].to_numpy()
    h, w = image.shape
    inside = (exact[:, 0] > 8) & (exact[:, 0] < w - 9) & (exact[:, 1] > 8) & (exact[:, 1] < h - 9)
    return np.array([found[np.argmin(np.linalg.norm(found - e, axis=1))] for e in exact[inside]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="out/studies")
    ap.add_argument("--size", type=int, default=512, help="detector pixels per side (pitch scaled to keep the field)")
    ap.add_argument("--voxel", type=float, default=0.5, help="phantom voxel mm")
    ap.add_argument("--figure", default=None, help="figure path (default <out>/polychromatic.png)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    hu, spheres, cam = scene(a.size, a.voxel)
    exact = cam.project(spheres[0])[0]
    poly = detector_preset("fluoro80").with_(photons=None, electronic_sigma=0.0, detector_blur_px=0.0)
    models = {"mono60": DetectorModel(name="mono60"), "poly80": poly, "poly80_noscatter": poly.with_(scatter=None)}
    target = Scene((Voxels(hu, "hu"),), Balls.of(spheres[0], spheres[1], spheres[2], 60.0))  # CT in HU, exact balls
    with torch.no_grad():
        imgs = {k: render_polychromatic(target, [cam], m)["view0"].numpy().astype(np.float64)
                for k, m in models.items()}
    mag = cam.sdd / 750.0
    d = 2.0 * mag / float(cam.pixel_spacing[0])
    dpx = (0.6 * d, 1.6 * d)
    found = {("mono60", "-log"): centres(imgs["mono60"], exact, dpx)}
    for k in ("poly80", "poly80_noscatter"):
        found[(k, "-log")] = centres(imgs[k], exact, dpx)
        found[(k, "fitted_curve")] = centres(remove_scatter(imgs[k], models[k], cam), exact, dpx,
                                             ball_transmission(models[k]))
        found[(k, "metal_thickness")] = centres(metal_thickness(imgs[k], models[k], cam, window_px=int(4 * d) | 1),
                                                exact, dpx)
    h, w = imgs["mono60"].shape
    inside = (exact[:, 0] > 8) & (exact[:, 0] < w - 9) & (exact[:, 1] > 8) & (exact[:, 1] < h - 9)
    ex, mono = exact[inside], found[("mono60", "-log")]
    rows, per_ball = [], {"ball": np.nonzero(inside)[0], "diameter_mm": spheres[1][inside]}
    for (k, kind), f in found.items():
        e, vs_mono = np.linalg.norm(f - ex, axis=1), np.linalg.norm(f - mono, axis=1)
        rows.append({"model": k, "image": kind, "n": len(e), "rms_px": float(np.sqrt((e**2).mean())),
                     "max_px": float(e.max()), "vs_mono_rms_px": float(np.sqrt((vs_mono**2).mean())),
                     "vs_mono_max_px": float(vs_mono.max())})
        per_ball[f"{k}|{kind}|err_px"] = e
        per_ball[f"{k}|{kind}|vs_mono_px"] = vs_mono
    table = pd.DataFrame(rows)
    with atomic_path(out / "polychromatic_markers.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out / "polychromatic_markers_per_ball.csv") as tmp:
        pd.DataFrame(per_ball).to_csv(tmp, index=False, float_format="%.5f")
    # Profile along u through the ball nearest the image centre.
    centre = np.array([(cam.width - 1) / 2, (cam.height - 1) / 2])
    ball = exact[np.argmin(np.linalg.norm(exact - centre, axis=1))]
    v = int(round(ball[1]))
    lo, hi = max(0, int(ball[0] - 6 * d)), min(cam.width, int(ball[0] + 6 * d))
    prof = pd.DataFrame({"u": np.arange(lo, hi), **{k: imgs[k][v, lo:hi] for k in imgs}})
    with atomic_path(out / "polychromatic_profile.csv") as tmp:
        prof.to_csv(tmp, index=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 4.6))
    for i, (k, title) in enumerate([("mono60", "60 keV monochromatic, ideal, no scatter"),
                                    ("poly80", "80 kVp Al2.5+Cu0.1, CsI, grid scatter")]):
        ax[i].imshow(imgs[k], cmap="gray", vmin=np.percentile(imgs[k], 1), vmax=np.percentile(imgs[k], 99.7))
        ax[i].axhline(v, color="tab:orange", lw=0.8)
        ax[i].set_title(title, fontsize=10)
        ax[i].set_axis_off()
    for k, st in (("mono60", "-"), ("poly80", "--"), ("poly80_noscatter", ":")):
        ax[2].plot(prof.u, prof[k], st, label=k)
    ax[2].axvline(ball[0], color="k", lw=0.6, ls=":")
    ax[2].set_xlabel("u (px)")
    ax[2].set_ylabel("-log(I / I_open)")
    ax[2].set_title(f"row v = {v} through a 2 mm steel ball", fontsize=10)
    ax[2].legend()
    ax[2].set_ylim(top=ax[2].get_ylim()[1] * 1.5)
    txt = "\n".join(f"{r.model} {r.image}: centre RMS {r.rms_px:.4f} px (max {r.max_px:.4f})"
                    for r in table.itertuples())
    ax[2].text(0.02, 0.98, txt, transform=ax[2].transAxes, fontsize=6.5, va="top")
    fig.tight_layout()
    fig_path = Path(a.figure) if a.figure else out / "polychromatic.png"
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_path, dpi=110)
    print(table.to_string(index=False))
    print(f"wrote {out}/polychromatic_markers.csv, polychromatic_markers_per_ball.csv, polychromatic_profile.csv, "
          f"{fig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

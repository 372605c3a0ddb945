"""``stereodrr beads``: implanted beads through the frames of a real trial, as XMALab tracks them.

Reads an Autoscoper trial file (:func:`stereodrr.trial.load_trial`), runs
:func:`stereodrr.track.track_beads` inside each camera's intensifier field (detect, match by
epipolar geometry, triangulate, link through frames, group into rigid bodies, pose each body per
frame) and writes into the output folder XMALab's ``points2d.csv``, ``points3d.csv`` and
``rigid_bodies.csv``, the full tables ``beads.csv``, ``detections.csv``, ``bodies.csv``
(:mod:`stereodrr.track.outputs`), ``summary.json`` and a figure per frame
(``figures/frame_<k>.png``).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import get_args

import numpy as np

from ..fileio import atomic_write_text, json_ready
from ..interop.xmalab import PixelConvention, body_name, marker_name
from ..plot.beads import plot_bead_frame
from ..track import BeadTracking, BeadTrackOptions, track_beads
from ..track.outputs import write_bead_results
from ..trial import Trial
from ._args import add_trial_arguments, frame_selection, load_cli_trial, output_folder, select_frames


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("beads", help="track implanted beads through a trial (XMALab-compatible output)",
                       description="Find the beads in every frame of every camera, match them by epipolar "
                                   "geometry, triangulate, link them through the frames into rigid bodies.")
    add_trial_arguments(p)
    p.add_argument("-o", "--output", default="out/beads", help="output folder")
    p.add_argument("--frames", type=frame_selection, default=None,
                   help="frames to track, 0-based: A:B (B excluded), N, or a comma-separated list (default all)")
    p.add_argument("--convention", choices=get_args(PixelConvention), default="matlab",
                   help="pixels of points2d.csv, as XMALab's import must be told: 'matlab' (x = u + 1, y = H - v: "
                        "'count from 1' and 'y up'), 'opencv' (neither: XMALab's default), 'count1' (x = u + 1, "
                        "y = v + 1) or 'yup' (x = u, y = H - 1 - v)")
    p.add_argument("--no-figures", action="store_true", help="skip the per-frame figures")
    p.set_defaults(func=run)


def summary(tracking: BeadTracking, frames: list[int]) -> dict:
    """The numbers a person checks first: beads per frame and view, reprojection and epipolar
    medians, the rigid bodies with their beads and rigidity."""
    det, pts = tracking.detections, tracking.points3d.dropna(subset=["x"])
    markers = sorted(int(b) for b in tracking.bodies["bead"])  # XMALab names in track order, as the files
    residuals = pts[[f"residual_{c}" for c in tracking.cameras]].to_numpy().ravel()
    rms = tracking.rigidity_rms_mm()
    bodies = tracking.bodies[tracking.bodies["body"] >= 0]
    return {
        "frames": [{"frame": f, "detected": {c: int(((det["frame"] == k) & (det["camera"] == c)).sum())
                                             for c in tracking.cameras},
                    "triangulated": int((pts["frame"] == k).sum())} for k, f in enumerate(frames)],
        "reprojection_median_px": float(np.nanmedian(residuals)) if np.isfinite(residuals).any() else None,
        "epipolar_median_px": float(pts["epipolar_px"].median()) if len(pts) else None,
        "bodies": [{"body": body_name(i), "beads": [marker_name(markers.index(int(x))) for x in g["bead"]],
                    "rigidity_rms_mm": float(rms.get(b, np.nan))} for i, (b, g) in enumerate(bodies.groupby("body"))],
        "beads_in_no_body": int((tracking.bodies["body"] < 0).sum()),
    }


def trial_beads(trial: Trial, frames: list[int]) -> BeadTracking:
    """The trial's beads through ``frames``, each camera's frames air bright whatever the export
    (an inverted one shows the beads bright: none would be found) and masked to its field."""
    names = trial.rig.names
    masks = [trial.field(c).mask((trial.rig[c].height, trial.rig[c].width)) for c in names]
    return track_beads(lambda k, f: trial.bright_air_image(names[k], frames[f]), trial.rig, masks,
                       BeadTrackOptions(), n_frames=len(frames))


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = output_folder(args.output)
    trial: Trial = load_cli_trial(args, volumes=False)  # beads need no CT
    frames = select_frames(args.frames, trial.n_frames)
    names = trial.rig.names
    tracking = trial_beads(trial, frames)
    out.mkdir(parents=True, exist_ok=True)
    write_bead_results(tracking, trial.rig, out, frames, trial.n_frames, args.convention)
    info = {"trial": str(args.trial), "seconds": time.perf_counter() - t0, **summary(tracking, frames)}
    if not args.no_figures:
        for k, f in enumerate(frames):
            plot_bead_frame(trial.images(f), tracking, k, trial.rig,
                            out / "figures" / f"frame_{f:04d}.png", title=f"frame {f}: {trial.frames[names[0]][f].name}")
    atomic_write_text(out / "summary.json", json.dumps(json_ready(info), indent=2) + "\n")
    for row in info["frames"]:
        per_view = ", ".join(f"{c} {n}" for c, n in row["detected"].items())
        print(f"frame {row['frame']}: beads found {per_view}; matched and triangulated {row['triangulated']}")
    print(f"reprojection median {_fmt(info['reprojection_median_px'])} px, epipolar median "
          f"{_fmt(info['epipolar_median_px'])} px")
    for b in info["bodies"]:
        print(f"{b['body']}: {len(b['beads'])} beads, rigidity RMS {b['rigidity_rms_mm']:.3f} mm")
    print(f"wrote {out}/points2d.csv, points3d.csv, rigid_bodies.csv, beads.csv, summary.json "
          f"({info['seconds']:.1f} s)")
    return 0


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"

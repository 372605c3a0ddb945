"""``stereodrr track``: bones tracked through the frames of a real trial, as Autoscoper tracks them.

Reads an Autoscoper trial file (:func:`stereodrr.trial.load_trial`), registers the CT of each
chosen volume to every view of each frame (:func:`stereodrr.track.track_bones`: warm starts
from the previous frames, a global search where no start fits, several bones together with the
others explained away) and, unless ``--no-beads``, first tracks the trial's implanted beads,
whose rigid bodies predict each bone's motion between frames and check it afterwards.

Writes into the output folder, per bone (the volume file's stem): ``<bone>/poses.csv``,
``<bone>/<bone>.tra`` (Autoscoper loads it: one row per frame of the trial), ``<bone>/frames.csv``
(status, doubtful flag and reason, loss per view, seconds) and, with beads, ``<bone>/bead_check.csv``;
``overlays/frame_<k>.png`` (each bone's outline on every view), ``track.json`` (the summary) and,
with beads, the bead files of ``stereodrr beads`` in ``beads/``. Exit status 1 when a frame is
failed or doubtful (the results are written for inspection; a script must not take them as good).

``--device`` moves the CTs to a torch device once (``cuda``: the renderer's Triton backend). Unlike
``render`` and ``register`` the default is the CPU: tracking on a GPU has been checked only on a
stand-in device, not yet on real hardware.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write_text, json_ready
from ..geometry import RigidPose, StereoRig, load_pose
from ..interop.autoscoper import load_tra
from ..plot.track import plot_track_overlay
from ..registration import check_registration_memory, render_each_view, views_seeing
from ..track import (
    BeadTracking,
    BoneTrack,
    FrameSeries,
    JointOptions,
    TrackOptions,
    bead_bodies_of_bones,
    track_bones,
)
from ..track.outputs import bead_check, write_bead_results, write_bone_results
from ..trial import Trial, TrialVolume
from ..volume import Volume
from ._args import (
    UsageError,
    add_trial_arguments,
    frame_selection,
    input_file,
    integer,
    load_cli_trial,
    number,
    output_folder,
    select_frames,
    torch_device,
)
from .beads import trial_beads

# Trial volumes hold bone-masked intensities (Autoscoper: 0-4095), not HU: scaled so that 1000
# reads as water's attenuation, a plausible 1/mm for the renderer (the similarity ignores scale).
_ATTENUATION_PER_UNIT = 0.02 / 1000


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track", help="track bones through a trial (Autoscoper-compatible output)",
                       description="Register each chosen bone's CT to every view of each frame of a trial, from no "
                                   "pose: a global search where no start fits, warm starts otherwise.")
    add_trial_arguments(p)
    p.add_argument("--volume", type=integer(0, what="volume index"), nargs="+", required=True, metavar="N",
                   help="the volumes to track, 0-based in the trial file's order; several are tracked together")
    p.add_argument("-o", "--output", default="out/track", help="output folder")
    p.add_argument("--frames", type=frame_selection, default=None,
                   help="frames to track, 0-based: A:B (B excluded), N, or a comma-separated list (default all)")
    p.add_argument("--init", nargs="+", default=None, metavar="POSE",
                   help="the first frame's pose of each volume: a pose.json (CT -> world) or an Autoscoper .tra "
                        "(its row of that frame); default: found by the global search")
    p.add_argument("--no-beads", dest="beads", action="store_false",
                   help="markerless: do not use the trial's implanted beads to predict and check the motion")
    p.add_argument("--passes", type=integer(0, 10, what="passes"), default=1,
                   help="joint passes: each bone again with the others explained away (default 1)")
    p.add_argument("--min-in-field", type=number(0.0, 1.0, what="fraction"), default=TrackOptions.min_in_field,
                   metavar="F", help="a frame whose bone lies less than this fraction inside a view's field is "
                   "doubtful (default %(default)g; lower it for a bone that leaves the field)")
    p.add_argument("--no-figures", action="store_true", help="skip the overlays")
    p.add_argument("--device", type=torch_device, default="cpu",
                   help="torch device the bones are tracked on, e.g. cuda or cuda:1 (default cpu: tracking on a GPU "
                        "has not yet run on real hardware, so it is opt-in)")
    p.set_defaults(func=run)


def _init_pose(path: str, frame: int, volume: Volume, index: int, n_volumes: int, rig: StereoRig) -> np.ndarray:
    """Volume ``index``'s start: a pose.json, or frame ``frame``'s row of a ``.tra`` of that
    volume alone or of all ``n_volumes`` (Autoscoper's "save all volumes" export); refused when
    it shows the volume in no view of ``rig``."""
    p = input_file(path, "--init", "pose file")
    pose = load_pose(p).matrix if p.suffix.lower() != ".tra" else _tra_pose(p, frame, volume, index, n_volumes)
    if not views_seeing(volume, rig, RigidPose.from_matrix(pose, volume.center)):
        raise ValueError(f"--init {p}: the pose puts volume {index} outside every view {rig.names} (its projected box "
                         "misses every detector or lies behind a source); expected a pose that shows it in a view")
    return pose


def _tra_pose(p: Path, frame: int, volume: Volume, index: int, n_volumes: int) -> np.ndarray:
    """Frame ``frame``'s pose of volume ``index`` in a ``.tra`` (:func:`_init_pose`)."""
    try:
        poses = load_tra(p)[:, 0]
    except ValueError as one:
        if n_volumes == 1:
            raise
        try:
            poses = load_tra(p, n_volumes)[:, index]
        except ValueError:
            raise one from None
    if frame >= len(poses) or not np.all(np.isfinite(poses[frame])):
        raise ValueError(f"--init {p}: holds no pose for frame {frame}")
    try:
        RigidPose.from_matrix(poses[frame], volume.center)  # a rigid 4x4
    except ValueError as exc:
        raise ValueError(f"--init {p}: frame {frame}: {exc}") from None
    return poses[frame]


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = output_folder(args.output)
    trial: Trial = load_cli_trial(args)
    check_registration_memory(trial.rig, f"--trial {args.trial}", args.device)
    _check_volumes(args, len(trial.volumes), [tv.name for tv in trial.volumes])
    frames = select_frames(args.frames, trial.n_frames)
    chosen = [trial.volume(v) for v in args.volume]
    # On the device once: the tracking, the bead bodies and the overlays all render them.
    volumes = [tv.volume.with_data(tv.volume.data * _ATTENUATION_PER_UNIT).to(args.device) for tv in chosen]
    inits = None if args.init is None else [_init_pose(p, frames[0], v, i, len(trial.volumes), trial.rig)
                                            for p, v, i in zip(args.init, volumes, args.volume)]
    # Warnings of the bead run and the tracking go to track.json and, once each, to the terminal.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        beads = _track_beads(trial, frames) if args.beads else None
        tracks = _track(args, trial, frames, volumes, beads, inits)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"trial": str(args.trial), "frames": frames, "device": str(args.device),
                               "beads": beads is not None,
                               "bones": _write_results(trial, frames, chosen, volumes, tracks, beads, out)}
    if not args.no_figures:
        _write_overlays(trial, frames, chosen, volumes, tracks, out)
    summary["seconds"] = time.perf_counter() - t0
    summary["warnings"] = list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught))
    atomic_write_text(out / "track.json", json.dumps(json_ready(summary), indent=2) + "\n")
    return _report(summary, out)


def _track(args: argparse.Namespace, trial: Trial, frames: list[int], volumes: list[Volume],
           beads: BeadTracking | None, inits: list[np.ndarray] | None) -> list[BoneTrack]:
    """The chosen bones tracked through the frames."""

    @functools.lru_cache(maxsize=2)  # the tracker asks for a frame's images and masks one after the other
    def converted(k: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return trial.line_integrals(frames[k])

    # The trial's frame numbers as times: a gapped --frames selection predicts over the real gaps.
    series = FrameSeries(lambda k: converted(k)[0], lambda k: converted(k)[1], times=[float(f) for f in frames],
                         n_frames=len(frames))
    # The binnings at the footprints they were tuned at, whatever the frames' size (TrackOptions.for_rig).
    options = TrackOptions.for_rig(trial.rig, joint=JointOptions(passes=args.passes), min_in_field=args.min_in_field)
    return track_bones(volumes, trial.rig, series, options, beads=beads, inits=inits)


def _check_volumes(args: argparse.Namespace, count: int, names: list[str]) -> None:
    for v in args.volume:
        if v >= count:
            raise UsageError(f"--volume {v}: the trial has volumes 0..{count - 1} ({', '.join(names)})")
    if len(set(args.volume)) != len(args.volume):
        raise UsageError(f"--volume {' '.join(map(str, args.volume))}: a volume is named twice")
    if args.init is not None and len(args.init) != len(args.volume):
        raise UsageError(f"--init: expected one pose per volume ({len(args.volume)}), got {len(args.init)}")


def _track_beads(trial: Trial, frames: list[int]) -> BeadTracking | None:
    """The trial's beads through the frames; None when they form no rigid body or the trial has
    one camera (markerless)."""
    if len(trial.rig.names) < 2:
        warnings.warn(f"beads: the trial has one camera ({trial.rig.names[0]!r}); beads need two to be "
                      "triangulated, so the bones are tracked without them", stacklevel=2)
        return None
    beads = trial_beads(trial, frames)
    return None if beads.bodies["body"].ge(0).sum() == 0 else beads


def _write_results(trial: Trial, frames: list[int], chosen: list[TrialVolume], volumes: list[Volume],
                   tracks: list[BoneTrack], beads: BeadTracking | None, out: Path) -> list[dict[str, Any]]:
    """Each bone's files (and the beads'); the summary's per-bone entries."""
    entries = []
    bodies = bead_bodies_of_bones(volumes, tracks, beads, JointOptions().bead_distance_mm) if beads is not None \
        else [None] * len(volumes)
    if beads is not None:
        write_bead_results(beads, trial.rig, out / "beads", frames, trial.n_frames)
    for tv, tr, body in zip(chosen, tracks, bodies):
        write_bone_results(tr, out / tv.name, tv.name, frames, trial.n_frames)
        entry = {"bone": tv.name, "tracked": int(np.isfinite(tr.losses).sum()), "doubtful": int(tr.doubtful.sum()),
                 "frames": [{"frame": f, "status": tr.status[k], "doubtful": bool(tr.doubtful[k]),
                             "reason": tr.reasons[k], "loss": tr.losses[k]} for k, f in enumerate(frames)]}
        if beads is not None and body is not None:
            members = beads.bodies.loc[beads.bodies["body"] == body, "bead"].to_numpy(int)
            check = bead_check(tr.poses, beads.positions()[:, members], tr.doubtful, frames)
            check.to_csv(out / tv.name / "bead_check.csv", index=False)
            entry["bead_body"] = int(body)
            entry["bead_check"] = check.to_dict("records")
        entries.append(entry)
    return entries


def _write_overlays(trial: Trial, frames: list[int], chosen: list[TrialVolume], volumes: list[Volume],
                    tracks: list[BoneTrack], out: Path) -> None:
    names = trial.rig.names
    for k, f in enumerate(frames):
        drrs: dict[str, list[np.ndarray]] = {c: [] for c in names}
        labels = []
        for tv, v, tr in zip(chosen, volumes, tracks):
            if np.all(np.isfinite(tr.poses[k])):
                shown = render_each_view(v, trial.rig, RigidPose.from_matrix(tr.poses[k], v.center), 1,
                                         mode="joseph")  # each camera at its own frame size
                for c in names:
                    drrs[c].append(shown[c].cpu().numpy())
                labels.append(tv.name)
        plot_track_overlay(trial.images(f), drrs, out / "overlays" / f"frame_{f:04d}.png", title=f"frame {f}",
                           labels=labels)


def _report(summary: dict[str, Any], out: Path) -> int:
    """Print each frame's outcome; exit status 1 when one is failed or doubtful."""
    bad = 0
    for entry in summary["bones"]:
        for row in entry["frames"]:
            line = f"{entry['bone']} frame {row['frame']}: {row['status']}, loss {row['loss']:.4f}"
            print(line + (f" DOUBTFUL ({row['reason']})" if row["doubtful"] else ""))
            bad += bool(row["doubtful"])
        for c in entry.get("bead_check", []):
            print(f"{entry['bone']} frames {c['frames']} against its beads: {c['centroid_error_mm']:.2f} mm at their "
                  f"centroid, {c['rotation_error_deg']:.2f} deg (the beads moved {c['bead_motion_mm']:.1f} mm, "
                  f"{c['bead_rotation_deg']:.1f} deg)")
    for w in summary["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out}: per bone poses.csv, <bone>.tra, frames.csv; track.json ({summary['seconds']:.0f} s)")
    if bad:
        print(f"stereodrr track: {bad} frame(s) failed or doubtful (NaN in poses.csv and the .tra; frames.csv has "
              "each fit and why), exit status 1", file=sys.stderr)
        return 1
    return 0

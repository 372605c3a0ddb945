"""Bone tracking on the Autoscoper wrist sample (issue 22, bone tracking): the radius and the ulna
CTs registered to both views of frames 0002, 0099 and 0158, warm-started through the frames.

``--start search`` (default) starts from no pose: the global search on the first frame.
``--start checked`` starts the first frame from the poses in :data:`CHECKED` instead: the
registered candidates that put each bone where the anatomy says (below), the way an Autoscoper
user places the bone by hand before tracking.

Writes ``poses.csv`` (``bone, frame`` and the CT -> world 4x4 row-major ``m00 ... m33``, NaN for
a failed frame), ``track_<bone>.csv`` (per frame: status, doubtful flag and reason, start, loss
per view, seconds), ``search_<bone>.csv`` (the global search's refined candidates) and one
overlay per frame (``overlay_<frame>.png``: both bones' outlines on each view). Then compares each
bone's relative motion between frames, ``T_b T_a^-1``, with the rigid motion of the bead body
nearest to it (the bead pipeline, :func:`stereodrr.track.track_beads`; a body belongs to the
bone whose CT surface its beads are closest to at the tracked pose), at the beads' centroid (mm)
and in rotation (deg), and prints the goal numbers.

    PYTHONPATH=. python experiments/track_wrist.py --out results/track_wrist
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stereodrr.fileio import atomic_path  # noqa: E402
from stereodrr.geometry import kabsch, rotation_angle_deg  # noqa: E402
from stereodrr.plot.track import plot_track_losses, plot_track_overlay  # noqa: E402
from stereodrr.render import Projector, render_rig  # noqa: E402
from stereodrr.track import BeadTrackOptions, JointOptions, track_beads, track_bones  # noqa: E402
from stereodrr.track.bone_fit import TrackOptions  # noqa: E402
from stereodrr.track.bones import BoneTrack, track_bone  # noqa: E402
from stereodrr.trial import load_trial, read_frame  # noqa: E402
from stereodrr.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRIAL = ROOT / "tests" / "data" / "autoscoper_wrist" / "wrist.cfg"
BONES = {"radius": 0, "ulna": 1}
# First-frame poses (CT -> world) checked by eye against the anatomy, among the global search's
# registered candidates and multi-start registrations (2026-12-06): in cam2 (the PA-like view,
# thumb at the left) the radius is the broad bone that articulates with the carpus, the ulna the
# narrow one beside it, its head proximal of the radius' articular surface; in cam1 the ulna is
# the left of the two forearm bones, the radius the right one (the two are 28 mm apart in depth
# along cam2's axis, which cam1 sees sideways). The search's own choices put both CTs on the
# ulna in cam2 (see the report).
CHECKED = {
    "radius": np.array([[0.954566, 0.267751, -0.13082, 92.723997], [-0.160748, 0.092996, -0.982605, 115.634112],
                        [-0.250927, 0.95899, 0.131812, 59.236898], [0.0, 0.0, 0.0, 1.0]]),
    "ulna": np.array([[0.84278, -0.513925, -0.160012, 104.661443], [-0.192459, -0.010097, -0.981253, 125.562711],
                      [0.502675, 0.857776, -0.107419, 81.975293], [0.0, 0.0, 0.0, 1.0]]),
}
# The CTs hold 0-4095 (not HU); as attenuation-like values any positive scale does (NCC ignores it).
SCALE = 0.02 / 1000


def bone_volume(trial_volume: Volume) -> Volume:
    return trial_volume.with_data(trial_volume.data * SCALE)


def moved_views(rig, T: np.ndarray) -> dict:
    """The rig's cameras seeing the volume moved by ``T`` (E' = E T)."""
    out = {}
    for name, cam in rig.cameras.items():
        E = np.r_[np.c_[cam.R, cam.t], [[0.0, 0.0, 0.0, 1.0]]] @ T
        out[name] = cam.with_pose(E[:3, :3], E[:3, 3])
    return out


def distance_to_bone(volume: Volume, T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance (mm) of world points to the nearest bone voxel of ``volume`` moved by ``T``
    (NaN for points outside the CT's box)."""
    data = volume.data.cpu().numpy()
    sp = volume.spacing
    dist = ndimage.distance_transform_edt(data <= 0, sampling=(sp[2], sp[1], sp[0]))
    local = (np.linalg.inv(T) @ np.c_[points, np.ones(len(points))].T).T[:, :3]
    ijk = np.rint(volume.world_to_index(local)).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(data.shape[::-1])), axis=1)
    out = np.full(len(points), np.nan)
    out[inside] = dist[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
    return out


def motion_errors(bone_poses: np.ndarray, beads: np.ndarray, a: int, b: int) -> dict:
    """The bone's motion a -> b against its beads' rigid motion: error at the beads' centroid
    (mm), rotation error (deg), and the beads' own motion."""
    ok = np.isfinite(beads[a, :, 0]) & np.isfinite(beads[b, :, 0])
    A, B = beads[a, ok], beads[b, ok]
    R, t = kabsch(A, B)
    out = {"frames": f"{a}->{b}", "beads": int(ok.sum()), "bead_motion_mm": float(np.linalg.norm(t + R @ A.mean(0) - A.mean(0))),
           "bead_rotation_deg": rotation_angle_deg(R, np.eye(3))}
    if not (np.all(np.isfinite(bone_poses[a])) and np.all(np.isfinite(bone_poses[b]))):
        return {**out, "centroid_error_mm": math.nan, "rotation_error_deg": math.nan}
    M = bone_poses[b] @ np.linalg.inv(bone_poses[a])
    c = A.mean(0)
    return {**out, "centroid_error_mm": float(np.linalg.norm(M[:3, :3] @ c + M[:3, 3] - (R @ c + t))),
            "rotation_error_deg": rotation_angle_deg(M[:3, :3], R)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trial", type=Path, default=TRIAL, help="Autoscoper trial file (.cfg)")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "track_wrist", help="output folder")
    p.add_argument("--start", choices=("search", "checked"), default="search",
                   help="first frame from the global search, or from the checked poses (CHECKED)")
    p.add_argument("--bones", nargs="+", choices=sorted(BONES), default=sorted(BONES), help="the bones to track")
    p.add_argument("--threads", type=int, default=1, help="torch/numba threads")
    p.add_argument("--no-beads", dest="beads", action="store_false",
                   help="markerless: no bead motion predictions between frames")
    p.add_argument("--passes", type=int, default=1, help="joint passes (each bone with the others explained away)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        import numba
        numba.set_num_threads(args.threads)
    except ImportError:  # pragma: no cover - numba is a core dependency
        pass
    args.out.mkdir(parents=True, exist_ok=True)

    trial = load_trial(args.trial)
    rig = trial.rig
    n = trial.n_frames
    frames, masks = zip(*(trial.line_integrals(k) for k in range(n)))
    names = [trial.frames[rig.names[0]][k].name for k in range(n)]
    options = TrackOptions(progress=False, joint=JointOptions(passes=args.passes))

    volumes = {bone: bone_volume(trial.volume(i).volume) for bone, i in BONES.items() if bone in args.bones}
    # The beads: the bones' motion predictions (unless --no-beads) and the validation.
    beads = track_beads([[read_frame(f) for f in trial.frames[c]] for c in rig.names], rig,
                        [trial.field(c).mask(read_frame(trial.frames[c][0]).shape) for c in rig.names],
                        BeadTrackOptions(progress=False))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the thick-slice note, kept in each track's warnings
        if args.start == "checked":
            inits = []
            for bone in volumes:
                u, _, vt = np.linalg.svd(CHECKED[bone][:3, :3])  # the printed digits, back onto SO(3)
                M = CHECKED[bone].copy()
                M[:3, :3] = u @ vt
                inits.append(M)
            found = [track_bone(v, rig, list(frames), options, init=M, masks=list(masks))
                     for v, M in zip(volumes.values(), inits)]
        else:
            found = track_bones(list(volumes.values()), rig, list(frames), options, masks=list(masks),
                                beads=beads if args.beads else None)
    tracks: dict[str, BoneTrack] = dict(zip(volumes, found))
    print(f"tracking: {time.perf_counter() - start:.0f} s ({'with' if args.beads else 'without'} bead predictions, "
          f"{args.passes} joint pass(es))")
    for bone, tr in tracks.items():
        print(f"{bone}: " + "; ".join(
            f"frame {k}: {tr.status[k]} from {tr.start[k] or '-'}, loss {tr.losses[k]:.4f}, {tr.seconds[k]:.1f} s"
            + (f", doubtful ({tr.reasons[k]})" if tr.doubtful[k] else "") for k in range(n)))
        if tr.init is not None:
            print(f"  global search: {tr.init.status}, {tr.init.message} (search {tr.init.seconds['search_s']:.0f} s, "
                  f"refinement {tr.init.seconds['refine_s']:.0f} s)")
            with atomic_path(args.out / f"search_{bone}.csv") as tmp:
                tr.init.candidates.to_csv(tmp, index=False)
        with atomic_path(args.out / f"track_{bone}.csv") as tmp:
            tr.table().to_csv(tmp, index=False)

    rows = [{"bone": bone, "frame": k, **{f"m{r}{c}": tr.poses[k, r, c] for r in range(4) for c in range(4)}}
            for bone, tr in tracks.items() for k in range(n)]
    with atomic_path(args.out / "poses.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    plot_track_losses({b: t.losses for b, t in tracks.items()}, args.out / "losses.png",
                      {b: t.doubtful for b, t in tracks.items()}, title="wrist sample: loss per frame")
    for k in range(n):
        drrs: dict[str, list[np.ndarray]] = {c: [] for c in rig.names}
        labels = []
        for bone, tr in tracks.items():
            if np.all(np.isfinite(tr.poses[k])):
                shown = render_rig(volumes[bone], moved_views(rig, tr.poses[k]), Projector("joseph"))
                for c in rig.names:
                    drrs[c].append(shown[c].numpy())
                labels.append(bone)
        plot_track_overlay({c: read_frame(trial.frames[c][k]) for c in rig.names}, drrs, args.out / f"overlay_{k}.png",
                           title=f"wrist frame {names[k]}", labels=labels)

    # Which bone each rigid body of beads belongs to.
    X = beads.positions()
    bodies = beads.bodies[beads.bodies["body"] >= 0].groupby("body")["bead"].apply(list)
    errors = []
    for body, members in bodies.items():
        dist = {}
        for bone, tr in tracks.items():
            d = np.concatenate([[np.nan]] + [distance_to_bone(volumes[bone], tr.poses[k], X[k, members][
                np.isfinite(X[k, members, 0])]) for k in range(n) if np.all(np.isfinite(tr.poses[k]))])
            dist[bone] = float(np.median(d[np.isfinite(d)])) if np.isfinite(d).any() else math.nan
        known = {b: d for b, d in dist.items() if math.isfinite(d)}
        if not known:
            print(f"bead body {body} ({len(members)} beads): inside no tracked bone's CT box")
            continue
        bone = min(known, key=known.__getitem__)
        print(f"bead body {body} ({len(members)} beads): median distance to the bone surface "
              + ", ".join(f"{b} {d:.1f} mm" for b, d in dist.items()) + f" -> {bone}")
        for a, b in ((0, 1), (1, 2), (0, 2)):
            if b < n:
                errors.append({"bone": bone, "body": body, **motion_errors(tracks[bone].poses, X[:, members], a, b)})
    table = pd.DataFrame(errors)
    with atomic_path(args.out / "bead_agreement.csv") as tmp:
        table.to_csv(tmp, index=False)
    if len(table):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Do a bone's beads move with it? The images' answer, for a finished ``stereodrr track`` run.

``stereodrr track`` compares each bone's tracked motion between frames with the rigid motion of
the bead body next to it (``bead_check.csv``). When the two disagree, either the tracking or the
beads are off. This script asks the frames themselves, with the tracking's own loss
(:func:`stereodrr.track.bone_fit.frame_loss`, the last level's band-passed NCC over both views):

* the loss at each tracked pose, and with the bone turned about its own long axis (the principal
  axis of its CT voxels) by ±2, ±5 and ±10°, the direction in which a shaft's image fixes its
  pose least: how sharply the frames determine that rotation;
* the loss of the pose the bead body predicts, the tracked pose of a neighbouring frame moved by
  the beads' rigid motion between the two frames: if the beads moved with the bone, this pose
  would explain the frame as well as the tracked one;
* the axis of the disagreement, and its angle to the bone's long axis.

    stereodrr track --trial tests/data/autoscoper_wrist/wrist.cfg --volume 0 1 --passes 2 -o out/track
    PYTHONPATH=. python experiments/track_bead_check.py out/track
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stereodrr.cli.track import _ATTENUATION_PER_UNIT  # noqa: E402
from stereodrr.geometry import RigidPose, kabsch, rotation_angle_deg  # noqa: E402
from stereodrr.track import TrackOptions  # noqa: E402
from stereodrr.track.bone_fit import BoneSupport, frame_loss  # noqa: E402
from stereodrr.trial import load_trial  # noqa: E402
from stereodrr.volume import Volume  # noqa: E402

TURNS_DEG = (-10.0, -5.0, -2.0, 2.0, 5.0, 10.0)


def long_axis(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """The centroid (mm) and the principal axis of the bone's voxels (> 0), in the CT's frame."""
    zz, yy, xx = np.nonzero(volume.data.numpy() > 0)
    pts = volume.index_to_world(np.stack([xx, yy, zz], 1).astype(np.float64))
    c = pts.mean(0)
    return c, np.linalg.svd(pts - c, full_matrices=False)[2][0]


def turned(M: np.ndarray, centre: np.ndarray, axis: np.ndarray, deg: float) -> np.ndarray:
    """The CT -> world pose ``M`` turned by ``deg`` about the bone's axis (CT frame) through its centre."""
    c, a = M[:3, :3] @ centre + M[:3, 3], M[:3, :3] @ axis
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(np.radians(deg) * a).as_matrix()
    T[:3, 3] = c - T[:3, :3] @ c
    return T @ M


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("track", type=Path, help="output folder of stereodrr track (with beads)")
    args = p.parse_args(argv)
    summary = json.loads((args.track / "track.json").read_text())
    trial = load_trial(summary["trial"])
    frames = summary["frames"]
    options = TrackOptions.for_rig(trial.rig)
    bodies = pd.read_csv(args.track / "beads" / "bodies.csv")
    points = pd.read_csv(args.track / "beads" / "points3d.csv").to_numpy(dtype=np.float64)
    points = points.reshape(len(points), -1, 3)
    images = {k: trial.line_integrals(f) for k, f in enumerate(frames)}
    names = [tv.name for tv in trial.volumes]
    for entry in summary["bones"]:
        if entry.get("bead_body") is None:
            print(f"{entry['bone']}: no bead body")
            continue
        tv = trial.volumes[names.index(entry["bone"])].volume
        volume = tv.with_data(tv.data * _ATTENUATION_PER_UNIT)
        support = BoneSupport.of(volume)
        centre, axis = long_axis(tv)
        poses = pd.read_csv(args.track / entry["bone"] / "poses.csv").to_numpy(dtype=np.float64)[:, 1:].reshape(-1, 4, 4)
        beads = bodies.loc[bodies["body"] == entry["bead_body"], "bead"].to_numpy()

        def loss(k: int, M: np.ndarray, volume: Volume = volume, support: BoneSupport = support) -> float:
            return frame_loss(volume, trial.rig, images[k][0], images[k][1], RigidPose.from_matrix(M, volume.center),
                              options, support)[0]

        tracked = [k for k in range(len(frames)) if np.all(np.isfinite(poses[k]))]
        print(f"{entry['bone']} (bead body {entry['bead_body']}, {len(beads)} beads)")
        for k in tracked:
            turns = ", ".join(f"{d:+g}°: {loss(k, turned(poses[k], centre, axis, d)):.4f}" for d in TURNS_DEG)
            print(f"  frame {frames[k]}: loss {loss(k, poses[k]):.4f}; turned about its long axis {turns}")
        for a, b in zip(tracked[:-1], tracked[1:]):
            for src, dst in ((a, b), (b, a)):
                ok = np.isfinite(points[src, beads, 0]) & np.isfinite(points[dst, beads, 0])
                R, t = kabsch(points[src, beads[ok]], points[dst, beads[ok]])
                B = np.eye(4)
                B[:3, :3], B[:3, 3] = R, t
                predicted = B @ poses[src]
                err = poses[dst][:3, :3] @ predicted[:3, :3].T
                rv = Rotation.from_matrix(err).as_rotvec()
                to_axis = np.degrees(np.arccos(min(1.0, abs(rv @ (poses[dst][:3, :3] @ axis)) / max(np.linalg.norm(rv), 1e-12))))
                print(f"  frame {frames[dst]} from frame {frames[src]} by the beads' motion: loss "
                      f"{loss(dst, predicted):.4f} (tracked {loss(dst, poses[dst]):.4f}); tracked against predicted "
                      f"{rotation_angle_deg(err, np.eye(3)):.1f}°, about an axis {to_axis:.0f}° from the bone's long axis")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

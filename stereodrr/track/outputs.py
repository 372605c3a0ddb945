"""What tracking writes: the XROMM tools' files and stereodrr's own tables.

Bones (:func:`write_bone_results`, one folder per bone): ``poses.csv`` (``frame``, then the
CT -> world 4x4 row by row ``m00 ... m33``, NaN for a failed or doubtful frame), ``<bone>.tra``
(Autoscoper's tracking file: one row per frame of the trial, NaN where not tracked or doubtful:
Autoscoper would load a doubtful pose as tracked) and ``frames.csv`` (per frame: status,
doubtful flag and reason, start, loss per view, share of the bone inside each view's field,
seconds, and the fitted pose ``m00 ... m33`` even when doubtful, for a person to judge).

Beads (:func:`write_bead_results`): XMALab's combined 2D points (``points2d.csv``, the matched
beads' detected centres), 3D points (``points3d.csv``) and rigid-body transformations
(``rigid_bodies.csv``, each body's motion from its first frame), one row per frame of the trial
(``NaN`` where unseen); and the full tables (``beads.csv``: every frame and bead with its
reprojection residuals, ``detections.csv``, ``bodies.csv``: bead -> body and XMALab marker
name). Beads are XMALab's ``marker001``, ``marker002``, ... in track order; bodies
``RigidBody001``, ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..fileio import atomic_path
from ..geometry import StereoRig, kabsch, rotation_angle_deg
from ..interop.autoscoper import save_tra
from ..interop.xmalab import (
    PixelConvention,
    body_name,
    marker_name,
    save_points2d,
    save_points3d,
    save_rigid_body_transforms,
)
from .bead_rigid import POSE_COLUMNS
from .beads import BeadTracking
from .bones import BoneTrack

__all__ = ["write_table", "write_bead_results", "write_bone_results", "bead_check"]


def write_table(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """A table as CSV, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def write_bead_results(tracking: BeadTracking, rig: StereoRig, folder: str | os.PathLike[str],
                       frames: Sequence[int], n_frames: int,
                       convention: PixelConvention = "matlab") -> dict[str, Path]:
    """Write the bead tracking's files (module docstring) into ``folder``.

    Args:
        frames: the trial frame of each tracked frame (``tracking`` counts from 0).
        n_frames: the trial's number of frames (rows of the XMALab tables).
        convention: XMALab 2D pixel convention (:mod:`stereodrr.interop.xmalab`).

    Returns:
        The paths written, by name.
    """
    out = Path(folder)
    trial_frame = np.asarray(frames, dtype=int)
    if len(trial_frame) != tracking.frames:
        raise ValueError(f"frames: expected the trial frame of each of the {tracking.frames} tracked frames, "
                         f"got {len(trial_frame)}")
    names = list(tracking.cameras)
    pts = tracking.points3d.copy()
    pts["frame"] = trial_frame[pts["frame"].to_numpy(int)]
    det = tracking.detections.copy()
    det["frame"] = trial_frame[det["frame"].to_numpy(int)]
    rows = []
    for k, c in enumerate(names):
        seen = pts.dropna(subset=[f"u_{c}", f"v_{c}"])
        rows.append(pd.DataFrame({"frame": seen["frame"], "marker": seen["bead"], "camera": k,
                                  "u": seen[f"u_{c}"], "v": seen[f"v_{c}"]}))
    points2d = pd.concat(rows, ignore_index=True)
    beads = sorted(tracking.bodies["bead"].tolist())
    names_of = {b: marker_name(i) for i, b in enumerate(beads)}
    paths = {"points2d": save_points2d(points2d, out / "points2d.csv", [rig[c].height for c in names], n_frames,
                                       convention, names_of),
             "points3d": save_points3d(pts.dropna(subset=["x"]).rename(columns={"bead": "marker"}),
                                       out / "points3d.csv", n_frames, names_of)}
    poses = tracking.poses
    body_ids = sorted(int(b) for b in poses["body"].unique()) if len(poses) else []
    T = np.full((n_frames, len(body_ids), 4, 4), np.nan)
    for j, b in enumerate(body_ids):
        rows_b = poses[poses["body"] == b]
        T[trial_frame[rows_b["frame"].to_numpy(int)], j] = rows_b[list(POSE_COLUMNS)].to_numpy().reshape(-1, 4, 4)
    paths["rigid_bodies"] = save_rigid_body_transforms(T, out / "rigid_bodies.csv", [body_name(j) for j in
                                                                                        range(len(body_ids))])
    bodies = tracking.bodies.copy()
    bodies["marker"] = bodies["bead"].map(names_of)
    bodies["body_name"] = [body_name(body_ids.index(int(b))) if b >= 0 else "" for b in bodies["body"]]
    paths["beads"] = write_table(pts, out / "beads.csv")
    paths["detections"] = write_table(det, out / "detections.csv")
    paths["bodies"] = write_table(bodies, out / "bodies.csv")
    return paths


def write_bone_results(track: BoneTrack, folder: str | os.PathLike[str], name: str, frames: Sequence[int],
                       n_frames: int) -> dict[str, Path]:
    """Write one bone's tracking (module docstring) into ``folder``.

    Args:
        name: the bone (the ``.tra`` file's stem).
        frames: the trial frame of each tracked frame; n_frames: the trial's frames (``.tra`` rows).
    """
    out = Path(folder)
    trial_frame = np.asarray(frames, dtype=int)
    table = track.table()
    table["frame"] = trial_frame[table["frame"].to_numpy(int)]
    trusted = np.where(np.asarray(track.doubtful, bool)[:, None, None], np.nan, track.poses)
    poses = table[["frame", *POSE_COLUMNS]].copy()
    poses[list(POSE_COLUMNS)] = trusted.reshape(len(trusted), 16)
    tra = np.full((n_frames, 4, 4), np.nan)
    tra[trial_frame] = trusted
    return {"poses": write_table(poses, out / "poses.csv"),
            "tra": save_tra(tra, out / f"{name}.tra"),
            "frames": write_table(table, out / "frames.csv")}


def bead_check(bone_poses: np.ndarray, positions: np.ndarray, doubtful: np.ndarray,
               frame_numbers: Sequence[int] | None = None) -> pd.DataFrame:
    """A bone's motion between consecutive tracked frames against the rigid motion of its beads:
    ``frames, beads, bead_motion_mm, bead_rotation_deg, centroid_error_mm, rotation_error_deg``
    (the bone's motion ``T_b T_a^-1`` applied to the beads' centroid against theirs, and the
    angle between the two rotations).

    Args:
        bone_poses: ``(F, 4, 4)``; positions: ``(F, beads, 3)`` the bone's beads (NaN unseen);
        doubtful: ``(F,)`` frames left out; frame_numbers: the frames' labels (default 0, 1, ...).
    """
    label = list(range(len(bone_poses))) if frame_numbers is None else list(frame_numbers)
    good = [k for k in range(len(bone_poses)) if np.all(np.isfinite(bone_poses[k])) and not doubtful[k]]
    rows = []
    for a, b in zip(good[:-1], good[1:]):
        ok = np.isfinite(positions[a, :, 0]) & np.isfinite(positions[b, :, 0])
        if ok.sum() < 3:
            continue
        A, B = positions[a, ok], positions[b, ok]
        R, t = kabsch(A, B)
        c = A.mean(0)
        M = bone_poses[b] @ np.linalg.inv(bone_poses[a])
        rows.append({"frames": f"{label[a]}->{label[b]}", "beads": int(ok.sum()),
                     "bead_motion_mm": float(np.linalg.norm(R @ c + t - c)),
                     "bead_rotation_deg": rotation_angle_deg(R, np.eye(3)),
                     "centroid_error_mm": float(np.linalg.norm(M[:3, :3] @ c + M[:3, 3] - (R @ c + t))),
                     "rotation_error_deg": rotation_angle_deg(M[:3, :3], R)})
    return pd.DataFrame(rows, columns=["frames", "beads", "bead_motion_mm", "bead_rotation_deg", "centroid_error_mm",
                                       "rotation_error_deg"])

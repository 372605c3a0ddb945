"""Several bones of one trial tracked together: each bone registered with the others explained
away, and their beads' motion as the prediction between frames.

A bone-only CT explains only its own bone; on a frame its neighbour (the ulna beside the radius)
draws edges just as strong, and a single-bone fit may settle on the wrong bone. So after a first
pass that tracks each bone on its own (:func:`~stereodrr.track.bones.track_bone`), every further
pass tracks each bone on the frames minus the other bones' DRRs at their tracked poses
(:func:`explain_away`): what is left of the neighbour cannot attract it. The DRR's scale against
the frame is fitted per view on band-passed images over the neighbour's projection (a
line-integral frame is the sum of its bones' integrals and the soft tissue's, which the band-pass
removes).

Beads: when a bead tracking is given, each bone takes the rigid body of beads that lies closest
to its CT surface at its tracked poses (within ``bead_distance_mm``), and the body's motion
between two frames predicts the bone's (``T_k = M_k M_j^-1 T_j`` from the nearest frame ``j``
tracked without doubt). The prediction is only a start: every pose is the image registration's.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
from scipy import ndimage

from .._deprecation import legacy_options
from ..geometry import RigidPose, StereoRig
from ..registration import check_registration_memory, render_each_view
from ..render.projector import Mode
from ..volume import Volume
from .bead_rigid import POSE_COLUMNS
from .beads import BeadTracking
from .bone_fit import JointOptions, TrackOptions
from .bones import BoneTrack, Frames, FrameSeries, Masks, track_bone

__all__ = ["explain_away", "bead_bodies_of_bones", "track_bones"]


def _band(image: np.ndarray, low: float, high: float) -> np.ndarray:
    a = image.astype(np.float32)
    return cv2.GaussianBlur(a, (0, 0), low) - cv2.GaussianBlur(a, (0, 0), high)


def explain_away(images: Mapping[str, np.ndarray], rig: StereoRig, others: Sequence[tuple[Volume, np.ndarray]],
                 masks: Mapping[str, np.ndarray] | None = None, options: JointOptions | None = None,
                 mode: Mode = "joseph") -> dict[str, np.ndarray]:
    """The frames minus the DRRs of ``others`` (each a volume and its CT -> world pose), each DRR
    scaled per view by the least-squares fit of its band-pass to the frame's over its projection.

    Args:
        images: per view ``(H, W)`` line-integral-like frames; masks: per view pixel weights.
        others: the bones to remove (poses with NaN are skipped).
        options: the band-pass of the scale fit (default :class:`~stereodrr.track.bone_fit.JointOptions`).

    Returns:
        Per view the frame with the others removed (float32).
    """
    options = JointOptions() if options is None else options
    out = {n: np.asarray(images[n], dtype=np.float32).copy() for n in rig.names}
    for volume, T in others:
        if not np.all(np.isfinite(T)):
            continue
        # Each view at its own size: a trial's cameras may differ in size.
        drrs = render_each_view(volume, rig, RigidPose.from_matrix(T, volume.center), 1, mode=mode)
        for n in rig.names:
            d = drrs[n].cpu().numpy()
            support = ndimage.binary_dilation(d > 0, iterations=int(options.sigma_low_px) + 2)
            if masks is not None:
                support &= np.asarray(masks[n]) > 0
            if not support.any():
                continue
            bd = _band(d, options.sigma_low_px, options.sigma_high_px)[support]
            bi = _band(out[n], options.sigma_low_px, options.sigma_high_px)[support]
            den = float(bd @ bd)
            scale = max(float(bd @ bi) / den, 0.0) if den > 0 else 0.0
            out[n] = out[n] - scale * d
    return out


def _surface_distance(volume: Volume) -> Callable[[np.ndarray], np.ndarray]:
    """``points (N, 3)`` in the CT's frame -> distance (mm) to its nearest bone voxel (NaN outside
    the CT's box)."""
    data = volume.data.cpu().numpy()
    sp = volume.spacing
    dist = ndimage.distance_transform_edt(data <= 0, sampling=(sp[2], sp[1], sp[0]))

    def at(points: np.ndarray) -> np.ndarray:
        ijk = np.rint(volume.world_to_index(points)).astype(int)
        inside = np.all((ijk >= 0) & (ijk < np.array(data.shape[::-1])), axis=1)
        out = np.full(len(points), np.nan)
        out[inside] = dist[ijk[inside, 2], ijk[inside, 1], ijk[inside, 0]]
        return out

    return at


def bead_bodies_of_bones(volumes: Sequence[Volume], tracks: Sequence[BoneTrack], beads: BeadTracking,
                         max_distance_mm: float) -> list[int | None]:
    """For each bone, the bead body (id) whose beads' median distance to its CT surface, over the
    frames it is tracked without doubt, is smallest and at most ``max_distance_mm``; None if none."""
    X = beads.positions()
    bodies = beads.bodies[beads.bodies["body"] >= 0].groupby("body")["bead"].apply(list)
    out: list[int | None] = []
    for volume, tr in zip(volumes, tracks):
        at = _surface_distance(volume)
        best: tuple[float, int | None] = (math.inf, None)
        for body, members in bodies.items():
            d = []
            for k in range(len(tr.poses)):
                if tr.doubtful[k] or not np.all(np.isfinite(tr.poses[k])) or k >= len(X):
                    continue
                pts = X[k, members]
                pts = pts[np.isfinite(pts[:, 0])]
                local = (np.linalg.inv(tr.poses[k]) @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]
                d.append(at(local))
            dd = np.concatenate(d) if d else np.array([])
            dd = dd[np.isfinite(dd)]
            if len(dd) and float(np.median(dd)) < best[0]:
                best = (float(np.median(dd)), int(body))
        out.append(best[1] if best[0] <= max_distance_mm else None)
    return out


def _body_motions(beads: BeadTracking, body: int, n: int) -> np.ndarray:
    """``(n, 4, 4)`` the body's motion per frame (NaN where it has no pose)."""
    M = np.full((n, 4, 4), np.nan)
    rows = beads.poses[beads.poses["body"] == body]
    for _, r in rows.iterrows():
        if int(r["frame"]) < n:
            M[int(r["frame"])] = r[list(POSE_COLUMNS)].to_numpy(dtype=np.float64).reshape(4, 4)
    return M


def _predictor(prior: BoneTrack | None, motion: np.ndarray | None) -> Callable[[int, np.ndarray], np.ndarray | None]:
    """The starts of a later pass: the earlier pass's pose where it had no doubt; otherwise the
    bead body's motion applied to the nearest pose without doubt (this pass's earlier frames,
    or the earlier pass's)."""

    def predict(k: int, poses: np.ndarray) -> np.ndarray | None:
        if prior is not None and not prior.doubtful[k] and np.all(np.isfinite(prior.poses[k])):
            return prior.poses[k]
        if motion is None or not np.all(np.isfinite(motion[k])):
            return None
        known = {j: poses[j] for j in range(len(poses)) if np.all(np.isfinite(poses[j]))}
        if prior is not None:
            for j in range(len(prior.poses)):
                if j not in known and not prior.doubtful[j] and np.all(np.isfinite(prior.poses[j])):
                    known[j] = prior.poses[j]
        usable = [j for j in known if np.all(np.isfinite(motion[j]))]
        if not usable:
            return None
        j = min(usable, key=lambda j: abs(j - k))
        return motion[k] @ np.linalg.inv(motion[j]) @ known[j]

    return predict


def track_bones(volumes: Sequence[Volume], rig: StereoRig, frames: Frames | FrameSeries,
                options: TrackOptions | None = None, masks: Masks | None = None, *, beads: BeadTracking | None = None,
                inits: Sequence[np.ndarray | None] | None = None, **legacy: Any) -> list[BoneTrack]:
    """Track several bones of one trial together (module docstring).

    Args:
        volumes: the bones' CTs (attenuation-like, 0 outside the bone), in the trial's frame.
        rig, frames, options, masks: as :func:`~stereodrr.track.bones.track_bone` (how the bones
            are combined: ``options.joint``; each volume moved to ``options.device`` once).
        beads: the trial's bead tracking (frame ``k`` of it is frame ``k`` here), for the
            predictions; None: markerless.
        inits: per volume the first frame's start (CT -> world) or None (the global search).
        legacy: the former keywords ``times`` and ``n_frames`` (now fields of
            :class:`~stereodrr.track.bones.FrameSeries`) and ``joint`` (now ``options.joint``),
            accepted for one release with a ``DeprecationWarning``.

    Returns:
        One :class:`~stereodrr.track.bones.BoneTrack` per volume, from the last pass.
    """
    series = frames if isinstance(frames, FrameSeries) else FrameSeries(frames, masks)
    series = legacy_options("track_bones", series, {k: legacy.pop(k) for k in ("times", "n_frames") if k in legacy},
                            FrameSeries, parameter="frames")
    options = legacy_options("track_bones", TrackOptions.for_rig(rig) if options is None else options, legacy,
                             TrackOptions)
    if not volumes:
        raise ValueError("volumes: expected at least one bone")
    if options.device is not None:  # moved once, not again in every pass
        volumes = [v.to(options.device) for v in volumes]
    check_registration_memory(rig, "rig", volumes[0].device)
    n = series.count()
    if beads is not None and beads.frames != n:
        raise ValueError(f"beads: expected a bead tracking of the same {n} frames, got {beads.frames}")
    if inits is not None and len(inits) != len(volumes):
        raise ValueError(f"inits: expected one start (or None) per volume ({len(volumes)}), got {len(inits)}")
    starts = [None] * len(volumes) if inits is None else list(inits)
    tracks = [track_bone(v, rig, series, options, init=s) for v, s in zip(volumes, starts)]
    for _ in range(options.joint.passes if len(volumes) > 1 or beads is not None else 0):
        _joint_pass(volumes, rig, series, options, tracks, beads)
    return tracks


def _joint_pass(volumes: Sequence[Volume], rig: StereoRig, series: FrameSeries, options: TrackOptions,
                tracks: list[BoneTrack], beads: BeadTracking | None) -> None:
    """One pass after the first: each bone again on the frames with the others explained away,
    its starts from the earlier pass and its bead body's motion (``tracks`` updated in place)."""
    joint, n = options.joint, series.count()
    bodies = bead_bodies_of_bones(volumes, tracks, beads, joint.bead_distance_mm) if beads is not None \
        else [None] * len(volumes)
    # The bones tracked best first: their poses explain the frames for the others.
    order = sorted(range(len(volumes)), key=lambda i: -int((~tracks[i].doubtful).sum()))
    for i in order:
        others = [j for j in range(len(volumes)) if j != i]

        def frame_i(k: int, others: list[int] = others) -> dict[str, np.ndarray]:
            imgs, msk = series.load(rig, k)
            kept = [(volumes[j], tracks[j].poses[k]) for j in others if not tracks[j].doubtful[k]]
            return explain_away(imgs, rig, kept, msk, joint, options.render_mode)

        body = bodies[i]
        motion = None if body is None or beads is None else _body_motions(beads, body, n)
        opts = replace(options, predict=_predictor(tracks[i], motion))
        tracks[i] = track_bone(volumes[i], rig, replace(series, images=frame_i, n_frames=n), opts)

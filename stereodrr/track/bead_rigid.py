"""Beads grouped into rigid bodies, and each body's pose per frame; the options shared with
linking (:mod:`stereodrr.track.bead_link`) and the rigid fit.

**Rigid bodies.** Two tracks belong to one body when their distance is constant through the
frames both are seen in (its RMS deviation from its median within ``tolerance_mm / 2``, over at
least two frames). Bodies are the complete-linkage clusters of that relation (every pair in a
body rigid), pairs seen together in fewer frames joining later, with at least ``min_beads``
beads; a bead in no body gets body ``-1``.

**Poses.** Each body's reference constellation is its mean shape over the frames (generalised
Procrustes: every frame aligned to the reference by Kabsch, the reference the mean of the
aligned frames, repeated); its pose in frame ``f`` is the rigid motion that carries the
reference onto the beads seen in ``f`` (at least ``min_beads``), reported relative to its first
such frame, with the RMS distance of the beads from the moved reference. Frames with too few
beads have NaN poses; missing beads are never filled in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from ..geometry import kabsch

__all__ = ["BeadLinkOptions", "pair_spread", "rigid_bodies", "body_references", "expected_beads",
           "merge_fragments", "body_poses", "POSE_COLUMNS"]

POSE_COLUMNS = tuple(f"m{i}{j}" for i in range(4) for j in range(4))
"""Columns of a 4x4 matrix stored row-major in a table: ``m00 ... m33``."""


@dataclass(frozen=True)
class BeadLinkOptions:
    """How beads are linked through frames and grouped into bodies.

    Attributes:
        tolerance_mm: largest change of a distance between two beads of one bone, and largest
            distance of a bead from its rigidly moved position, between frames (mm); a few times
            the triangulation error.
        min_beads: fewest beads that define a rigid motion or make a body (3: a rigid motion
            needs three points).
    """

    tolerance_mm: float = 0.5
    min_beads: int = 3

    def __post_init__(self) -> None:
        if not self.tolerance_mm > 0:
            raise ValueError(f"tolerance_mm: expected a positive distance in mm, got {self.tolerance_mm}")
        if int(self.min_beads) != self.min_beads or self.min_beads < 3:
            raise ValueError(f"min_beads: expected an integer >= 3 (a rigid motion needs three points), got {self.min_beads}")


def _check_positions(positions: np.ndarray) -> np.ndarray:
    X = np.asarray(positions, np.float64)
    if X.ndim != 3 or X.shape[2] != 3:
        raise ValueError(f"positions: expected (frames, beads, 3) mm with NaN for unseen beads, got shape {X.shape}")
    if np.any(np.isnan(X).any(axis=2) != np.isnan(X).all(axis=2)) or np.any(np.isinf(X)):
        raise ValueError("positions: expected each bead position all finite or all NaN (unseen)")
    return X


def pair_spread(positions: np.ndarray, min_frames: int = 2) -> np.ndarray:
    """``(B, B)`` RMS deviation (mm) of each pair's distance from its median over the frames both
    beads are seen in; ``inf`` for pairs seen together in fewer than ``min_frames`` frames."""
    X = _check_positions(positions)
    B = X.shape[1]
    spread = np.full((B, B), np.inf)
    # A few rows of the pair matrix at a time: the distances of every frame stay small in memory.
    rows = max(1, int(2e6 // max(X.shape[0] * B, 1)))
    for i0 in range(0, B, rows):
        D = np.linalg.norm(X[:, i0:i0 + rows, None] - X[:, None], axis=3)  # (F, rows, B), NaN where unseen
        seen = ~np.isnan(D)
        count = seen.sum(axis=0)
        # Pairs never seen together get distance 0 in every frame (and inf below): no empty slice.
        D = np.where(count[None] > 0, D, 0.0)
        dev = np.where(seen | (count[None] == 0), D - np.nanmedian(D, axis=0)[None], 0.0)
        block = np.sqrt(np.sum(dev**2, axis=0) / np.maximum(count, 1))
        spread[i0:i0 + rows] = np.where(count >= min_frames, block, np.inf)
    return spread


def rigid_bodies(positions: np.ndarray, options: BeadLinkOptions = BeadLinkOptions()) -> np.ndarray:
    """Group linked beads into rigid bodies by distance invariance.

    Args:
        positions: ``(F, B, 3)`` bead positions per frame (mm), NaN where a bead is unseen.
        options: see :class:`BeadLinkOptions`.

    Returns:
        ``(B,)`` body per bead: 0, 1, ... by decreasing size (then first bead), -1 for none.
    """
    X = _check_positions(positions)
    body = np.full(X.shape[1], -1)
    # Only beads seen in two frames or more carry evidence of rigidity.
    tracked = np.nonzero(np.sum(~np.isnan(X[:, :, 0]), axis=0) >= 2)[0]
    if len(tracked) < options.min_beads:
        return body
    Xt = X[:, tracked]
    seen = ~np.isnan(Xt[:, :, 0])
    together = (seen[:, :, None] & seen[:, None, :]).sum(axis=0)
    # A spread measured in few frames is uncertain: pairs seen together less often join later
    # (a stray track that kept its distance to a bead over two frames does not take it from
    # its bone, whose other beads kept theirs over many).
    doubt = 0.25 * options.tolerance_mm / np.sqrt(np.maximum(together - 1, 1))
    # Pairs never seen together twice (pieces of one bead's broken track, above all) hold no
    # evidence either way: they may share a body, after every pair with evidence.
    dist = np.where(together >= 2, pair_spread(Xt) + doubt, 0.99 * options.tolerance_mm / 2)
    np.fill_diagonal(dist, 0.0)
    # Complete linkage: every pair of a body within the threshold.
    labels = fcluster(linkage(squareform(dist, checks=False), method="complete"), t=options.tolerance_mm / 2,
                      criterion="distance")
    groups = [tracked[labels == k] for k in np.unique(labels)]
    groups = sorted((g for g in groups if len(g) >= options.min_beads), key=lambda g: (-len(g), g[0]))
    for k, g in enumerate(groups):
        body[g] = k
    return body


def _procrustes_reference(Xb: np.ndarray, frames: np.ndarray, iterations: int = 50) -> np.ndarray:
    """Mean shape ``(n, 3)`` of one body's beads ``Xb`` ``(F, n, 3)`` over ``frames`` (each with at
    least three beads seen): every frame aligned onto the reference, the reference their mean."""
    counts = np.sum(~np.isnan(Xb[frames, :, 0]), axis=1)
    ref = Xb[frames[np.argmax(counts)]]
    for _ in range(iterations):
        aligned = np.full((len(frames), *ref.shape), np.nan)
        for k, f in enumerate(frames):
            ok = ~np.isnan(Xb[f, :, 0]) & ~np.isnan(ref[:, 0])
            if ok.sum() >= 3:
                R, t = kabsch(Xb[f, ok], ref[ok])
                aligned[k] = Xb[f] @ R.T + t
        count = np.sum(~np.isnan(aligned[..., 0]), axis=0)
        new = np.where(count[:, None] > 0, np.nansum(aligned, axis=0) / np.maximum(count, 1)[:, None], np.nan)
        done = np.array_equal(np.isnan(new), np.isnan(ref)) and bool(np.nanmax(np.abs(new - ref)) < 1e-10)
        ref = new
        if done:
            break
    return ref


def body_references(positions: np.ndarray, bodies: np.ndarray, options: BeadLinkOptions = BeadLinkOptions()
                    ) -> dict[int, np.ndarray]:
    """Each body's mean shape: body -> ``(n_b, 3)`` positions (mm) of its beads in the order of
    ``bodies`` (NaN for a bead never seen with ``min_beads`` of its body), in the pose of the
    body's fullest frame."""
    X = _check_positions(positions)
    bodies = np.asarray(bodies)
    if bodies.shape != (X.shape[1],):
        raise ValueError(f"bodies: expected one body id per bead, shape ({X.shape[1]},), got {bodies.shape}")
    refs = {}
    for b in sorted(set(bodies[bodies >= 0].tolist())):
        Xb = X[:, bodies == b]
        frames = np.nonzero(np.sum(~np.isnan(Xb[:, :, 0]), axis=1) >= options.min_beads)[0]
        if len(frames):
            refs[b] = _procrustes_reference(Xb, frames)
    return refs


def _agreeing_motion(ref: np.ndarray, X: np.ndarray, opts: BeadLinkOptions) -> tuple[np.ndarray, np.ndarray] | None:
    """The rigid motion carrying a body's reference ``ref`` ``(n, 3)`` onto its beads seen in one
    frame ``X`` ``(n, 3)`` (NaN: unseen), refitted without the bead farthest from it until all
    lie within ``tolerance_mm`` (a wrong bead does not pull it); None with fewer than
    ``min_beads`` agreeing beads."""
    seen = ~np.isnan(X[:, 0]) & ~np.isnan(ref[:, 0])
    while seen.sum() >= opts.min_beads:
        R, t = kabsch(ref[seen], X[seen])
        err = np.where(seen, np.linalg.norm(ref @ R.T + t - np.where(seen[:, None], X, 0.0), axis=1), -1.0)
        worst = int(np.argmax(err))
        if err[worst] <= opts.tolerance_mm:
            return R, t
        seen[worst] = False
    return None


def expected_beads(frame_positions: np.ndarray, bodies: np.ndarray, references: dict[int, np.ndarray],
                   options: BeadLinkOptions = BeadLinkOptions()) -> np.ndarray:
    """``(M, 3)`` positions (mm) where the beads of every body are expected in one frame: each
    body's reference moved by the rigid motion that fits the body's beads seen in the frame,
    refitted without the beads farther than ``tolerance_mm`` from it (a wrong bead does not pull
    the motion); bodies with fewer than ``min_beads`` agreeing beads are left out.

    Args:
        frame_positions: ``(B, 3)`` bead positions in the frame (NaN: unseen).
        bodies: ``(B,)`` body per bead; references: :func:`body_references`.
    """
    X = np.asarray(frame_positions, np.float64)
    out = []
    for b, ref in references.items():
        motion = _agreeing_motion(ref, X[bodies == b], options)
        if motion is not None:
            moved = ref @ motion[0].T + motion[1]
            out.append(moved[~np.isnan(moved[:, 0])])
    return np.concatenate(out) if out else np.zeros((0, 3))


def merge_fragments(positions: np.ndarray, options: BeadLinkOptions = BeadLinkOptions()) -> np.ndarray:
    """Join the pieces of a bead's track that linking left apart (a bead hidden while too few of
    its bone's beads were seen to carry it): two tracks of one body at the same place in its
    reference (within ``tolerance_mm``), never seen in one frame, are one bead; so is a track in
    no body whose positions, taken into the body's reference by the body's pose in their frames,
    land within ``tolerance_mm`` of one bead of the reference (in 90 % of the frames with a
    pose), and that is never seen in a frame with that bead.

    Args:
        positions: ``(F, B, 3)`` bead positions (mm), NaN where unseen.

    Returns:
        ``(B,)`` the track each track continues (itself when none).
    """
    X = _check_positions(positions)
    B = X.shape[1]
    target = np.arange(B)
    bodies = rigid_bodies(X, options)
    seen = ~np.isnan(X[:, :, 0])
    for b, ref in body_references(X, bodies, options).items():
        members = np.nonzero(bodies == b)[0]
        motions = [_agreeing_motion(ref, X[f, members], options) for f in range(X.shape[0])]
        taken = seen[:, members].copy()
        # Members that are pieces of one bead: the same place in the body, never seen together.
        close = np.linalg.norm(ref[:, None] - ref[None], axis=2) < options.tolerance_mm
        for i, j in zip(*np.nonzero(np.triu(close, 1))):
            if target[members[j]] == members[j] and not (taken[:, i] & taken[:, j]).any():
                target[members[j]] = target[members[i]]
                taken[:, i] |= taken[:, j]
        for t in np.nonzero((bodies < 0) & seen.any(axis=0))[0]:
            posed = [(f, m) for f in np.nonzero(seen[:, t])[0] if (m := motions[f]) is not None]
            if not posed:
                continue
            # The track's positions in the body's reference frame, against its beads.
            local = np.stack([(X[f, t] - shift) @ R for f, (R, shift) in posed])
            d = np.linalg.norm(local[:, None] - ref[None], axis=2)
            j = int(np.bincount(np.nanargmin(d, axis=1)).argmax())
            near = d[:, j] < options.tolerance_mm
            if near.mean() >= 0.9 and not taken[np.nonzero(seen[:, t])[0], j].any():
                target[t] = members[j]
                taken[seen[:, t], j] = True
    # Chains (a piece joined to a piece that was joined to another) end at their first track.
    while not np.array_equal(target[target], target):
        target = target[target]
    return target


def body_poses(positions: np.ndarray, bodies: np.ndarray, options: BeadLinkOptions = BeadLinkOptions()) -> pd.DataFrame:
    """Per frame and body, the rigid motion of the body relative to its first frame.

    Args:
        positions: ``(F, B, 3)`` bead positions (mm), NaN where unseen.
        bodies: ``(B,)`` body of each bead (-1: none), e.g. :func:`rigid_bodies`.
        options: ``min_beads``: fewest beads seen for a pose.

    Returns:
        One row per frame and body: ``frame, body, beads`` (seen), the 4x4 motion row-major
        ``m00 ... m33`` (``x_f = M x_first``, mm) and ``rms_mm`` (RMS distance of the seen beads
        from the body's mean shape moved into the frame); NaN where fewer than ``min_beads``.
    """
    X = _check_positions(positions)
    refs = body_references(X, bodies, options)
    rows = []
    for b in sorted(set(np.asarray(bodies)[np.asarray(bodies) >= 0].tolist())):
        Xb = X[:, np.asarray(bodies) == b]
        visible = np.sum(~np.isnan(Xb[:, :, 0]), axis=1)
        ref = refs.get(b)
        first = None
        for f in range(X.shape[0]):
            row: dict[str, float] = {"frame": f, "body": b, "beads": int(visible[f])}
            M = np.full((4, 4), np.nan)
            rms = np.nan
            if ref is not None and visible[f] >= options.min_beads:
                ok = ~np.isnan(Xb[f, :, 0]) & ~np.isnan(ref[:, 0])
                R, t = kabsch(ref[ok], Xb[f, ok])
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R, t
                rms = float(np.sqrt(np.mean(np.sum((ref[ok] @ R.T + t - Xb[f, ok]) ** 2, axis=1))))
                first = T if first is None else first
                M = T @ np.linalg.inv(first)
            row.update(dict(zip(POSE_COLUMNS, M.ravel())))
            row["rms_mm"] = rms
            rows.append(row)
    return pd.DataFrame(rows, columns=["frame", "body", "beads", *POSE_COLUMNS, "rms_mm"])

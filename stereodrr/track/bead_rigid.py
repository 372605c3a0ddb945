"""Beads followed through frames, grouped into rigid bodies, and each body's pose per frame.

**Linking.** Beads implanted in one bone keep their mutual distances whatever the bone does, so
a frame's beads are matched to the tracks so far by rigid motions, not by proximity (a hand moves
centimetres between frames). Hypotheses come from triangles: each track with two of its nearest
neighbours (positions of one earlier frame) against every triangle of the new frame's beads with
the same side lengths within ``tolerance_mm``; each triangle pair gives a rigid motion (Kabsch),
and the motion that carries the most tracks onto new beads (within ``tolerance_mm``) wins. Its
tracks are assigned, and the search repeats on the rest, one bone at a time, until no motion
carries ``min_beads`` tracks. A track not seen in the frame the motions were found in is then
linked by distance invariance: to the new bead whose distances to the linked beads equal the
track's distances to them in a frame where both were seen, for at least ``min_beads`` of them.
Beads left over start new tracks.

**Rigid bodies.** Two tracks belong to one body when their distance is constant through the
frames both are seen in (its RMS deviation from its median within ``tolerance_mm / 2``, over at
least two frames). Bodies are the complete-linkage clusters of that relation (every pair in a
body rigid) with at least ``min_beads`` beads; a bead in no body gets body ``-1``.

**Poses.** Each body's reference constellation is its mean shape over the frames (generalised
Procrustes: every frame aligned to the reference by Kabsch, the reference the mean of the
aligned frames, repeated); its pose in frame ``f`` is the rigid motion that carries the
reference onto the beads seen in ``f`` (at least ``min_beads``), reported relative to its first
such frame, with the RMS distance of the beads from the moved reference. Frames with too few
beads have NaN poses; missing beads are never filled in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

__all__ = ["BeadLinkOptions", "kabsch", "link_beads", "pair_spread", "rigid_bodies", "body_references", "expected_beads",
           "body_poses", "POSE_COLUMNS"]

POSE_COLUMNS = tuple(f"m{i}{j}" for i in range(4) for j in range(4))
# Neighbours of a track that form its hypothesis triangles.
_NEIGHBOURS = 4


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


def kabsch(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``R`` and translation ``t`` minimising ``sum |R a_i + t - b_i|^2`` (Kabsch).

    Args:
        A, B: ``(..., N, 3)`` corresponding points, ``N >= 3`` (batched over leading axes).

    Returns:
        R ``(..., 3, 3)`` proper rotations, t ``(..., 3)``.
    """
    A = np.asarray(A, np.float64)
    B = np.asarray(B, np.float64)
    ca, cb = A.mean(axis=-2), B.mean(axis=-2)
    H = np.swapaxes(A - ca[..., None, :], -1, -2) @ (B - cb[..., None, :])
    U, _, Vt = np.linalg.svd(H)
    V, Ut = np.swapaxes(Vt, -1, -2), np.swapaxes(U, -1, -2)
    # A reflection is the best orthogonal fit of a degenerate or noisy set: flip the last axis.
    d = np.sign(np.linalg.det(V @ Ut))
    D = np.broadcast_to(np.eye(3), (*d.shape, 3, 3)).copy()
    D[..., 2, 2] = np.where(d == 0, 1.0, d)
    R = V @ D @ Ut
    return R, cb - (R @ ca[..., None])[..., 0]


def _distances(X: np.ndarray) -> np.ndarray:
    return np.linalg.norm(X[:, None] - X[None], axis=2)


def _triangles(X: np.ndarray) -> np.ndarray:
    """``(T, 3)`` index triangles: each point with two of its nearest neighbours."""
    n = len(X)
    D = _distances(X)
    near = np.argsort(D, axis=1)[:, 1:_NEIGHBOURS + 1]
    tris = {tuple(sorted((i, int(j), int(k)))) for i in range(n) for a, j in enumerate(near[i]) for k in near[i][a + 1:]}
    return np.array(sorted(tris), dtype=np.intp).reshape(-1, 3)


def _assign(moved: np.ndarray, Y: np.ndarray, tol: float) -> np.ndarray:
    """For each moved point, the index of the new point within ``tol`` (nearest, each new point
    taken once, closest first), or -1."""
    D = np.linalg.norm(moved[:, None] - Y[None], axis=2)
    out = np.full(len(moved), -1)
    taken = np.zeros(len(Y), bool)
    for flat in np.argsort(D, axis=None):
        i, j = divmod(int(flat), len(Y))
        if D[i, j] >= tol:
            break
        if out[i] < 0 and not taken[j]:
            out[i], taken[j] = j, True
    return out


def _best_motion(X: np.ndarray, Y: np.ndarray, tol: float) -> tuple[np.ndarray, float]:
    """The rigid motion carrying the most of ``X`` onto ``Y``: ``(match (len X,), rms)``, match -1
    where a point of ``X`` lands on none."""
    best, best_key = np.full(len(X), -1), (0, 0.0)
    if len(X) < 3 or len(Y) < 3:
        return best, np.inf
    DX, DY = _distances(X), _distances(Y)
    for a, b, c in _triangles(X):
        ok = ((np.abs(DY - DX[a, b]) < tol)[:, :, None] & (np.abs(DY - DX[a, c]) < tol)[:, None, :]
              & (np.abs(DY - DX[b, c]) < tol)[None, :, :])
        ya, yb, yc = np.nonzero(ok)
        if len(ya) == 0:
            continue
        R, t = kabsch(np.broadcast_to(X[[a, b, c]], (len(ya), 3, 3)), np.stack([Y[ya], Y[yb], Y[yc]], axis=1))
        moved = X[None] @ np.swapaxes(R, 1, 2) + t[:, None]
        hits = np.min(np.linalg.norm(moved[:, :, None] - Y[None, None], axis=3), axis=2) < tol
        for k in np.argsort(-hits.sum(axis=1))[:3]:
            match, rms = _refined(X, Y, R[k], t[k], tol)
            key = (int(np.sum(match >= 0)), -rms)
            if key > best_key:
                best, best_key = match, key
    return best, -best_key[1] if best_key[0] else np.inf


def _refined(X: np.ndarray, Y: np.ndarray, R: np.ndarray, t: np.ndarray, tol: float) -> tuple[np.ndarray, float]:
    """Matches of a motion, refitted on its own matches until they stop changing; and their RMS."""
    match = _assign(X @ R.T + t, Y, tol)
    for _ in range(5):
        ok = match >= 0
        if ok.sum() < 3:
            break
        R, t = kabsch(X[ok], Y[match[ok]])
        new = _assign(X @ R.T + t, Y, tol)
        if np.array_equal(new, match):
            break
        match = new
    ok = match >= 0
    rms = float(np.sqrt(np.mean(np.sum((X[ok] @ R.T + t - Y[match[ok]]) ** 2, axis=1)))) if ok.any() else np.inf
    return match, rms


def _link_frame(history: np.ndarray, Y: np.ndarray, opts: BeadLinkOptions) -> np.ndarray:
    """Track of each new bead ``Y`` ``(N, 3)`` given the tracks' positions ``(T, F, 3)`` in the
    frames so far (NaN where unseen): ``(N,)`` track index or -1."""
    T = len(history)
    track_of = np.full(len(Y), -1)
    if T == 0 or len(Y) == 0:
        return track_of
    seen = ~np.isnan(history[..., 0])
    last = np.where(seen.any(axis=1), seen.shape[1] - 1 - np.argmax(seen[:, ::-1], axis=1), -1)
    free_t = np.ones(T, bool)
    # Rigid motions from the frames tracks were last seen in, the most recent first.
    for g in sorted(set(last[last >= 0].tolist()), reverse=True):
        while True:
            S = np.nonzero(free_t & seen[:, g])[0]
            P = np.nonzero(track_of < 0)[0]
            match, _ = _best_motion(history[S, g], Y[P], opts.tolerance_mm)
            if np.sum(match >= 0) < opts.min_beads:
                break
            for s, m in zip(S, match):
                if m >= 0:
                    track_of[P[m]], free_t[s] = s, False
    _link_by_distances(history, seen, Y, track_of, free_t, opts)
    return track_of


def _link_by_distances(history: np.ndarray, seen: np.ndarray, Y: np.ndarray, track_of: np.ndarray,
                       free_t: np.ndarray, opts: BeadLinkOptions) -> None:
    """Link the remaining tracks to remaining beads by distance invariance to the linked beads
    (in place): the pair with the most consistent distances first, at least ``min_beads``."""
    linked = np.nonzero(track_of >= 0)[0]
    while True:
        best = (opts.min_beads - 1, -1, -1)
        for t in np.nonzero(free_t & seen.any(axis=1))[0]:
            for p in np.nonzero(track_of < 0)[0]:
                support = 0
                for q in linked:
                    u = track_of[q]
                    both = np.nonzero(seen[t] & seen[u])[0]
                    if len(both):
                        g = both[-1]
                        d_then = np.linalg.norm(history[t, g] - history[u, g])
                        support += abs(d_then - np.linalg.norm(Y[p] - Y[q])) < opts.tolerance_mm
                if support > best[0]:
                    best = (int(support), int(t), int(p))
        _, track, bead = best
        if track < 0:
            return
        track_of[bead], free_t[track] = track, False
        linked = np.append(linked, bead)


def link_beads(points: Sequence[np.ndarray], options: BeadLinkOptions = BeadLinkOptions()) -> list[np.ndarray]:
    """Give the beads of every frame track ids that stay the same through the frames.

    Args:
        points: per frame, ``(N_f, 3)`` triangulated beads (mm), in any order.
        options: see :class:`BeadLinkOptions`.

    Returns:
        Per frame, ``(N_f,)`` track ids (0, 1, ... in order of first appearance).

    Raises:
        ValueError: a frame's points are not ``(N, 3)`` finite numbers.
    """
    frames = []
    for f, P in enumerate(points):
        P = np.asarray(P, np.float64)
        if P.ndim != 2 or P.shape[1] != 3 or not np.all(np.isfinite(P)):
            raise ValueError(f"points[{f}]: expected finite (N, 3) positions in mm, got shape {P.shape}")
        frames.append(P)
    history = np.full((0, len(frames), 3), np.nan)
    ids = []
    for f, P in enumerate(frames):
        track_of = _link_frame(history[:, :f], P, options)
        new = np.nonzero(track_of < 0)[0]
        track_of[new] = len(history) + np.arange(len(new))
        history = np.concatenate([history, np.full((len(new), len(frames), 3), np.nan)])
        history[track_of, f] = P
        ids.append(track_of)
    return ids


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
    D = np.linalg.norm(X[:, :, None] - X[:, None], axis=3)  # (F, B, B), NaN where either unseen
    seen = ~np.isnan(D)
    count = seen.sum(axis=0)
    # Pairs never seen together get distance 0 in every frame (and inf below), so no slice is empty.
    D = np.where(count[None] > 0, D, 0.0)
    dev = np.where(seen | (count[None] == 0), D - np.nanmedian(D, axis=0)[None], 0.0)
    spread = np.sqrt(np.sum(dev**2, axis=0) / np.maximum(count, 1))
    return np.where(count >= min_frames, spread, np.inf)


def rigid_bodies(positions: np.ndarray, options: BeadLinkOptions = BeadLinkOptions()) -> np.ndarray:
    """Group linked beads into rigid bodies by distance invariance.

    Args:
        positions: ``(F, B, 3)`` bead positions per frame (mm), NaN where a bead is unseen.
        options: see :class:`BeadLinkOptions`.

    Returns:
        ``(B,)`` body per bead: 0, 1, ... by decreasing size (then first bead), -1 for none.
    """
    X = _check_positions(positions)
    B = X.shape[1]
    body = np.full(B, -1)
    if B < options.min_beads:
        return body
    spread = pair_spread(X)
    # Complete linkage: a cluster's every pair within the threshold. Unknown pairs never join.
    big = 1e6
    dist = np.where(np.isfinite(spread), spread, big)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="complete"), t=options.tolerance_mm / 2,
                      criterion="distance")
    groups = [np.nonzero(labels == k)[0] for k in np.unique(labels)]
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
        seen = ~np.isnan(X[bodies == b, 0]) & ~np.isnan(ref[:, 0])
        while seen.sum() >= options.min_beads:
            R, t = kabsch(ref[seen], X[bodies == b][seen])
            err = np.linalg.norm(ref @ R.T + t - X[bodies == b], axis=1)
            worst = int(np.nanargmax(np.where(seen, err, -1.0)))
            if err[worst] <= options.tolerance_mm:
                moved = ref @ R.T + t
                out.append(moved[~np.isnan(moved[:, 0])])
                break
            seen[worst] = False
    return np.concatenate(out) if out else np.zeros((0, 3))


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

"""Beads followed through frames by rigid motions.

**Linking.** Beads implanted in one bone keep their mutual distances whatever the bone does, so
a frame's beads are matched to the tracks so far by rigid motions, not by proximity (a hand moves
centimetres between frames). Hypotheses come from triangles: each track with two of its nearest
neighbours (positions of one earlier frame) against every triangle of the new frame's beads with
the same side lengths within ``tolerance_mm``; each triangle pair gives a rigid motion (Kabsch),
and the motion that carries the most tracks onto new beads (within ``tolerance_mm``) wins (the
closer fit and then the smaller rotation among equals: a nearly isosceles triangle also fits
turned over). A track it carries whose past distances to the others it carries did not stay
constant (a bead of another bone landing near a new bead by chance) is left out. Its
tracks are assigned, and the search repeats on the rest, one bone at a time, until no motion
carries ``min_beads`` tracks. A track not seen in the frame the motions were found in (a bead
hidden for a while) is then carried along by the group of tracks a motion linked, when enough
of them were seen with it in its last frame and still move rigidly from there: it joins the new
bead at its carried position. Beads left over start new tracks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..geometry import kabsch
from .bead_rigid import BeadLinkOptions, pair_spread

__all__ = ["link_beads"]

# Neighbours of a track that form its hypothesis triangles.
_NEIGHBOURS = 4


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


def _best_motion(X: np.ndarray, Y: np.ndarray, tol: float, refine: int = 6) -> tuple[np.ndarray, float]:
    """The rigid motion carrying the most of ``X`` onto ``Y``: ``(match (len X,), rms)``, match -1
    where a point of ``X`` lands on none. Every triangle of ``X`` (a point and two of its nearest
    neighbours) against every congruent triangle of ``Y`` gives a motion; the ``refine`` that
    carry the most points are refitted and the best kept."""
    best, best_key = np.full(len(X), -1), (0, 0.0)
    if len(X) < 3 or len(Y) < 3:
        return best, np.inf
    DX, DY = _distances(X), _distances(Y)
    pairs = []
    for tri in _triangles(X):
        a, b, c = tri
        ok = ((np.abs(DY - DX[a, b]) < tol)[:, :, None] & (np.abs(DY - DX[a, c]) < tol)[:, None, :]
              & (np.abs(DY - DX[b, c]) < tol)[None, :, :])
        found = np.argwhere(ok)
        pairs.append(np.concatenate([np.broadcast_to(tri, found.shape), found], axis=1))
    pairs_all = np.concatenate(pairs) if pairs else np.zeros((0, 6), np.intp)
    if len(pairs_all) == 0:
        return best, np.inf
    # One motion per pair of congruent triangles, all at once.
    R_all, t_all = kabsch(X[pairs_all[:, :3]], Y[pairs_all[:, 3:]])
    moved = X[None] @ np.swapaxes(R_all, 1, 2) + t_all[:, None]
    n_all = np.sum(np.min(np.linalg.norm(moved[:, :, None] - Y[None, None], axis=3), axis=2) < tol, axis=1)
    for k in np.argsort(-n_all, kind="stable")[:refine]:
        match, rms, R_fit = _refined(X, Y, R_all[k], t_all[k], tol)
        # Equally many beads: the closer fit, and between fits equal within the noise (a
        # nearly isosceles triangle fits turned over as well) the smaller rotation.
        angle = float(np.arccos(np.clip((np.trace(R_fit) - 1.0) / 2.0, -1.0, 1.0)))
        key = (int(np.sum(match >= 0)), -(rms + 0.1 * tol * angle))
        if key > best_key:
            best, best_key = match, key
    return best, -best_key[1] if best_key[0] else np.inf


def _refined(X: np.ndarray, Y: np.ndarray, R: np.ndarray, t: np.ndarray, tol: float
             ) -> tuple[np.ndarray, float, np.ndarray]:
    """Matches of a motion, refitted on its own matches until they stop changing; their RMS and
    the refitted rotation.

    A match must also lie within ``max(tol / 4, 4 x the median residual)`` of the refitted
    motion: a bead of another bone that the motion happens to carry near a new bead (within
    ``tol``) stands out against the matches' own scatter."""
    match = _assign(X @ R.T + t, Y, tol)
    for _ in range(5):
        ok = match >= 0
        if ok.sum() < 3:
            break
        R, t = kabsch(X[ok], Y[match[ok]])
        new = _assign(X @ R.T + t, Y, tol)
        residual = np.linalg.norm(X @ R.T + t - Y[np.maximum(new, 0)], axis=1)
        if np.sum(new >= 0) >= 3:
            new[residual > max(tol / 4, 4.0 * float(np.median(residual[new >= 0])))] = -1
        if np.array_equal(new, match):
            break
        match = new
    ok = match >= 0
    rms = float(np.sqrt(np.mean(np.sum((X[ok] @ R.T + t - Y[match[ok]]) ** 2, axis=1)))) if ok.any() else np.inf
    return match, rms, R


def _foreign(history: np.ndarray, members: np.ndarray, opts: BeadLinkOptions) -> np.ndarray:
    """Which of the tracks ``history`` ``(n, F, 3)`` flagged as ``members`` of one motion kept their
    distances to fewer than half of the other members they were seen with in two frames or more
    (a bead of another bone carried near a new bead by chance); ``(n,)`` bool."""
    out = np.zeros(len(history), bool)
    idx = np.nonzero(members)[0]
    if len(idx) < 2:
        return out
    spread = pair_spread(np.transpose(history[idx], (1, 0, 2)))
    known = np.isfinite(spread)
    np.fill_diagonal(known, False)
    rigid = known & (spread <= opts.tolerance_mm / 2)
    out[idx] = rigid.sum(axis=1) < 0.5 * known.sum(axis=1)
    return out


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
    groups: list[np.ndarray] = []
    # Rigid motions from the frames tracks were last seen in (by at least min_beads of them: a
    # bone's beads go missing together or are carried along below), the most recent first.
    frames, counts = np.unique(last[last >= 0], return_counts=True)
    for g in frames[counts >= opts.min_beads][::-1]:
        while True:
            S = np.nonzero(free_t & seen[:, g])[0]
            P = np.nonzero(track_of < 0)[0]
            if len(S) < opts.min_beads or len(P) < opts.min_beads:
                break
            match, _ = _best_motion(history[S, g], Y[P], opts.tolerance_mm)
            match[_foreign(history[S], match >= 0, opts)] = -1
            if np.sum(match >= 0) < opts.min_beads:
                break
            for s, m in zip(S, match):
                if m >= 0:
                    track_of[P[m]], free_t[s] = s, False
            groups.append(S[match >= 0])
    _carry_dormant(history, seen, Y, track_of, free_t, groups, opts)
    return track_of


def _carry_dormant(history: np.ndarray, seen: np.ndarray, Y: np.ndarray, track_of: np.ndarray,
                   free_t: np.ndarray, groups: list[np.ndarray], opts: BeadLinkOptions) -> None:
    """Link the tracks no motion linked (in place). Each group of tracks one motion linked is
    one bone's beads: in the latest frame where a free track was seen together with at least
    ``min_beads`` of them, and where they fit one rigid motion onto their beads in this frame
    (RMS within ``tolerance_mm / 2``), that motion carries the track's position into this frame;
    the nearest remaining bead within ``tolerance_mm`` of it joins the track (nearest first)."""
    # Tracks seen once, over ten frames ago, are mostly strays (merge_fragments joins a real one).
    recent = max(seen.shape[1] - 10, 0)
    free = np.nonzero(free_t & ((seen.sum(axis=1) >= 2) | seen[:, recent:].any(axis=1)))[0]
    offers = []
    for members in groups:
        now = Y[np.array([np.nonzero(track_of == m)[0][0] for m in members])]
        # For every free track, the latest frame it shares with min_beads members of the group.
        shared = (seen[free][:, None, :] & seen[members][None, :, :]).sum(axis=1) >= opts.min_beads
        has = shared.any(axis=1)
        frame_of = seen.shape[1] - 1 - np.argmax(shared[:, ::-1], axis=1)
        for k in np.unique(frame_of[has]):
            common = seen[members, k]
            R, shift = kabsch(history[members[common], k], now[common])
            fit = history[members[common], k] @ R.T + shift - now[common]
            if np.sqrt(np.mean(np.sum(fit**2, axis=1))) > opts.tolerance_mm / 2:
                continue
            carried = free[has & (frame_of == k)]
            dist = np.linalg.norm((history[carried, k] @ R.T + shift)[:, None] - Y[None], axis=2)
            dist[:, track_of >= 0] = np.inf
            nearest = np.argmin(dist, axis=1)
            for t, p, d in zip(carried, nearest, dist[np.arange(len(carried)), nearest]):
                if d < opts.tolerance_mm:
                    offers.append((float(d), int(t), int(p)))
    for _, t, p in sorted(offers):
        if free_t[t] and track_of[p] < 0:
            track_of[p], free_t[t] = t, False


def link_beads(points: Sequence[np.ndarray], options: BeadLinkOptions | None = None) -> list[np.ndarray]:
    """Give the beads of every frame track ids that stay the same through the frames.

    Args:
        points: per frame, ``(N_f, 3)`` triangulated beads (mm), in any order.
        options: see :class:`~stereodrr.track.bead_rigid.BeadLinkOptions` (None: the defaults).

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
    opts = BeadLinkOptions() if options is None else options
    # Tracks' positions per frame (NaN: unseen), in a buffer that doubles as tracks are added.
    history = np.full((64, len(frames), 3), np.nan)
    n_tracks = 0
    ids = []
    for f, P in enumerate(frames):
        track_of = _link_frame(history[:n_tracks, :f], P, opts)
        new = np.nonzero(track_of < 0)[0]
        track_of[new] = n_tracks + np.arange(len(new))
        n_tracks += len(new)
        if n_tracks > len(history):
            history = np.concatenate([history, np.full((max(n_tracks, 2 * len(history)) - len(history), len(frames), 3), np.nan)])
        history[track_of, f] = P
        ids.append(track_of)
    return ids

"""Linking, rigid-body grouping and poses on synthetic bead constellations moved by known motions."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from stereodrr.geometry import kabsch, rotation_angle_deg
from stereodrr.track.bead_link import link_beads
from stereodrr.track.bead_rigid import (
    POSE_COLUMNS,
    BeadLinkOptions,
    body_poses,
    body_references,
    expected_beads,
    merge_fragments,
    pair_spread,
    rigid_bodies,
)


def _motion(rng: np.random.Generator, max_deg: float, max_mm: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) / np.sqrt(3) * np.deg2rad(max_deg)).as_matrix()
    T[:3, 3] = rng.uniform(-max_mm, max_mm, 3)
    return T


def _scene(rng: np.random.Generator, sizes=(6, 6, 5), frames: int = 5, noise_mm: float = 0.02):
    """Bodies of beads spread over ~15 mm, 30 mm apart, each moved by its own large motions
    (up to 30 degrees and 20 mm between frames; the hand of a wrist). Returns the true positions
    ``(F, B, 3)``, the body of each bead and the true motions ``(bodies, F, 4, 4)`` (frame 0:
    identity)."""
    shapes = [rng.uniform(-8.0, 8.0, (n, 3)) + [30.0 * k, 0.0, 0.0] for k, n in enumerate(sizes)]
    body = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)])
    motions = np.stack([np.stack([np.eye(4)] + [_motion(rng, 30.0, 20.0) for _ in range(frames - 1)]) for _ in sizes])
    X = np.concatenate([shape[None] @ motions[k, :, :3, :3].transpose(0, 2, 1) + motions[k, :, None, :3, 3]
                        for k, shape in enumerate(shapes)], axis=1)
    return X + rng.normal(0.0, noise_mm, X.shape), body, motions


def test_kabsch_recovers_motion_batched():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(7, 5, 3))
    R = Rotation.random(7, random_state=1).as_matrix()
    t = rng.normal(size=(7, 3))
    B = A @ R.transpose(0, 2, 1) + t[:, None]
    R_fit, t_fit = kabsch(A, B)
    assert np.allclose(R_fit, R, atol=1e-10) and np.allclose(t_fit, t, atol=1e-10)
    # A mirrored set still gets a proper rotation.
    assert np.linalg.det(kabsch(A[0], A[0] * [1, 1, -1])[0]) > 0


def test_link_group_and_poses_recover_truth():
    rng = np.random.default_rng(1)
    X, body, motions = _scene(rng)
    F, B = X.shape[:2]
    # Shuffle each frame, drop some beads in some frames, add a stray point.
    missing = {(1, 3), (2, 3), (2, 8), (3, 12), (4, 0)}
    frames, truth_ids = [], []
    for f in range(F):
        keep = np.array([b for b in range(B) if (f, b) not in missing])
        order = rng.permutation(keep)
        frames.append(np.concatenate([X[f, order], rng.uniform(200.0, 300.0, (1, 3))]))
        truth_ids.append(np.append(order, -1))
    ids = link_beads(frames)
    # One track per true bead, the same in every frame.
    pairs = {(int(t), int(i)) for tid, iid in zip(truth_ids, ids) for t, i in zip(tid, iid) if t >= 0}
    assert len(pairs) == B and len({t for t, _ in pairs}) == B and len({i for _, i in pairs}) == B
    track_of = dict(pairs)
    positions = np.full((F, max(int(i.max()) for i in ids) + 1, 3), np.nan)
    for f, (P, i) in enumerate(zip(frames, ids)):
        positions[f, i] = P
    found = rigid_bodies(positions)
    # The grouping: beads of a true body share a found body, the stray points have none.
    for k in range(3):
        members = {found[track_of[b]] for b in np.nonzero(body == k)[0]}
        assert len(members) == 1 and members.pop() >= 0
    assert len(set(found[found >= 0])) == 3
    strays = [i for i in range(positions.shape[1]) if i not in track_of.values()]
    assert all(found[s] == -1 for s in strays)
    poses = body_poses(positions, found)
    assert list(poses.columns) == ["frame", "body", "beads", *POSE_COLUMNS, "rms_mm"]
    for k in range(3):
        fb = found[track_of[np.nonzero(body == k)[0][0]]]
        P = poses[poses["body"] == fb].sort_values("frame")
        M = P[list(POSE_COLUMNS)].to_numpy().reshape(-1, 4, 4)
        for f in range(F):
            # 0.02 mm noise on beads ~10 mm apart: a few tenths of a degree.
            assert rotation_angle_deg(M[f, :3, :3], motions[k, f, :3, :3]) < 0.5
            # Translation checked through a bead: the motion moves body points as the truth does.
            x0 = X[0, np.nonzero(body == k)[0][0]]
            assert np.linalg.norm(M[f, :3, :3] @ x0 + M[f, :3, 3] - (motions[k, f, :3, :3] @ x0 + motions[k, f, :3, 3])) < 0.1
        assert P["rms_mm"].max() < 0.05
        assert np.allclose(M[:, 3], [0, 0, 0, 1])
    # A missing bead stays NaN; the pose of its frame comes from the others.
    assert np.isnan(positions[1, track_of[3]]).all()
    assert poses.loc[(poses["frame"] == 1) & (poses["body"] == found[track_of[3]]), "beads"].item() == 5


def test_too_few_beads_and_frames_give_no_body():
    rng = np.random.default_rng(2)
    X, body, _ = _scene(rng, sizes=(5, 2), frames=3)
    assert (rigid_bodies(X)[body == 1] == -1).all()
    assert len(set(rigid_bodies(X)[body == 0])) == 1
    # One frame holds no evidence of rigidity.
    assert (rigid_bodies(X[:1]) == -1).all()
    # A body seen with fewer than min_beads in a frame has a NaN pose there.
    Xm = X.copy()
    Xm[1, :3] = np.nan
    poses = body_poses(Xm, rigid_bodies(X))
    row = poses[(poses["frame"] == 1) & (poses["body"] == 0)]
    assert row["beads"].item() == 2 and row[list(POSE_COLUMNS) + ["rms_mm"]].isna().all(axis=None)


def test_pair_spread_and_expected_beads():
    rng = np.random.default_rng(3)
    X, body, _ = _scene(rng, sizes=(6, 4), frames=4, noise_mm=0.0)
    spread = pair_spread(X)
    assert spread[0, 1] < 1e-9 and spread[0, 7] > 0.5
    Xm = X.copy()
    Xm[:3, 0] = np.nan  # seen together in one frame only
    assert np.isinf(pair_spread(Xm)[0, 1])
    refs = body_references(X, body)
    # Frame 2 with one bead wrong by 3 mm and one missing: the others carry the body, and every
    # bead (the missing one too) is expected where it truly is.
    frame = X[2].copy()
    frame[1] += [3.0, 0.0, 0.0]
    frame[2] = np.nan
    expected = expected_beads(frame, body, refs)
    assert len(expected) == 10
    assert np.abs(np.sort(expected, axis=0) - np.sort(X[2], axis=0)).max() < 1e-6


def test_merge_fragments_joins_a_split_track():
    rng = np.random.default_rng(4)
    X, body, _ = _scene(rng, sizes=(6, 5), frames=8)
    # Bead 8's track broken in two: frames 0-3 on track 8, frames 4-7 on a new track 11.
    split = np.concatenate([X, np.full((8, 1, 3), np.nan)], axis=1)
    split[4:, 11] = split[4:, 8]
    split[4:, 8] = np.nan
    target = merge_fragments(split)
    assert sorted({int(target[8]), int(target[11])}) in ([8], [11])
    assert np.array_equal(target[:8], np.arange(8)) and np.array_equal(target[9:11], [9, 10])
    # A stray track seen with the bead it would continue is not joined.
    stray = np.concatenate([X, X[:, 8:9] + [0.1, 0.0, 0.0]], axis=1)
    assert np.array_equal(merge_fragments(stray), np.arange(12))


def test_long_sequence_with_dropouts_and_clutter():
    rng = np.random.default_rng(5)
    X, body, _ = _scene(rng, frames=60)
    frames, truth = [], []
    for f in range(len(X)):
        keep = np.nonzero(rng.random(X.shape[1]) > 0.1)[0]
        order = rng.permutation(keep)
        frames.append(np.concatenate([X[f, order], rng.uniform(-50.0, 150.0, (2, 3))]))
        truth.append(np.append(order, [-1, -1]))
    ids = link_beads(frames)
    positions = np.full((len(X), max(int(i.max()) for i in ids) + 1, 3), np.nan)
    for f, (P, i) in enumerate(zip(frames, ids)):
        positions[f, i] = P
    target = merge_fragments(positions)
    tracks: dict[int, set] = {}
    for t, i in zip(truth, ids):
        for bead, track in zip(t, target[i]):
            tracks.setdefault(int(track), set()).add(int(bead))
    # No track ever holds two beads, or a bead and clutter.
    assert all(len(b) == 1 for b in tracks.values())
    # Every bead is on one track in at least 95 % of the frames it is seen in.
    share = []
    for bead in range(X.shape[1]):
        mine = [int(target[i][t == bead][0]) for t, i in zip(truth, ids) if (t == bead).any()]
        share.append(max(mine.count(k) for k in set(mine)) / len(mine))
    assert min(share) >= 0.95, share


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"points\[1\]: expected finite \(N, 3\)"):
        link_beads([np.zeros((3, 3)), np.zeros((3, 2))])
    with pytest.raises(ValueError, match="positions: expected"):
        rigid_bodies(np.zeros((3, 4)))
    partial = np.zeros((2, 3, 3))
    partial[0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="all finite or all NaN"):
        rigid_bodies(partial)
    with pytest.raises(ValueError, match="bodies: expected one body id per bead"):
        body_poses(np.zeros((2, 3, 3)), np.zeros(4, int))
    with pytest.raises(ValueError, match="min_beads"):
        BeadLinkOptions(min_beads=2)
    with pytest.raises(ValueError, match="tolerance_mm"):
        BeadLinkOptions(tolerance_mm=-1.0)

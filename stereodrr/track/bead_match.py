"""Beads matched between the cameras of a calibrated rig, and triangulated.

Every pair of cameras is matched by epipolar distance: the cost of pairing bead ``i`` of camera
``a`` with bead ``j`` of camera ``b`` is the mean of the two pixel distances, ``x_b`` to the
epipolar line ``F x_a`` and ``x_a`` to ``F^T x_b``; the pairing that minimises the total cost
over all beads at once (Hungarian assignment, ``scipy.optimize.linear_sum_assignment``) is
kept where each pair lies within ``gate_px``. Two beads of one camera near the same epipolar line
are an ambiguity two views cannot settle (the two pairings cost nearly the same); given the
positions where beads are ``expected`` (e.g. rigid bodies moved into the frame), a pair whose
two-view triangulation lies farther than ``expected_mm`` from all of them costs ``gate_px / 2``
more, so the pairing that lands on the expected beads wins (an unexpected bead is still paired:
leaving a bead unpaired costs ``gate_px``). With more than two cameras the pairwise matches
are joined into multi-view beads (connected components; a component holding two beads of one
camera keeps only its best pair). Each bead is then triangulated from all its views
(:func:`stereodrr.calib.triangulate.triangulate`, minimum reprojection error) and kept when
its reprojection error in every view is within ``gate_px``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..calib.triangulate import triangulate, triangulate_linear
from ..geometry import Camera, epipolar_lines, fundamental_from_cameras

__all__ = ["BeadMatchOptions", "epipolar_distances", "match_beads"]


@dataclass(frozen=True)
class BeadMatchOptions:
    """How :func:`match_beads` pairs beads between cameras.

    Attributes:
        gate_px: largest accepted epipolar distance of a pair and reprojection error of a
            triangulated bead in any view (px). XMALab's beads lie 0.2-0.4 px (median) from their
            epipolar lines with a good calibration; the gate allows for a poorer one.
        expected_mm: distance (mm) within which a pair's triangulated point counts as an
            expected bead (see ``expected`` of :func:`match_beads`).
    """

    gate_px: float = 2.0
    expected_mm: float = 1.0

    def __post_init__(self) -> None:
        if not self.gate_px > 0:
            raise ValueError(f"gate_px: expected a positive distance in pixels, got {self.gate_px}")
        if not self.expected_mm > 0:
            raise ValueError(f"expected_mm: expected a positive distance in mm, got {self.expected_mm}")


def epipolar_distances(cam_a: Camera, cam_b: Camera, uv_a: np.ndarray, uv_b: np.ndarray) -> np.ndarray:
    """``(Na, Nb)`` symmetric epipolar distance (px) of every pair: the mean of the distance of
    ``uv_b[j]`` to the epipolar line of ``uv_a[i]`` and of ``uv_a[i]`` to that of ``uv_b[j]``."""
    F = fundamental_from_cameras(cam_a, cam_b)
    ua, ub = np.asarray(uv_a, np.float64).reshape(-1, 2), np.asarray(uv_b, np.float64).reshape(-1, 2)
    lines_b = epipolar_lines(F, ua, which=1)  # in view b, one per bead of a
    lines_a = epipolar_lines(F, ub, which=2)  # in view a, one per bead of b
    d_b = np.abs(lines_b[:, :2] @ ub.T + lines_b[:, 2:3])
    d_a = np.abs(lines_a[:, :2] @ ua.T + lines_a[:, 2:3]).T
    return 0.5 * (d_a + d_b)


def _near_expected(cam_a: Camera, cam_b: Camera, uv_a: np.ndarray, uv_b: np.ndarray, cost: np.ndarray,
                   prior: np.ndarray, opts: BeadMatchOptions) -> np.ndarray:
    """``(Na, Nb)``: whether each pair within the gate triangulates (two-view linear) within
    ``expected_mm`` of an expected bead."""
    near = np.zeros(cost.shape, bool)
    i, j = np.nonzero(cost <= opts.gate_px)
    if len(i) and len(prior):
        X = triangulate_linear(cam_a.P, cam_b.P, uv_a[i], uv_b[j])
        near[i, j] = np.min(np.linalg.norm(X[:, None] - prior[None], axis=2), axis=1) <= opts.expected_mm
    return near


def _pairs(choice: np.ndarray, cost: np.ndarray, gate: float) -> list[tuple[int, int]]:
    """The pairing minimising the total ``choice`` among pairs whose ``cost`` is within the gate,
    where leaving a bead unpaired costs ``gate`` (more than any pair within the gate, even one
    that is not expected: ``choice`` adds ``gate / 2`` to those)."""
    na, nb = cost.shape
    if na == 0 or nb == 0:
        return []
    big = 1e6 * max(gate, 1.0)
    full = np.full((na + nb, nb + na), big)
    full[:na, :nb] = np.where(cost <= gate, choice, big)
    full[:na, nb:][np.diag_indices(na)] = gate
    full[na:, :nb][np.diag_indices(nb)] = gate
    full[na:, nb:] = 0.0
    rows, cols = linear_sum_assignment(full)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if i < na and j < nb and cost[i, j] <= gate]


def match_beads(detections: Mapping[str, pd.DataFrame], cameras: Mapping[str, Camera],
                options: BeadMatchOptions = BeadMatchOptions(), expected: np.ndarray | None = None) -> pd.DataFrame:
    """Match the beads of one frame between cameras and triangulate them.

    Args:
        detections: camera name -> beads of that camera (at least columns ``u, v``, px), e.g.
            :func:`~stereodrr.track.bead_detect.detect_beads` of its frame.
        cameras: camera name -> calibrated camera (every name of ``detections``).
        options: see :class:`BeadMatchOptions`.
        expected: ``(M, 3)`` world positions (mm) where beads are expected in this frame, or None.

    Returns:
        One row per triangulated bead: ``x, y, z`` (world mm), ``views`` (number of cameras
        that see it), ``epipolar_px`` (the largest pairwise epipolar distance of its
        detections) and per camera ``c``: ``det_<c>`` (row of ``detections[c]``, -1 if unseen),
        ``u_<c>, v_<c>`` (the detected centre, px) and ``residual_<c>`` (reprojection error, px;
        NaN where unseen).

    Raises:
        ValueError: fewer than two cameras, a camera without calibration, or detections
            without ``u, v`` columns.
    """
    names = list(detections)
    if len(names) < 2:
        raise ValueError(f"detections: expected beads of at least 2 cameras, got {names}")
    missing = [n for n in names if n not in cameras]
    if missing:
        raise ValueError(f"cameras: no calibration for camera(s) {missing}; have {list(cameras)}")
    uv: dict[str, np.ndarray] = {}
    for n in names:
        table = detections[n]
        if not {"u", "v"} <= set(table.columns):
            raise ValueError(f"detections[{n!r}]: expected columns u, v, got {list(table.columns)}")
        uv[n] = table[["u", "v"]].to_numpy(np.float64)
    offsets = np.cumsum([0] + [len(uv[n]) for n in names])
    camera_of = np.repeat(np.arange(len(names)), np.diff(offsets))
    edges: list[tuple[int, int, float]] = []
    prior = None if expected is None else np.asarray(expected, np.float64).reshape(-1, 3)
    for a, b in combinations(range(len(names)), 2):
        ca, cb = cameras[names[a]], cameras[names[b]]
        cost = epipolar_distances(ca, cb, uv[names[a]], uv[names[b]])
        choice = cost
        if prior is not None:
            choice = cost + 0.5 * options.gate_px * ~_near_expected(ca, cb, uv[names[a]], uv[names[b]], cost, prior, options)
        edges += [(offsets[a] + i, offsets[b] + j, float(cost[i, j])) for i, j in _pairs(choice, cost, options.gate_px)]
    groups = _groups(edges, camera_of, int(offsets[-1]))
    return _triangulated(groups, names, offsets, camera_of, uv, cameras, options)


def _groups(edges: list[tuple[int, int, float]], camera_of: np.ndarray, n: int) -> list[list[int]]:
    """Detections (global indices) joined by matches, at most one per camera."""
    if not edges:
        return []
    e = np.array([(i, j) for i, j, _ in edges])
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    out = []
    for lab in np.unique(label[e[:, 0]]):
        members = np.nonzero(label == lab)[0]
        if len(set(camera_of[members])) == len(members):
            out.append(sorted(int(m) for m in members))
        else:
            # Two beads of one camera joined through others: keep only the best pair of the component.
            best = min((c, i, j) for i, j, c in edges if label[i] == lab)
            out.append([best[1], best[2]])
    return out


def _triangulated(groups: list[list[int]], names: list[str], offsets: np.ndarray, camera_of: np.ndarray,
                  uv: dict[str, np.ndarray], cameras: Mapping[str, Camera], options: BeadMatchOptions) -> pd.DataFrame:
    V = len(names)
    det = np.full((len(groups), V), -1)
    for g, members in enumerate(groups):
        for m in members:
            det[g, camera_of[m]] = m - offsets[camera_of[m]]
    X = np.full((len(groups), 3), np.nan)
    residual = np.full((len(groups), V), np.nan)
    epipolar = np.zeros(len(groups))
    # One triangulation per set of cameras (all its beads at once).
    for key in {tuple(row) for row in (det >= 0).tolist()}:
        idx = np.nonzero(np.all((det >= 0) == np.array(key), axis=1))[0]
        cams = [c for c in range(V) if key[c]]
        views = {names[c]: uv[names[c]][det[idx, c]] for c in cams}
        tri = triangulate({names[c]: cameras[names[c]] for c in cams}, views)
        X[idx] = tri.points
        residual[np.ix_(idx, np.array(cams))] = tri.reprojection_px.T
        for a, b in combinations(cams, 2):
            d = np.diagonal(epipolar_distances(cameras[names[a]], cameras[names[b]], views[names[a]], views[names[b]]))
            epipolar[idx] = np.maximum(epipolar[idx], d)
    table = pd.DataFrame({"x": X[:, 0], "y": X[:, 1], "z": X[:, 2], "views": np.sum(det >= 0, axis=1),
                          "epipolar_px": epipolar})
    for c, n in enumerate(names):
        seen = det[:, c] >= 0
        table[f"det_{n}"] = det[:, c]
        table[f"u_{n}"] = np.where(seen, uv[n][np.maximum(det[:, c], 0), 0] if len(uv[n]) else np.nan, np.nan)
        table[f"v_{n}"] = np.where(seen, uv[n][np.maximum(det[:, c], 0), 1] if len(uv[n]) else np.nan, np.nan)
        table[f"residual_{n}"] = residual[:, c]
    table = table[~np.any(residual > options.gate_px, axis=1)]
    return table.sort_values("x").reset_index(drop=True)

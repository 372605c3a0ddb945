"""Label each detected ball with its phantom marker, using the known marker geometry.

The phantom's marker table (3D centres and diameters) projected with the nominal camera
predicts where each ball should appear. The real rig differs from the nominal one, so the
prediction is off by an unknown, mostly translational, image motion; the identification is a
robust pose search:

1. Consensus shift: every (detection, marker) pair votes for the image shift ``d_i - q_j``
   (pairs whose apparent diameters disagree by more than ``size_tol`` do not vote); the shift
   (tried with a few in-plane rotations of the prediction) that brings the most pairs within
   ``tol_px`` wins. The phantom is asymmetric, so one shift explains the most markers.
2. Assignment: the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on the
   shifted prediction, gated at ``tol_px``.
3. Pose refinement: with the assigned pairs the camera is re-estimated (``cv2.solvePnPRansac``
   with the nominal intrinsics, then the 11-parameter DLT once enough markers are matched), all
   markers are re-projected and re-assigned with a gate that tightens towards ``final_tol_px``.

Matching across views then follows from the marker ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from ..geometry import Camera, project_points, projection_matrix, rotvec_to_matrix
from ._checks import as_points, same_count
from .dlt import MIN_DLT_POINTS, dlt_projection

__all__ = ["Identification", "identify_markers", "match_views", "shadow_diameters_px"]


def shadow_diameters_px(camera: Camera, centers: np.ndarray, diameters_mm: np.ndarray) -> np.ndarray:
    """``(M,)`` diameter in pixels of each ball's shadow, ``f d / Z`` (``f = K[0, 0]``, ``Z`` the
    ball's depth along the principal axis)."""
    _, depth = camera.project(centers)
    return np.asarray(diameters_mm, np.float64) * camera.K[0, 0] / depth


@dataclass(frozen=True)
class Identification:
    """Detections labelled with phantom markers in one view.

    Attributes:
        table: one row per identified ball: ``marker_id, u, v, detection`` (row index into the
            detections) and ``residual_px`` (distance to the marker re-projected by ``P``).
        P: ``(3, 4)`` the projection fitted to the identified markers (DLT).
        unmatched: indices of detections no marker explains (spurious blobs).
        missing: ids of markers not found (hidden, overlapping or off the detector).
    """

    table: pd.DataFrame
    P: np.ndarray
    unmatched: list[int]
    missing: list


def _consensus_shift(det: np.ndarray, pred: np.ndarray, ok: np.ndarray, tol: float) -> tuple[np.ndarray, int]:
    """Shift with the most (detection, marker) pairs within ``tol``; ``ok`` (N, M) masks pairs."""
    diff = det[:, None, :] - pred[None, :, :]  # (N, M, 2)
    cand = diff[ok]
    if len(cand) == 0:
        return np.zeros(2), 0
    best, best_votes = np.zeros(2), -1
    for start in range(0, len(cand), 256):
        c = cand[start:start + 256]
        close = (np.linalg.norm(diff[None] - c[:, None, None, :], axis=-1) < tol) & ok[None]
        # One vote per marker and per detection at most: count markers with any close detection.
        votes = np.minimum(close.any(axis=1).sum(axis=1), close.any(axis=2).sum(axis=1))
        k = int(np.argmax(votes))
        if votes[k] > best_votes:
            best_votes, best = int(votes[k]), c[k]
    return best, best_votes


def _assign(det: np.ndarray, pred: np.ndarray, gate: float, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cost = np.linalg.norm(det[:, None, :] - pred[None, :, :], axis=-1)
    big = 1e6
    cost = np.where(ok & (cost < gate), cost, big)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] < big
    return rows[keep], cols[keep]


def identify_markers(
    detections: np.ndarray,
    markers: pd.DataFrame,
    camera: Camera,
    detection_diameters_px: np.ndarray | None = None,
    tol_px: float | None = None,
    final_tol_px: float = 2.0,
    size_tol: float = 0.3,
    rotations_deg: tuple[float, ...] = (0.0, -2.0, 2.0, -5.0, 5.0, -10.0, 10.0),
    name: str = "view",
) -> Identification:
    """Identify detected balls with phantom markers.

    Args:
        detections: ``(N, 2)`` ball centres in pixels.
        markers: the phantom's ground-truth table with columns ``marker_id, x, y, z`` (world mm)
            and optionally ``diameter_mm``.
        camera: the nominal camera of this view (a starting point only).
        detection_diameters_px: ``(N,)`` measured ball diameters; with ``diameter_mm`` in the
            table, pairs whose sizes disagree by more than ``size_tol`` (relative) cannot match.
        tol_px: gate of the consensus and first assignment (default: 0.4 x the smallest
            distance between predicted markers, within 3-15 px).
        final_tol_px: gate of the final assignment against the fitted projection.
        rotations_deg: in-plane rotations of the prediction tried by the consensus search.
        name: view name for messages.

    Raises:
        ValueError: bad input, or fewer than 6 markers could be identified.
    """
    det = as_points(f"{name} detections", detections, 2)
    for col in ("marker_id", "x", "y", "z"):
        if col not in markers.columns:
            raise ValueError(f"markers: missing column {col!r} (expected marker_id, x, y, z[, diameter_mm])")
    X = as_points("markers x,y,z", markers[["x", "y", "z"]].to_numpy(), 3, MIN_DLT_POINTS, "identification")
    ids = markers["marker_id"].to_numpy()
    pred, _ = camera.project(X)
    ok = np.ones((len(det), len(X)), bool)
    if detection_diameters_px is not None and "diameter_mm" in markers.columns:
        dd = np.asarray(detection_diameters_px, np.float64).ravel()
        same_count(detections=det, detection_diameters_px=dd)
        expected = shadow_diameters_px(camera, X, markers["diameter_mm"].to_numpy(np.float64))
        ok = np.abs(dd[:, None] / expected[None, :] - 1.0) <= size_tol
    if tol_px is None:
        gaps = np.linalg.norm(pred[:, None] - pred[None], axis=-1) + np.diag(np.full(len(pred), np.inf))
        tol_px = float(np.clip(0.4 * gaps.min(), 3.0, 15.0))
    centre = pred.mean(axis=0)
    best = (-1, None)
    for ang in rotations_deg:
        Rz = rotvec_to_matrix(np.array([0.0, 0.0, np.radians(ang)]))[:2, :2]
        rp = (pred - centre) @ Rz.T + centre
        shift, votes = _consensus_shift(det, rp, ok, tol_px)
        if votes > best[0]:
            best = (votes, rp + shift)
    votes, guess = best
    rows, cols = _assign(det, guess, tol_px, ok)
    if len(rows) < MIN_DLT_POINTS:
        raise ValueError(
            f"{name}: could not identify the markers: only {len(rows)} of {len(det)} detections match the phantom "
            f"projected with the nominal camera within {tol_px:.1f} px (at least {MIN_DLT_POINTS} needed); "
            "check the phantom file, the nominal rig and the detections"
        )
    # Pose refinement: PnP with the nominal intrinsics, then the full DLT, tightening the gate.
    P = None
    for gate in (tol_px, max(tol_px / 2, final_tol_px), final_tol_px, final_tol_px):
        if P is None:
            ok_pnp, rvec, tvec, _ = cv2.solvePnPRansac(X[cols], det[rows], camera.K, None,
                                                       reprojectionError=tol_px, iterationsCount=200,
                                                       flags=cv2.SOLVEPNP_ITERATIVE)
            if ok_pnp:
                P = projection_matrix(camera.K, rotvec_to_matrix(rvec.ravel().astype(np.float64)), tvec.ravel().astype(np.float64))
        else:
            try:
                P = dlt_projection(X[cols], det[rows], what=name)
            except ValueError:
                pass  # too few or coplanar matches so far: keep the PnP pose
        if P is None:
            break
        proj, _ = project_points(P, X)
        rows, cols = _assign(det, proj, gate, ok)
        if len(rows) < MIN_DLT_POINTS:
            raise ValueError(f"{name}: the marker identification lost its matches while refining the pose "
                             f"({len(rows)} left within {gate:.1f} px)")
    if P is None:
        raise ValueError(f"{name}: could not estimate a pose from the tentative marker matches")
    P = dlt_projection(X[cols], det[rows], what=name)
    proj, _ = project_points(P, X)
    order = np.argsort(ids[cols], kind="stable")
    rows, cols = rows[order], cols[order]
    table = pd.DataFrame({
        "marker_id": ids[cols],
        "u": det[rows, 0],
        "v": det[rows, 1],
        "detection": rows,
        "residual_px": np.linalg.norm(det[rows] - proj[cols], axis=1),
    })
    unmatched = sorted(set(range(len(det))) - set(rows.tolist()))
    missing = [m for m in ids.tolist() if m not in set(ids[cols].tolist())]
    return Identification(table, P, unmatched, missing)


def match_views(identified: dict[str, Identification]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Marker ids found in every view, and each view's ``(K, 2)`` pixels in that id order."""
    if len(identified) < 2:
        raise ValueError(f"match_views: expected at least 2 views, got {len(identified)}")
    common = None
    for ident in identified.values():
        s = set(ident.table["marker_id"].tolist())
        common = s if common is None else common & s
    ids = np.array(sorted(common))
    uv = {}
    for n, ident in identified.items():
        t = ident.table.set_index("marker_id").loc[ids]
        uv[n] = t[["u", "v"]].to_numpy(np.float64)
    return ids, uv

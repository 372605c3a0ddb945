"""Label each detected ball with its phantom marker, using the known marker geometry, and say
how sure the labelling is.

A labelling is a hypothesis to be tested, not a lock: a phantom's layout has near-symmetries
(a lattice shifted by one row, a rotated or mirrored copy; :mod:`stereodrr.phantoms.symmetry`)
and each gives a second labelling that the 11-parameter DLT fits *exactly*, so a small
reprojection error proves nothing. The identification therefore

1. **finds a first labelling** from the nominal camera, orbited about the markers' centre by a
   grid of angles (up to ``max_search_deg``) so that nominal rigs far from the truth still
   give one: every (detection, marker) pair votes for the image shift ``d_i - q_j`` (pairs whose
   sizes disagree by more than ``size_tol`` do not vote; a few in-plane rotations are tried),
   the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) assigns within the gate
   of the winning shift, and the pose is refined (``cv2.solvePnPRansac`` with the nominal
   intrinsics, then the DLT, re-assigning every marker with a gate tightening to
   ``final_tol_px``);
2. **enumerates the labellings the layout's near-symmetries allow** from it (each relabelled,
   re-fitted and re-assigned the same way);
3. **scores each** by its evidence: markers explained (detections it assigns within
   ``final_tol_px`` of the DLT's reprojection) minus twice those whose shadow diameter
   contradicts the marker's size class (relative to the median size ratio, so a wrong
   magnification does not matter). Only physical cameras compete: the DLT must be right-handed
   (a left-handed one means a mirrored image) and within ``max_rotation_deg`` and
   ``max_source_mm`` of the nominal view;
4. **reports the margin**, the evidence of the best labelling minus that of the runner-up
   (in markers). Below ``min_margin`` the identification is *ambiguous* and the calibration
   verdict cannot be PASS.

Matching across views then follows from the marker ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from ..geometry import (
    Camera,
    decompose_projection,
    project_points,
    projection_matrix,
    rotation_angle_deg,
    rotvec_to_matrix,
)
from ..phantoms.io import marker_classes
from ..phantoms.symmetry import MAX_PRIOR_ROTATION_DEG, marker_symmetries
from ._checks import as_points, same_count
from .detect import fit_reach_px
from .dlt import MIN_DLT_POINTS, projection_from_points

__all__ = ["Identification", "IdentifyOptions", "identify_markers", "drop_overlapping", "match_views", "shadow_diameters_px", "MIN_MARGIN"]

# A mirrored labelling whose camera is this much farther (deg) from the nominal view than the
# best real one is not taken as a rival (see identify_markers, step 3).
MIRROR_PRIOR_DEG = 5.0
# Evidence margin (markers) below which a labelling is ambiguous.
MIN_MARGIN = 3.0
# A shadow contradicts its marker's size class beyond this relative deviation from the median
# detected/expected diameter ratio (classes of the shipped phantoms differ by >= 33 %).
_SIZE_CLASS_TOL = 0.18
# Weight of a size contradiction in the evidence (a mis-sized match costs more than a miss).
_SIZE_WEIGHT = 2.0


def shadow_diameters_px(camera: Camera, centers: np.ndarray, diameters_mm: np.ndarray) -> np.ndarray:
    """``(M,)`` diameter in pixels of each ball's shadow, ``f d / Z`` (``f`` the larger of
    ``K[0, 0], K[1, 1]``: the long axis of the ellipse non-square pixels give, as the ball fit
    reports it; ``Z`` the ball's depth along the principal axis)."""
    _, depth = camera.project(centers)
    return np.asarray(diameters_mm, np.float64) * max(camera.K[0, 0], camera.K[1, 1]) / depth


@dataclass(frozen=True)
class Identification:
    """Detections labelled with phantom markers in one view.

    Attributes:
        table: one row per identified ball: ``marker_id, u, v, detection`` (row index into the
            detections) and ``residual_px`` (distance to the marker re-projected by ``P``).
        P: ``(3, 4)`` the projection fitted to the identified markers (DLT).
        unmatched: indices of detections no marker explains (spurious blobs).
        missing: ids of markers not found (hidden, overlapping or off the detector).
        margin: evidence of this labelling minus the runner-up's, in markers (``inf``: none).
        hypotheses: every labelling scored (best first): ``hypothesis, matched, size_contradictions,
            evidence, rms_px, rotation_from_nominal_deg, source_from_nominal_mm, mirrored, physical``.
        min_margin: the margin below which the labelling is ambiguous.
        overlapping: ids of identified markers left out because their shadow touches another
            marker's (:func:`drop_overlapping`): the fit of a merged blob has no true centre.
    """

    table: pd.DataFrame
    P: np.ndarray
    unmatched: list[int]
    missing: list
    margin: float = float("inf")
    hypotheses: pd.DataFrame = field(default_factory=pd.DataFrame)
    min_margin: float = MIN_MARGIN
    overlapping: list = field(default_factory=list)

    @property
    def ambiguous(self) -> bool:
        return bool(self.margin < self.min_margin)


def drop_overlapping(ident: Identification, markers: pd.DataFrame, camera: Camera,
                     gap_px: float | None = None) -> Identification:
    """``ident`` without the markers whose shadow, re-projected by ``ident.P`` with the
    diameters ``camera`` gives them, comes within ``gap_px`` of another marker's shadow (e.g. balls
    in line in a lateral view): the detector fits one blob to both, whose centre is neither's,
    and a shadow within the ball fit's window biases the centre. ``gap_px``: the fit's reach,
    :func:`stereodrr.calib.detect.fit_reach_px` of the image's blur (default: a sharp image's)."""
    if gap_px is None:
        gap_px = fit_reach_px()
    X = markers[["x", "y", "z"]].to_numpy(np.float64)
    uv, _ = project_points(ident.P, X)
    radius = 0.5 * shadow_diameters_px(camera, X, markers["diameter_mm"].to_numpy())
    dist = np.linalg.norm(uv[:, None] - uv[None], axis=2)
    touching = dist < radius[:, None] + radius[None] + gap_px
    np.fill_diagonal(touching, False)
    bad = set(markers["marker_id"].to_numpy()[touching.any(axis=1)].tolist())
    keep = ~ident.table["marker_id"].isin(bad)
    if keep.all():
        return ident
    dropped = sorted(ident.table.loc[~keep, "marker_id"].tolist())
    return replace(ident, table=ident.table[keep].reset_index(drop=True), overlapping=dropped)


def _consensus_shift(det: np.ndarray, pred: np.ndarray, ok: np.ndarray, tol: float) -> tuple[np.ndarray, int]:
    """Shift with the most (detection, marker) pairs within ``tol``; ``ok`` (N, M) masks pairs.

    Votes are binned on grids of ``2 tol`` cells (four half-cell offsets, so a cluster is never
    split by every grid); the fullest cells' mean shifts are then counted exactly, one vote per
    marker and per detection at most."""
    diff = (det[:, None, :] - pred[None, :, :])[ok]
    if len(diff) == 0:
        return np.zeros(2), 0
    best, best_votes = np.zeros(2), -1
    for off in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5)):
        cells = np.floor(diff / (2 * tol) + np.asarray(off)).astype(np.int64)
        _, inv, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
        inv = inv.ravel()
        for k in np.argsort(counts)[::-1][:4]:
            c = diff[inv == k].mean(axis=0)
            close = (np.linalg.norm(det[:, None, :] - pred[None, :, :] - c, axis=-1) < tol) & ok
            votes = min(int(close.any(axis=0).sum()), int(close.any(axis=1).sum()))
            if votes > best_votes:
                best_votes, best = votes, c
    return best, best_votes


def _assign(det: np.ndarray, pred: np.ndarray, gate: float, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cost = np.linalg.norm(det[:, None, :] - pred[None, :, :], axis=-1)
    big = 1e6
    cost = np.where(ok & (cost < gate), cost, big)
    rows, cols = linear_sum_assignment(cost)
    keep = cost[rows, cols] < big
    return rows[keep], cols[keep]


def _refine(det: np.ndarray, X: np.ndarray, K: np.ndarray, ok: np.ndarray, rows: np.ndarray, cols: np.ndarray,
            gates: tuple[float, ...], P: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Fit a pose to tentative pairs and re-assign every marker with each gate in turn (PnP with
    the nominal ``K`` first unless ``P`` is given, then the DLT); ``None`` when fewer than
    :data:`MIN_DLT_POINTS` pairs survive."""
    for gate in gates:
        if len(rows) < MIN_DLT_POINTS:
            return None
        if P is None:
            ok_pnp, rvec, tvec, _ = cv2.solvePnPRansac(X[cols], det[rows], K, None, reprojectionError=gates[0],
                                                       iterationsCount=200, flags=cv2.SOLVEPNP_ITERATIVE)
            if not ok_pnp:
                return None
            P = projection_matrix(K, rotvec_to_matrix(rvec.ravel().astype(np.float64)), tvec.ravel().astype(np.float64))
        else:
            try:
                P = projection_from_points(X[cols], det[rows], what="identification")
            except ValueError:
                pass  # too few or coplanar matches so far: keep the previous pose
        proj, _ = project_points(P, X)
        rows, cols = _assign(det, proj, gate, ok)
    if len(rows) < MIN_DLT_POINTS:
        return None
    try:
        P = projection_from_points(X[cols], det[rows], what="identification")
    except ValueError:
        return None
    return P, rows, cols


def _orbit(camera: Camera, pivot: np.ndarray, ax_deg: float, ay_deg: float) -> Camera:
    """The camera rotated about ``pivot`` by ``ax_deg`` about its x axis then ``ay_deg`` about its y axis."""
    Q = rotvec_to_matrix(camera.R[0] * np.radians(ax_deg)) @ rotvec_to_matrix(camera.R[1] * np.radians(ay_deg))
    C = pivot + Q @ (camera.center - pivot)
    R = camera.R @ Q.T
    return Camera(K=camera.K, R=R, t=-R @ C, width=camera.width, height=camera.height,
                  pixel_spacing=camera.pixel_spacing, sdd=camera.sdd)


def _search_grid(max_deg: float, step_deg: float) -> list[tuple[float, float]]:
    n = int(np.floor(max_deg / step_deg + 1e-9))
    g = [(a * step_deg, b * step_deg) for a in range(-n, n + 1) for b in range(-n, n + 1)]
    return sorted(g, key=lambda p: (max(abs(p[0]), abs(p[1])), abs(p[0]) + abs(p[1])))


def _pose_from(P: np.ndarray, X: np.ndarray, width: int) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
    """``P`` scaled so matched points have positive depth; whether it is left-handed (a mirrored
    image); and the ``R`` and source of the physical camera (of the un-mirrored image)."""
    depth = (np.c_[X, np.ones(len(X))] @ P.T)[:, 2]
    if np.median(depth) < 0:
        P = -P
    mirrored = bool(np.linalg.det(P[:, :3]) < 0)
    Pp = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ P if mirrored else P
    _, R, t = decompose_projection(Pp)
    return P, mirrored, R, -R.T @ t


@dataclass(frozen=True)
class IdentifyOptions:
    """Tuning knobs of :func:`identify_markers`.

    Attributes:
        tol_px: gate of the consensus and first assignment (default: 0.4 x the smallest
            distance between predicted markers, within 3-15 px).
        final_tol_px: gate of the final assignment against the fitted projection.
        size_tol: pairs whose shadow and marker sizes disagree by more than this (relative)
            cannot match.
        rotations_deg: in-plane rotations of the prediction tried by the consensus search.
        max_search_deg, search_step_deg: grid of orbits of the nominal camera tried for a first
            labelling (stops at the first that explains 90 % of the markers).
        max_rotation_deg, max_source_mm: a labelling whose camera is further than this from the
            nominal one is not physical (default ``max_source_mm``: the chord of an orbit by
            ``max_rotation_deg`` about the markers' centre, plus 100 mm).
        min_margin: evidence margin (markers) below which the result is ambiguous.
    """

    tol_px: float | None = None
    final_tol_px: float = 2.0
    size_tol: float = 0.3
    rotations_deg: tuple[float, ...] = (0.0, -5.0, 5.0, -10.0, 10.0, -20.0, 20.0)
    max_search_deg: float = 25.0
    search_step_deg: float = 5.0
    max_rotation_deg: float = MAX_PRIOR_ROTATION_DEG
    max_source_mm: float | None = None
    min_margin: float = MIN_MARGIN

    def with_(self, **changes: Any) -> IdentifyOptions:
        """A copy with some fields changed."""
        return replace(self, **changes)


def identify_markers(
    detections: np.ndarray,
    markers: pd.DataFrame,
    camera: Camera,
    detection_diameters_px: np.ndarray | None = None,
    options: IdentifyOptions | None = None,
    name: str = "view",
) -> Identification:
    """Identify detected balls with phantom markers (see the module docstring).

    Args:
        detections: ``(N, 2)`` ball centres in pixels.
        markers: the phantom's ground-truth table with columns ``marker_id, x, y, z`` (world mm)
            and optionally ``diameter_mm`` and ``material`` (the marker classes).
        camera: the nominal camera of this view (a starting point and a prior).
        detection_diameters_px: ``(N,)`` measured ball diameters; with ``diameter_mm`` in the
            table, pairs whose sizes disagree by more than ``size_tol`` (relative) cannot match,
            and size-class contradictions lower a labelling's evidence.
        options: the tuning knobs (:class:`IdentifyOptions`).
        name: view name for messages.

    Raises:
        ValueError: bad input; no physical labelling of at least 6 markers (the message names
            the likely causes: the nominal rig, the phantom file, the image order); or the
            image is mirrored.
    """
    o = options or IdentifyOptions()
    det = as_points(f"{name} detections", detections, 2)
    for col in ("marker_id", "x", "y", "z"):
        if col not in markers.columns:
            raise ValueError(f"markers: missing column {col!r} (expected marker_id, x, y, z[, diameter_mm])")
    search = _Search(det, markers, camera, detection_diameters_px, o, name)
    try:
        search.first_labellings()
    except ValueError:
        _raise_if_flipped(det, markers, camera, detection_diameters_px, o, name)
        raise
    search.symmetric_labellings(markers)
    return search.best()


def _raise_if_flipped(det: np.ndarray, markers: pd.DataFrame, camera: Camera, diameters_px: np.ndarray | None,
                      o: IdentifyOptions, name: str) -> None:
    """No labelling found: raise the reason when the image read out flipped (left-right or
    up-down) is identified from the nominal view. The search orbits and rotates the nominal
    prediction but never mirrors it, so a flipped image of a phantom without a mirror symmetry
    would otherwise fail as if the rig or the phantom were wrong."""
    flips = {"left-right": np.array([-1.0, 1.0]), "up-down": np.array([1.0, -1.0])}
    size = np.array([camera.width - 1.0, camera.height - 1.0])
    for how, sign in flips.items():
        flipped = np.where(sign < 0, size - det, det)
        search = _Search(flipped, markers, camera, diameters_px, o, name)
        try:
            search.first_labellings()
        except ValueError:
            continue
        if any(h["physical"] and h["matched"] >= 0.5 * min(len(det), len(search.X)) for h in search.hyps.values()):
            raise ValueError(f"{name}: could not identify the markers: the image looks mirrored (flipped {how}): "
                             "flipped back, its balls fit the nominal view; check the detector read-out "
                             "orientation (or the export) of this image")


class _Search:
    """The labellings of one view tried so far (steps 1-4 of the module docstring), each scored."""

    def __init__(self, det: np.ndarray, markers: pd.DataFrame, camera: Camera, diameters_px: np.ndarray | None,
                 o: IdentifyOptions, name: str) -> None:
        self.det, self.camera, self.o, self.name = det, camera, o, name
        self.X = as_points("markers x,y,z", markers[["x", "y", "z"]].to_numpy(), 3, MIN_DLT_POINTS, "identification")
        self.ids = markers["marker_id"].to_numpy()
        X = self.X
        self.ok = np.ones((len(det), len(X)), bool)
        self.dd: np.ndarray | None = None
        self.expected: np.ndarray | None = None
        if diameters_px is not None and "diameter_mm" in markers.columns:
            self.dd = np.asarray(diameters_px, np.float64).ravel()
            same_count(detections=det, detection_diameters_px=self.dd)
            self.expected = shadow_diameters_px(camera, X, markers["diameter_mm"].to_numpy(np.float64))
            self.ok = np.abs(self.dd[:, None] / self.expected[None, :] - 1.0) <= o.size_tol
        pred0, _ = camera.project(X)
        tol_px = o.tol_px
        if tol_px is None:
            gaps = np.linalg.norm(pred0[:, None] - pred0[None], axis=-1) + np.diag(np.full(len(pred0), np.inf))
            tol_px = float(np.clip(0.4 * gaps.min(), 3.0, 15.0))
        self.tol_px = tol_px
        self.gates = (tol_px, max(tol_px / 2, o.final_tol_px), o.final_tol_px, o.final_tol_px)
        self.pivot = X.mean(axis=0)
        self.max_source_mm = o.max_source_mm
        if self.max_source_mm is None:
            self.max_source_mm = 2.0 * float(np.linalg.norm(camera.center - self.pivot)) * np.sin(
                np.radians(o.max_rotation_deg) / 2) + 100.0
        self.hyps: dict[frozenset, dict] = {}

    def score(self, P: np.ndarray, rows: np.ndarray, cols: np.ndarray, how: str) -> dict:
        X, det = self.X, self.det
        P, mirrored, R, src = _pose_from(P, X[cols], self.camera.width)
        proj, _ = project_points(P, X)
        res = np.linalg.norm(det[rows] - proj[cols], axis=1)
        size_bad = 0
        if self.dd is not None and self.expected is not None:
            ratio = self.dd[rows] / self.expected[cols]
            size_bad = int(np.sum(np.abs(ratio / np.median(ratio) - 1.0) > _SIZE_CLASS_TOL))
        rot = rotation_angle_deg(R, self.camera.R)
        dsrc = float(np.linalg.norm(src - self.camera.center))
        assert self.max_source_mm is not None
        return {"hypothesis": how, "matched": int(len(rows)), "size_contradictions": size_bad,
                "evidence": float(len(rows) - _SIZE_WEIGHT * size_bad), "rms_px": float(np.sqrt(np.mean(res**2))),
                "rotation_from_nominal_deg": rot, "source_from_nominal_mm": dsrc, "mirrored": mirrored,
                "physical": bool(not mirrored and rot <= self.o.max_rotation_deg and dsrc <= self.max_source_mm),
                "_fit": (P, rows, cols)}

    def add(self, fit: tuple | None, how: str) -> dict | None:
        if fit is None:
            return None
        key = frozenset(zip(fit[1].tolist(), fit[2].tolist()))
        if key not in self.hyps:
            try:
                self.hyps[key] = self.score(fit[0], fit[1], fit[2], how)
            except ValueError:
                return None  # a degenerate projection (all matches on a plane through the source)
        return self.hyps[key]

    def first_labellings(self) -> None:
        """Step 1: orbits of the nominal camera, nearest first, until one explains 90 %."""
        det, X, o = self.det, self.X, self.o
        target = 0.9 * min(len(det), len(X))
        for ax, ay in _search_grid(o.max_search_deg, o.search_step_deg):
            cam = self.camera if (ax, ay) == (0.0, 0.0) else _orbit(self.camera, self.pivot, ax, ay)
            pred, _ = cam.project(X)
            centre = pred.mean(axis=0)
            best_votes, best_pred = -1, pred
            for ang in o.rotations_deg:
                Rz = rotvec_to_matrix(np.array([0.0, 0.0, np.radians(ang)]))[:2, :2]
                rp = (pred - centre) @ Rz.T + centre
                shift, votes = _consensus_shift(det, rp, self.ok, self.tol_px)
                if votes > best_votes:
                    best_votes, best_pred = votes, rp + shift
            if best_votes < MIN_DLT_POINTS:
                continue
            rows, cols = _assign(det, best_pred, self.tol_px, self.ok)
            h = self.add(_refine(det, X, cam.K, self.ok, rows, cols, self.gates), f"search orbit ({ax:g}, {ay:g}) deg")
            if h is not None and h["physical"] and h["matched"] >= target:
                break
        if not self.hyps:
            raise ValueError(
                f"{self.name}: could not identify the markers: no labelling of at least {MIN_DLT_POINTS} of the "
                f"{len(det)} detections fits the phantom's {len(X)} markers, starting from the nominal view "
                f"{self.name!r} orbited by up to {o.max_search_deg:g} deg; check the nominal rig (is view "
                f"{self.name!r} within ~20 deg and 50 mm of the truth?), the phantom file (is it the phantom imaged?) "
                "and the detections")

    def symmetric_labellings(self, markers: pd.DataFrame) -> None:
        """Step 2: the labellings the layout's near-symmetries allow, from every first labelling
        found. Proper maps beyond the prior's rotation band cannot give a physical camera; mirrors
        matter only as the labelling of a mirrored image, when they keep nearly every marker."""
        X, det, o = self.X, self.det, self.o
        sym = [s for s in marker_symmetries(X, marker_classes(markers) if "diameter_mm" in markers else None)
               if not s.identity and ((s.proper and s.angle_deg <= o.max_rotation_deg)
                                      or (not s.proper and s.overlap >= 0.9))]
        seeds = sorted(self.hyps.values(), key=lambda h: (not h["physical"], -h["evidence"]))[:2]
        final_gates = (o.final_tol_px, o.final_tol_px)
        for seed in seeds:
            _, rows, cols = seed["_fit"]
            for k, s in enumerate(sym):
                new = s.perm[cols]
                keep = new >= 0
                if keep.sum() < MIN_DLT_POINTS:
                    continue
                try:
                    P = projection_from_points(X[new[keep]], det[rows[keep]], what=self.name)
                except ValueError:
                    continue
                self.add(_refine(det, X, self.camera.K, self.ok, rows[keep], new[keep], final_gates, P=P),
                         f"{seed['hypothesis']} + near-symmetry {k} ({'rotation' if s.proper else 'mirror'} "
                         f"{s.angle_deg:.0f} deg, shift {np.linalg.norm(s.t):.1f} mm)")

    def best(self) -> Identification:
        """Steps 3-4: physical labellings ranked by evidence, then residual; the best with its
        margin over the runner-up (a mirrored labelling near the nominal view is a rival too)."""
        o = self.o
        table = pd.DataFrame([{k: v for k, v in h.items() if k != "_fit"} for h in self.hyps.values()])
        order = sorted(range(len(self.hyps)), key=lambda i: (not table.physical[i], -table.evidence[i], table.rms_px[i]))
        table = table.iloc[order].reset_index(drop=True)
        fits = [list(self.hyps.values())[i]["_fit"] for i in order]
        phys = table.index[table.physical].tolist()
        if not phys:
            first = table.iloc[0]
            why = ("the image looks mirrored (the best labelling needs a left-handed camera)" if first.mirrored else
                   f"the best labelling puts the camera {first.rotation_from_nominal_deg:.0f} deg and "
                   f"{first.source_from_nominal_mm:.0f} mm from the nominal view {self.name!r}")
            raise ValueError(f"{self.name}: could not identify the markers: {why}; check the nominal rig, the image "
                             "orientation (mirrored/flipped read-out?) and the image order")
        b = phys[0]
        margin = self._margin(table, b, phys)
        P, rows, cols = fits[b]
        P, _, _, _ = _pose_from(P, self.X[cols], self.camera.width)
        proj, _ = project_points(P, self.X)
        ids, det = self.ids, self.det
        srt = np.argsort(ids[cols], kind="stable")
        rows, cols = rows[srt], cols[srt]
        out = pd.DataFrame({
            "marker_id": ids[cols],
            "u": det[rows, 0],
            "v": det[rows, 1],
            "detection": rows,
            "residual_px": np.linalg.norm(det[rows] - proj[cols], axis=1),
        })
        unmatched = sorted(set(range(len(det))) - set(rows.tolist()))
        missing = [m for m in ids.tolist() if m not in set(ids[cols].tolist())]
        best_first = pd.concat([table.iloc[[b]], table.drop(index=b)], ignore_index=True)
        return Identification(out, P, unmatched, missing, margin, best_first, o.min_margin)

    def _margin(self, table: pd.DataFrame, b: int, phys: list[int]) -> float:
        """Evidence of labelling ``b`` minus its best rival's (``inf``: none); raises for a mirrored image."""
        o = self.o
        assert self.max_source_mm is not None
        mirrored_alt = table[table.mirrored]
        if len(mirrored_alt):
            # A mirrored image: the un-mirrored pose of a left-handed labelling is close to nominal.
            m = mirrored_alt[(mirrored_alt.rotation_from_nominal_deg <= o.max_rotation_deg)
                             & (mirrored_alt.source_from_nominal_mm <= self.max_source_mm)]
            if len(m) and m.evidence.iloc[0] > table.evidence[b] + o.min_margin:
                raise ValueError(f"{self.name}: the image looks mirrored: a left-handed camera explains "
                                 f"{int(m.matched.iloc[0])} markers against {int(table.matched[b])} for any real one; "
                                 "check the detector read-out orientation (flipped left-right or up-down?)")
        rivals = list(phys[1:])
        if len(mirrored_alt):
            # A phantom with a mirror symmetry (the cube's lattice with its references) explains a
            # flipped read-out as well as a real camera elsewhere; only the nominal view tells them
            # apart, so a mirrored labelling is a rival unless its camera is clearly farther from
            # the nominal view than the best real one.
            near = table.rotation_from_nominal_deg[b] + MIRROR_PRIOR_DEG
            rivals += [i for i in mirrored_alt.index
                       if table.rotation_from_nominal_deg[i] <= min(o.max_rotation_deg, near)
                       and table.source_from_nominal_mm[i] <= self.max_source_mm]
        return float(table.evidence[b] - max(table.evidence[i] for i in rivals)) if rivals else float("inf")


def match_views(identified: dict[str, Identification]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Marker ids found in every view, and each view's ``(K, 2)`` pixels in that id order."""
    if len(identified) < 2:
        raise ValueError(f"match_views: expected at least 2 views, got {len(identified)}")
    common: set | None = None
    for ident in identified.values():
        s = set(ident.table["marker_id"].tolist())
        common = s if common is None else common & s
    ids = np.array(sorted(common or ()))
    uv = {}
    for n, ident in identified.items():
        t = ident.table.set_index("marker_id").loc[ids]
        uv[n] = t[["u", "v"]].to_numpy(np.float64)
    return ids, uv

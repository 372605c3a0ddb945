"""Implanted beads through the frames of a biplanar (or N-view) trial: the whole pipeline.

:func:`track_beads` runs, for every frame, :func:`~stereodrr.track.bead_detect.detect_beads` in
each camera and :func:`~stereodrr.track.bead_match.match_beads` between them; then links the
triangulated beads through the frames, groups them into rigid bodies and fits each body's pose
per frame (:mod:`stereodrr.track.bead_link`, :mod:`stereodrr.track.bead_rigid`). Two views leave pairings ambiguous where two beads
lie near one epipolar line, so the frames are then matched again with the beads each rigid body
expects in them (its mean shape moved by its pose in the frame, from the beads that agree), and
linked again, until the pairings stop changing (``refine`` passes at most). After each linking,
the pieces of a bead's track that linking left apart are joined by the bead's place in its
bone (:func:`~stereodrr.track.bead_rigid.merge_fragments`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..geometry import Camera, StereoRig
from .bead_detect import DETECTION_COLUMNS, BeadDetectOptions, detect_beads
from .bead_link import link_beads
from .bead_match import BeadMatchOptions, match_beads
from .bead_rigid import (
    POSE_COLUMNS,
    BeadLinkOptions,
    body_poses,
    body_references,
    expected_beads,
    merge_fragments,
    pair_spread,
    rigid_bodies,
)

__all__ = ["BeadTrackOptions", "BeadTracking", "track_beads", "bead_diameter_px", "FrameSource", "MaskSource"]

# Per camera a sequence of frames, or a reader ``(camera index, frame index) -> image``.
FrameSource = Sequence[Sequence[np.ndarray]] | Callable[[int, int], np.ndarray]
"""Per camera a sequence of frames, or a reader ``(camera index, frame index) -> image``."""
# Per camera one mask for all frames (or None), or ``(camera index, frame index) -> mask``.
MaskSource = Sequence[np.ndarray | None] | Callable[[int, int], np.ndarray | None]
"""Per camera one mask for all frames (or None), or ``(camera index, frame index) -> mask``."""


@dataclass(frozen=True)
class BeadTrackOptions:
    """Options of every stage of :func:`track_beads`.

    Attributes:
        detect, match, link: the stages' options.
        bead_mm: ``(min, max)`` diameter of the implanted beads (mm). Each camera searches the
            widths in pixels such beads show anywhere within 15 % of its source-to-isocenter
            distance (:func:`bead_diameter_px`), in place of ``detect.diameter_px``; None:
            ``detect.diameter_px`` as given, for every camera.
        refine: most passes of matching again with the rigid bodies' expected beads.
        progress: show a progress bar over the frames.
    """

    detect: BeadDetectOptions = field(default_factory=BeadDetectOptions)
    match: BeadMatchOptions = field(default_factory=BeadMatchOptions)
    link: BeadLinkOptions = field(default_factory=BeadLinkOptions)
    bead_mm: tuple[float, float] | None = (0.5, 2.0)
    refine: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        if self.bead_mm is not None and not 0 < float(self.bead_mm[0]) <= float(self.bead_mm[1]):
            raise ValueError(f"bead_mm: expected 0 < min <= max (mm) or None, got {self.bead_mm}")
        if int(self.refine) != self.refine or self.refine < 0:
            raise ValueError(f"refine: expected a whole number of passes >= 0, got {self.refine}")


@dataclass(frozen=True)
class BeadTracking:
    """Beads tracked through a trial.

    Attributes:
        cameras: camera names, in the rig's order.
        frames: the number of frames.
        detections: one row per bead found in a camera's frame: ``frame, camera, u, v``
            (px, OpenCV convention), ``diameter_px, blur_px, contrast, score, explained`` (see
            :func:`~stereodrr.track.bead_detect.detect_beads`) and ``bead`` (its track, -1 when
            it was not matched in another camera).
        points3d: one row per frame and bead (every bead in every frame): ``frame, bead, body,
            x, y, z`` (world mm), ``views``, ``epipolar_px`` and per camera ``u_<c>, v_<c>,
            residual_<c>`` (reprojection error, px); NaN where the bead is not seen.
        bodies: one row per bead: ``bead, body`` (-1: in no rigid body), ``frames`` (seen in)
            and ``spread_mm`` (the largest RMS change of its distances to the other beads of
            its body; NaN without a body).
        poses: one row per frame and body: ``frame, body, beads`` (seen), ``m00 ... m33`` (the
            4x4 rigid motion from the body's first frame, row-major, mm) and ``rms_mm`` (RMS
            distance of the body's beads from its moved mean shape); NaN where fewer than
            ``min_beads`` are seen.
    """

    cameras: tuple[str, ...]
    frames: int
    detections: pd.DataFrame
    points3d: pd.DataFrame
    bodies: pd.DataFrame
    poses: pd.DataFrame

    def positions(self) -> np.ndarray:
        """``(frames, beads, 3)`` world positions (mm), NaN where unseen."""
        X = np.full((self.frames, len(self.bodies), 3), np.nan)
        p = self.points3d
        X[p["frame"].to_numpy(int), p["bead"].to_numpy(int)] = p[["x", "y", "z"]].to_numpy()
        return X

    def rigidity_rms_mm(self) -> pd.Series:
        """Per body, the RMS over frames of ``rms_mm`` (how rigid its beads are, mm)."""
        ok = self.poses.dropna(subset=["rms_mm"])
        return ok.groupby("body")["rms_mm"].apply(lambda r: float(np.sqrt(np.mean(r**2))))


# Fitted width at half depth of a sphere's shadow of diameter D px: 0.65-0.9 D measured on
# rendered spheres (blur narrows the dip's half-depth width), never below the blur itself.
_WIDTH_OF_SHADOW = (0.6, 1.0)
# Narrower than this, a dip is the size of the detector blur and noise: no bead can be sized.
_SMALLEST_WIDTH_PX = 2.0
# Beads lie within this fraction of the source-to-isocenter distance from the isocenter.
_DEPTH = 0.15


def bead_diameter_px(camera: Camera, isocenter: np.ndarray, bead_mm: tuple[float, float]) -> tuple[float, float]:
    """``(min, max)`` fitted width (px, as ``BeadDetectOptions.diameter_px``) of beads of diameters
    ``bead_mm`` seen by ``camera``, anywhere within 15 % of its source-to-isocenter distance: the
    magnification differs from rig to rig (about 6 px per mm at the wrist and knee samples'
    isocenters, 7.2 and 8.9 at the ankle's), so a range in pixels fits only one rig."""
    z = float(np.linalg.norm(np.asarray(isocenter, np.float64) - camera.center))
    f = 0.5 * float(camera.K[0, 0] + camera.K[1, 1])
    lo = _WIDTH_OF_SHADOW[0] * float(bead_mm[0]) * f / (z * (1 + _DEPTH))
    hi = _WIDTH_OF_SHADOW[1] * float(bead_mm[1]) * f / (z * (1 - _DEPTH)) + 1.0
    lo = max(lo, _SMALLEST_WIDTH_PX)
    return min(lo, 64.0), float(np.clip(hi, lo, 64.0))


def _detect_options(rig: StereoRig, options: BeadTrackOptions) -> list[BeadDetectOptions]:
    """Each camera's detection options: ``options.detect`` with its bead widths in pixels."""
    if options.bead_mm is None:
        return [options.detect] * len(rig.names)
    return [replace(options.detect, diameter_px=bead_diameter_px(rig[c], rig.isocenter, options.bead_mm))
            for c in rig.names]


def _frame_reader(frames: FrameSource, n_cameras: int, n_frames: int | None) -> tuple[Callable[[int, int], np.ndarray], int]:
    if callable(frames):
        if n_frames is None or int(n_frames) != n_frames or n_frames < 1:
            raise ValueError(f"n_frames: expected the number of frames (>= 1) with a frame reader, got {n_frames}")
        return frames, int(n_frames)
    if len(frames) != n_cameras:
        raise ValueError(f"frames: expected one sequence of frames per camera of the rig ({n_cameras}), got {len(frames)}")
    counts = {len(f) for f in frames}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"frames: expected the same number (>= 1) of frames for every camera, got {[len(f) for f in frames]}")
    n = counts.pop()
    if n_frames is not None and n_frames != n:
        raise ValueError(f"n_frames: {n_frames} does not match the {n} frames given")
    return (lambda c, f: frames[c][f]), n


def _mask_reader(masks: MaskSource | None, n_cameras: int) -> Callable[[int, int], np.ndarray | None]:
    if masks is None:
        return lambda c, f: None
    if callable(masks):
        return masks
    if len(masks) != n_cameras:
        raise ValueError(f"masks: expected one mask (or None) per camera of the rig ({n_cameras}), got {len(masks)}")
    return lambda c, f: masks[c]


def _positions(matches: list[pd.DataFrame], ids: list[np.ndarray]) -> np.ndarray:
    n = max((int(i.max()) + 1 for i in ids if len(i)), default=0)
    X = np.full((len(matches), n, 3), np.nan)
    for f, (m, i) in enumerate(zip(matches, ids)):
        X[f, i] = m[["x", "y", "z"]].to_numpy()
    return X


def _linked(matches: list[pd.DataFrame], link: BeadLinkOptions) -> list[np.ndarray]:
    """Track ids of every frame's beads: linked, pieces of one bead's track joined, numbered
    0, 1, ... in order of first appearance."""
    ids = link_beads([m[["x", "y", "z"]].to_numpy() for m in matches], link)
    target = merge_fragments(_positions(matches, ids), link)
    ids = [target[i] for i in ids]
    order = pd.unique(np.concatenate(ids)) if ids else np.zeros(0, int)
    number = np.full(int(order.max()) + 1 if len(order) else 0, -1)
    number[order] = np.arange(len(order))
    return [number[i] for i in ids]


def _pairings(m: pd.DataFrame, names: Sequence[str]) -> set[tuple[int, ...]]:
    return set(map(tuple, m[[f"det_{n}" for n in names]].to_numpy(int).tolist()))


def track_beads(frames: FrameSource, rig: StereoRig, masks: MaskSource | None = None,
                options: BeadTrackOptions = BeadTrackOptions(), n_frames: int | None = None) -> BeadTracking:
    """Find, match, triangulate, link and group the beads of every frame of a trial.

    Args:
        frames: per camera (in ``rig`` order) a sequence of ``(H, W)`` frames, or a reader
            ``(camera index, frame index) -> image`` with ``n_frames``.
        rig: the calibrated cameras (at least two).
        masks: per camera one boolean mask of the pixels to search (e.g. the intensifier's field
            of view) or None, or a reader ``(camera index, frame index) -> mask``; None: all.
        options: see :class:`BeadTrackOptions`.
        n_frames: the number of frames (required with a frame reader).

    Returns:
        :class:`BeadTracking`.

    Raises:
        ValueError: a rig of one camera, frames or masks that do not fit the rig, or a bad frame.
    """
    names = rig.names
    if len(names) < 2:
        raise ValueError(f"rig: expected at least 2 cameras to triangulate beads, got {names}")
    read, n = _frame_reader(frames, len(names), n_frames)
    mask_of = _mask_reader(masks, len(names))
    detect = _detect_options(rig, options)
    detections: list[dict[str, pd.DataFrame]] = []
    for f in tqdm(range(n), desc="beads", unit="frame", disable=not options.progress):
        detections.append({c: detect_beads(read(k, f), mask_of(k, f), detect[k], name=f"frame {f} of {c}")
                           for k, c in enumerate(names)})
    matches = [match_beads(d, rig.cameras, options.match) for d in detections]
    ids = _linked(matches, options.link)
    for _ in range(options.refine):
        X = _positions(matches, ids)
        bodies = rigid_bodies(X, options.link)
        refs = body_references(X, bodies, options.link)
        again = [match_beads(d, rig.cameras, options.match, expected_beads(X[f], bodies, refs, options.link))
                 for f, d in enumerate(detections)]
        if all(_pairings(a, names) == _pairings(m, names) for a, m in zip(again, matches)):
            break
        matches = again
        ids = _linked(matches, options.link)
    _check_pairing(names, detections, matches)
    return _tracking(names, detections, matches, ids, options.link)


def _check_pairing(names: list[str], detections: list[dict[str, pd.DataFrame]], matches: list[pd.DataFrame]) -> None:
    """Warn when few of the beads that every view could show were matched: views whose
    calibrations or frames do not belong together (a camera's folder swapped or mirrored) leave
    most detections off each other's epipolar lines, and the few that fall on one by chance are
    not beads."""
    could = sum(min(len(d[c]) for c in names) for d in detections)
    matched = sum(len(m) for m in matches)
    if could >= 4 and matched < 0.5 * could:
        warnings.warn(f"beads: {matched} of the {could} beads the views could share were matched by epipolar "
                      f"geometry: check that each camera's calibration and frames belong together (same order, "
                      f"not mirrored); unmatched detections are not triangulated", RuntimeWarning, stacklevel=3)


def _tracking(names: list[str], detections: list[dict[str, pd.DataFrame]], matches: list[pd.DataFrame],
              ids: list[np.ndarray], link: BeadLinkOptions) -> BeadTracking:
    X = _positions(matches, ids)
    bodies = rigid_bodies(X, link)
    if len(matches) == 2 and (bodies >= 0).any():
        warnings.warn("beads: rigid bodies from two frames: each pair of beads is compared once, so a bead of a "
                      "body that hardly moved against another can join it, and two beads near one epipolar line "
                      "can stay swapped; track more frames for bodies to rely on", RuntimeWarning, stacklevel=3)
    n_beads = X.shape[1]
    # Detections, each with the bead it was matched into.
    det_rows = []
    for f, per_cam in enumerate(detections):
        for c in names:
            d = per_cam[c].copy()
            bead = np.full(len(d), -1)
            det = matches[f][f"det_{c}"].to_numpy(int)
            bead[det[det >= 0]] = ids[f][det >= 0]
            d.insert(0, "camera", c)
            d.insert(0, "frame", f)
            d["bead"] = bead
            det_rows.append(d)
    det_cols = ["frame", "camera", *DETECTION_COLUMNS, "bead"]
    detections_table = pd.concat(det_rows, ignore_index=True)[det_cols] if det_rows else pd.DataFrame(columns=det_cols)
    # Every (frame, bead), NaN where unseen.
    per_view = [f"{k}_{c}" for c in names for k in ("u", "v", "residual")]
    cols = ["x", "y", "z", "views", "epipolar_px", *per_view]
    grid = pd.MultiIndex.from_product([range(len(matches)), range(n_beads)], names=["frame", "bead"])
    seen = pd.concat([m[cols].assign(frame=f, bead=i) for f, (m, i) in enumerate(zip(matches, ids))], ignore_index=True)
    points = seen.set_index(["frame", "bead"]).reindex(grid).reset_index()
    points.insert(2, "body", bodies[points["bead"].to_numpy(int)])
    points["views"] = points["views"].fillna(0).astype(int)
    spread = pair_spread(X) if n_beads else np.zeros((0, 0))
    own = [np.nanmax(np.where((bodies == b) & (np.arange(n_beads) != i), spread[i], np.nan)) if b >= 0 else np.nan
           for i, b in enumerate(bodies)]
    bodies_table = pd.DataFrame({"bead": np.arange(n_beads), "body": bodies,
                                 "frames": np.sum(~np.isnan(X[:, :, 0]), axis=0), "spread_mm": own})
    poses = body_poses(X, bodies, link) if n_beads else pd.DataFrame(columns=["frame", "body", "beads", *POSE_COLUMNS, "rms_mm"])
    return BeadTracking(tuple(names), len(matches), detections_table, points, bodies_table, poses)

"""Bone tracking through the frames of a trial: a bone's CT registered to every view of each frame.

The first frame starts from ``init`` or, with none, from the global search
(:func:`~stereodrr.track.bone_init.initial_pose`). Every later frame is registered
(:func:`~stereodrr.track.bone_fit.register_frame`) from a list of starts, tried in turn until
one is kept: the ``predict`` hook's (e.g. bead motion), the constant-velocity prediction (once
two frames are tracked, scaled to the frame times), the previous pose, and finally the global
search. A result is kept when its loss is within ``accept_ratio`` of the last kept frame's and it
rests on every view; when none is, the lowest loss tried wins and the frame is doubtful. After
the last frame, the frames before the first one tracked without doubt are registered again from
their later neighbour (start ``"next"``), kept where that lowers their loss and every view's loss
stays below ``max_view_loss``: the search may only succeed on a later frame.

A frame is **failed** (all-NaN pose) when the bone projects onto no view, or when the global
search finds no candidate that fits (every view's loss below ``max_view_loss``) or two distinct
poses that fit about equally well (``"init_ambiguous"``). It is **doubtful** when its
registration did not converge, when a view's loss exceeds ``max_view_loss``, when a view shows
less than ``min_in_field`` of the bone inside its field, when it rests on fewer views than the
rig has, when no start gave a loss within ``accept_ratio`` of the previous frame's, or when its
loss is ``doubtful_ratio`` times its neighbours' median.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..geometry import RigidPose, StereoRig
from ..registration import check_registration_memory
from ..registration.checks import check_attenuation
from ..volume import Volume
from .bone_fit import BoneSupport, FrameFit, TrackOptions, predict_pose, register_frame
from .bone_init import InitResult, initial_pose
from .bone_views import check_frame

__all__ = ["BoneTrack", "FrameSeries", "track_bone"]

Frames = Sequence[Mapping[str, np.ndarray]] | Callable[[int], Mapping[str, np.ndarray]]
Masks = Sequence[Mapping[str, np.ndarray]] | Callable[[int], Mapping[str, np.ndarray]] | Mapping[str, np.ndarray]


@dataclass
class BoneTrack:
    """A bone tracked through the frames.

    Attributes:
        poses: ``(F, 4, 4)`` CT -> world per frame (Autoscoper's ``.tra`` matrix), all NaN for a
            failed frame.
        losses: ``(F,)`` :func:`~stereodrr.track.bone_fit.frame_loss` (NaN for a failed frame).
        view_losses: ``(F, V)`` per view (NaN for a view not used).
        views: the rig's view names (the columns of ``view_losses``).
        status: per frame a :data:`~stereodrr.track.bone_fit.FrameStatus`.
        doubtful: ``(F,)`` flags; reasons: per frame why ("" when not doubtful).
        start: per frame where the kept result started: ``"given"``, ``"search"``, ``"predict"``
            (the hook), ``"constant_velocity"``, ``"previous"``, ``"next"`` (the later frame's
            pose, backwards), or ``""`` for a failed frame.
        seconds: ``(F,)`` wall time per frame (search included).
        init: the global search's result on the first frame it ran on, if it ran.
        warnings: the distinct warnings the registrations raised (first lines).
        in_field: ``(F, V)`` the share of the bone's projected outline inside each view's field
            (NaN for a view not used); None when not measured.
    """

    poses: np.ndarray
    losses: np.ndarray
    view_losses: np.ndarray
    views: list[str]
    status: list[str]
    doubtful: np.ndarray
    reasons: list[str]
    start: list[str]
    seconds: np.ndarray
    init: InitResult | None = None
    warnings: list[str] = field(default_factory=list)
    in_field: np.ndarray | None = None

    def table(self) -> pd.DataFrame:
        """One row per frame: ``frame, status, doubtful, reason, start, loss, loss_<view>...,
        in_field_<view>... (when measured), seconds, m00 ... m33`` (the pose row by row)."""
        rows = []
        for k in range(len(self.losses)):
            row = {"frame": k, "status": self.status[k], "doubtful": bool(self.doubtful[k]), "reason": self.reasons[k],
                   "start": self.start[k], "loss": self.losses[k]}
            row.update({f"loss_{n}": self.view_losses[k, i] for i, n in enumerate(self.views)})
            if self.in_field is not None:
                row.update({f"in_field_{n}": self.in_field[k, i] for i, n in enumerate(self.views)})
            row["seconds"] = self.seconds[k]
            row.update({f"m{r}{c}": self.poses[k, r, c] for r in range(4) for c in range(4)})
            rows.append(row)
        return pd.DataFrame(rows)


@dataclass(frozen=True)
class FrameSeries:
    """The frames a bone is tracked through.

    Attributes:
        images: per frame a mapping view -> ``(H, W)`` line-integral-like image (bone bright), or
            a callable ``images(k)`` giving it (then ``n_frames`` is required).
        masks: pixel weights (0 = ignore, e.g. outside the intensifier's field): one mapping view
            -> ``(H, W)`` for every frame, a sequence of them per frame, a callable, or None.
        times: frame times for the constant-velocity prediction (default ``0, 1, 2, ...``).
        n_frames: the number of frames when ``images`` is a callable.
    """

    images: Frames
    masks: Masks | None = None
    times: Sequence[float] | None = None
    n_frames: int | None = None

    def count(self) -> int:
        """The number of frames (checked against ``n_frames``)."""
        if callable(self.images):
            n = self.n_frames
            if n is None or int(n) != n or n < 1:
                raise ValueError(f"n_frames: expected the number of frames (a positive integer) with a callable "
                                 f"frames, got {n}")
            return int(n)
        n = len(self.images)
        if n < 1:
            raise ValueError("frames: expected at least one frame")
        if self.n_frames is not None and self.n_frames != n:
            raise ValueError(f"n_frames: {self.n_frames} differs from the {n} frames given")
        return n

    def frame_times(self) -> np.ndarray:
        """``(F,)`` the frame times, checked: finite and increasing."""
        n = self.count()
        t = np.arange(n, dtype=np.float64) if self.times is None else np.asarray(self.times, dtype=np.float64)
        if t.shape != (n,) or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
            raise ValueError(f"times: expected {n} increasing finite frame times, got {self.times}")
        return t

    def mask(self, k: int) -> Mapping[str, np.ndarray] | None:
        """Frame ``k``'s masks (None: every pixel counts)."""
        masks = self.masks
        if masks is None:
            return None
        if callable(masks):
            return masks(k)
        if isinstance(masks, Mapping):  # one mask per view for every frame
            return masks
        if len(masks) != self.count():
            raise ValueError(f"masks: expected one mapping per frame ({self.count()}), got {len(masks)}")
        return masks[k]

    def load(self, rig: StereoRig, k: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """Frame ``k``'s images and masks, checked against the rig (:func:`~stereodrr.track.bone_views.check_frame`)."""
        images = self.images(k) if callable(self.images) else self.images[k]
        return check_frame(rig, images, self.mask(k), f"frames[{k}]")


def _reasons(fit: FrameFit, n_views: int, accepted: bool, searched: InitResult | None,
             options: TrackOptions) -> list[str]:
    why = []
    poor = [n for n, v in fit.view_losses.items() if v > options.max_view_loss]
    if poor:
        why.append(f"loss above {options.max_view_loss:g} in {', '.join(poor)}")
    outside = [f"{n} {100 * v:.0f} %" for n, v in fit.in_field.items() if v < options.min_in_field]
    if outside:
        why.append(f"bone mostly outside the field (inside: {', '.join(outside)})")
    if fit.status != "converged":
        why.append(f"registration {fit.status}")
    if len(fit.views) < n_views:
        why.append(f"seen in {len(fit.views)} of {n_views} views")
    if not accepted:
        why.append("no start gave a loss near the neighbouring frame's")
    if searched is not None:
        why.append(f"global search {searched.status}: {searched.message}")
    return why


def track_bone(volume: Volume, rig: StereoRig, frames: Frames | FrameSeries, options: TrackOptions | None = None,
               init: RigidPose | np.ndarray | None = None, masks: Masks | None = None, *,
               times: Sequence[float] | None = None, n_frames: int | None = None) -> BoneTrack:
    """Track a bone through the frames (module docstring).

    Args:
        volume: the bone's CT, attenuation-like values (0 outside the bone), in the frame whose
            pose the result gives (e.g. :func:`~stereodrr.interop.load_autoscoper_volume`).
        rig: the calibrated views (two or more for the global search).
        frames: per frame a mapping view -> ``(H, W)`` line-integral-like image (bone bright),
            or a callable ``frames(k)`` giving it (then ``n_frames`` is required); or a
            :class:`FrameSeries` that holds them with their masks and times.
        options: the settings (default :meth:`TrackOptions.for_rig(rig)
            <stereodrr.track.bone_fit.TrackOptions.for_rig>`: binnings at fixed footprints at the
            isocenter, whatever the detector's size); the volume is tracked on ``options.device``
            (default: its own).
        init: the first frame's start, CT -> world (a :class:`RigidPose` or a 4x4); None: the
            global search finds it.
        masks, times, n_frames: as the fields of :class:`FrameSeries`.

    Returns:
        :class:`BoneTrack`.

    Raises:
        ValueError: a frame or mask missing a view, of the wrong size, with NaN/inf pixels, a
            negative mask, or a bad ``init``, ``times`` or ``n_frames``.
    """
    options = TrackOptions.for_rig(rig) if options is None else options
    if options.device is not None:  # moved once: every frame's fits render it
        volume = volume.to(options.device)
    check_registration_memory(rig, "rig", volume.device)
    check_attenuation(volume, "volume")
    if len(rig.names) == 1:
        warnings.warn(f"rig: one view ({rig.names[0]!r}): the bone's position along its rays (depth) and the "
                      "turns about axes across them are weakly fixed by one image; the fits are not "
                      "flagged for it", RuntimeWarning, stacklevel=2)
    series = frames if isinstance(frames, FrameSeries) else FrameSeries(frames, masks, times, n_frames)
    tracker = _Tracker(volume, rig, series, options)
    start0: np.ndarray | None = None
    if init is not None:
        start0 = init.matrix if isinstance(init, RigidPose) else np.asarray(init, dtype=np.float64)
        RigidPose.from_matrix(start0, volume.center)  # checks: a finite rigid 4x4
    bar = tqdm(range(tracker.n), disable=not tracker.options.progress, desc="track", unit="frame")
    try:
        for k in bar:
            tracker.track_frame(k, start0)
            bar.set_postfix(loss=f"{tracker.track.losses[k]:.4f}", status=tracker.track.status[k])
        tracker.track_backwards()
    finally:
        bar.close()
    tr = tracker.track
    _flag_outliers(tr.losses, tr.doubtful, tr.reasons, tracker.options.doubtful_ratio)
    tr.warnings = list(dict.fromkeys(tr.warnings))
    for w in tr.warnings:
        warnings.warn(w, UserWarning, stacklevel=2)
    return tr


class _Tracker:
    """One bone's tracking in progress: what every frame shares, and the track filled frame by frame."""

    def __init__(self, volume: Volume, rig: StereoRig, frames: FrameSeries, options: TrackOptions):
        self.volume, self.rig, self.frames, self.options = volume, rig, frames, options
        self.n = frames.count()
        self.names = rig.names
        self.times = frames.frame_times()
        self.support = BoneSupport.of(volume)
        self.search_options = options if options.init.first_level is None else \
            replace(options, levels=(options.init.first_level, *options.levels))
        n, v = self.n, len(self.names)
        self.track = BoneTrack(np.full((n, 4, 4), np.nan), np.full(n, np.nan), np.full((n, v), np.nan), self.names,
                               [""] * n, np.zeros(n, bool), [""] * n, [""] * n, np.zeros(n),
                               in_field=np.full((n, v), np.nan))
        self.last_loss = math.nan

    def fit(self, images: tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None], start: np.ndarray,
            options: TrackOptions | None = None) -> FrameFit:
        """One frame registered from ``start`` (CT -> world); the registrations' warnings are collected."""
        return register_frame(self.volume, self.rig, images[0], images[1],
                              RigidPose.from_matrix(start, self.volume.center), options or self.options, self.support,
                              self.track.warnings)

    def candidates(self, k: int, start0: np.ndarray | None) -> list[tuple[str, np.ndarray]]:
        """Frame ``k``'s starts in the order they are tried (module docstring)."""
        poses, options = self.track.poses, self.options
        found: list[tuple[str, np.ndarray]] = []
        if k == 0 and start0 is not None:
            found.append(("given", start0))
        hooked = options.predict(k, poses[:k].copy()) if options.predict is not None else None
        if hooked is not None:
            found.append(("predict", np.asarray(hooked, dtype=np.float64)))
        tracked = int(np.isfinite(poses[:k]).all(axis=(1, 2)).sum())
        for how in dict.fromkeys((options.prediction, "previous")):
            p = predict_pose(poses, self.times, k, how)
            if p is not None and not (how == "constant_velocity" and tracked < 2) and \
                    not any(np.allclose(p, q, atol=1e-9) for _, q in found):
                found.append((how, p))
        return found

    def accepts(self, kind: str, f: FrameFit) -> bool:
        """A start is kept when its fit explains every view, each showing enough of the bone, and
        is not much worse than the last frame kept (a given start: when it explains every view)."""
        o = self.options
        return f.pose is not None and f.status != "diverged" and len(f.views) == len(self.names) and \
            max(f.view_losses.values()) <= o.max_view_loss and min(f.in_field.values()) >= o.min_in_field and (
                kind == "given" or not math.isfinite(self.last_loss) or f.loss <= o.accept_ratio * self.last_loss)

    def search(self, k: int, images: tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None],
               tried: list[tuple[str, FrameFit]]) -> tuple[bool, InitResult | None]:
        """The global search on frame ``k`` (its fit appended to ``tried``); whether it found a pose,
        and its result when it found none after other starts were tried."""
        o, tr = self.options, self.track

        def refine(s: RigidPose) -> tuple[RigidPose | None, float, str]:
            r = self.fit(images, s.matrix, self.search_options)
            if r.view_losses and max(r.view_losses.values()) > o.max_view_loss:
                return None, math.nan, "poor fit"
            if r.in_field and min(r.in_field.values()) < o.min_in_field:
                return None, math.nan, "outside the field"
            return r.pose, r.loss, r.status

        res = initial_pose(self.volume, self.rig, images[0], images[1], refine, o.init, o.progress)
        tr.init = tr.init or res
        if res.pose is not None:
            f = self.fit(images, res.pose.matrix)
            tried.append(("search", f))
            return f.pose is not None, None
        if tried:
            return False, res
        tr.status[k] = "init_ambiguous" if res.status == "ambiguous" else "init_failed"
        tr.doubtful[k], tr.reasons[k] = True, res.message
        return False, None

    def track_frame(self, k: int, start0: np.ndarray | None) -> None:
        """Frame ``k`` from its starts in turn, then the global search (module docstring)."""
        t0 = time.perf_counter()
        images = self.frames.load(self.rig, k)
        candidates = self.candidates(k, start0)
        tried: list[tuple[str, FrameFit]] = []
        accepted = False
        searched: InitResult | None = None
        for kind, M in candidates:
            f = self.fit(images, M)
            tried.append((kind, f))
            accepted = self.accepts(kind, f)
            if accepted:
                break
        if not accepted and (self.options.reinit or not candidates):
            accepted, searched = self.search(k, images, tried)
        ok = [(kind, f) for kind, f in tried if f.pose is not None]
        tr = self.track
        if ok:
            kind, best = min(ok, key=lambda kf: (len(self.names) - len(kf[1].views), kf[1].loss))
            self.keep(k, kind, best, accepted, searched)
            if len(best.views) == len(self.names):
                self.last_loss = best.loss
        elif not tr.status[k]:
            tr.status[k] = "not_visible"
            tr.doubtful[k], tr.reasons[k] = True, "the bone projects onto no view"
        tr.seconds[k] = time.perf_counter() - t0

    def keep(self, k: int, kind: str, f: FrameFit, accepted: bool, searched: InitResult | None) -> None:
        """Frame ``k``'s result: ``f``, started from ``kind``."""
        assert f.pose is not None
        tr = self.track
        tr.poses[k], tr.losses[k] = f.pose.matrix, f.loss
        tr.view_losses[k] = [f.view_losses.get(name, math.nan) for name in self.names]
        if tr.in_field is not None:
            tr.in_field[k] = [f.in_field.get(name, math.nan) for name in self.names]
        tr.status[k], tr.start[k] = f.status, kind
        why = _reasons(f, len(self.names), accepted, searched, self.options)
        tr.doubtful[k], tr.reasons[k] = bool(why), "; ".join(why)

    def track_backwards(self) -> None:
        """Frames before the first one tracked without doubt, again from their later neighbour
        (the search may succeed on a later frame only)."""
        tr, o = self.track, self.options
        good = [k for k in range(self.n) if np.all(np.isfinite(tr.poses[k])) and not tr.doubtful[k]]
        for k in range(good[0] - 1 if good else -1, -1, -1):
            if not tr.doubtful[k] or not np.all(np.isfinite(tr.poses[k + 1])):
                break
            t0 = time.perf_counter()
            f = self.fit(self.frames.load(self.rig, k), tr.poses[k + 1])
            tr.seconds[k] += time.perf_counter() - t0
            if f.pose is None or f.status == "diverged" or len(f.views) < len(self.names) or \
                    max(f.view_losses.values()) > o.max_view_loss or f.loss >= tr.losses[k]:
                break
            self.keep(k, "next", f, f.loss <= o.accept_ratio * tr.losses[k + 1], None)


def _flag_outliers(losses: np.ndarray, doubtful: np.ndarray, reasons: list[str], ratio: float, window: int = 5) -> None:
    """Flag frames whose loss exceeds ``ratio`` times the median loss of the tracked frames within
    ``window`` on each side (at least two of them)."""
    n = len(losses)
    for k in range(n):
        if not math.isfinite(losses[k]):
            continue
        nb = [losses[j] for j in range(max(0, k - window), min(n, k + window + 1)) if j != k and math.isfinite(losses[j])]
        if len(nb) >= 2 and losses[k] > ratio * float(np.median(nb)):
            doubtful[k] = True
            reasons[k] = "; ".join(filter(None, [reasons[k], f"loss {losses[k]:.4f} > {ratio:g} x the neighbours' "
                                                              f"median {np.median(nb):.4f}"]))

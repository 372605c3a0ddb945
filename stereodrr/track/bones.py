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
registration did not converge, when a view's loss exceeds ``max_view_loss``, when it rests on
fewer views than the rig has, when no start gave a loss within ``accept_ratio`` of the previous
frame's, or when its loss is ``doubtful_ratio`` times its neighbours' median.
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
from ..volume import Volume
from .bone_fit import FrameFit, TrackOptions, predict_pose, register_frame
from .bone_init import InitResult, initial_pose
from .bone_views import check_frame, cut_volume, support_corners

__all__ = ["BoneTrack", "track_bone"]

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

    def table(self) -> pd.DataFrame:
        """One row per frame: ``frame, status, doubtful, reason, start, loss, loss_<view>...,
        seconds, m00 ... m33`` (the pose row by row)."""
        rows = []
        for k in range(len(self.losses)):
            row = {"frame": k, "status": self.status[k], "doubtful": bool(self.doubtful[k]), "reason": self.reasons[k],
                   "start": self.start[k], "loss": self.losses[k]}
            row.update({f"loss_{n}": self.view_losses[k, i] for i, n in enumerate(self.views)})
            row["seconds"] = self.seconds[k]
            row.update({f"m{r}{c}": self.poses[k, r, c] for r in range(4) for c in range(4)})
            rows.append(row)
        return pd.DataFrame(rows)


def _frame_count(frames: Frames, n_frames: int | None) -> int:
    if callable(frames):
        if n_frames is None or int(n_frames) != n_frames or n_frames < 1:
            raise ValueError(f"n_frames: expected the number of frames (a positive integer) with a callable frames, "
                             f"got {n_frames}")
        return int(n_frames)
    n = len(frames)
    if n < 1:
        raise ValueError("frames: expected at least one frame")
    if n_frames is not None and n_frames != n:
        raise ValueError(f"n_frames: {n_frames} differs from the {n} frames given")
    return n


def _frame_masks(masks: Masks | None, k: int, n: int) -> Mapping[str, np.ndarray] | None:
    if masks is None:
        return None
    if callable(masks):
        return masks(k)
    if isinstance(masks, Mapping):  # one mask per view for every frame
        return masks
    if len(masks) != n:
        raise ValueError(f"masks: expected one mapping per frame ({n}), got {len(masks)}")
    return masks[k]


def _reasons(fit: FrameFit, n_views: int, accepted: bool, searched: InitResult | None,
             max_view_loss: float) -> list[str]:
    why = []
    poor = [n for n, v in fit.view_losses.items() if v > max_view_loss]
    if poor:
        why.append(f"loss above {max_view_loss:g} in {', '.join(poor)}")
    if fit.status != "converged":
        why.append(f"registration {fit.status}")
    if len(fit.views) < n_views:
        why.append(f"seen in {len(fit.views)} of {n_views} views")
    if not accepted:
        why.append("no start gave a loss near the neighbouring frame's")
    if searched is not None:
        why.append(f"global search {searched.status}: {searched.message}")
    return why


def track_bone(volume: Volume, rig: StereoRig, frames: Frames, options: TrackOptions | None = None,
               init: RigidPose | np.ndarray | None = None, masks: Masks | None = None, *,
               times: Sequence[float] | None = None, n_frames: int | None = None) -> BoneTrack:
    """Track a bone through the frames (module docstring).

    Args:
        volume: the bone's CT, attenuation-like values (0 outside the bone), in the frame whose
            pose the result gives (e.g. :func:`~stereodrr.interop.load_autoscoper_volume`).
        rig: the calibrated views (two or more for the global search).
        frames: per frame a mapping view -> ``(H, W)`` line-integral-like image (bone bright),
            or a callable ``frames(k)`` giving it (then ``n_frames`` is required).
        options: the settings (default :class:`~stereodrr.track.bone_fit.TrackOptions`).
        init: the first frame's start, CT -> world (a :class:`RigidPose` or a 4x4); None: the
            global search finds it.
        masks: pixel weights (0 = ignore, e.g. outside the intensifier's field): one mapping view
            -> ``(H, W)`` for every frame, a sequence of them per frame, a callable, or None.
        times: frame times for the constant-velocity prediction (default ``0, 1, 2, ...``).
        n_frames: the number of frames when ``frames`` is a callable.

    Returns:
        :class:`BoneTrack`.

    Raises:
        ValueError: a frame or mask missing a view, of the wrong size, with NaN/inf pixels, a
            negative mask, or a bad ``init``, ``times`` or ``n_frames``.
    """
    options = TrackOptions() if options is None else options
    n = _frame_count(frames, n_frames)
    names = rig.names
    t = np.arange(n, dtype=np.float64) if times is None else np.asarray(times, dtype=np.float64)
    if t.shape != (n,) or not np.all(np.isfinite(t)) or np.any(np.diff(t) <= 0):
        raise ValueError(f"times: expected {n} increasing finite frame times, got {times}")
    start0: np.ndarray | None = None
    if init is not None:
        start0 = init.matrix if isinstance(init, RigidPose) else np.asarray(init, dtype=np.float64)
        RigidPose.from_matrix(start0, volume.center)  # checks: a finite rigid 4x4
    corners, cut = support_corners(volume), cut_volume(volume)
    search_options = options if options.init.first_level is None else \
        replace(options, levels=(options.init.first_level, *options.levels))
    poses = np.full((n, 4, 4), np.nan)
    losses = np.full(n, np.nan)
    view_losses = np.full((n, len(names)), np.nan)
    status, reasons, starts = [""] * n, [""] * n, [""] * n
    doubtful = np.zeros(n, bool)
    seconds = np.zeros(n)
    caught: list[str] = []
    init_result: InitResult | None = None
    last_loss = math.nan

    def load(k: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        return check_frame(rig, frames(k) if callable(frames) else frames[k], _frame_masks(masks, k, n),
                           f"frames[{k}]")

    bar = tqdm(range(n), disable=not options.progress, desc="track", unit="frame")
    try:
        for k in bar:
            t0 = time.perf_counter()
            imgs, msk = load(k)

            def fit(start: np.ndarray, opts: TrackOptions = options, imgs: Mapping[str, np.ndarray] = imgs,
                    msk: Mapping[str, np.ndarray] | None = msk) -> FrameFit:
                return register_frame(volume, rig, imgs, msk, RigidPose.from_matrix(start, volume.center), opts,
                                      corners, cut, caught)

            candidates: list[tuple[str, np.ndarray]] = []
            if k == 0 and start0 is not None:
                candidates.append(("given", start0))
            hooked = options.predict(k, poses[:k].copy()) if options.predict is not None else None
            if hooked is not None:
                candidates.append(("predict", np.asarray(hooked, dtype=np.float64)))
            tracked = int(np.isfinite(poses[:k]).all(axis=(1, 2)).sum())
            for how in dict.fromkeys((options.prediction, "previous")):
                p = predict_pose(poses, t, k, how)
                if p is not None and not (how == "constant_velocity" and tracked < 2) and \
                        not any(np.allclose(p, q, atol=1e-9) for _, q in candidates):
                    candidates.append((how, p))
            tried: list[tuple[str, FrameFit]] = []
            accepted = False
            searched: InitResult | None = None
            for kind, M in candidates:
                f = fit(M)
                tried.append((kind, f))
                # A start is kept when its fit explains every view and is not much worse than the last
                # frame kept (a given start: when it explains every view).
                accepted = f.pose is not None and f.status != "diverged" and len(f.views) == len(names) and \
                    max(f.view_losses.values()) <= options.max_view_loss and (
                        kind == "given" or not math.isfinite(last_loss) or f.loss <= options.accept_ratio * last_loss)
                if accepted:
                    break
            if not accepted and (options.reinit or not candidates):

                def refine(s: RigidPose) -> tuple[RigidPose | None, float, str]:
                    r = fit(s.matrix, search_options)  # noqa: B023 (called at once, in this frame)
                    if r.view_losses and max(r.view_losses.values()) > options.max_view_loss:
                        return None, math.nan, "poor fit"
                    return r.pose, r.loss, r.status

                res = initial_pose(volume, rig, imgs, msk, refine, options.init, options.progress)
                init_result = init_result or res
                if res.pose is not None:
                    f = fit(res.pose.matrix)
                    tried.append(("search", f))
                    accepted = f.pose is not None
                elif tried:
                    searched = res
                else:
                    status[k] = "init_ambiguous" if res.status == "ambiguous" else "init_failed"
                    doubtful[k], reasons[k] = True, res.message
            ok = [(kind, f) for kind, f in tried if f.pose is not None]
            if ok:
                kind, best = min(ok, key=lambda kf: (len(names) - len(kf[1].views), kf[1].loss))
                assert best.pose is not None
                poses[k], losses[k] = best.pose.matrix, best.loss
                view_losses[k] = [best.view_losses.get(name, math.nan) for name in names]
                status[k], starts[k] = best.status, kind
                why = _reasons(best, len(names), accepted, searched, options.max_view_loss)
                doubtful[k], reasons[k] = bool(why), "; ".join(why)
                if len(best.views) == len(names):
                    last_loss = best.loss
            elif not status[k]:
                status[k] = "not_visible"
                doubtful[k], reasons[k] = True, "the bone projects onto no view"
            seconds[k] = time.perf_counter() - t0
            bar.set_postfix(loss=f"{losses[k]:.4f}", status=status[k])
        # Frames before the first one tracked without doubt, again from their later neighbour
        # (the search may succeed on a later frame only).
        good = [k for k in range(n) if np.all(np.isfinite(poses[k])) and not doubtful[k]]
        for k in range(good[0] - 1 if good else -1, -1, -1):
            if not doubtful[k] or not np.all(np.isfinite(poses[k + 1])):
                break
            t0 = time.perf_counter()
            imgs, msk = load(k)
            f = register_frame(volume, rig, imgs, msk, RigidPose.from_matrix(poses[k + 1], volume.center), options,
                               corners, cut, caught)
            seconds[k] += time.perf_counter() - t0
            if f.pose is None or f.status == "diverged" or len(f.views) < len(names) or \
                    max(f.view_losses.values()) > options.max_view_loss or f.loss >= losses[k]:
                break
            poses[k], losses[k], status[k], starts[k] = f.pose.matrix, f.loss, f.status, "next"
            view_losses[k] = [f.view_losses.get(name, math.nan) for name in names]
            why = _reasons(f, len(names), f.loss <= options.accept_ratio * losses[k + 1], None, options.max_view_loss)
            doubtful[k], reasons[k] = bool(why), "; ".join(why)
    finally:
        bar.close()
    _flag_outliers(losses, doubtful, reasons, options.doubtful_ratio)
    distinct = list(dict.fromkeys(caught))
    for w in distinct:
        warnings.warn(w, UserWarning, stacklevel=2)
    return BoneTrack(poses, losses, view_losses, names, status, doubtful, reasons, starts, seconds, init_result, distinct)


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

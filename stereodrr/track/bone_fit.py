"""One bone registered to one frame: the per-frame step of bone tracking.

Each pyramid level runs :func:`stereodrr.registration.register` on the views cropped around the bone
at the level's start pose (exact cropped cameras, :mod:`~stereodrr.track.bone_views`), comparing
only the pixels near the bone there: the mask (the intensifier's field), times the bone's
projection grown by ``bone_mask_px`` pixels of the level, minus the projection of the faces where
the partial CT cuts the bone (an outline no radiograph shows). The default measure is the NCC of
band-passed images (``"bpncc"``), which ignores what a bone-only CT cannot show (the soft tissue's
slow variation) and keeps the bone's projected density.

A registration compares one fixed set of pixels; a pose that drifts out of it sees less of the
frame and can look better than it is. So the loss a fit reports (:func:`frame_loss`) is taken
afresh on the pixels around the bone at the final pose, which makes losses comparable between
starts, candidates and frames.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import numpy as np
import scipy.linalg
import torch

from ..geometry import RigidPose, StereoRig, invert
from ..registration import (
    Level,
    RegistrationOptions,
    downsample_images,
    get_similarity,
    pixel_footprint_mm,
    register,
    render_views,
)
from ..render.projector import Mode
from ..volume import Volume
from .bone_init import InitOptions
from .bone_views import crop_views, cut_volume, dilate, projected_boxes, support_corners

__all__ = ["JointOptions", "TrackOptions", "BoneSupport", "FrameFit", "FrameStatus", "default_track_levels", "register_frame", "frame_loss",
           "predict_pose", "binning_for", "SEARCH_FOOTPRINT_MM", "LEVEL_FOOTPRINTS_MM", "CUT_MARGIN_MM",
           "FINAL_STEP_TOL"]

Prediction = Literal["constant_velocity", "previous"]
# predict(frame index k, poses of frames 0..k-1 as (k, 4, 4), NaN where not tracked) -> 4x4 start or None.
PredictHook = Callable[[int, np.ndarray], "np.ndarray | None"]


# The binnings were tuned on the Autoscoper wrist sample's 1760 x 1760 frames (0.169 mm per pixel
# at the isocenter): the search at 8, the per-frame levels at 4 and 2. As footprints at the
# isocenter they hold for any detector; as pixel counts they do not (a 1024 x 1024 frame, a
# binned camera or another magnification would be searched and fitted at a coarser resolution).
SEARCH_FOOTPRINT_MM = 1.35
"""The global search's binned pixel at the isocenter (:meth:`TrackOptions.for_rig`)."""
LEVEL_FOOTPRINTS_MM = (0.68, 0.34)
"""The per-frame pyramid's binned pixels at the isocenter (:func:`default_track_levels`)."""
CUT_MARGIN_MM = 2.0
"""The default ``cut_margin_px`` (12 px on the wrist sample) at the isocenter."""
FINAL_STEP_TOL = 0.04
"""The step (deg and mm) below which the pyramid's last level has converged: ``TrackOptions()``'s
0.01 at full resolution, scaled by the square of the level's binning as registration scales it
(the wrist sample's last level, binned 2)."""


def binning_for(rig: StereoRig, footprint_mm: float) -> int:
    """The detector binning whose pixel covers about ``footprint_mm`` at the isocenter (at least 1)."""
    if not (math.isfinite(footprint_mm) and footprint_mm > 0):
        raise ValueError(f"footprint_mm: expected a positive size, got {footprint_mm}")
    return max(1, round(footprint_mm / pixel_footprint_mm(rig, 1)))


def default_track_levels(rig: StereoRig | None = None) -> tuple[Level, ...]:
    """The per-frame pyramid: L-BFGS on the CT as it is (a bone CT is small), at most 20 line
    searches per level, at binnings of :data:`LEVEL_FOOTPRINTS_MM` at the ``rig``'s isocenter
    (two levels at full resolution where its pixels are coarser), or without a rig at 1/4 then
    1/2 of the detector resolution (those of the wrist sample's 1760 x 1760 frames)."""
    scales = (4, 2) if rig is None else tuple(binning_for(rig, mm) for mm in LEVEL_FOOTPRINTS_MM)
    return tuple(Level(s, 20, volume_factor=1, optimizer="lbfgs") for s in scales)


@dataclass(frozen=True)
class JointOptions:
    """How :func:`track_bones` combines the bones.

    Attributes:
        passes: passes after the first (each bone on the frames with the others explained away).
        sigma_low_px, sigma_high_px: the band-pass that fits a neighbour's DRR scale (full-resolution
            pixels).
        bead_distance_mm: a bead body belongs to a bone when its beads' median distance to the
            bone's CT surface is at most this.
    """

    passes: int = 1
    sigma_low_px: float = 2.0
    sigma_high_px: float = 16.0
    bead_distance_mm: float = 10.0

    def __post_init__(self) -> None:
        if int(self.passes) != self.passes or self.passes < 0:
            raise ValueError(f"passes: expected a whole number >= 0, got {self.passes}")
        if not 0 < self.sigma_low_px < self.sigma_high_px:
            raise ValueError(f"sigma_low_px, sigma_high_px: expected 0 < low < high, got {self.sigma_low_px}, "
                             f"{self.sigma_high_px}")
        if not (math.isfinite(self.bead_distance_mm) and self.bead_distance_mm > 0):
            raise ValueError(f"bead_distance_mm: expected a positive distance, got {self.bead_distance_mm}")


@dataclass(frozen=True)
class TrackOptions:
    """How a bone is registered to each frame and followed through the frames.

    Attributes:
        similarity: a name of :data:`~stereodrr.registration.similarity.SIMILARITIES` for the levels
            that name none.
        levels: the per-frame pyramid (default :func:`default_track_levels`).
        margin_px: full-resolution pixels kept in each crop around the compared region.
        bone_mask_px: pixels of each level's binning around the bone's projection that are compared.
        cut_margin_px: full-resolution pixels around the projection of the CT's cut faces left out
            (:func:`~stereodrr.track.bone_views.cut_volume`); None keeps them.
        render_mode: the renderer's mode.
        lr_rotation_deg, lr_translation_mm: the optimiser's parameter scales.
        rotation_tol_deg, translation_tol_mm: convergence tolerances on the step (full resolution).
        prediction: start of a frame after the first: ``"constant_velocity"`` (once two frames are
            tracked) or ``"previous"``.
        predict: optional hook ``predict(k, poses) -> 4x4 or None`` tried first on every frame,
            ``poses`` the frames before ``k`` (e.g. the bone's motion from its beads).
        accept_ratio: a warm-started result is kept when its loss is at most this times the last
            kept frame's; otherwise the next start is tried (prediction, previous pose, search).
        max_view_loss: a fit with a view's loss above this (NCC below 0.55 there) does not explain
            the frame: a search candidate with one is rejected, a tracked frame with one is doubtful.
            On the Autoscoper wrist sample the radius's and the ulna's fits leave 0.19-0.28 per
            view, the ulna's wrong poses 0.40-0.56 (at least one view above 0.52 in each frame;
            0.6 let one pass as converged).
        min_in_field: a tracked frame whose bone lies less than this fraction inside a view's
            field (its projected outline on the detector and under the mask) is doubtful: that
            view shows too little of it to confirm the pose (a bone fitted to the field's rim).
        reinit: run the global search when no warm start is kept.
        doubtful_ratio: a frame whose loss exceeds this times its neighbours' median is doubtful.
        init: the global search's settings.
        joint: how :func:`~stereodrr.track.bone_joint.track_bones` combines several bones.
        progress: show tqdm bars.
        device: the torch device the bones are tracked on (``"cuda"``, ``"cuda:1"``, ``"cpu"``):
            :func:`~stereodrr.track.bones.track_bone` and
            :func:`~stereodrr.track.bone_joint.track_bones` move each volume there once, and every
            DRR, similarity and optimiser step runs there (the renderer takes its Triton backend
            on CUDA). None: where each volume is. Tracking on a GPU has been tested only with a
            stand-in device, not yet on real hardware.
    """

    similarity: str = "bpncc"
    levels: tuple[Level, ...] = field(default_factory=default_track_levels)
    margin_px: int = 8
    bone_mask_px: int = 8
    cut_margin_px: int | None = 12
    render_mode: Mode = "joseph"
    lr_rotation_deg: float = 2.0
    lr_translation_mm: float = 2.0
    rotation_tol_deg: float = 0.01
    translation_tol_mm: float = 0.01
    prediction: Prediction = "constant_velocity"
    predict: PredictHook | None = None
    accept_ratio: float = 1.3
    max_view_loss: float = 0.45
    min_in_field: float = 0.5
    reinit: bool = True
    doubtful_ratio: float = 1.5
    init: InitOptions = field(default_factory=InitOptions)
    joint: JointOptions = field(default_factory=JointOptions)
    progress: bool = True
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        get_similarity(self.similarity)
        if not self.levels or not all(isinstance(lv, Level) for lv in self.levels):
            raise ValueError(f"levels: expected at least one pyramid Level, got {self.levels!r}")
        for name in ("margin_px", "bone_mask_px", "cut_margin_px"):
            v = getattr(self, name)
            if v is not None and (int(v) != v or v < 0):
                raise ValueError(f"{name}: expected a non-negative number of pixels, got {v}")
        if self.prediction not in ("constant_velocity", "previous"):
            raise ValueError(f"prediction: expected 'constant_velocity' or 'previous', got {self.prediction!r}")
        for name in ("lr_rotation_deg", "lr_translation_mm", "rotation_tol_deg", "translation_tol_mm"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a positive number, got {v}")
        if not (math.isfinite(self.max_view_loss) and self.max_view_loss > 0):
            raise ValueError(f"max_view_loss: expected a positive loss, got {self.max_view_loss}")
        if not 0 <= self.min_in_field <= 1:
            raise ValueError(f"min_in_field: expected a fraction in [0, 1], got {self.min_in_field}")
        for name in ("accept_ratio", "doubtful_ratio"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 1):
                raise ValueError(f"{name}: expected a ratio >= 1, got {v}")
        if isinstance(self.device, str):
            try:
                torch.device(self.device)
            except RuntimeError as e:
                raise ValueError(f"device: expected a torch device such as 'cuda' or 'cpu', got {self.device!r}") from e

    @classmethod
    def for_rig(cls, rig: StereoRig, **changes: Any) -> TrackOptions:
        """The defaults for ``rig``'s detectors: the pyramid, the global search's binning and its
        first level, and ``cut_margin_px`` at the footprints of :data:`LEVEL_FOOTPRINTS_MM`,
        :data:`SEARCH_FOOTPRINT_MM` and :data:`CUT_MARGIN_MM`, the convergence tolerances
        :data:`FINAL_STEP_TOL` at the last level (the same as ``TrackOptions()`` on 1760 x 1760
        frames of the wrist sample's magnification); ``changes`` as keywords of the class, which
        win over these."""
        s = binning_for(rig, SEARCH_FOOTPRINT_MM)
        init = changes.pop("init", None) or InitOptions(scale=s, first_level=Level(s, 20, volume_factor=1,
                                                                                    optimizer="lbfgs"))
        levels = default_track_levels(rig)
        # The last level's tolerance as on the wrist sample, whatever its binning: a last level at
        # full resolution (coarse pixels) would otherwise stop only 4x below a wrist's and run
        # into the iteration limit on fits as good (doubtful frames).
        tol = FINAL_STEP_TOL / levels[-1].scale ** 2
        base: dict[str, Any] = {"levels": levels, "init": init, "rotation_tol_deg": tol, "translation_tol_mm": tol,
                                "cut_margin_px": max(1, round(CUT_MARGIN_MM / pixel_footprint_mm(rig, 1)))}
        return cls(**{**base, **changes})

    def registration(self, level: Level) -> RegistrationOptions:
        """The options of one level's registration on a frame: L-BFGS, without a progress bar."""
        return RegistrationOptions(levels=(level,), similarity=self.similarity, optimizer="lbfgs",
                                   lr_rotation_deg=self.lr_rotation_deg, lr_translation_mm=self.lr_translation_mm,
                                   rotation_tol_deg=self.rotation_tol_deg, translation_tol_mm=self.translation_tol_mm,
                                   render_mode=self.render_mode, progress=False)


FrameStatus = Literal["converged", "max_iterations", "diverged", "not_visible", "init_failed", "init_ambiguous"]
"""The outcome of tracking one frame."""


@dataclass
class FrameFit:
    """One frame's registration.

    Attributes:
        pose: CT -> world (None when the bone projects onto no view).
        loss: :func:`frame_loss` at ``pose`` (sum over :attr:`views`; NaN without a pose).
        view_losses: per view used.
        status: the last level's registration status, or ``"not_visible"``.
        views: the views that show the bone at ``pose``.
        seconds: wall time.
        in_field: per view used, the fraction of the bone's projected outline at ``pose`` that lies
            on the detector and under the mask.
    """

    pose: RigidPose | None
    loss: float
    view_losses: dict[str, float]
    status: FrameStatus
    views: list[str]
    seconds: float
    in_field: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BoneSupport:
    """What a fit derives once from a bone's CT.

    Attributes:
        corners: the bone's support box (:func:`~stereodrr.track.bone_views.support_corners`).
        cut: the CT's cut faces (:func:`~stereodrr.track.bone_views.cut_volume`), left out of the
            comparison; None: nothing left out.
    """

    corners: np.ndarray
    cut: Volume | None = None

    @classmethod
    def of(cls, volume: Volume, cut: bool = True) -> BoneSupport:
        """The support of ``volume``, with its cut faces unless ``cut`` is False."""
        return cls(support_corners(volume), cut_volume(volume) if cut else None)


@dataclass
class _Views:
    """The views of one frame that show the bone, cropped around it, with their pixel weights."""

    rig: StereoRig
    images: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    in_field: dict[str, float]


def _prepare(volume: Volume, rig: StereoRig, images: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None,
             pose: RigidPose, options: TrackOptions, scale: int, support: BoneSupport) -> _Views | None:
    """Crops around the bone at ``pose`` (sizes a multiple of ``scale``) and their weights (module
    docstring); None when no view shows the bone: a tenth of its projected box on the detector
    and under the mask, with contrast around its outline."""
    boxes = projected_boxes(support.corners, rig, pose)
    seen = [n for n, b in boxes.items() if np.all(np.isfinite(b)) and b[2] >= 0 and b[0] <= rig[n].width - 1
            and b[3] >= 0 and b[1] <= rig[n].height - 1]
    if not seen:
        return None
    cv = crop_views(StereoRig({n: rig[n] for n in seen}, rig.isocenter), {n: images[n] for n in seen},
                    None if masks is None else {n: masks[n] for n in seen}, {n: boxes[n] for n in seen},
                    options.margin_px + options.bone_mask_px * scale, scale)
    used = [n for n in seen if cv.visible[n] >= 0.1]
    if not used:
        return None
    sub = StereoRig({n: cv.rig[n] for n in used}, rig.isocenter)
    # The masks are rendered at this level's binning and grown at full resolution.
    up = np.ones((scale, scale), bool)
    bone = render_views(volume, sub, pose, scale, mode=options.render_mode).cpu().numpy()
    edge = None if support.cut is None or options.cut_margin_px is None else \
        render_views(support.cut, sub, pose, scale, mode=options.render_mode).cpu().numpy()
    weights, in_field = {}, {}
    for i, n in enumerate(used):
        outline = np.kron(bone[i] > 0, up)
        total = int(outline.sum())
        # An outline that covers no binned pixel says nothing about where the bone lies.
        in_field[n] = float((outline & (cv.weights[n] > 0)).sum() / total) if total else 1.0
        w = cv.weights[n] * dilate(outline, options.bone_mask_px * scale)
        if edge is not None:
            w = w * ~dilate(np.kron(edge[i] > 0, up), int(options.cut_margin_px))  # type: ignore[arg-type]
        weights[n] = w.astype(np.float32)
    # Around the bone itself the frame may hold no contrast (the bone placed over open air, which
    # reads 0): such a view cannot be compared at this pose.
    shown = [n for n in used if (weights[n] > 0).any() and np.ptp(cv.images[n][weights[n] > 0]) > 0]
    if not shown:
        return None
    return _Views(StereoRig({n: cv.rig[n] for n in shown}, rig.isocenter), {n: cv.images[n] for n in shown},
                  {n: weights[n] for n in shown}, {n: in_field[n] for n in shown})


def frame_loss(volume: Volume, rig: StereoRig, images: Mapping[str, np.ndarray],
               masks: Mapping[str, np.ndarray] | None, pose: RigidPose, options: TrackOptions = TrackOptions(),
               support: BoneSupport | None = None) -> tuple[float, dict[str, float]]:
    """The loss of a pose on one frame, comparable between poses (module docstring):
    ``sum_v (1 - S_v)`` with the last level's similarity at its binning, over the pixels around
    the bone at this pose (``support``: as :func:`register_frame`).

    Returns:
        The sum over the views that show the bone, and the per-view losses (NaN and {} when none does).
    """
    loss, per_view, _ = _frame_loss(volume, rig, images, masks, pose, options, support)
    return loss, per_view


def _frame_loss(volume: Volume, rig: StereoRig, images: Mapping[str, np.ndarray],
                masks: Mapping[str, np.ndarray] | None, pose: RigidPose, options: TrackOptions,
                support: BoneSupport | None) -> tuple[float, dict[str, float], dict[str, float]]:
    """:func:`frame_loss` and, per view, the fraction of the bone's outline in the field."""
    support = BoneSupport.of(volume, cut=False) if support is None else support
    last = options.levels[-1]
    views = _prepare(volume, rig, images, masks, pose, options, last.scale, support)
    if views is None:
        return math.nan, {}, {}
    names = views.rig.names
    # On the volume's device, where the DRRs are.
    target = downsample_images(torch.as_tensor(np.stack([views.images[n] for n in names]), dtype=torch.float64,
                                               device=volume.device), last.scale)
    weight = downsample_images(torch.as_tensor(np.stack([views.weights[n] for n in names]), dtype=torch.float64,
                                               device=volume.device), last.scale)
    drrs = render_views(volume, views.rig, pose, last.scale, mode=options.render_mode).double()
    with torch.no_grad():
        per_view = 1.0 - get_similarity(last.similarity or options.similarity)(drrs, target, weight)
    return float(per_view.sum()), {n: float(v) for n, v in zip(names, per_view)}, views.in_field


def register_frame(volume: Volume, rig: StereoRig, images: Mapping[str, np.ndarray],
                   masks: Mapping[str, np.ndarray] | None, start: RigidPose, options: TrackOptions = TrackOptions(),
                   support: BoneSupport | None = None, caught: list[str] | None = None) -> FrameFit:
    """Register the bone to one frame from ``start`` (module docstring).

    Args:
        volume: the bone's CT, attenuation-like (0 outside the bone).
        rig: the full views; images, masks: per view ``(H, W)``, already checked
            (:func:`~stereodrr.track.bone_views.check_frame`).
        start: the starting pose; options: the settings.
        support: the bone's support box and cut faces (:class:`BoneSupport`); None: the box
            computed here, nothing left out.
        caught: a list that collects the registrations' warnings (first line each) instead of
            letting them through.
    """
    t0 = time.perf_counter()
    support = BoneSupport.of(volume, cut=False) if support is None else support
    pose = start
    status = "converged"
    ws: list[warnings.WarningMessage] = []
    for lv in options.levels:
        views = _prepare(volume, rig, images, masks, pose, options, lv.scale, support)
        if views is None:
            return FrameFit(None, math.nan, {}, "not_visible", [], time.perf_counter() - t0)
        with warnings.catch_warnings(record=True) as here:
            warnings.simplefilter("always")
            # Not a user's input problem here: the frames' polarity is found by the trial reader, and a
            # search candidate may start with the bone out of a view or turned against the image.
            warnings.filterwarnings("ignore", message=r"image '.*': its contrast looks inverted")
            warnings.filterwarnings("ignore", message=r"view \d+: no ray of this camera meets")
            # A trial's cameras come in its file's order; a wrong candidate pose, not the order,
            # is what makes the DRRs match other views better here, two exchanged or three or more in
            # another order (the doubtful flags say so).
            warnings.filterwarnings("ignore", message=r"images of views .* better (exchanged|in another order)")
            r = register(volume, views.rig, views.images, pose, options.registration(lv), masks=views.weights)
        ws += here
        pose, status = r.pose, r.status
        if status == "diverged":
            break
    if caught is not None:
        caught += [str(w.message).splitlines()[0] for w in ws]
    else:
        for w in ws:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    loss, view_losses, in_field = _frame_loss(volume, rig, images, masks, pose, options, support)
    if not view_losses:
        return FrameFit(None, math.nan, {}, "not_visible", [], time.perf_counter() - t0)
    return FrameFit(pose, loss, view_losses, status, list(view_losses),  # type: ignore[arg-type]
                    time.perf_counter() - t0, in_field)


def predict_pose(poses: np.ndarray, times: np.ndarray, k: int, prediction: Prediction = "constant_velocity"
                 ) -> np.ndarray | None:
    """Start for frame ``k`` from the frames before it.

    ``"constant_velocity"``: the last tracked pose moved on by the motion between the last two
    tracked frames, scaled to the time step, ``T_k = exp(a log(T_j T_i^-1)) T_j`` with
    ``a = (t_k - t_j) / (t_j - t_i)``; ``"previous"`` (or only one frame tracked): the last
    tracked pose. None when no frame before ``k`` is tracked.

    Args:
        poses: ``(F, 4, 4)``, NaN for frames not (yet) tracked; times: ``(F,)`` increasing.
    """
    done = [i for i in range(k) if np.all(np.isfinite(poses[i]))]
    if not done:
        return None
    j = done[-1]
    if prediction == "previous" or len(done) < 2:
        return np.array(poses[j], dtype=np.float64)
    i = done[-2]
    a = (times[k] - times[j]) / (times[j] - times[i])
    step = np.real(scipy.linalg.logm(poses[j] @ invert(poses[i])))
    T = scipy.linalg.expm(a * step) @ poses[j]
    u, _, vt = np.linalg.svd(T[:3, :3])  # back onto SO(3) after expm/logm round-off
    T[:3, :3] = u @ vt
    T[3] = (0.0, 0.0, 0.0, 1.0)
    return T

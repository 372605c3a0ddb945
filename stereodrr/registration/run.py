"""Multi-view intensity-based 2D/3D registration: one rigid pose of the volume, all views at once.

Minimises ``L(p) = sum_v (1 - S(DRR_v(p), I_v))`` (:mod:`~stereodrr.registration.objective`)
over one pose ``p`` shared by all views (:mod:`~stereodrr.registration.params`), coarse to fine
(:mod:`~stereodrr.registration.pyramid`), each level with one optimiser
(:mod:`~stereodrr.registration.optimizers`) until its stopping rule ends it
(:mod:`~stereodrr.registration.stopping`).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._deprecation import legacy_options
from ..distortion import DistortionMap, check_maps
from ..geometry import StereoRig
from ..render.drr import RaysMissWarning
from ..render.projector import Projector
from ..volume import Volume
from .binning import downsample_images, scale_intrinsics
from .checks import (
    Images,
    check_attenuation,
    check_contrast,
    check_registration_memory,
    check_slices,
    check_view_order,
    stack_images,
)
from .objective import Cameras, History, Objective, multiview_drr, record_views, render_views, view_losses, views_seeing
from .optimizers import OPTIMIZERS
from .options import ProgressCallback, RegistrationOptions, RegistrationProgress
from .params import PoseParameters, translation_basis
from .pose import RigidPose
from .pyramid import Level, factor_axes, hands_over, level_factor
from .result import RegistrationDivergedWarning, RegistrationResult, RegistrationStatus
from .similarity import check_target
from .stopping import StoppingRule

__all__ = ["register", "run_level"]


@dataclass
class _Problem:
    """What every level shares."""

    volume: Volume
    rig: StereoRig
    cameras: Cameras
    targets: Tensor
    weights: Tensor | None
    maps: tuple[DistortionMap | None, ...] | None
    basis: Tensor
    options: RegistrationOptions
    levels: tuple[Level, ...]
    history: History
    callback: ProgressCallback | None = None
    bar: Any = None
    volumes: dict[tuple[int, int, int], tuple[Tensor, Tensor]] = field(default_factory=dict)

    def level_step_mm(self, lv: Level, factor: tuple[int, int, int]) -> float | None:
        """The level's ray step in mm (None: the renderer's default)."""
        if lv.step_voxels is None:
            return self.options.step_mm
        return float(lv.step_voxels * min(float(sp) * k for sp, k in zip(self.volume.spacing, factor)))

    def level_volume(self, factor: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        if factor not in self.volumes:
            vol = self.volume.downsample(factor)
            self.volumes[factor] = (vol.data, vol.index_from_world_tensor())
        return self.volumes[factor]

    def level_weights(self, scale: int) -> Tensor | None:
        """The pixel weights at a binning: the masks (with each map's support) binned, times each
        map's support at that binning (a binned pixel only partly supported has no model)."""
        w = None if self.weights is None else downsample_images(self.weights, scale)
        if self.maps is None or w is None:
            return w
        return w * _supports(self.maps, w, scale)


def _supports(maps: tuple[DistortionMap | None, ...], like: Tensor, scale: int) -> Tensor:
    """``(V, h, w)`` each view's :meth:`~stereodrr.distortion.DistortionMap.recorded_support` at
    a binning (1 for a view without a map), in ``like``'s dtype and device and shape."""
    ones = torch.ones(like.shape[-2:], dtype=like.dtype, device=like.device)
    return torch.stack([ones if m is None else torch.as_tensor(m.recorded_support(scale), dtype=like.dtype,
                                                               device=like.device) for m in maps])


@dataclass
class _Plan:
    """One level's settings, its defaults resolved."""

    factor: tuple[int, int, int]
    similarity: str
    optimizer: str
    step_mm: float | None
    lr: tuple[float, float]
    rule: StoppingRule


def _plan(problem: _Problem, li: int) -> _Plan:
    o, lv = problem.options, problem.levels[li]
    factor = level_factor(lv, li == len(problem.levels) - 1, problem.volume, problem.rig)
    # Steps shrink with the pixel size: a finer level starts from a closer pose.
    shrink = lv.scale / problem.levels[0].scale
    return _Plan(factor, lv.similarity or o.similarity, lv.optimizer or o.optimizer, problem.level_step_mm(lv, factor),
                 (math.radians(o.lr_rotation_deg) * shrink, o.lr_translation_mm * shrink),
                 StoppingRule(o.rotation_tol_deg * lv.scale ** 2, o.translation_tol_mm * lv.scale ** 2, o.patience,
                              o.divergence_margin * len(problem.rig.names)))


def run_level(problem: _Problem, li: int, start: RigidPose, curvature: Tensor | None = None,
              hand_over: bool = False) -> tuple[RegistrationStatus, str, RigidPose, Tensor | None]:
    """Optimise level ``li`` from ``start``; returns its status, a message when it diverged or was
    stopped, its best pose and, with ``hand_over``, the optimiser's curvature estimate
    (:meth:`~stereodrr.registration.optimizers.Optimizer.curvature`), which ``curvature`` hands to
    the next level's optimiser when the two share their parameter scales."""
    lv, plan = problem.levels[li], _plan(problem, li)
    problem.history.context = {"level": li, "scale": lv.scale, "volume_factor": "x".join(map(str, plan.factor)),
                               "step_mm": plan.step_mm, "optimizer": plan.optimizer, "similarity": plan.similarity}
    data, ifw = problem.level_volume(plan.factor)
    cameras = (scale_intrinsics(problem.cameras[0], lv.scale), problem.cameras[1], problem.cameras[2])
    tgt = downsample_images(problem.targets, lv.scale)
    msk = problem.level_weights(lv.scale)
    params = PoseParameters(start, problem.basis, problem.options.rotation, tgt.device)
    projector = Projector(problem.options.render_mode, plan.step_mm)

    def evaluate() -> tuple[Tensor, Tensor]:
        with warnings.catch_warnings():
            # A trial step (a line search's) may turn the volume out of a view: the loss says so;
            # the final pose's render warns if the result itself misses a view.
            warnings.simplefilter("ignore", RaysMissWarning)
            img = multiview_drr(data, ifw, cameras, params.matrix(), (tgt.shape[-2], tgt.shape[-1]), projector)
        per_view = view_losses(plan.similarity, record_views(img, problem.maps, lv.scale), tgt, msk)
        return per_view.sum(), per_view

    verdict: list[tuple[RegistrationStatus, str]] = []

    def on_eval(value: float, pose: RigidPose) -> None:
        problem.bar.update(1)
        problem.bar.set_postfix(level=li, loss=f"{value:.4f}")
        if not verdict and f.start_value is not None and plan.rule.after_evaluation(value, f.start_value) == "diverged":
            verdict.append(("diverged", f"the loss rose above its starting value {f.start_value:.4f} by more than "
                                        f"{plan.rule.margin / len(problem.rig):g} per view for {plan.rule.patience} "
                                        "evaluations"))
        if problem.callback is not None and problem.callback(_progress(problem, li, f, value, pose)) and not verdict:
            verdict.append(("stopped", f"stopped by the callback at iteration {len(problem.history.rows) - 1}"))

    f = Objective(evaluate, params, problem.history, start, on_eval)
    stepper = OPTIMIZERS[plan.optimizer](params, plan.lr[0], plan.lr[1], plan.rule.patience)
    if curvature is not None:
        stepper.receive(curvature)

    def end(status: RegistrationStatus, message: str = "") -> tuple[RegistrationStatus, str, RigidPose, Tensor | None]:
        handed = stepper.curvature(f) if hand_over and status in ("converged", "max_iterations") else None
        return status, message, f.best_pose, handed

    for k in range(lv.iterations):
        step = stepper.iterate(f)
        if step is None:
            return end("diverged", f"the loss or its gradient became NaN/inf at iteration {k}")
        if verdict:
            return end(*verdict[0])
        if not params.finite():
            return end("diverged", f"the pose became NaN/inf at iteration {k}")
        if not views_seeing(problem.volume, problem.rig, params.pose()):
            return end("diverged", f"the volume left every view at iteration {k}")
        if plan.rule.small(step) and stepper.confirm(f, plan.rule.small):
            return end("converged")
    return end("max_iterations")


def _progress(problem: _Problem, li: int, f: Objective, value: float, pose: RigidPose) -> RegistrationProgress:
    return RegistrationProgress(li, len(problem.levels), problem.levels[li].scale, len(problem.history.rows) - 1, value,
                                f.best_value, pose, time.perf_counter() - problem.history.t_start)


def register(volume: Volume, rig: StereoRig, images: Images, init: RigidPose | None = None,
             options: RegistrationOptions | None = None, callback: ProgressCallback | None = None, *,
             masks: Images | None = None, truth: RigidPose | None = None, **legacy: Any) -> RegistrationResult:
    """Find the rigid pose of ``volume`` that makes its DRRs match ``images`` in every view of ``rig``.

    Minimises ``L(p) = sum_v (1 - S(DRR_v(p), I_v))`` over one pose ``p`` shared by all views
    (module docstring for the parametrisation, pyramid and stopping rules).

    Args:
        volume: attenuation volume (mu, 1/mm), e.g. ``hu_to_mu`` of a CT; any device.
        rig: the calibrated views; ``images`` must be at their detector size.
        images: one ``(H, W)`` line-integral image ``-log(I/I0)`` per view (a dict by view
            name, or a sequence in the rig's view order); :func:`~stereodrr.registration.inputs.to_line_integral`
            converts raw intensities.
        init: starting pose (default: identity, the volume where its geometry puts it).
        options: the knobs (:class:`~stereodrr.registration.options.RegistrationOptions`).
        callback: called after every loss evaluation with a
            :class:`~stereodrr.registration.options.RegistrationProgress`; returning True stops
            the run (:data:`~stereodrr.registration.options.ProgressCallback`).
        masks: optional ``(H, W)`` pixel weights per view (0 = ignore).
        truth: known pose, only to record the errors per iteration (never used by the optimiser).
        legacy: :class:`~stereodrr.registration.options.RegistrationOptions` fields as keywords
            (the former signature), accepted for one release with a ``DeprecationWarning``.

    Returns:
        :class:`~stereodrr.registration.result.RegistrationResult`.

    Raises:
        ValueError: images missing or of another size than the rig's views, NaN or constant
            targets, bad masks, an initial pose that puts the volume outside every view, or a
            bad option. ResourceError: the rig's views need more memory than the budget.

    Warns:
        RegistrationInputWarning: a target whose contrast is inverted with respect to the DRR,
            voxels far thicker than the pixel footprint, or, after the fit, two views' images
            that match the DRRs better exchanged, or three or more that match them better in
            another order (:func:`~stereodrr.registration.checks.check_view_order`).
        RegistrationDivergedWarning: the run diverged (the best pose seen is returned).
    """
    o = legacy_options("register", options, legacy, RegistrationOptions)
    check_registration_memory(rig, "rig", volume.device)
    problem, pose0 = _prepare(volume, rig, images, init, masks, truth, o, callback)
    status, message, best_pose = _run(problem, pose0)
    seconds = time.perf_counter() - problem.history.t_start
    if status == "diverged":
        warnings.warn(f"registration diverged ({message}); returning the best pose seen",
                      RegistrationDivergedWarning, stacklevel=2)
    final_sim = problem.levels[-1].similarity or o.similarity
    with torch.no_grad():
        rendered = record_views(render_views(volume, rig, best_pose, 1, o.render_mode, o.step_mm), problem.maps)
        weights = problem.level_weights(1)
        per_view = view_losses(final_sim, rendered, problem.targets, weights)
        exchanged = check_view_order(final_sim, rendered, problem.targets, weights, rig.names)
    names = rig.names
    return RegistrationResult(
        pose=best_pose, status=status, message=message, history=problem.history.frame(), loss=float(per_view.sum()),
        view_losses={n: float(v) for n, v in zip(names, per_view)},
        rendered={n: rendered[i].cpu().numpy() for i, n in enumerate(names)}, seconds=seconds, similarity=final_sim,
        exchanged_views=exchanged,
    )


def _prepare(volume: Volume, rig: StereoRig, images: Images, init: RigidPose | None, masks: Images | None,
             truth: RigidPose | None, o: RegistrationOptions, callback: ProgressCallback | None
             ) -> tuple[_Problem, RigidPose]:
    """The checked input as the levels share it, and the starting pose about the volume's centre."""
    levels = o.pyramid(len(rig.names))
    device = volume.device
    names = rig.names
    check_attenuation(volume, "volume")
    targets = stack_images(rig, images, "image", device)
    weights = None if masks is None else stack_images(rig, masks, "mask", device)
    check_maps(o.distortion, rig)
    maps = None if not o.distortion else tuple(o.distortion.get(n) for n in names)
    if maps is not None:  # a raw frame holds nothing the model explains outside its map's support
        support = _supports(maps, targets, 1)
        weights = support if weights is None else weights * support
    for i, name in enumerate(names):
        check_target(targets[i], name, None if weights is None else weights[i])
    center = volume.center
    pose0 = RigidPose.identity(center) if init is None else RigidPose.from_matrix(init.matrix, center)
    truth = None if truth is None else RigidPose.from_matrix(truth.matrix, center)
    if not views_seeing(volume, rig, pose0):
        raise ValueError(
            f"init: the initial pose {pose0} puts the volume outside every view {names} (its projected box "
            "misses every detector or lies behind a source); give a pose that shows it in at least one view"
        )
    cams = list(rig.cameras.values())
    H, W = cams[0].height, cams[0].width
    for lv in levels:
        if H // lv.scale < 3 or W // lv.scale < 3:
            raise ValueError(f"levels: scale {lv.scale} leaves fewer than 3x3 pixels of the {H}x{W} detector")
        if lv.volume_factor is not None and any(f > n for f, n in zip(level_factor(lv, False, volume, rig),
                                                                          volume.size)):
            raise ValueError(f"levels: volume factor {'x'.join(map(str, factor_axes(lv.volume_factor)))} is larger "
                             f"than the CT's {'x'.join(map(str, volume.size))} voxels (x, y, z)")
    check_contrast(volume, rig, pose0, targets, weights)
    check_slices(volume, rig)
    cameras = rig.to_torch(device, torch.float64)
    basis = torch.as_tensor(translation_basis(rig), dtype=torch.float64, device=device)
    history = History(rig, truth, volume.corners() if o.landmarks is None else o.landmarks, time.perf_counter())
    return _Problem(volume, rig, cameras, targets, weights, maps, basis, o, levels, history, callback), pose0


def _run(problem: _Problem, pose0: RigidPose) -> tuple[RegistrationStatus, str, RigidPose]:
    """The levels in turn, each from the previous one's best pose; the status of the last one
    run, its message and its best pose."""
    levels, o = problem.levels, problem.options
    problem.bar = tqdm(total=sum(lv.iterations for lv in levels), disable=not o.progress, desc="register",
                       unit="eval", leave=False)
    best_pose = pose0
    status: RegistrationStatus = "max_iterations"
    curvature: Tensor | None = None
    try:
        for li, lv in enumerate(levels):
            last = li == len(levels) - 1
            status, msg, best_pose, curvature = run_level(
                problem, li, best_pose,
                curvature if li > 0 and hands_over(levels[li - 1], lv, o.similarity, o.optimizer) else None,
                hand_over=not last and hands_over(lv, levels[li + 1], o.similarity, o.optimizer))
            if status in ("diverged", "stopped"):
                return status, f"level {li}: {msg}", best_pose
    finally:
        problem.bar.close()
    return status, {"converged": "the step fell below the tolerances at the finest level",
                    "max_iterations": "stopped at the iteration limit of the finest level"}[status], best_pose

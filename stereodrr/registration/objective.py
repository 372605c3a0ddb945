"""The registration loss: DRRs of the moved volume against the targets, summed over the views.

For a pose ``p`` the DRR of every view ``v`` is rendered through the differentiable renderer with
the moved extrinsics ``E_v T(p)`` (:func:`~stereodrr.registration.pose.moved_extrinsics`), and
the loss is ``L(p) = sum_v (1 - S(DRR_v(p), I_v))``. :class:`Objective` is that loss at one
level's current parameters as an optimiser sees it: every evaluation recorded
(:class:`History`), the level's best pose kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ..distortion import DistortionMap
from ..geometry import StereoRig, project_points
from ..render.drr import drr
from ..render.projector import Mode, Projector
from ..volume import Volume
from .binning import scale_intrinsics
from .metrics import registration_errors
from .params import PoseParameters
from .pose import RigidPose, moved_extrinsics
from .similarity import SimilarityName, get_similarity

__all__ = ["Cameras", "multiview_drr", "record_views", "view_losses", "multiview_loss", "render_views", "render_each_view",
           "views_seeing", "History", "Objective"]

Cameras = tuple[Float[Tensor, "V 3 3"], Float[Tensor, "V 3 3"], Float[Tensor, "V 3"]]
"""``(K, R, t)`` of ``V`` views (OpenCV world -> camera), as :meth:`StereoRig.to_torch` gives them."""


def views_seeing(volume: Volume, rig: StereoRig, pose: RigidPose) -> list[str]:
    """Views whose detector overlaps the projected box of the moved volume (box in front of the source)."""
    corners = pose.apply(volume.corners())
    seen = []
    for name, cam in rig.cameras.items():
        uv, depth = project_points(cam.P, corners)
        if np.all(depth > 0) and np.all(np.isfinite(uv)):
            lo, hi = uv.min(0), uv.max(0)
            if hi[0] >= -0.5 and lo[0] <= cam.width - 0.5 and hi[1] >= -0.5 and lo[1] <= cam.height - 0.5:
                seen.append(name)
    return seen


def render_views(volume: Volume, rig: StereoRig, pose: RigidPose, scale: int = 1,
                 mode: Mode = "trilinear", step_mm: float | None = None) -> Float[Tensor, "V h w"]:
    """DRRs ``(V, H/scale, W/scale)`` of the volume moved by ``pose``, one per rig view (no grad).

    Raises:
        ValueError: the views differ in detector size (one batch has one size:
            :func:`render_each_view` renders each view at its own).
    """
    cams = list(rig.cameras.values())
    sizes = {(c.height, c.width) for c in cams}
    if len(sizes) > 1:  # rendered at the first view's size, the others would be cropped or padded
        raise ValueError("rig: render_views needs one detector size for all views, got "
                         + ", ".join(f"{n} {c.width}x{c.height}" for n, c in rig.cameras.items())
                         + "; use render_each_view for views of different sizes")
    dt = volume.data.dtype
    K, R, t = rig.to_torch(volume.device, torch.float64)
    T = torch.as_tensor(pose.matrix, dtype=torch.float64, device=volume.device)
    Rm, tm = moved_extrinsics(R, t, T)
    ifw = volume.index_from_world_tensor()
    h, w = cams[0].height // scale, cams[0].width // scale
    with torch.no_grad():
        return drr(volume.data, ifw, scale_intrinsics(K, scale).to(dt), Rm.to(dt), tm.to(dt), h, w,
                   Projector(mode, step_mm))


def render_each_view(volume: Volume, rig: StereoRig, pose: RigidPose, scale: int = 1,
                     mode: Mode = "trilinear", step_mm: float | None = None) -> dict[str, Float[Tensor, "h w"]]:
    """:func:`render_views` of every view at its own detector size, ``{name: (H_v/scale, W_v/scale)}``
    in the rig's order: a trial's cameras may differ in size (Autoscoper and XMALab allow it).
    Views of one size are rendered in one batch, so a rig of one size renders as
    :func:`render_views` does."""
    groups: dict[tuple[int, int], list[str]] = {}
    for name, cam in rig.cameras.items():
        groups.setdefault((cam.height, cam.width), []).append(name)
    out: dict[str, Tensor] = {}
    for names in groups.values():
        sub = StereoRig({n: rig[n] for n in names}, rig.isocenter)
        out.update(zip(names, render_views(volume, sub, pose, scale, mode, step_mm)))
    return {n: out[n] for n in rig.names}


def multiview_drr(data: Float[Tensor, "Z Y X"], index_from_world: Float[Tensor, "4 4"], cameras: Cameras,
                  T: Float[Tensor, "4 4"], shape: tuple[int, int], projector: Projector | None = None
                  ) -> Float[Tensor, "V H W"]:
    """The DRRs ``(V, H, W)`` of the volume moved by ``T`` in every view, rendered in ``data``'s
    dtype (the extrinsics moved in ``T``'s); differentiable w.r.t. ``T`` and every floating input.

    Args:
        data: mu; index_from_world: the inverse volume affine (``data``'s dtype).
        cameras: ``(K, R, t)`` of the views (:data:`Cameras`).
        T: pose of the volume in the world (:func:`~stereodrr.registration.pose.pose_matrix`).
        shape: ``(H, W)`` of the detectors ``K`` describes.
        projector: the renderer's options (default ``Projector("trilinear")``).
    """
    K, R, t = cameras
    Rm, tm = moved_extrinsics(R.to(T.dtype), t.to(T.dtype), T)
    dt = data.dtype
    return drr(data, index_from_world, K.to(dt), Rm.to(dt), tm.to(dt), shape[0], shape[1],
               Projector("trilinear") if projector is None else projector)


def record_views(images: Float[Tensor, "V h w"], maps: Sequence[DistortionMap | None] | None, scale: int = 1
                 ) -> Float[Tensor, "V h w"]:
    """Each view's ideal image as its intensifier records it
    (:meth:`~stereodrr.distortion.DistortionMap.distort_image`, binned by ``scale``); a view
    without a map (``None``) unchanged. Differentiable in the images."""
    if maps is None or all(m is None for m in maps):
        return images
    return torch.stack([img if m is None else m.distort_image(img, scale) for img, m in zip(images, maps)])


def view_losses(similarity: SimilarityName | str, rendered: Float[Tensor, "V H W"], targets: Float[Tensor, "V H W"],
                mask: Float[Tensor, "V H W"] | None = None) -> Float[Tensor, " V"]:
    """Per-view losses ``1 - S(DRR_v, I_v)``, the DRRs compared in the targets' dtype."""
    return 1.0 - get_similarity(similarity)(rendered.to(targets.dtype), targets, mask)


def multiview_loss(data: Float[Tensor, "Z Y X"], index_from_world: Float[Tensor, "4 4"], cameras: Cameras,
                   T: Float[Tensor, "4 4"], targets: Float[Tensor, "V H W"], similarity: SimilarityName | str = "mncc",
                   mask: Float[Tensor, "V H W"] | None = None, projector: Projector | None = None
                   ) -> tuple[Float[Tensor, ""], Float[Tensor, " V"]]:
    """Registration loss of one volume pose over every view: ``L = sum_v (1 - S(DRR_v(T), I_v))``.

    The DRRs are :func:`multiview_drr`'s, compared with the targets in the targets' dtype (float64
    targets and pose with a float32 volume: a float64 loss from a float32 renderer).

    Args:
        data, index_from_world, cameras, T, projector: as :func:`multiview_drr`.
        targets: images; mask: weights or None.
        similarity: a name of :data:`~stereodrr.registration.similarity.SIMILARITIES`.

    Returns:
        ``L`` (scalar) and the per-view losses ``(V,)``; differentiable w.r.t. ``T`` (and all
        other floating inputs).
    """
    img = multiview_drr(data, index_from_world, cameras, T, (targets.shape[-2], targets.shape[-1]), projector)
    per_view = view_losses(similarity, img, targets, mask)
    return per_view.sum(), per_view


class History:
    """One row per loss evaluation, with the level's context and (given a truth) its errors."""

    def __init__(self, rig: StereoRig, truth: RigidPose | None, landmarks: np.ndarray, t_start: float):
        self.rows: list[dict[str, Any]] = []
        self.names: list[str] = list(rig.names)
        self.rig, self.truth, self.landmarks, self.t_start = rig, truth, landmarks, t_start
        self.context: dict[str, Any] = {}

    def record(self, loss: float, per_view: Tensor, pose: RigidPose, steps: tuple[float, float]) -> None:
        row = {**self.context, "iteration": len(self.rows), "time_s": time.perf_counter() - self.t_start, "loss": loss}
        row.update({f"loss_{n}": float(v) for n, v in zip(self.names, per_view)})
        row.update(dict(zip(("rx_deg", "ry_deg", "rz_deg"), pose.rotvec_deg.tolist())))
        row.update(dict(zip(("tx_mm", "ty_mm", "tz_mm"), pose.translation.tolist())))
        row["lr_rotation_deg"], row["lr_translation_mm"] = steps
        if self.truth is not None:
            row.update(registration_errors(pose, self.truth, self.rig, self.landmarks))
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


class Objective:
    """The loss of one level at the current parameters; records every evaluation and keeps the
    level's best pose and the counters the stopping rule and the optimisers read.

    ``on_eval(loss, pose)`` runs after each evaluation. An optimiser sets :attr:`steps` (its current step sizes, deg and mm, for the history) and calls
    the objective (``f(grad=True)``: the loss, a scalar tensor with a graph back to the
    parameters' ``rot`` and ``trans``)."""

    def __init__(self, evaluate: Callable[[], tuple[Tensor, Tensor]], params: PoseParameters, history: History,
                 start: RigidPose, on_eval: Callable[[float, RigidPose], None]):
        self.evaluate, self.params, self.history, self.on_eval = evaluate, params, history, on_eval
        self.best_value, self.best_pose = math.inf, start
        self.start_value: float | None = None
        self.last_value = math.inf
        self.improved = False
        self.steps = (math.nan, math.nan)

    def __call__(self, grad: bool = True) -> Tensor:
        pose = self.params.pose()
        if grad:
            loss, per_view = self.evaluate()
        else:
            with torch.no_grad():
                loss, per_view = self.evaluate()
        value = float(loss.detach())
        if self.start_value is None:
            self.start_value = value
        self.last_value = value
        self.history.record(value, per_view.detach(), pose, self.steps)
        # A real improvement, for the step-size rule: by more than a relative 1e-4 (on noisy images
        # Adam keeps finding improvements of the order of float rounding while it jitters).
        self.improved = math.isfinite(value) and value < self.best_value - 1e-4 * abs(self.best_value)
        if math.isfinite(value) and value < self.best_value:
            self.best_value, self.best_pose = value, pose
        self.on_eval(value, pose)
        return loss

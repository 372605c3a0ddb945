"""Multi-view intensity-based 2D/3D registration: one rigid pose of the volume, all views at once.

For a pose ``p`` the DRR of every view ``v`` is rendered through the differentiable renderer with
the moved extrinsics ``E_v T(p)`` (:func:`~stereodrr.register.pose.moved_extrinsics`), and the
loss ``L(p) = sum_v (1 - S(DRR_v(p), I_v))`` is minimised by gradient descent on ``p``.

Parametrisation (per pyramid level, relative to the level's starting pose ``(R0, tau0)``)::

    R = exp([dr]_x) R0           (dr: rotation vector about the volume centre, world axes)
    tau = tau0 + B dt            (B = [u, v, n]: two in-plane axes and the mean viewing direction)

Expressing the translation in the rig's frame keeps the poorly constrained depth ``dt_3`` on
its own coordinate, where Adam's per-coordinate step size and L-BFGS's curvature estimate can
treat it separately from the well-seen in-plane motion. (``rotation="quaternion"`` uses a
unit quaternion ``dq`` instead of ``dr``.)

Coarse to fine: each :class:`Level` renders at ``1/scale`` of the detector resolution (targets
average-pooled, intrinsics rescaled so that pixel centres stay at integers,
``u' = (u + 1/2)/s - 1/2``) from a volume averaged over ``volume_factor^3`` blocks (by default
voxels about the size of a pixel's footprint at the isocenter, ``z_iso s / f``).

Stopping: a level ends when its step size (Adam, halved after ``patience`` iterations without
improvement) or its pose change (L-BFGS) falls below the tolerances, or after ``iterations``.
The run stops early as *diverged* when the loss or the pose is not finite, the volume leaves
every view, or the loss stays above the level's starting loss by ``divergence_margin`` per view
for ``patience`` iterations; it then warns and returns the best pose seen, never a NaN.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..geometry import StereoRig, matrix_to_rotvec, project_points, quaternion_to_matrix, rotvec_to_matrix
from ..render.drr import drr
from ..volume import Volume
from .metrics import mean_viewing_direction, registration_errors
from .pose import RigidPose, moved_extrinsics, pose_matrix
from .similarity import check_target, get_similarity

__all__ = ["Level", "DEFAULT_LEVELS", "RegistrationResult", "RegistrationDivergedWarning", "register",
           "render_views", "views_seeing", "multiview_loss", "auto_volume_factor", "scale_intrinsics", "downsample_images", "translation_basis"]


class RegistrationDivergedWarning(UserWarning):
    """The optimiser diverged; the best pose seen is returned."""


@dataclass(frozen=True)
class Level:
    """One pyramid level.

    Attributes:
        scale: detector downsampling factor (1 = full resolution).
        iterations: most optimiser steps at this level.
        volume_factor: volume downsampling factor (:meth:`Volume.downsample`); ``None`` picks the
            largest whose voxels stay no larger than the level's pixel footprint at the
            isocenter (finer voxels than pixels add cost, not information).
        similarity: the measure at this level (default: :func:`register`'s ``similarity``).
    """

    scale: int = 1
    iterations: int = 100
    volume_factor: int | None = None
    similarity: str | None = None

    def __post_init__(self) -> None:
        for name in ("scale", "iterations", "volume_factor"):
            v = getattr(self, name)
            if v is None and name == "volume_factor":
                continue
            if int(v) != v or v < 1:
                raise ValueError(f"level {name}: expected a positive integer, got {v}")
        if self.similarity is not None:
            get_similarity(self.similarity)


# The full-resolution level matches gradients (gncc): a CT's DRR is blurrier than an X-ray of the
# patient (voxel averaging, trilinear sampling), and on the low frequencies that mismatch pulls
# an intensity NCC's optimum off the truth (torso study, one noise draw: mTRE 0.43 -> 0.19 mm for
# one view, 0.28 -> 0.14 mm for the 5 deg pair). The coarse levels keep the wider basin of mncc.
DEFAULT_LEVELS = (Level(4, 150), Level(2, 100), Level(1, 100, similarity="gncc"))


@dataclass
class RegistrationResult:
    """What :func:`register` found.

    Attributes:
        pose: best pose (lowest loss at the finest level reached).
        status: ``"converged"``, ``"max_iterations"`` or ``"diverged"``.
        message: one line for a person.
        history: one row per loss evaluation: ``level, scale, iteration, time_s, loss,
            loss_<view>..., rx_deg, ry_deg, rz_deg, tx_mm, ty_mm, tz_mm`` (the pose evaluated,
            rotation vector in degrees) and, when a truth was given, its errors.
        loss: loss of ``pose`` at full resolution; view_losses: per view.
        rendered: full-resolution DRR ``(H, W)`` of each view at ``pose``.
        seconds: wall time of the optimisation.
    """

    pose: RigidPose
    status: str
    message: str
    history: pd.DataFrame
    loss: float
    view_losses: dict[str, float]
    rendered: dict[str, np.ndarray] = field(repr=False)
    seconds: float


# --------------------------------------------------------------------------- functional pieces
def scale_intrinsics(K: Tensor, scale: int) -> Tensor:
    """Intrinsics of a detector binned by ``scale``: ``K' = A K`` with ``u' = (u + 1/2)/s - 1/2``.

    ``A = [[1/s, 0, (1/s - 1)/2], [0, 1/s, (1/s - 1)/2], [0, 0, 1]]`` maps full-resolution pixel
    coordinates (centres at integers) to those of the binned image (centres at integers).

    Args:
        K: ``(..., 3, 3)``.

    Returns:
        ``(..., 3, 3)``.
    """
    s = float(scale)
    A = torch.tensor([[1 / s, 0.0, (1 / s - 1) / 2], [0.0, 1 / s, (1 / s - 1) / 2], [0.0, 0.0, 1.0]],
                     dtype=K.dtype, device=K.device)
    return A @ K


def auto_volume_factor(volume: Volume, rig: StereoRig, scale: int) -> int:
    """Largest ``k >= 1`` with ``k * min(spacing) <= min_v z_v s / f_v``: voxels no larger than
    the footprint of a binned pixel at the isocenter (``z_v`` its depth in view ``v``, ``f_v``
    the mean focal length in pixels)."""
    footprint = min(
        float(cam.project(rig.isocenter[None])[1][0]) * scale / (0.5 * (cam.K[0, 0] + cam.K[1, 1]))
        for cam in rig.cameras.values()
    )
    return max(1, int(math.floor(footprint / float(volume.spacing.min()) + 1e-9)))


def downsample_images(images: Tensor, scale: int) -> Tensor:
    """Average ``scale x scale`` pixel blocks of ``(B, H, W)`` images (a partial edge block is dropped)."""
    return images if scale == 1 else F.avg_pool2d(images[:, None], scale)[:, 0]


def translation_basis(rig: StereoRig) -> np.ndarray:
    """``(3, 3)`` orthonormal columns ``[u, v, n]``: ``n`` the mean viewing direction, ``u`` the
    first view's image x-axis made orthogonal to ``n``, ``v = n x u``."""
    n = mean_viewing_direction(rig)
    first = next(iter(rig.cameras.values()))
    u = first.R[0] - (first.R[0] @ n) * n
    if np.linalg.norm(u) < 1e-6:
        u = first.R[1] - (first.R[1] @ n) * n
    u = u / np.linalg.norm(u)
    return np.stack([u, np.cross(n, u), n], axis=1)


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
                 mode: str = "trilinear", step_mm: float | None = None) -> Tensor:
    """DRRs ``(V, H/scale, W/scale)`` of the volume moved by ``pose``, one per rig view (no grad)."""
    cams = list(rig.cameras.values())
    dt = volume.data.dtype
    K, R, t = (torch.stack(m) for m in zip(*(c.to_torch(volume.device, torch.float64) for c in cams)))
    T = torch.as_tensor(pose.matrix, dtype=torch.float64, device=volume.device)
    Rm, tm = moved_extrinsics(R, t, T)
    ifw = torch.as_tensor(np.linalg.inv(volume.affine), dtype=dt, device=volume.device)
    h, w = cams[0].height // scale, cams[0].width // scale
    with torch.no_grad():
        return drr(volume.data, ifw, scale_intrinsics(K, scale).to(dt), Rm.to(dt), tm.to(dt), h, w,
                   mode=mode, step_mm=step_mm)


def multiview_loss(data: Tensor, index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, T: Tensor,
                   targets: Tensor, similarity: str = "mncc", mask: Tensor | None = None, *,
                   mode: str = "trilinear", step_mm: float | None = None) -> tuple[Tensor, Tensor]:
    """Registration loss of one volume pose over every view: ``L = sum_v (1 - S(DRR_v(T), I_v))``.

    Args:
        data: ``(Z, Y, X)`` mu; index_from_world: ``(4, 4)`` inverse volume affine.
        K, R, t: ``(V, 3, 3)``, ``(V, 3, 3)``, ``(V, 3)`` the views (OpenCV world -> camera).
        T: ``(4, 4)`` pose of the volume in the world (:func:`pose_matrix`).
        targets: ``(V, H, W)`` images; mask: ``(V, H, W)`` weights or None.
        similarity: a name of :data:`~stereodrr.register.similarity.SIMILARITIES`.
        mode, step_mm: renderer options.

    Returns:
        ``L`` (scalar) and the per-view losses ``(V,)``; differentiable w.r.t. ``T`` (and all
        other floating inputs).
    """
    Rm, tm = moved_extrinsics(R, t, T)
    img = drr(data, index_from_world, K, Rm, tm, targets.shape[-2], targets.shape[-1], mode=mode, step_mm=step_mm)
    per_view = 1.0 - get_similarity(similarity)(img, targets, mask)
    return per_view.sum(), per_view


# --------------------------------------------------------------------------- input checks
def _stack_images(rig: StereoRig, images: Mapping[str, np.ndarray | Tensor] | Sequence[np.ndarray | Tensor],
                  what: str, device: torch.device) -> Tensor:
    names = rig.names
    if isinstance(images, Mapping):
        missing = [n for n in names if n not in images]
        extra = [n for n in images if n not in names]
        if missing or extra:
            raise ValueError(f"{what}: expected one per rig view {names}; missing {missing}, unknown {extra}")
        seq = [images[n] for n in names]
    else:
        seq = list(images)
        if len(seq) != len(names):
            raise ValueError(f"{what}: expected {len(names)} (one per rig view {names}), got {len(seq)}")
    out = []
    for name, img in zip(names, seq):
        a = torch.as_tensor(np.asarray(img.detach().cpu() if isinstance(img, Tensor) else img, dtype=np.float32))
        cam = rig[name]
        if a.ndim != 2:
            raise ValueError(f"{what} {name!r}: expected a 2D (H, W) image, got shape {tuple(a.shape)}")
        if tuple(a.shape) != (cam.height, cam.width):
            raise ValueError(
                f"{what} {name!r}: size {a.shape[0]}x{a.shape[1]} (H x W) differs from the rig's view "
                f"{name!r}, {cam.height}x{cam.width}; give images at the detector resolution of the rig file"
            )
        out.append(a)
    sizes = {tuple(a.shape) for a in out}
    if len(sizes) > 1:
        raise ValueError(f"{what}: the views must share one detector size to be rendered together, got {sorted(sizes)}")
    return torch.stack(out).to(device)


# --------------------------------------------------------------------------- the optimiser
class _Params:
    """Pose increments of one level (see the module docstring)."""

    def __init__(self, start: RigidPose, basis: Tensor, rotation: str, dtype: torch.dtype, device: torch.device):
        self.R0 = torch.tensor(start.rotation, dtype=dtype, device=device)
        self.tau0 = torch.tensor(start.translation, dtype=dtype, device=device)
        self.center = torch.tensor(start.center, dtype=dtype, device=device)
        self.basis = basis
        self.rotation = rotation
        if rotation == "rotvec":
            self.rot = torch.zeros(3, dtype=dtype, device=device, requires_grad=True)
        else:
            self.rot = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=device, requires_grad=True)
        self.trans = torch.zeros(3, dtype=dtype, device=device, requires_grad=True)

    def matrices(self) -> tuple[Tensor, Tensor]:
        dR = rotvec_to_matrix(self.rot) if self.rotation == "rotvec" else quaternion_to_matrix(self.rot)
        return dR @ self.R0, self.tau0 + self.basis @ self.trans

    def pose(self) -> RigidPose:
        with torch.no_grad():
            R, tau = self.matrices()
        R = R.cpu().numpy()
        return RigidPose(matrix_to_rotvec(R), tau.cpu().numpy(), self.center.cpu().numpy())

    def finite(self) -> bool:
        return bool(torch.isfinite(self.rot).all() and torch.isfinite(self.trans).all())


def register(
    volume: Volume,
    rig: StereoRig,
    images: Mapping[str, np.ndarray | Tensor] | Sequence[np.ndarray | Tensor],
    init: RigidPose | None = None,
    *,
    masks: Mapping[str, np.ndarray | Tensor] | Sequence[np.ndarray | Tensor] | None = None,
    similarity: str = "mncc",
    optimizer: str = "adam",
    levels: Sequence[Level] = DEFAULT_LEVELS,
    lr_rotation_deg: float = 0.5,
    lr_translation_mm: float = 2.0,
    rotation: str = "rotvec",
    rotation_tol_deg: float = 0.01,
    translation_tol_mm: float = 0.05,
    patience: int = 8,
    divergence_margin: float = 0.25,
    render_mode: str = "trilinear",
    step_mm: float | None = None,
    truth: RigidPose | None = None,
    landmarks: np.ndarray | None = None,
    progress: bool = True,
) -> RegistrationResult:
    """Find the rigid pose of ``volume`` that makes its DRRs match ``images`` in every view of ``rig``.

    Minimises ``L(p) = sum_v (1 - S(DRR_v(p), I_v))`` over one pose ``p`` shared by all views
    (module docstring for the parametrisation, pyramid and stopping rules).

    Args:
        volume: attenuation volume (mu, 1/mm), e.g. ``hu_to_mu`` of a CT; any device.
        rig: the calibrated views; ``images`` must be at their detector size.
        images: one ``(H, W)`` line-integral image per view (a dict by view name, or a sequence
            in the rig's view order).
        init: starting pose (default: identity, the volume where its geometry puts it).
        masks: optional ``(H, W)`` pixel weights per view (0 = ignore).
        similarity: ``"mncc"`` (global + patch NCC), ``"ncc"`` or ``"gncc"`` (gradient NCC), at
            every level that does not name its own (the default pyramid's last level uses gncc).
        optimizer: ``"adam"`` (separate rotation / translation learning rates, halved on a
            plateau) or ``"lbfgs"`` (strong-Wolfe line search on the scaled parameters; pair
            it with ``"gncc"``: on the flatter NCC/mNCC optimum of out-of-plane rotations its
            line search stalls).
        levels: the pyramid, coarse to fine.
        lr_rotation_deg, lr_translation_mm: Adam's initial steps; for L-BFGS the parameter scales.
        rotation: ``"rotvec"`` or ``"quaternion"`` increments.
        rotation_tol_deg, translation_tol_mm: convergence tolerances on the step.
        patience: iterations without improvement before halving the step (Adam) or declaring
            divergence.
        divergence_margin: loss rise per view above the level's start that counts as diverging.
        render_mode, step_mm: passed to the renderer.
        truth: known pose, only to record the errors per iteration (never used by the optimiser).
        landmarks: ``(N, 3)`` points for the mTRE column (default the volume's 8 box corners).
        progress: show a tqdm bar.

    Returns:
        :class:`RegistrationResult`.

    Raises:
        ValueError: images missing or of another size than the rig's views, NaN or constant
            targets, bad masks, an initial pose that puts the volume outside every view, or a
            bad option.
    """
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer: expected 'adam' or 'lbfgs', got {optimizer!r}")
    if rotation not in ("rotvec", "quaternion"):
        raise ValueError(f"rotation: expected 'rotvec' or 'quaternion', got {rotation!r}")
    if not levels:
        raise ValueError("levels: expected at least one pyramid level")
    for name, v in (("lr_rotation_deg", lr_rotation_deg), ("lr_translation_mm", lr_translation_mm),
                    ("rotation_tol_deg", rotation_tol_deg), ("translation_tol_mm", translation_tol_mm)):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name}: expected a positive number, got {v}")
    sim = get_similarity(similarity)
    device = volume.device
    dtype = volume.data.dtype
    names = rig.names
    targets = _stack_images(rig, images, "image", device)
    weights = None if masks is None else _stack_images(rig, masks, "mask", device)
    for i, name in enumerate(names):
        check_target(targets[i], name, None if weights is None else weights[i])
    center = volume.center
    if init is None:
        pose0 = RigidPose.identity(center)
    else:
        pose0 = RigidPose.from_matrix(init.matrix, center)  # re-express about this volume's centre
    if not views_seeing(volume, rig, pose0):
        raise ValueError(
            f"init: the initial pose {pose0} puts the volume outside every view {names} (its projected box "
            "misses every detector or lies behind a source); give a pose that shows it in at least one view"
        )
    if landmarks is None:
        landmarks = volume.corners()

    cams = list(rig.cameras.values())
    K, Rc, tc = (torch.stack(m) for m in zip(*(c.to_torch(device, dtype) for c in cams)))
    basis = torch.as_tensor(translation_basis(rig), dtype=dtype, device=device)
    H, W = cams[0].height, cams[0].width
    for lv in levels:
        if H // lv.scale < 3 or W // lv.scale < 3:
            raise ValueError(f"levels: scale {lv.scale} leaves fewer than 3x3 pixels of the {H}x{W} detector")

    rows: list[dict] = []
    best_pose = pose0
    status, message = "max_iterations", ""
    t_start = time.perf_counter()
    bar = tqdm(total=sum(lv.iterations for lv in levels), disable=not progress, desc="register", unit="it", leave=False)
    it_global = 0
    volumes: dict[int, tuple[Tensor, Tensor]] = {}
    try:
        for li, lv in enumerate(levels):
            factor = lv.volume_factor or auto_volume_factor(volume, rig, lv.scale)
            if factor not in volumes:
                vol = volume.downsample(factor)
                ifw = torch.as_tensor(np.linalg.inv(vol.affine), dtype=dtype, device=device)
                volumes[factor] = (vol.data, ifw)
            data, ifw = volumes[factor]
            K_l = scale_intrinsics(K, lv.scale)
            tgt = downsample_images(targets, lv.scale)
            msk = None if weights is None else downsample_images(weights, lv.scale)
            params = _Params(best_pose, basis, rotation, dtype, device)
            sim_l = similarity if lv.similarity is None else lv.similarity

            def evaluate() -> tuple[Tensor, Tensor]:
                R, tau = params.matrices()
                return multiview_loss(data, ifw, K_l, Rc, tc, pose_matrix(R, tau, params.center), tgt, sim_l, msk,
                                      mode=render_mode, step_mm=step_mm)

            def record(loss: Tensor, per_view: Tensor, pose: RigidPose, lr: tuple[float, float]) -> None:
                row = {"level": li, "scale": lv.scale, "volume_factor": factor, "iteration": it_global, "time_s": time.perf_counter() - t_start,
                       "loss": float(loss)}
                row.update({f"loss_{n}": float(v) for n, v in zip(names, per_view)})
                row.update(dict(zip(("rx_deg", "ry_deg", "rz_deg"), pose.rotvec_deg.tolist())))
                row.update(dict(zip(("tx_mm", "ty_mm", "tz_mm"), pose.translation.tolist())))
                row["lr_rotation_deg"], row["lr_translation_mm"] = lr
                if truth is not None:
                    row.update(registration_errors(pose, truth, rig, landmarks))
                rows.append(row)

            level_best = (math.inf, best_pose)
            start_loss = None
            stalled = 0
            diverging = 0
            small_steps = 0
            # Steps shrink with the pixel size: a finer level starts from a closer pose.
            shrink = lv.scale / levels[0].scale
            lr_r, lr_t = math.radians(lr_rotation_deg) * shrink, lr_translation_mm * shrink
            if optimizer == "adam":
                # A quaternion increment dq turns by ~2|dq_xyz| rad, hence half the step.
                opt = torch.optim.Adam([{"params": [params.rot], "lr": lr_r / (2 if rotation == "quaternion" else 1)},
                                        {"params": [params.trans], "lr": lr_t}])
            else:
                # Scaled coordinates: one unit = lr_rotation_deg / lr_translation_mm.
                scale_r, scale_t = lr_r, lr_t
                xr = torch.zeros_like(params.rot).requires_grad_(True)
                xt = torch.zeros(3, dtype=dtype, device=device, requires_grad=True)
                rot0 = params.rot.detach().clone()
                opt = torch.optim.LBFGS([xr, xt], lr=1.0, max_iter=1, history_size=10, line_search_fn="strong_wolfe")

                def sync() -> None:
                    params.rot = rot0 + xr * scale_r
                    params.trans = xt * scale_t

            level_status = "max_iterations"
            for k in range(lv.iterations):
                pose_k = params.pose()
                if optimizer == "adam":
                    opt.zero_grad()
                    loss, per_view = evaluate()
                    if torch.isfinite(loss):
                        loss.backward()
                    last = (params.rot.detach().clone(), params.trans.detach().clone())
                else:
                    sync()
                    with torch.no_grad():
                        loss, per_view = evaluate()
                    last = (xr.detach().clone(), xt.detach().clone())
                value = float(loss.detach())
                if start_loss is None:
                    start_loss = value
                lr_now = (math.degrees(opt.param_groups[0]["lr"] * (2 if rotation == "quaternion" else 1)),
                          opt.param_groups[1]["lr"]) if optimizer == "adam" else (math.degrees(lr_r), lr_t)
                record(loss.detach(), per_view.detach(), pose_k, lr_now)
                it_global += 1
                bar.update(1)
                bar.set_postfix(level=li, loss=f"{value:.4f}")

                grads_ok = optimizer == "lbfgs" or all(
                    p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in (params.rot, params.trans))
                if not (torch.isfinite(loss) and grads_ok):
                    level_status, message = "diverged", f"level {li}: the loss or its gradient became NaN/inf at iteration {k}"
                    break
                if value < level_best[0] - 1e-9 * abs(start_loss):
                    level_best = (value, pose_k)
                    stalled = 0
                else:
                    stalled += 1
                diverging = diverging + 1 if value > start_loss + divergence_margin * len(names) else 0
                if diverging >= patience:
                    level_status, message = "diverged", (
                        f"level {li}: the loss rose above its starting value {start_loss:.4f} by more than "
                        f"{divergence_margin:g} per view for {patience} iterations")
                    break

                if optimizer == "adam":
                    if stalled >= patience:
                        for g in opt.param_groups:
                            g["lr"] *= 0.5
                        stalled = 0
                    r_deg = math.degrees(opt.param_groups[0]["lr"])
                    if r_deg < rotation_tol_deg and opt.param_groups[1]["lr"] < translation_tol_mm:
                        level_status = "converged"
                        break
                    opt.step()
                    moved = (params.rot.detach() - last[0], params.trans.detach() - last[1])
                else:
                    def closure() -> Tensor:
                        opt.zero_grad()
                        sync()
                        value, _ = evaluate()
                        if torch.isfinite(value):
                            value.backward()
                        return value
                    opt.step(closure)
                    moved = ((xr.detach() - last[0]) * scale_r, (xt.detach() - last[1]) * scale_t)
                    sync()
                    tiny = (math.degrees(float(moved[0].abs().max())) < rotation_tol_deg
                            and float(moved[1].abs().max()) < translation_tol_mm)
                    small_steps = small_steps + 1 if tiny else 0
                    # Three tiny steps in a row: one may be a line search that merely failed.
                    if small_steps >= 3:
                        level_status = "converged"
                        # The step was accepted by the line search: evaluate it as the last pose.
                        with torch.no_grad():
                            loss, per_view = evaluate()
                        pose_end = params.pose()
                        record(loss, per_view, pose_end, lr_now)
                        it_global += 1
                        if float(loss) < level_best[0]:
                            level_best = (float(loss), pose_end)
                        break
                if not params.finite():
                    level_status, message = "diverged", f"level {li}: the pose became NaN/inf at iteration {k}"
                    break
                if not views_seeing(volume, rig, params.pose()):
                    level_status, message = "diverged", f"level {li}: the volume left every view at iteration {k}"
                    break
            best_pose = level_best[1]
            bar.update(lv.iterations - (k + 1))
            if level_status == "diverged":
                status = "diverged"
                warnings.warn(f"registration diverged ({message}); returning the best pose seen", RegistrationDivergedWarning,
                              stacklevel=2)
                break
            status = level_status
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    if status != "diverged":
        message = {"converged": "converged: the step fell below the tolerances at the finest level",
                   "max_iterations": "stopped at the iteration limit of the finest level"}[status]
    rendered = render_views(volume, rig, best_pose, 1, render_mode, step_mm)
    with torch.no_grad():
        per_view = 1.0 - sim(rendered, targets, weights)
    return RegistrationResult(
        pose=best_pose, status=status, message=message, history=pd.DataFrame(rows), loss=float(per_view.sum()),
        view_losses={n: float(v) for n, v in zip(names, per_view)},
        rendered={n: rendered[i].cpu().numpy() for i, n in enumerate(names)}, seconds=seconds,
    )

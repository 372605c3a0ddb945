"""What a registration is asked to do (:class:`RegistrationOptions`) and what it tells its caller
while it runs (:class:`RegistrationProgress`, given to a :data:`ProgressCallback`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..distortion import DistortionMap
from ..render.projector import Mode
from .optimizers import OPTIMIZERS, OptimizerName
from .params import Rotation
from .pose import RigidPose
from .pyramid import Level, default_levels
from .similarity import SimilarityName, get_similarity

__all__ = ["RegistrationOptions", "RegistrationProgress", "ProgressCallback"]


@dataclass(frozen=True)
class RegistrationOptions:
    """The knobs of :func:`~stereodrr.registration.run.register`.

    Attributes:
        levels: the pyramid, coarse to fine (default :func:`~stereodrr.registration.pyramid.default_levels`
            of the rig's views).
        similarity: a name of :data:`~stereodrr.registration.similarity.SIMILARITIES` at every
            level that does not name its own.
        optimizer: a name of :data:`~stereodrr.registration.optimizers.OPTIMIZERS` (``"adam"``,
            ``"lbfgs"``) at every level that does not name its own (the default pyramid's last
            levels use L-BFGS).
        lr_rotation_deg, lr_translation_mm: Adam's initial steps at the first level (smaller in
            proportion to the scale at finer levels); for L-BFGS the parameter scales.
        rotation: ``"rotvec"`` or ``"quaternion"`` increments (:mod:`~stereodrr.registration.params`).
        rotation_tol_deg, translation_tol_mm: convergence tolerances on the step at full
            resolution (times ``scale^2`` at coarser levels, which only hand over to the next).
        patience: evaluations without improvement before halving the step (Adam) or declaring
            divergence.
        divergence_margin: loss rise per view above the level's start that counts as diverging.
        render_mode, step_mm: the renderer's mode and ray step (default: half the smallest voxel
            spacing; a level's ``step_voxels`` overrides it).
        landmarks: ``(N, 3)`` points for the mTRE column when a truth is given (default the
            volume's 8 box corners).
        distortion: per view (by name), the image intensifier's measured map
            (:func:`stereodrr.distortion.fit_distortion`): that view's image is the raw recorded
            frame, and its DRR is recorded through the map
            (:meth:`~stereodrr.distortion.DistortionMap.distort_image`) before it is compared,
            weighted by the pixels the map models
            (:meth:`~stereodrr.distortion.DistortionMap.recorded_support`). ``None`` or a view
            left out: its image is taken as undistorted (or already corrected).
        progress: show a tqdm bar.
    """

    levels: Sequence[Level] | None = None
    similarity: SimilarityName | str = "mncc"
    optimizer: OptimizerName | str = "adam"
    lr_rotation_deg: float = 0.5
    lr_translation_mm: float = 2.0
    rotation: Rotation = "rotvec"
    rotation_tol_deg: float = 0.002
    translation_tol_mm: float = 0.01
    patience: int = 8
    divergence_margin: float = 0.25
    render_mode: Mode = "trilinear"
    step_mm: float | None = None
    landmarks: np.ndarray | None = field(default=None, compare=False)
    distortion: Mapping[str, DistortionMap] | None = field(default=None, compare=False)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.rotation not in ("rotvec", "quaternion"):
            raise ValueError(f"rotation: expected 'rotvec' or 'quaternion', got {self.rotation!r}")
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(self.levels))  # hashable, whatever sequence was given
            if not self.levels:
                raise ValueError("levels: expected at least one pyramid level")
        for name in ("lr_rotation_deg", "lr_translation_mm", "rotation_tol_deg", "translation_tol_mm"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name}: expected a positive number, got {v}")
        get_similarity(self.similarity)

    def pyramid(self, n_views: int) -> tuple[Level, ...]:
        """The levels to run for a rig of ``n_views`` views."""
        return default_levels(n_views) if self.levels is None else tuple(self.levels)


@dataclass(frozen=True)
class RegistrationProgress:
    """One loss evaluation of a running registration, as a :data:`ProgressCallback` sees it.

    Attributes:
        level: the pyramid level's index (0: the coarsest); levels: how many there are.
        scale: the level's detector binning.
        iteration: the evaluation's index in the run (the row of ``RegistrationResult.history``).
        loss: the loss at ``pose``; best_loss: the lowest loss of this level so far.
        pose: the pose evaluated.
        seconds: wall time since the registration started.
    """

    level: int
    levels: int
    scale: int
    iteration: int
    loss: float
    best_loss: float
    pose: RigidPose
    seconds: float


ProgressCallback = Callable[[RegistrationProgress], "bool | None"]
"""``callback(progress)`` after every loss evaluation (e.g. to draw the pose in a GUI or a
notebook). Returning True stops the registration after the current iteration: it returns the
best pose of the current level with status ``"stopped"``. An exception raised in the callback
(a GUI's cancel) propagates out of :func:`~stereodrr.registration.run.register`, which then
returns nothing."""

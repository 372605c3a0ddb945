"""What a registration found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from .pose import RigidPose

__all__ = ["RegistrationResult", "RegistrationStatus", "RegistrationDivergedWarning"]

RegistrationStatus = Literal["converged", "max_iterations", "diverged", "stopped"]
"""How a registration (or one of its levels) ended."""


class RegistrationDivergedWarning(UserWarning):
    """The optimiser diverged; the best pose seen is returned."""


@dataclass
class RegistrationResult:
    """What :func:`~stereodrr.registration.run.register` found.

    Attributes:
        pose: best pose (lowest loss at the finest level reached).
        status: ``"converged"``, ``"max_iterations"``, ``"diverged"`` or ``"stopped"`` (by the
            progress callback).
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
        exchanged_views: pairs of views whose images match the DRRs at ``pose`` better exchanged,
            or, three or more views in a rotated order, pairs ``(a, b)`` whose DRR of ``a`` matches
            the image given for ``b`` (:func:`~stereodrr.registration.checks.check_view_order`):
            images given out of the rig's view order, and a pose that fits neither order; empty
            when none.
    """

    pose: RigidPose
    status: RegistrationStatus
    message: str
    history: pd.DataFrame
    loss: float
    view_losses: dict[str, float]
    rendered: dict[str, np.ndarray] = field(repr=False)
    seconds: float
    similarity: str = "mncc"
    exchanged_views: list[tuple[str, str]] = field(default_factory=list)

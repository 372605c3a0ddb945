"""When a pyramid level ends: converged, or diverged.

A level's tolerances are the options' times ``scale^2`` (a coarse level only has to hand over to
the next one); it stops after its ``iterations`` otherwise. The run stops early as *diverged*
when the loss or the pose is not finite, the volume leaves every view, or the loss stays above
the level's starting loss by ``divergence_margin`` per view for ``patience`` evaluations; it then
warns and returns the best pose seen, never a NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StoppingRule"]


@dataclass
class StoppingRule:
    """When a level ends.

    ``converged`` once the step (Adam: its step sizes; BFGS: the larger of the step taken and the
    next one its model predicts) is below both tolerances and the optimiser confirms it (BFGS: the
    Newton step with a measured Hessian, :meth:`~stereodrr.registration.optimizers.QuasiNewton.confirm`);
    ``diverged`` when the loss stayed more than ``margin`` above the level's starting loss for
    ``patience`` evaluations.
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

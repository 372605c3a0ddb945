"""Registration optimisers, by name in :data:`OPTIMIZERS`: ``adam`` and ``lbfgs`` (BFGS in float64).

An optimiser moves one level's :class:`~stereodrr.registration.params.PoseParameters` to lower
its :class:`~stereodrr.registration.objective.Objective`; the level's runner
(:func:`~stereodrr.registration.run.run_level`) only talks to it through :class:`Optimizer`.
Adding one is one entry in :data:`OPTIMIZERS` (``docs/extending.md``).

Stopping: a level converges when its step (Adam: the step size, halved after ``patience``
evaluations without improvement; BFGS: the larger of the pose change and the next step its
model predicts, confirmed once per level by a Newton step with a measured Hessian, see
:class:`QuasiNewton`) falls below the level's tolerances
(:class:`~stereodrr.registration.stopping.StoppingRule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from .objective import Objective
from .params import PoseParameters

__all__ = ["Optimizer", "OptimizerFactory", "OptimizerName", "OPTIMIZERS", "Adam", "QuasiNewton",
           "forward_difference_hessian", "positive_definite_inverse"]

OptimizerName = Literal["adam", "lbfgs"]
"""The built-in optimisers; an optimiser added to :data:`OPTIMIZERS` is chosen by its name all the same."""

Step = tuple[float, float]
"""A step or step size: its largest rotation (deg) and translation (mm) component."""


@runtime_checkable
class Optimizer(Protocol):
    """What a level's runner asks of an optimiser (one instance per level).

    ``iterate`` takes one iteration, calling the objective ``f`` as often as it needs (set
    ``f.steps`` first: the step sizes the history records), and returns the step it took
    (deg, mm), or None when the loss or its gradient is not finite (the level then diverged).
    When that step is below the tolerances, ``confirm`` decides whether the level has converged
    (``small(step)`` tells whether a step is below them; an optimiser without a second opinion
    returns True). ``curvature`` returns what a following level of the same optimiser, scale and
    similarity starts from (None: nothing), and ``receive`` takes it at the start of that level.
    """

    def iterate(self, f: Objective) -> Step | None: ...

    def confirm(self, f: Objective, small: Callable[[Step], bool]) -> bool: ...

    def curvature(self, f: Objective) -> Tensor | None: ...

    def receive(self, curvature: Tensor) -> None: ...


@runtime_checkable
class OptimizerFactory(Protocol):
    """An optimiser's constructor: the level's parameters, its initial rotation step (radians)
    and translation step (mm), and the evaluations without improvement it may wait."""

    def __call__(self, params: PoseParameters, lr_rad: float, lr_mm: float, patience: int) -> Optimizer: ...


class Adam:
    """Adam with separate rotation / translation step sizes, halved after ``patience``
    evaluations that did not improve the level's best loss by a relative 1e-4; one evaluation per
    iteration."""

    def __init__(self, params: PoseParameters, lr_rad: float, lr_mm: float, patience: int):
        self.params, self.patience, self.stalled = params, patience, 0
        self.opt = torch.optim.Adam([{"params": [params.rot], "lr": lr_rad / params.rotation_gain},
                                     {"params": [params.trans], "lr": lr_mm}])

    def steps(self) -> tuple[float, float]:
        """The current step sizes (deg, mm)."""
        return (math.degrees(self.opt.param_groups[0]["lr"] * self.params.rotation_gain), self.opt.param_groups[1]["lr"])

    def iterate(self, f: Objective) -> tuple[float, float] | None:
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

    def confirm(self, f: Objective, small: Callable[[tuple[float, float]], bool]) -> bool:
        """Adam's step sizes below the tolerances are its convergence."""
        return True

    def curvature(self, f: Objective) -> None:
        """Adam keeps no curvature estimate."""
        return None

    def receive(self, curvature: Tensor) -> None:
        """Adam starts from no curvature estimate."""


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


class QuasiNewton:
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

    def __init__(self, params: PoseParameters, lr_rad: float, lr_mm: float, patience: int):
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

    def _evaluate(self, f: Objective, x: Tensor) -> tuple[float, Tensor | None]:
        """Loss and gradient (in scaled units) at ``x``; None for a non-finite gradient."""
        self._set(x)
        loss = f(grad=True)
        if not torch.isfinite(loss):
            return math.inf, None
        gr, gt = torch.autograd.grad(loss, [self.params.rot, self.params.trans], allow_unused=True)
        # A parameter the loss does not reach has a zero gradient, on the parameters' device.
        gr = torch.zeros_like(self.params.rot) if gr is None else gr
        gt = torch.zeros_like(self.params.trans) if gt is None else gt
        g = torch.cat([gr[-3:], gt]) * self.scale  # chain rule through the scaling
        return float(loss.detach()), (g if bool(torch.isfinite(g).all()) else None)

    def _measure(self, f: Objective) -> Tensor | None:
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

    def confirm(self, f: Objective, small: Callable[[tuple[float, float]], bool]) -> bool:
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

    def curvature(self, f: Objective) -> Tensor | None:
        """The inverse-Hessian estimate to hand to the next level, measured here unless it was already
        (and measured again when a line search that found no decrease has dropped the estimate since)."""
        if (not self.measured or self.H is None) and self.g is not None:
            Hinv = self._measure(f)
            self.H = self.H if Hinv is None else Hinv
        return self.H

    def receive(self, curvature: Tensor) -> None:
        """Start from a previous level's (measured) inverse-Hessian estimate."""
        self.H, self.measured = curvature.clone(), True

    def iterate(self, f: Objective) -> tuple[float, float] | None:
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


OPTIMIZERS: dict[str, OptimizerFactory] = {"adam": Adam, "lbfgs": QuasiNewton}
"""Registration optimisers by name (``RegistrationOptions.optimizer``, ``Level.optimizer``,
``--optimizer``): ``adam`` and ``lbfgs`` (BFGS in float64)."""

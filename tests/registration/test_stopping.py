"""The BFGS stopping rule against a quadratic with a flat rotation-translation valley whose optimum is known."""

import math

import numpy as np
import pytest
import torch

from stereodrr.registration import RigidPose, StoppingRule
from stereodrr.registration.objective import Objective
from stereodrr.registration.optimizers import QuasiNewton, forward_difference_hessian, positive_definite_inverse
from stereodrr.registration.params import PoseParameters

LR = (math.radians(0.125), 0.5)  # the full-resolution parameter scales of the default pyramid
SCALE = torch.tensor([LR[0]] * 3 + [LR[1]] * 3, dtype=torch.float64)
RULE = StoppingRule(0.002, 0.01, patience=8, margin=1.0)


def valley(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Hessian (in the optimiser's scaled units) with eigenvalues 1e-3, 1..5, the flat one along
    rz + tx (an in-plane rotation traded for a shift), and the optimum 0.4 units along it
    (0.035 deg, 0.14 mm from the start: 17x and 14x the tolerances)."""
    v = torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64) / math.sqrt(2)
    q, _ = np.linalg.qr(np.c_[v.numpy(), np.random.default_rng(seed).normal(size=(6, 5))])
    Q = torch.as_tensor(q)
    return (Q * torch.tensor([1e-3, 1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)) @ Q.T, 0.4 * v


class Quadratic(Objective):
    """``0.5 (x - x*)^T A (x - x*)`` of the scaled pose parameters, as the optimiser's objective
    (in place of the rendering one, whose bookkeeping it does not need)."""

    steps = (math.nan, math.nan)

    def __init__(self, params: PoseParameters, A: torch.Tensor, xstar: torch.Tensor):
        self.params, self.A, self.xstar, self.evaluations = params, A, xstar, 0

    def __call__(self, grad: bool = True) -> torch.Tensor:
        self.evaluations += 1
        z = torch.cat([self.params.rot, self.params.trans]) / SCALE - self.xstar
        return 0.5 * z @ self.A @ z


def stepper_from_a_stiff_estimate(A: torch.Tensor, xstar: torch.Tensor) -> tuple[QuasiNewton, Quadratic]:
    """A BFGS started from an inverse-Hessian estimate 50x too stiff along rz, as a level that
    inherits a curvature learnt without walking the valley."""
    params = PoseParameters(RigidPose.identity(np.zeros(3)), torch.eye(3, dtype=torch.float64), "rotvec", torch.device("cpu"))
    qn = QuasiNewton(params, *LR, patience=8)
    qn.H = torch.diag(torch.tensor([1.0, 1.0, 0.02, 0.5, 1.0, 1.0], dtype=torch.float64))
    return qn, Quadratic(params, A, xstar)


def error(qn: QuasiNewton, xstar: torch.Tensor) -> tuple[float, float]:
    e = ((qn.x - xstar) * SCALE).abs()
    return math.degrees(float(e[:3].max())), float(e[3:].max())


def test_forward_difference_hessian_is_exact_for_a_quadratic():
    A, xstar = valley()

    def gradient(x):
        return A @ (x - xstar)

    x = torch.linspace(-1, 1, 6, dtype=torch.float64)
    torch.testing.assert_close(forward_difference_hessian(gradient, x, gradient(x), 0.05), A)
    torch.testing.assert_close(positive_definite_inverse(A) @ A, torch.eye(6, dtype=torch.float64))
    saddle = torch.diag(torch.tensor([1.0, 2.0, -1e-3, 3.0, 4.0, 5.0], dtype=torch.float64))
    assert positive_definite_inverse(saddle) is None
    assert positive_definite_inverse(torch.full((6, 6), math.nan, dtype=torch.float64)) is None


def test_step_size_rule_stops_in_the_valley_and_the_measured_newton_step_does_not():
    A, xstar = valley()
    # Reference: the previous rule, two realised steps in a row below the tolerances, stops
    # after two tiny steps far from the optimum.
    qn, f = stepper_from_a_stiff_estimate(A, xstar)
    small = 0
    for _ in range(10):
        before = qn.x.clone()
        qn.iterate(f)
        taken = ((qn.x - before) * SCALE).abs()
        small = small + 1 if RULE.small((math.degrees(float(taken[:3].max())), float(taken[3:].max()))) else 0
        if small == 2:
            break
    assert small == 2
    assert error(qn, xstar)[0] > 10 * RULE.rotation_tol_deg and error(qn, xstar)[1] > 10 * RULE.translation_tol_mm
    # The new rule: the predicted step is tiny too (the estimate is wrong), but the level measures
    # the Hessian once before it stops, takes the Newton step and ends at the optimum.
    qn, f = stepper_from_a_stiff_estimate(A, xstar)
    for _ in range(10):
        step = qn.iterate(f)
        if RULE.small(step) and qn.confirm(f, RULE.small):
            break
    else:
        pytest.fail("the level did not converge")
    assert qn.measured
    assert error(qn, xstar)[0] < 0.01 * RULE.rotation_tol_deg and error(qn, xstar)[1] < 0.01 * RULE.translation_tol_mm
    assert f.evaluations <= 12  # 6 for the Hessian, a few line searches


def test_handed_curvature_counts_as_measured():
    A, xstar = valley()
    qn, f = stepper_from_a_stiff_estimate(A, xstar)
    qn.receive(positive_definite_inverse(A))
    step = qn.iterate(f)  # the Newton step with the exact Hessian lands on the optimum
    assert error(qn, xstar)[0] < 1e-9 and error(qn, xstar)[1] < 1e-9
    assert not RULE.small(step)  # it moved 0.035 deg: not converged yet
    step = qn.iterate(f)
    assert RULE.small(step) and qn.confirm(f, RULE.small)
    assert f.evaluations == 3  # no Hessian measured here: it came from the previous level

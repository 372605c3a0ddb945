"""Numpy or torch in, the same kind out: the distortion formulas are written once in torch; numpy
input runs them in float64 on the CPU and gets numpy back."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

# Points ``(..., 2)`` as ``(u, v)`` pixels: a tensor (results are tensors, differentiable) or an
# array (results are float64 arrays).
Points = Float[Tensor, "*batch 2"] | np.ndarray
# Images ``(..., H, W)``: a tensor (differentiable) or an array (float64 results).
Images = Float[Tensor, "*batch H W"] | np.ndarray


def as_points(points: Any, name: str = "points") -> tuple[Tensor, bool]:
    """``(points as a float tensor (..., 2), whether the input was a tensor)``.

    Raises:
        ValueError: the last axis is not 2 (``u, v``).
    """
    is_tensor = isinstance(points, Tensor)
    # A read-only array (a pandas column, a memory map) is copied: torch would only warn about it.
    t = points if is_tensor else torch.as_tensor(np.require(np.asarray(points, dtype=np.float64), requirements="W"))
    if t.ndim < 1 or t.shape[-1] != 2:
        raise ValueError(f"{name}: expected an array (..., 2) of (u, v) pixel positions, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    return t, is_tensor


def back(t: Tensor, is_tensor: bool) -> Any:
    """``t`` as given back to a caller who passed a tensor (``is_tensor``) or numpy."""
    return t if is_tensor else t.detach().cpu().numpy()


def newton_inverse(fn: Any, target: Tensor, guess: Tensor, tol: float = 1e-9, max_iter: int = 30,
                   step: float = 1e-3) -> Tensor:
    """Solve ``fn(x) = target`` for ``x`` (points ``(..., 2)``) by Newton's method, the Jacobian by
    forward differences of ``step`` px (central ones for the gradient), refreshed in the first two iterations only (the maps are
    smooth and near the identity: the later steps converge as fast without); points that do not
    reach ``tol`` px are NaN.

    Differentiable: the iterations run without a graph, then (with gradients enabled) one more
    Newton step is taken with it, so ``dx/dtarget = J^-1`` and the gradients with respect to
    ``fn``'s parameters are those of the exact inverse (the implicit function theorem).
    """

    def jacobian(x: Tensor, f: Tensor | None) -> tuple[Tensor, Tensor]:
        """Forward differences from ``f = fn(x)``; central ones (exact to ~1e-9) when ``f`` is None."""
        ex = torch.zeros_like(x)
        ex[..., 0] = step
        ey = ex.flip(-1)
        if f is None:
            return (fn(x + ex) - fn(x - ex)) / (2 * step), (fn(x + ey) - fn(x - ey)) / (2 * step)
        return (fn(x + ex) - f) / step, (fn(x + ey) - f) / step

    def solve(jx: Tensor, jy: Tensor, r: Tensor) -> Tensor:
        det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
        du = (jy[..., 1] * r[..., 0] - jy[..., 0] * r[..., 1]) / det
        dv = (-jx[..., 1] * r[..., 0] + jx[..., 0] * r[..., 1]) / det
        return torch.stack([du, dv], -1)

    with torch.no_grad():
        shape = guess.shape
        # The iterations run in float64 whatever comes in: float32 cannot reach ``tol`` (1e-9 px on
        # a 1000 px image is below its resolution), and its points would all end NaN.
        x = guess.detach().reshape(-1, 2).to(torch.float64)
        t = target.detach().reshape(-1, 2).to(torch.float64)
        done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        active = torch.arange(len(x), device=x.device)  # only points still iterating are evaluated
        jx = jy = x
        for it in range(max_iter + 1):
            xa = x[active]
            f = fn(xa)
            r = f - t[active]
            ok = r.abs().amax(-1) <= tol
            done[active[ok]] = True
            if bool(ok.all()) or it == max_iter:
                break
            keep = ~ok
            xa, f, r = xa[keep], f[keep], r[keep]
            jx, jy = jacobian(xa, f) if it < 2 else (jx[keep], jy[keep])
            active = active[keep]
            x[active] = xa - solve(jx, jy, r)
        x = torch.where(done[:, None], x, torch.full_like(x, float("nan"))).reshape(shape).to(guess.dtype)
    if not torch.is_grad_enabled():  # numpy callers run without a graph
        return x
    with torch.no_grad():  # the gradient is J^-1: worth the central differences
        jx, jy = jacobian(x, None)
    return x - solve(jx, jy, fn(x) - target)

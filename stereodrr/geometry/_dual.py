"""One implementation, two front ends: geometry formulas are written once in torch.

A function decorated with :func:`numpy_or_torch` accepts torch tensors (batched,
differentiable, any device) or numpy arrays / nested lists. Given numpy input it runs the same
torch code in float64 on the CPU and hands numpy float64 arrays back, so the numpy and torch
forms of a formula can never drift apart.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import numpy as np
import torch

# What the decorated function is to a type checker: its parameters are typed for torch, but it
# takes numpy too and then returns numpy, which no single signature says; so callers see
# ``Callable[..., Any]`` and the docstrings carry the shapes.
DualFunction = Callable[..., Any]


def _to_torch(x: Any, like: torch.Tensor | None) -> Any:
    if isinstance(x, np.ndarray) or (isinstance(x, (list, tuple)) and x and not isinstance(x[0], str)):
        a = np.asarray(x, dtype=np.float64)
        t = torch.tensor(a.copy() if any(s < 0 for s in a.strides) else a)  # torch refuses negative strides
        return t if like is None else t.to(device=like.device, dtype=like.dtype)
    return x


def _to_numpy(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, tuple):
        return tuple(_to_numpy(v) for v in x)
    return x


def numpy_or_torch(fn: Callable[..., Any]) -> DualFunction:
    """Run ``fn`` (written for torch tensors) on numpy input in float64 and return numpy.

    Mixed input (some tensors, some arrays) runs in torch with the arrays moved to the first
    tensor's dtype and device, and returns tensors.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        like = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        args = tuple(_to_torch(a, like) for a in args)
        kwargs = {k: _to_torch(v, like) for k, v in kwargs.items()}
        out = fn(*args, **kwargs)
        return out if like is not None else _to_numpy(out)

    return wrapper

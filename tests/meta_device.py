"""The ``meta`` device as a stand-in for CUDA on a machine without a GPU.

torch refuses to mix a ``meta`` tensor with a CPU tensor (other than a 0-d one) exactly where it
refuses to mix a CUDA tensor with one, and refuses ``.numpy()`` of it; but a meta tensor has no
values. :class:`ValuesOnHost` answers the value reads a CUDA tensor would answer after a host
sync (``bool``, ``float``, ``int``, ``item``, ``tolist``, ``.cpu()``, ``nonzero``, boolean-mask
indexing) with placeholders, so a whole code path runs on meta tensors and fails only where it
would fail on a GPU. The placeholders steer value-dependent branches arbitrarily: a test checks
that the path runs, not what it computes. Autograd runs meta backward passes on a thread of its
own, where the mode is off: a path whose backward reads values (activation checkpointing) needs
a backend that does not checkpoint (:func:`torch_backend_without_checkpoints`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode

from stereodrr.render import backends


def _meta(x: object) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "meta"


def _to_host(args: tuple, kwargs: dict) -> bool:
    device = kwargs.get("device", next((a for a in args if isinstance(a, (str, torch.device))), None))
    return device is not None and torch.device(device).type == "cpu"


class ValuesOnHost(TorchFunctionMode):
    """Placeholder values for the host reads of meta tensors (module docstring): ``True`` (but
    ``False`` for an ``any``), ones, no nonzero elements, five selected elements."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        x = args[0] if args else None
        if _meta(x):
            assert isinstance(x, torch.Tensor)
            if name == "__bool__":
                return getattr(x, "_placeholder_bool", True)
            if name in ("__int__", "__index__"):
                return 1
            if name in ("__float__", "item"):
                return 1.0 if x.is_floating_point() or name == "__float__" else 1
            if name == "tolist":
                return torch.ones(x.shape, dtype=x.dtype).tolist()
            if name == "cpu" or (name == "to" and _to_host(args[1:], kwargs)):
                with torch._C.DisableTorchFunction():
                    return torch.ones(x.shape, dtype=kwargs.get("dtype", x.dtype))
            if name == "nonzero":
                with torch._C.DisableTorchFunction():
                    return torch.empty((0, x.ndim), dtype=torch.int64, device="meta")
            mask = args[1] if len(args) > 1 else None
            if name == "__getitem__" and isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
                with torch._C.DisableTorchFunction():
                    return torch.ones((5, *x.shape[mask.ndim:]), dtype=x.dtype, device="meta")
        out = func(*args, **kwargs)
        if name == "any" and _meta(out):
            out._placeholder_bool = False
        return out


@pytest.fixture
def torch_backend_without_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch backend with a fixed chunk size: no chunk recomputed in the backward pass."""
    monkeypatch.setitem(backends.BACKENDS, "torch", dataclasses.replace(backends.BACKENDS["torch"], chunk_rays=2**20))

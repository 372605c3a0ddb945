"""The projector: how line integrals are taken (mode, step, backend), one object for every
function that renders a volume (:func:`~stereodrr.render.drr`, ``render_drr``, ``render_rig``,
``render_structures``, the imaging pipeline).

Modes (:data:`MODES`): ``"auto"`` (each backend's own, :attr:`Backend.auto_mode`),
``"trilinear"`` (ray marching at ``step_mm``, default half the smallest voxel spacing),
``"joseph"`` (one bilinear sample per slab of ``step_mm``, default the largest voxel spacing),
``"exact"`` (Siddon/Jacobs; no step). Backends: ``"auto"`` or a name of
:data:`stereodrr.render.backends.BACKENDS`.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar, get_args

from ..resources import MIN_STEP_MM

__all__ = ["Projector", "Mode", "BackendName", "MODES", "projector_keywords"]

Mode = Literal["auto", "trilinear", "joseph", "exact"]
"""The renderer's modes (module docstring); ``auto`` is the backend's own choice."""
BackendName = Literal["auto", "torch", "numba", "triton"]
"""The built-in backends (:data:`stereodrr.render.backends.BACKENDS`). ``Projector.backend`` is a
``str``: a backend added with ``register_backend`` is selected by its name all the same."""
MODES: tuple[str, ...] = get_args(Mode)
"""The names of :data:`Mode` (``mode=`` of :class:`Projector`)."""


@dataclass(frozen=True)
class Projector:
    """How a volume is projected.

    Attributes:
        mode: :data:`Mode` (module docstring).
        step_mm: trilinear step or joseph slab thickness in mm (``None``: the mode's default);
            at least :data:`stereodrr.resources.MIN_STEP_MM`.
        backend: ``"auto"`` (Triton on CUDA, Numba on CPU, torch otherwise) or a backend's name.
        chunk_rays: rays per kernel call (bounds memory); ``None``: the backend's.
    """

    mode: Mode = "auto"
    step_mm: float | None = None
    backend: BackendName | str = "auto"
    chunk_rays: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.step_mm is not None and not (math.isfinite(self.step_mm) and self.step_mm >= MIN_STEP_MM):
            raise ValueError(f"step_mm: expected a length of at least {MIN_STEP_MM:g} mm, got {self.step_mm}")
        if not isinstance(self.backend, str):
            raise ValueError(f"backend: expected 'auto' or a backend's name, got {self.backend!r}")
        if self.chunk_rays is not None and (int(self.chunk_rays) != self.chunk_rays or self.chunk_rays < 1):
            raise ValueError(f"chunk_rays: expected a positive integer, got {self.chunk_rays}")


F = TypeVar("F", bound=Callable[..., Any])
_KEYWORDS = ("mode", "step_mm", "backend", "chunk_rays")


def projector_keywords(fn: F) -> F:
    """Deprecation path of the keywords a :class:`Projector` replaced: ``fn(..., mode=, step_mm=,
    backend=, chunk_rays=)`` still works for one release, as ``fn(..., projector=Projector(...))``
    with a ``DeprecationWarning``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        old = {k: kwargs.pop(k) for k in _KEYWORDS if k in kwargs}
        if old:
            if kwargs.get("projector") is not None:
                raise ValueError(f"give projector= or {sorted(old)}, not both")
            warnings.warn(f"{fn.__name__}({', '.join(f'{k}=' for k in old)}) is deprecated: pass "
                          f"projector=Projector({', '.join(f'{k}=...' for k in old)})", DeprecationWarning,
                          stacklevel=2)
            kwargs["projector"] = Projector(**old)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]

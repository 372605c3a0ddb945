"""Optional dependencies (pyproject extras) and the message when a feature needs a missing one.

| extra | package | what needs it | without it |
| --- | --- | --- | --- |
| ``dask`` | dask[distributed] | ``generate_dataset`` with ``workers > 0`` or a ``scheduler`` (``stereodrr dataset --workers N / --scheduler``) | ``workers=0`` (``--workers 0``) renders in this process |
| ``gpu`` | triton | the fused GPU renderer (``backend="triton"``) | torch backend on CUDA |

``make setup`` installs all of them.
"""

from __future__ import annotations

import importlib.util

__all__ = ["MissingExtraError", "available", "require"]


class MissingExtraError(RuntimeError):
    """A feature needs an optional dependency that is not installed."""


def available(module: str) -> bool:
    """Whether ``module`` can be imported (found on the path; not imported here)."""
    return importlib.util.find_spec(module) is not None


def require(module: str, extra: str, feature: str, instead: str = "") -> None:
    """Raise :class:`MissingExtraError` naming the extra when ``module`` is missing.

    Args:
        module: the import name (``"numba"``, ``"distributed"``).
        extra: the pyproject extra that installs it (``"numba"``, ``"dask"``).
        feature: what needs it, as the user asked for it.
        instead: what works without it (appended to the message).
    """
    if not available(module):
        alt = f"; or {instead}" if instead else ""
        raise MissingExtraError(f"{feature} needs {module}, which is not installed: pip install "
                                f"'stereodrr[{extra}]'{alt}")

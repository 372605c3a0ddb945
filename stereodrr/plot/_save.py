"""Writing a finished figure: one place for every plot module."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from ..fileio import atomic_path


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 110, **savefig: Any) -> Path:
    """Write ``fig`` as a PNG atomically (nothing half-written on failure) and close it."""
    p = Path(path)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", **savefig)
    plt.close(fig)
    return p

"""Writing a finished figure: one place for every plot module."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.backend_bases import FigureCanvasBase

from ..fileio import atomic_path


def figure_format(path: str | os.PathLike[str]) -> str:
    """The file format a figure path asks for, from its suffix (``.png``, ``.pdf``, ``.svg``, ...:
    matplotlib's); a path without a suffix is PNG.

    Raises:
        ValueError: a suffix matplotlib cannot write (``fig.txt``), naming the path.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if not suffix:
        return "png"
    if suffix not in formats:
        raise ValueError(f"figure {str(path)!r}: expected a file name ending in one of "
                         f"{', '.join('.' + f for f in sorted(formats))}")
    return suffix


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 110, **savefig: Any) -> Path:
    """Write ``fig`` atomically (nothing half-written on failure) in the format its suffix names
    (:func:`figure_format`; PNG for every figure stereodrr names itself) and close it."""
    p = Path(path)
    fmt = figure_format(p)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt, **savefig)
    plt.close(fig)
    return p

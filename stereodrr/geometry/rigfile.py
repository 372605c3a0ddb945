"""Rig files (``rig.json``, schema ``stereodrr.rig/1``) and XMALab/DLTdv DLT coefficient CSVs.

``rig.json``::

    {"schema": "stereodrr.rig/1",
     "isocenter": [x, y, z],                       # world mm (LPS)
     "views": [{"name": "left", "width": 512, "height": 512,
                "pixel_spacing": [du, dv],          # mm
                "sdd": 1200.0,                      # mm
                "K": [[fx, s, cu], [0, fy, cv], [0, 0, 1]],
                "R": [[...], [...], [...]],         # world -> camera rotation (OpenCV)
                "t": [tx, ty, tz]}, ...]}           # world -> camera translation, mm

Floats are written with Python's shortest round-trip repr, so save -> load is exact. Any
OpenCV, XMALab (via :func:`~stereodrr.geometry.dlt_coefficients.projection_from_dlt`) or C-arm K, R, t fits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_path, atomic_write_text, read_json, read_numeric_csv
from .camera import Camera
from .dlt_coefficients import DltConvention, dlt_from_projection
from .rig import StereoRig

__all__ = ["RIG_SCHEMA", "rig_to_dict", "rig_from_dict", "save_rig", "load_rig", "save_dlt_csv", "load_dlt_csv"]

RIG_SCHEMA = "stereodrr.rig/1"
"""Schema name of a rig file (``rig.json``, :func:`save_rig`)."""
_VIEW_KEYS = ("name", "width", "height", "pixel_spacing", "sdd", "K", "R", "t")


def rig_to_dict(rig: StereoRig) -> dict[str, Any]:
    """JSON-ready dict of a rig in the ``stereodrr.rig/1`` schema."""
    views = []
    for name, cam in rig.cameras.items():
        views.append({
            "name": name,
            "width": cam.width,
            "height": cam.height,
            "pixel_spacing": list(cam.pixel_spacing),
            "sdd": cam.sdd,
            "K": cam.K.tolist(),
            "R": cam.R.tolist(),
            "t": cam.t.tolist(),
        })
    return {"schema": RIG_SCHEMA, "isocenter": rig.isocenter.tolist(), "views": views}


def rig_from_dict(data: Any, source: str = "rig") -> StereoRig:
    """Validate a ``stereodrr.rig/1`` dict and build the rig; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object at the top level")
    schema = data.get("schema")
    if schema != RIG_SCHEMA:
        raise ValueError(f"{source}: expected schema {RIG_SCHEMA!r}, got {schema!r}")
    for key in ("isocenter", "views"):
        if key not in data:
            raise ValueError(f"{source}: missing key {key!r}")
    views = data["views"]
    if not isinstance(views, list) or not views:
        raise ValueError(f"{source}: 'views' must be a non-empty list")
    cams: dict[str, Camera] = {}
    for i, v in enumerate(views):
        where = f"{source}: views[{i}]"
        if not isinstance(v, dict):
            raise ValueError(f"{where}: expected an object")
        missing = [k for k in _VIEW_KEYS if k not in v]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        unknown = sorted(set(v) - set(_VIEW_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}")
        name = v["name"]
        if name in cams:
            raise ValueError(f"{where}: duplicate view name {name!r}")
        try:
            cams[name] = Camera(
                K=np.asarray(v["K"], dtype=np.float64),
                R=np.asarray(v["R"], dtype=np.float64),
                t=np.asarray(v["t"], dtype=np.float64),
                width=v["width"],
                height=v["height"],
                pixel_spacing=v["pixel_spacing"],  # [du, dv], or one number for square pixels
                sdd=v["sdd"],
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where} ({name!r}): {exc}") from None
    try:
        return StereoRig(cams, np.asarray(data["isocenter"], dtype=np.float64))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: {exc}") from None


def save_rig(rig: StereoRig, path: str | os.PathLike[str]) -> Path:
    """Write ``rig.json`` atomically; returns the path."""
    atomic_write_text(path, json.dumps(rig_to_dict(rig), indent=2) + "\n")
    return Path(path)


def load_rig(path: str | os.PathLike[str]) -> StereoRig:
    """Read and validate ``rig.json``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: malformed JSON (with line and column), wrong schema, missing keys, or a view
            whose K/R/t is invalid (e.g. R not a rotation), or an isocenter behind a camera.
    """
    data = read_json(path, "rig file")
    return rig_from_dict(data, source=str(path))


def save_dlt_csv(rig: StereoRig, path: str | os.PathLike[str], convention: DltConvention = "xmalab") -> np.ndarray:
    """Write the DLT coefficients of every view as XMALab/DLTdv do: 11 rows x n cameras, no header.

    Columns follow the rig's view order; ``convention`` is the coefficients' pixels
    (:data:`~stereodrr.geometry.dlt_coefficients.DltConvention`: XMALab's and DLTdv7's y up by
    default, ``"dltdv8"`` for DLTdv8). Returns the ``(11, n)`` array written.

    Raises:
        ValueError: a view whose principal plane holds the world origin (naming the view and the
            file); nothing is written.
    """
    cols = []
    for name, cam in rig.cameras.items():
        try:
            cols.append(dlt_from_projection(cam.P, cam.height, convention))
        except ValueError as exc:
            raise ValueError(f"{path}: view {name!r}: {exc}") from None
    table = np.stack(cols, axis=1)
    with atomic_path(path) as tmp:
        np.savetxt(tmp, table, delimiter=",", fmt="%.17g")
    return table


def load_dlt_csv(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a DLT coefficient CSV (11 rows x n cameras) into an ``(11, n)`` float64 array."""
    p = Path(path)
    table = read_numeric_csv(p, "DLT file")
    if table.shape[0] != 11 or not np.all(np.isfinite(table)):
        raise ValueError(f"{p}: expected 11 finite rows (one column per camera), got shape {table.shape}")
    return table

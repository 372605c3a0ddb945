"""``distortion.json`` (schema ``stereodrr.distortion/1``): a measured distortion map.

``{"schema", "image": {"width", "height"}, "field_of_view": {"center": [u, v], "radius"} | null,
"model": "polynomial" | "lwm", "choice": "held-out" | "requested" | "alternative", "map": {...},
"residuals": {model: {"rms_px", "max_px", "heldout_rms_px", "heldout_max_px", ...}},
"grid": {"kind", "spacing_px", "hole_radius_px", "origin", "basis", "holes": {"i", "j", "u", "v",
"u_ideal", "v_ideal", "central"}} | null}``

The map corrects recorded pixels to ideal ones (OpenCV pixels: centres at integers). Its
``"map"`` block is the model's own (:meth:`PolynomialCorrection.to_dict`,
:meth:`LWMCorrection.to_dict`): plain numbers and the formula in words. Floats are written with
the shortest round-trip repr, so save -> load is exact. Written atomically.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text, read_json
from .correction import DistortionMap

__all__ = ["SCHEMA", "save_distortion", "load_distortion", "distortion_from_dict"]

SCHEMA = "stereodrr.distortion/1"
"""Schema name of a distortion file (``distortion.json``)."""


def _clean(x: Any) -> Any:
    """JSON has no inf or NaN: they become null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def save_distortion(dmap: DistortionMap, path: str | os.PathLike[str]) -> Path:
    """Write ``dmap`` to ``path`` (``distortion.json``) atomically."""
    d = {"schema": SCHEMA, **dmap.to_dict()}
    atomic_write_text(path, json.dumps(_clean(d), indent=1) + "\n")
    return Path(path)


def distortion_from_dict(d: Any, source: str = "distortion map") -> DistortionMap:
    """A :class:`DistortionMap` from the parsed JSON.

    Raises:
        ValueError: another schema, or a missing or malformed entry (named).
    """
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        got = d.get("schema") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{source}: expected a distortion map (schema {SCHEMA!r}), got schema {got!r}")
    for key in ("image", "model", "map", "field_of_view"):  # field_of_view: null for no round field
        if key not in d:
            raise ValueError(f"{source}: missing key {key!r}")
    img = d["image"]
    if not (isinstance(img, dict) and all(isinstance(img.get(k), int) and img[k] > 0 for k in ("width", "height"))):
        raise ValueError(f"{source}: image: expected positive integers width and height, got {img!r}")
    fov = d["field_of_view"]
    if fov is not None and not (isinstance(fov, dict) and _finite(fov.get("center"), 2) and _finite(fov.get("radius"))
                                and float(fov["radius"]) > 0):
        raise ValueError(f"{source}: field_of_view: expected null or a finite center [u, v] and a positive radius, "
                         f"got {fov!r}")
    try:
        return DistortionMap.from_dict(d)
    except ValueError as exc:  # names the section
        raise ValueError(f"{source}: {exc}") from None


def _finite(x: Any, n: int | None = None) -> bool:
    """``x`` is a finite number (``n`` None) or a list of ``n`` finite numbers."""
    values = [x] if n is None else x if isinstance(x, list) and len(x) == n else None
    return values is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                      for v in values)



def load_distortion(path: str | os.PathLike[str]) -> DistortionMap:
    """Read ``distortion.json``.

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON, another schema, or malformed.
    """
    return distortion_from_dict(read_json(path, "distortion map"), str(path))

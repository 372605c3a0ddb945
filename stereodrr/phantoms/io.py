"""Phantom definition files (JSON, schema ``stereodrr.phantom/1``).

Layout (lengths in mm, angles in degrees)::

    {
      "schema": "stereodrr.phantom/1",
      "name": "lego_stereo",
      "description": "...",
      "pose": {"rotation_deg": [0, 0, 0], "translation_mm": [0, 0, 0]},      # phantom -> world
      "bodies": [                                                             # painting order
        {"type": "hollow_box", "material": "abs", "size": [31.8, 15.8, 9.6], "wall": 1.5, "top": 1.0,
         "center": [0, 0, 0], "rotation_deg": [0, 0, 0], "name": "shell"},
        {"type": "box", "size": [sx, sy, sz], ...},
        {"type": "cylinder", "radius": r or [rx, ry], "height": h, "inner_radius": ri, ...},
        {"type": "sphere", "radius": r, ...},
        {"type": "ellipsoid", "radii": [rx, ry, rz], ...},
        {"type": "lego_brick", "studs": [4, 2], "plates": 3, ...}             # expands to primitives
      ],
      "markers": [{"id": 1, "center": [x, y, z], "diameter": 1.5, "material": "stainless_steel"}]
    }

``center``/``rotation_deg`` place a body's local frame in the phantom frame (rotation: extrinsic
x, then y, then z, see :func:`~stereodrr.phantoms.model.rigid_pose`); both default to zero.
Every error names the file and the field (``bodies[3].size``), and a malformed file its line and
column.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ..fileio import atomic_write_text, read_json
from ..geometry.se3 import matrix_to_euler
from .lego import lego_brick
from .materials import get_material
from .model import Body, Marker, Phantom, rigid_pose
from .primitives import PRIMITIVES
from .symmetry import identification_ambiguities

__all__ = ["PHANTOM_SCHEMA", "BUILTIN_DIR", "builtin_phantoms", "resolve_phantom", "load_phantom", "save_phantom",
           "phantom_from_dict", "phantom_to_dict"]

PHANTOM_SCHEMA = "stereodrr.phantom/1"
"""Schema name of a phantom definition (JSON)."""
#: The built-in definitions, shipped as package data (``phantoms/`` in the repository links here).
BUILTIN_DIR = Path(__file__).resolve().parent / "data"
_POSE_KEYS = {"center", "rotation_deg"}
_COMMON_KEYS = {"type", "material", "name"} | _POSE_KEYS
_PARAM_KEYS = {
    "box": {"size"}, "hollow_box": {"size", "wall", "top"}, "cylinder": {"radius", "height", "inner_radius"},
    "sphere": {"radius"}, "ellipsoid": {"radii"}, "lego_brick": {"studs", "plates"},
}
_REQUIRED = {"box": {"size"}, "hollow_box": {"size", "wall", "top"}, "cylinder": {"radius", "height"},
             "sphere": {"radius"}, "ellipsoid": {"radii"}, "lego_brick": {"studs"}}


def _expect_keys(where: str, obj: Any, allowed: set[str], required: set[str]) -> dict:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ValueError(f"{where}: unexpected field(s) {unknown}; expected some of {sorted(allowed)}")
    missing = sorted(required - set(obj))
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    return obj


def _pose_of(where: str, obj: dict, t_key: str = "center") -> np.ndarray:
    try:
        return rigid_pose(obj.get("rotation_deg", (0.0, 0.0, 0.0)), obj.get(t_key, (0.0, 0.0, 0.0)))
    except (ValueError, TypeError) as exc:
        field = "rotation_deg" if "rotation" in str(exc) else t_key
        raise ValueError(f"{where}.{field}: {str(exc).split(': ', 1)[-1]}") from None


def _bodies_of(where: str, spec: Any) -> list[Body]:
    kinds = sorted(_PARAM_KEYS)
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"{where}.type: missing; expected one of {kinds}")
    kind = spec["type"]
    if kind not in _PARAM_KEYS:
        raise ValueError(f"{where}.type: unknown primitive {kind!r}; expected one of {kinds}")
    _expect_keys(where, spec, _COMMON_KEYS | _PARAM_KEYS[kind], _REQUIRED[kind] | {"material"})
    try:
        material = get_material(spec["material"])
    except ValueError as exc:
        raise ValueError(f"{where}.material: {exc}") from None
    pose = _pose_of(where, spec)
    name = str(spec.get("name", ""))
    params = {k: v for k, v in spec.items() if k in _PARAM_KEYS[kind]}
    try:
        if kind == "lego_brick":
            return lego_brick(params["studs"], pose, params.get("plates", 3), material, name or "brick")
        return [Body(PRIMITIVES[kind](**params), material, pose, name)]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}.{exc}" if str(exc).split(":")[0] in params else f"{where}: {exc}") from None


def _marker_of(where: str, spec: Any) -> Marker:
    _expect_keys(where, spec, {"id", "center", "diameter", "material"}, {"id", "center", "diameter", "material"})
    mid = spec["id"]
    if isinstance(mid, bool) or not isinstance(mid, int):
        raise ValueError(f"{where}.id: expected an integer, got {mid!r}")
    try:
        material = get_material(spec["material"])
    except ValueError as exc:
        raise ValueError(f"{where}.material: {exc}") from None
    c = np.asarray(spec["center"], dtype=object)
    if c.shape != (3,) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in c):
        raise ValueError(f"{where}.center: expected 3 finite numbers (mm), got {spec['center']!r}")
    d = spec["diameter"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not np.isfinite(d) or d <= 0:
        raise ValueError(f"{where}.diameter: expected a positive size in mm, got {d!r}")
    return Marker(mid, np.asarray(spec["center"], dtype=np.float64), float(d), material)


def phantom_from_dict(data: Any, source: str = "<phantom>") -> Phantom:
    """Build a :class:`Phantom` from a parsed phantom file; ``source`` prefixes every error."""
    try:
        _expect_keys("top level", data, {"schema", "name", "description", "pose", "bodies", "markers"}, {"schema", "name"})
        if data["schema"] != PHANTOM_SCHEMA:
            raise ValueError(f"schema: expected {PHANTOM_SCHEMA!r}, got {data['schema']!r}")
        if not isinstance(data["name"], str) or not data["name"]:
            raise ValueError(f"name: expected a non-empty string, got {data['name']!r}")
        pose = np.eye(4)
        if "pose" in data:
            _expect_keys("pose", data["pose"], {"rotation_deg", "translation_mm"}, set())
            pose = _pose_of("pose", data["pose"], "translation_mm")
        for key in ("bodies", "markers"):
            if not isinstance(data.get(key, []), list):
                raise ValueError(f"{key}: expected a list, got {type(data[key]).__name__}")
        bodies = [b for i, spec in enumerate(data.get("bodies", [])) for b in _bodies_of(f"bodies[{i}]", spec)]
        markers = [_marker_of(f"markers[{i}]", spec) for i, spec in enumerate(data.get("markers", []))]
        return Phantom(data["name"], tuple(bodies), tuple(markers), pose, str(data.get("description", "")))
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None


def builtin_phantoms() -> list[str]:
    """Names of the built-in phantom definitions (``lego_stereo``, ``lego_cube``, ``torso``)."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def resolve_phantom(name_or_path: str | os.PathLike[str]) -> Path:
    """A phantom file: an existing path as given, else a built-in name (``"lego_stereo"`` or
    ``"lego_stereo.json"``).

    Raises:
        FileNotFoundError: neither a file nor a built-in name (the message lists the names).
    """
    p = Path(name_or_path)
    if p.exists() or p.parent != Path("."):
        return p
    stem = p.name[:-5] if p.name.endswith(".json") else p.name
    if stem in builtin_phantoms():
        return BUILTIN_DIR / f"{stem}.json"
    raise FileNotFoundError(f"phantom {str(p)!r}: no such file and no built-in phantom of that name "
                            f"(built-in: {', '.join(builtin_phantoms())})")


def load_phantom(path: str | os.PathLike[str]) -> Phantom:
    """Read a phantom JSON file, or a built-in phantom by name (:func:`resolve_phantom`).

    Raises:
        FileNotFoundError: no such file or built-in name.
        ValueError: malformed JSON (with line and column) or an invalid field (named).

    Warns:
        PhantomAmbiguityWarning: the markers cannot be identified unambiguously in an image
            (:func:`stereodrr.phantoms.symmetry.identification_ambiguities`).
    """
    p = resolve_phantom(path)
    phantom = phantom_from_dict(read_json(p, "phantom file"), str(p))
    if len(phantom.markers) >= 4:
        t = phantom.marker_table()
        for msg in identification_ambiguities(t[["x", "y", "z"]].to_numpy(), marker_classes(t), t["marker_id"]):
            warnings.warn(f"phantom {str(p)!r}: {msg}", PhantomAmbiguityWarning, stacklevel=2)
    return phantom


class PhantomAmbiguityWarning(UserWarning):
    """The phantom's markers allow more than one labelling of an image (see :mod:`.symmetry`)."""


def marker_classes(table: pd.DataFrame) -> list[tuple]:
    """One ``(diameter_mm, material)`` class per row of a marker table (the cues an image gives)."""
    d = table["diameter_mm"] if "diameter_mm" in table else [0.0] * len(table)
    m = table["material"] if "material" in table else [""] * len(table)
    return [(round(float(a), 3), str(b)) for a, b in zip(d, m)]


def _pose_fields(T: np.ndarray, t_key: str) -> dict:
    rot = np.degrees(matrix_to_euler(T[:3, :3], "xyz"))
    out = {}
    if np.any(T[:3, 3] != 0):
        out[t_key] = [float(v) for v in T[:3, 3]]
    if np.any(np.abs(rot) > 1e-12):
        out["rotation_deg"] = [float(v) for v in rot]
    return out


def phantom_to_dict(phantom: Phantom) -> dict:
    """The phantom as a ``stereodrr.phantom/1`` dictionary (bodies as expanded primitives)."""
    bodies = []
    for b in phantom.bodies:
        spec = {"type": b.shape.kind, "material": b.material.name}
        if b.name:
            spec["name"] = b.name
        spec.update(b.shape.params())
        spec.update(_pose_fields(b.pose, "center"))
        bodies.append(spec)
    out: dict[str, Any] = {"schema": PHANTOM_SCHEMA, "name": phantom.name}
    if phantom.description:
        out["description"] = phantom.description
    pose = _pose_fields(phantom.pose, "translation_mm")
    if pose:
        out["pose"] = pose
    out["bodies"] = bodies
    out["markers"] = [{"id": m.marker_id, "center": [float(v) for v in m.center], "diameter": m.diameter,
                       "material": m.material.name} for m in phantom.markers]
    return out


def save_phantom(phantom: Phantom, path: str | os.PathLike[str]) -> Path:
    """Write the phantom as JSON atomically."""
    p = Path(path)
    atomic_write_text(p, json.dumps(phantom_to_dict(phantom), indent=1) + "\n")
    return p

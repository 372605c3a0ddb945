"""XMALab's point and rigid-body tables, written and read as XMALab does (its ``Trial.cpp``:
``save2dPoints`` / ``load2dPoints``, ``save3dPoints``, ``saveRigidBodyTransformations``).

Every table: comma-separated, no spaces, one row per frame (frame ``i`` is row ``i`` after the
header; no frame column unless asked), ``NaN`` for a missing value, 12 significant digits.
XMALab can leave the header row out; the readers find out whether there is one (a first row of
numbers and ``NaN`` is data) and then name the markers ``marker001``, ... and the bodies
``RigidBody001``, ...

- **2D points** (one combined file): columns ``<marker>_cam<k>_X, <marker>_cam<k>_Y`` marker by
  marker, and inside each marker camera by camera (``k`` 1-based). XMALab's two export and
  import switches, "count from 1" and "y up", give four pixel conventions (:data:`PixelConvention`)
  for the OpenCV pixel ``(u, v)`` of a camera of height ``H``: ``"matlab"`` (both, the XROMM
  MATLAB tools' and DLT's): ``x = u + 1``, ``y = H - v``; ``"opencv"`` (neither, XMALab's
  default): ``x = u``, ``y = v``; ``"count1"``: ``x = u + 1``, ``y = v + 1``; ``"yup"``:
  ``x = u``, ``y = H - 1 - v``. XMALab's import must be told the same convention. Its "cam
  offset columns" (for the MATLAB XROMM tools: one leading column per camera) are read with
  ``offset_columns=True``.
- **3D points**: ``[Frame,] <marker>_X, <marker>_Y, <marker>_Z`` in world units (mm); a filtered
  export's ``<marker>_<cutoff>Hz_X`` reads as the marker's name.
- **Rigid-body transformations**: per body ``N_R11, N_R12, N_R13, N_01, N_R21, ..., N_03,
  N_TX, N_TY, N_TZ, N_1``: the body -> world 4x4 stored column by column (so ``TX, TY, TZ`` is
  the body's origin in world, and ``N_Rij`` is element ``(j, i)`` of the matrix).

Markers are named ``marker001``, ``marker002``, ... unless names are given; bodies
``RigidBody001``, ...
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from ..fileio import atomic_write_text, check_input_file

__all__ = ["PixelConvention", "marker_name", "body_name", "save_points2d", "load_points2d", "save_points3d",
           "load_points3d", "save_rigid_body_transforms", "load_rigid_body_transforms"]

PixelConvention = Literal["matlab", "opencv", "count1", "yup"]
"""XMALab's pixel conventions (module docstring): ``matlab`` (x = u + 1, y = H - v), ``opencv``
(u, v), ``count1`` (u + 1, v + 1), ``yup`` (u, H - 1 - v)."""

# convention -> (XMALab's "count from 1" offset, its "y up" switch); Trial.cpp save2dPoints /
# load2dPoints apply y -> H - 1 - y, then the offset.
_CONVENTIONS: dict[str, tuple[float, bool]] = {"matlab": (1.0, True), "opencv": (0.0, False), "count1": (1.0, False),
                                              "yup": (0.0, True)}


def marker_name(index: int) -> str:
    """XMALab's default name of the ``index``-th marker (0-based): ``marker001``."""
    return f"marker{index + 1:03d}"


def body_name(index: int) -> str:
    """XMALab's default name of the ``index``-th rigid body (0-based): ``RigidBody001``."""
    return f"RigidBody{index + 1:03d}"


def _g(v: float) -> str:
    return "NaN" if not math.isfinite(v) else f"{v:.12g}"


def _convention(convention: str) -> tuple[float, bool]:
    if convention not in _CONVENTIONS:
        raise ValueError(f"convention: expected one of {', '.join(map(repr, _CONVENTIONS))}, got {convention!r}")
    return _CONVENTIONS[convention]


def _write(path: str | os.PathLike[str], header: list[str] | None, rows: list[list[str]]) -> Path:
    lines = ([",".join(header)] if header is not None else []) + [",".join(r) for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def save_points2d(points: pd.DataFrame, path: str | os.PathLike[str], heights: Sequence[int], n_frames: int,
                  convention: PixelConvention = "matlab", names: Mapping[int, str] | None = None) -> Path:
    """Write a combined 2D-point file (module docstring).

    Args:
        points: long table ``frame, marker, camera, u, v`` (frame and camera 0-based indices;
            marker an integer id; ``u, v`` OpenCV pixels); absent rows and NaN are written ``NaN``.
        heights: image height of each camera (for the y-up convention), in camera order.
        n_frames: rows to write (frames without points are all ``NaN``).
        names: marker id -> name (default ``marker001`` ... by sorted id).

    Raises:
        ValueError: missing columns, frame or camera indices out of range, duplicate entries.
    """
    offset, y_up = _convention(convention)
    need = {"frame", "marker", "camera", "u", "v"}
    if not need <= set(points.columns):
        raise ValueError(f"points: expected columns {sorted(need)}, got {list(points.columns)}")
    n_cam = len(heights)
    f = points["frame"].to_numpy()
    c = points["camera"].to_numpy()
    if len(points) and (f.min() < 0 or f.max() >= n_frames or c.min() < 0 or c.max() >= n_cam):
        raise ValueError(f"points: frame must lie in 0..{n_frames - 1} and camera in 0..{n_cam - 1}")
    if points.duplicated(["frame", "marker", "camera"]).any():
        raise ValueError("points: more than one (u, v) for a frame, marker and camera")
    ids = sorted(points["marker"].unique().tolist())
    col = {m: i for i, m in enumerate(ids)}
    table = np.full((n_frames, len(ids) * n_cam * 2), np.nan)
    u = points["u"].to_numpy(dtype=np.float64)
    v = points["v"].to_numpy(dtype=np.float64)
    if y_up:
        v = np.asarray(heights, dtype=np.float64)[c] - 1.0 - v
    u, v = u + offset, v + offset
    base = np.array([col[m] for m in points["marker"]], dtype=int) * n_cam * 2 + c * 2
    table[f, base], table[f, base + 1] = u, v
    header = []
    for i, m in enumerate(ids):
        name = (names or {}).get(m, marker_name(i))
        header += [f"{name}_cam{k + 1}_{a}" for k in range(n_cam) for a in ("X", "Y")]
    return _write(path, header, [[_g(x) for x in row] for row in table])


def _read_rows(path: str | os.PathLike[str], what: str) -> tuple[Path, list[list[str]], list[str] | None]:
    """The file's rows split at commas, and its header (``None`` when the first row is data:
    every field a number or ``NaN``). A table of no markers or bodies, as XMALab writes it (an
    empty header and an empty line per frame), has the header ``[]`` and an empty row per frame."""
    p = check_input_file(path, what)
    text = p.read_text(encoding="utf-8-sig", errors="replace")
    rows = [line.split(",") for line in text.splitlines() if line.strip()]
    if not rows:
        if "\n" in text:
            return p, [[] for _ in text.splitlines()[1:]], []
        raise ValueError(f"{p}: empty {what}")
    first = [f.strip() for f in rows[0]]
    if all(_is_value(f) for f in first):
        return p, rows, None
    return p, rows[1:], first


def _is_value(field: str) -> bool:
    if "NaN" in field or field.lower() == "nan":
        return True
    try:
        float(field)
    except ValueError:
        return False
    return True


def _blocks(p: Path, rows: list[list[str]], header: list[str] | None, per: int,
            what: str) -> tuple[int, bool, int, list[str] | None]:
    """A table of an optional 1-based ``Frame`` column then blocks of ``per`` columns (named by
    the header; without one, a width of ``per n + 1`` means a frame column): ``(width, has_frame,
    blocks, the header's block columns or None)``.

    Raises:
        ValueError: the columns are not a positive number of blocks (``what`` says a block).
    """
    width = len(header) if header is not None else len(rows[0])
    has_frame = header[:1] == ["Frame"] if header is not None else width % per == 1
    n = (width - has_frame) // per
    if (width - has_frame) % per or n == 0:
        raise ValueError(f"{p}: expected {what}, got {width - has_frame}")
    return width, has_frame, n, None if header is None else header[has_frame:]


def _floats(p: Path, rows: list[list[str]], width: int, first_line: int) -> np.ndarray:
    out = np.full((len(rows), width), np.nan)
    for r, row in enumerate(rows):
        if len(row) != width:
            raise ValueError(f"{p}:{first_line + r}: expected {width} fields, got {len(row)}")
        for j, s in enumerate(row):
            s = s.strip()
            if "NaN" in s or s.lower() == "nan":
                continue
            try:
                out[r, j] = float(s)
            except ValueError:
                raise ValueError(f"{p}:{first_line + r}: field {j + 1}: expected a number or NaN, got {s!r}") from None
    return out


def load_points2d(path: str | os.PathLike[str], heights: Sequence[int],
                  convention: PixelConvention = "matlab", offset_columns: bool = False) -> pd.DataFrame:
    """Read a combined 2D-point file, with or without its header, into the long table of
    :func:`save_points2d` (``frame, marker, name, camera, u, v``; missing points left out).

    Args:
        heights: image height of each camera, in camera order (also the number of cameras).
        convention: the pixel convention it was written in (module docstring).
        offset_columns: the file starts each row with one offset column per camera (XMALab's
            "cam offset columns"); they are skipped.

    Raises:
        FileNotFoundError: no such file. ValueError: a header that is not ``<name>_cam<k>_X/Y``
            for ``len(heights)`` cameras, rows of another width, non-numbers.
    """
    offset, y_up = _convention(convention)
    p, rows, header = _read_rows(path, "2D point file")
    if header == []:
        return _no_points(camera=int, u=float, v=float)
    n_cam = len(heights)
    skip = n_cam if offset_columns else 0
    if header is not None and offset_columns and not header[0].startswith("cam0_offset,"):
        if re.match(r"cam\d+_offset", header[0]) and len(header) != (len(rows[0]) if rows else -1):
            # XMALab writes the offset columns' labels glued to the first marker's, no comma.
            header = [re.sub(r"^(cam\d+_offset)+", "", header[0])] + header[1:]
        else:
            header = header[skip:]
    width = len(rows[0]) if rows else len(header or []) + skip
    if width <= skip or (width - skip) % (2 * n_cam):
        raise ValueError(f"{p}: {width - skip} point columns is not a positive multiple of 2 x {n_cam} cameras")
    n_markers = (width - skip) // (2 * n_cam)
    names = [marker_name(i) for i in range(n_markers)] if header is None else _names_2d(p, header, n_cam, n_markers)
    data = _floats(p, rows, width, 1 if header is None else 2)[:, skip:]
    frame, marker, cam = np.meshgrid(np.arange(len(data)), np.arange(len(names)), np.arange(n_cam), indexing="ij")
    x = data[:, 0::2].reshape(len(data), len(names), n_cam) - offset
    y = data[:, 1::2].reshape(len(data), len(names), n_cam) - offset
    if y_up:
        y = np.asarray(heights, dtype=np.float64)[None, None, :] - 1.0 - y
    keep = np.isfinite(x) & np.isfinite(y)
    return pd.DataFrame({"frame": frame[keep], "marker": marker[keep], "name": np.array(names)[marker[keep]],
                         "camera": cam[keep], "u": x[keep], "v": y[keep]})


def _no_points(**columns: type) -> pd.DataFrame:
    """A long point table of no rows (a file of no markers): ``frame, marker, name``, then ``columns``."""
    return pd.DataFrame({"frame": np.zeros(0, int), "marker": np.zeros(0, int), "name": np.zeros(0, str),
                         **{c: np.zeros(0, t) for c, t in columns.items()}})


def _names_2d(p: Path, header: list[str], n_cam: int, n_markers: int) -> list[str]:
    """The marker names of a 2D header ``<name>_cam<k>_X, <name>_cam<k>_Y, ...``."""
    if len(header) != 2 * n_cam * n_markers:
        raise ValueError(f"{p}: the header has {len(header)} columns, the rows {2 * n_cam * n_markers} point columns")
    names = []
    for i in range(0, len(header), 2 * n_cam):
        m = re.fullmatch(r"(.*)_cam1_X", header[i])
        expected = [f"{m.group(1) if m else '?'}_cam{k + 1}_{a}" for k in range(n_cam) for a in ("X", "Y")]
        if m is None or header[i:i + 2 * n_cam] != expected:
            raise ValueError(f"{p}: header columns {i + 1}-{i + 2 * n_cam}: expected {expected}, "
                             f"got {header[i:i + 2 * n_cam]}")
        names.append(m.group(1))
    return names


def save_points3d(points: pd.DataFrame, path: str | os.PathLike[str], n_frames: int,
                  names: Mapping[int, str] | None = None, frame_column: bool = False) -> Path:
    """Write a combined 3D-point file: ``[Frame,] <marker>_X, _Y, _Z`` per frame (``Frame`` is
    1-based, as XMALab writes it).

    Args:
        points: long table ``frame, marker, x, y, z`` (mm); absent rows and NaN are ``NaN``.
    """
    need = {"frame", "marker", "x", "y", "z"}
    if not need <= set(points.columns):
        raise ValueError(f"points: expected columns {sorted(need)}, got {list(points.columns)}")
    if points.duplicated(["frame", "marker"]).any():
        raise ValueError("points: more than one position for a frame and marker")
    f = points["frame"].to_numpy()
    if len(points) and (f.min() < 0 or f.max() >= n_frames):
        raise ValueError(f"points: frame must lie in 0..{n_frames - 1}")
    ids = sorted(points["marker"].unique().tolist())
    col = np.array([{m: i for i, m in enumerate(ids)}[m] for m in points["marker"]], dtype=int)
    table = np.full((n_frames, 3 * len(ids)), np.nan)
    for a, axis in enumerate("xyz"):
        table[f, 3 * col + a] = points[axis].to_numpy(dtype=np.float64)
    header = ["Frame"] if frame_column else []
    for i, m in enumerate(ids):
        header += [f"{(names or {}).get(m, marker_name(i))}_{a}" for a in "XYZ"]
    rows = [([str(i + 1)] if frame_column else []) + [_g(x) for x in row] for i, row in enumerate(table)]
    return _write(path, header, rows)


def load_points3d(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a combined 3D-point file (optional ``Frame`` column, 1-based; with or without its
    header: without one, a column count of ``3 m + 1`` means a frame column) into
    ``frame, marker, name, x, y, z`` (missing points left out)."""
    p, rows, header = _read_rows(path, "3D point file")
    if header == []:
        return _no_points(x=float, y=float, z=float)
    width, has_frame, n_markers, cols = _blocks(p, rows, header, 3, "three columns (X, Y, Z) per marker")
    names = [marker_name(i) for i in range(n_markers)]
    if cols is not None:
        for i in range(0, len(cols), 3):
            stem = cols[i][:-2] if cols[i].endswith("_X") else None
            if stem is None or cols[i:i + 3] != [f"{stem}_{a}" for a in "XYZ"]:
                raise ValueError(f"{p}: header columns {cols[i:i + 3]}: expected <marker>_X, <marker>_Y, <marker>_Z")
            names[i // 3] = re.sub(r"_[0-9.]+Hz$", "", stem)  # a filtered export's cutoff is not the name
    data = _floats(p, rows, width, 1 if header is None else 2)
    frames = _frames(p, data[:, 0], 1 if header is None else 2) if has_frame else np.arange(len(data))
    xyz = data[:, 1:] if has_frame else data
    out = []
    for m, name in enumerate(names):
        block = xyz[:, 3 * m:3 * m + 3]
        keep = np.isfinite(block).all(axis=1)
        out.append(pd.DataFrame({"frame": frames[keep], "marker": m, "name": name, "x": block[keep, 0],
                                 "y": block[keep, 1], "z": block[keep, 2]}))
    return pd.concat(out, ignore_index=True)


def _frames(p: Path, column: np.ndarray, first_line: int) -> np.ndarray:
    """0-based frame indices of a ``Frame`` column (XMALab numbers frames from 1) whose first
    value is on line ``first_line`` of ``p``.

    Raises:
        ValueError: a frame number that is not a whole number >= 1 (a 0 became index -1: the
            last frame, silently overwritten).
    """
    bad = ~(np.isfinite(column) & (column >= 1) & (column == np.round(column)))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{p}:{first_line + i}: Frame: expected frame numbers from 1 (as XMALab writes them), got {column[i]:g}")
    return column.astype(np.int64) - 1


_RB_LABELS = ("R11", "R12", "R13", "01", "R21", "R22", "R23", "02", "R31", "R32", "R33", "03", "TX", "TY", "TZ", "1")


def save_rigid_body_transforms(poses: np.ndarray, path: str | os.PathLike[str],
                               names: Sequence[str] | None = None) -> Path:
    """Write rigid-body transformations (module docstring).

    Args:
        poses: ``(F, B, 4, 4)`` body -> world per frame and body (mm); all-NaN for a frame
            without a pose.
        names: one per body (default ``RigidBody001`` ...).
    """
    P = np.asarray(poses, dtype=np.float64)
    if P.ndim != 4 or P.shape[2:] != (4, 4):
        raise ValueError(f"poses: expected (frames, bodies, 4, 4), got {P.shape}")
    n_bodies = P.shape[1]
    names = [body_name(i) for i in range(n_bodies)] if names is None else list(names)
    if len(names) != n_bodies:
        raise ValueError(f"names: expected {n_bodies} body names, got {len(names)}")
    header = [f"{n}_{label}" for n in names for label in _RB_LABELS]
    rows = []
    for f in range(P.shape[0]):
        row = []
        for b in range(n_bodies):
            M = P[f, b]
            row += ["NaN"] * 16 if np.isnan(M).any() else [_g(x) for x in M.T.ravel()]
        rows.append(row)
    return _write(path, header, rows)


def load_rigid_body_transforms(path: str | os.PathLike[str]) -> tuple[list[str], np.ndarray]:
    """Read rigid-body transformations: the body names and ``(F, B, 4, 4)`` body -> world
    (NaN where missing). A ``Frame`` column, ``_<cutoff>Hz`` label suffixes (filtered exports)
    and a file without its header (then ``16 B + 1`` columns mean a frame column) are accepted."""
    p, rows, header = _read_rows(path, "rigid-body transformation file")
    if header == []:
        return [], np.zeros((len(rows), 0, 4, 4))
    width, has_frame, n_bodies, cols = _blocks(p, rows, header, 16, "16 columns per rigid body")
    names = [body_name(i) for i in range(n_bodies)]
    if cols is not None:
        for i in range(0, len(cols), 16):
            m = re.fullmatch(r"(.*)_R11(_[0-9.]+Hz)?", cols[i])
            suffix = m.group(2) or "" if m else ""
            if m is None or cols[i:i + 16] != [f"{m.group(1)}_{label}{suffix}" for label in _RB_LABELS]:
                raise ValueError(f"{p}: header columns {i + 1}-{i + 16}: expected <body>_R11 ... <body>_1")
            names[i // 16] = m.group(1)
    data = _floats(p, rows, width, 1 if header is None else 2)
    values = data[:, 1:] if has_frame else data
    poses = values.reshape(len(data), len(names), 4, 4).transpose(0, 1, 3, 2).copy()
    poses[np.isnan(poses).any(axis=(2, 3))] = np.nan
    if has_frame and len(data):
        frames = _frames(p, data[:, 0], 1 if header is None else 2)
        full = np.full((frames.max() + 1, len(names), 4, 4), np.nan)
        full[frames] = poses
        poses = full
    return names, poses

"""MayaCam camera files, as XMALab writes them and Autoscoper reads them.

**MayaCam 2.0** (text, 17 lines; Autoscoper's ``Camera::loadMayaCam2`` reads them by line
number, so the layout is exact)::

    image size          line 1
    W,H                 line 2: width, then height (pixels)
                        line 3: blank
    camera matrix       line 4
    fx,s,cx             lines 5-7: the OpenCV K (pixel centres at integers, v down)
    0,fy,cy
    0,0,1
                        line 8: blank
    rotation            line 9
    r00,r01,r02         lines 10-12: the OpenCV world -> camera rotation R, row by row
    ...
                        line 13: blank
    translation         line 14
    t0                  lines 15-17: the OpenCV world -> camera translation t (world units, mm)
    t1
    t2

That is ``x_cam = R X + t``, ``x ~ K x_cam``: the plain OpenCV camera, no sign flips (Autoscoper
turns it into its OpenGL camera itself: it negates the second and third rows of ``R`` and flips
``cy`` to ``H - 1 - cy``). Autoscoper ignores the skew ``K[0, 1]``, so a camera with skew is
refused by :func:`save_mayacam`.

**MayaCam 1.0** (XMALab's Maya export, 5 comma-separated lines of 3 numbers; Autoscoper's
``Camera::loadMayaCam1``)::

    x, y, z              camera centre in world units
    rx, ry, rz           degrees; camera -> world rotation Rz(rz) Ry(ry) Rx(rx) of the OpenGL
                         camera (x right, y up, looking down -z)
    px, py, pz           film-plane position in the camera frame (informative; Autoscoper
                         recomputes it from lines 4 and 5)
    u0, v0, Z            principal point, 1-based with y up (u0 = cx + 1, v0 = H - cy),
                         and -f (pixels; the film lies at negative z)
    scale, W, H          film-plane scale, image width and height (0 means 1024)

It holds one focal length: :func:`save_mayacam1` refuses cameras with ``fx != fy`` or skew.

**VTK camera 1.0** (JSON, ``@schema`` ``https://autoscoperm.slicer.org/vtkCamera-schema-1.0.json``,
what SlicerAutoscoperM writes; Autoscoper's ``Camera::loadVTKCamera`` reads a camera file whose
name ends in ``.json`` as one): ``camera-position`` (the source), ``focal-point``, ``view-up``,
``view-angle`` (degrees) and ``image-width``, ``image-height``. Autoscoper's camera looks from the
position to the focal point, its x axis (right) ``side = forward x view-up`` (normalised), its y
axis (up) ``side x forward``; the focal lengths are ``W / (2 tan(angle / 2))`` and
``H / (2 tan(angle / 2))`` (one angle for both axes) and the principal point is ``(W/2, H/2)``
counted with y up, which is the OpenCV ``(W/2, H/2 - 1)`` (Autoscoper's ``v_up = H - 1 - v``).
stereodrr reads it (:func:`load_vtk_camera`); it does not write it, since it holds no principal
point of its own.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ..fileio import atomic_write_text, check_input_file
from ..geometry import Camera, euler_to_matrix

__all__ = ["MAYACAM_TOLERANCE_PX", "VTK_CAMERA_SCHEMA", "save_mayacam", "load_mayacam", "save_mayacam1", "load_mayacam1",
           "load_vtk_camera", "mayacam_version"]

# What a camera may lose in a MayaCam file: its projection of any point of the image moves by at
# most this many pixels (skew in 2.0; fx != fy or skew in 1.0).
MAYACAM_TOLERANCE_PX = 1e-6
"""What a camera may lose in a MayaCam file: its projection of any point moves by at most this many pixels."""

# Autoscoper's OpenGL camera frame from the OpenCV one (x right, y up, looking down -z).
_GL = np.diag([1.0, -1.0, -1.0])


def _fmt(v: float) -> str:
    return f"{float(v):.17g}"


def _skew_shift_px(cam: Camera) -> float:
    """Largest image shift over the detector that dropping the skew causes: ``|s| max|v - cy| / fy``."""
    K = cam.K
    return abs(K[0, 1]) * max(abs(K[1, 2]), abs(cam.height - 1 - K[1, 2])) / K[1, 1]


def save_mayacam(cam: Camera, path: str | os.PathLike[str]) -> Path:
    """Write one camera as MayaCam 2.0 (module docstring), exactly as XMALab does.

    Raises:
        ValueError: the camera has a skew Autoscoper would drop (it would move pixels by more than
            :data:`MAYACAM_TOLERANCE_PX`).
    """
    shift = _skew_shift_px(cam)
    if shift > MAYACAM_TOLERANCE_PX:
        raise ValueError(f"{path}: the camera's skew K[0,1] = {cam.K[0, 1]:.6g} would move pixels by up to "
                         f"{shift:.3g} px in MayaCam 2.0 (Autoscoper ignores skew); calibrate without skew")
    K = cam.K
    lines = ["image size", f"{cam.width},{cam.height}", "",
             "camera matrix", f"{_fmt(K[0, 0])},0,{_fmt(K[0, 2])}", f"0,{_fmt(K[1, 1])},{_fmt(K[1, 2])}", "0,0,1", "",
             "rotation", *(",".join(_fmt(v) for v in row) for row in cam.R), "",
             "translation", *(_fmt(v) for v in cam.t)]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def _numbers(p: Path, n: int, line: str, count: int) -> list[float]:
    parts = [s for s in line.replace(";", ",").split(",")]
    try:
        values = [float(s) for s in parts]
    except ValueError:
        raise ValueError(f"{p}:{n}: expected {count} comma-separated numbers, got {line!r}") from None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{p}:{n}: expected {count} finite comma-separated numbers, got {line!r}")
    return values


def mayacam_version(path: str | os.PathLike[str]) -> Literal[1, 2]:
    """2 when the file's first line is ``image size`` (Autoscoper's test), else 1."""
    p = check_input_file(path, "MayaCam file")
    with p.open(encoding="utf-8-sig", errors="replace") as fh:
        first = fh.readline().strip()
    return 2 if first == "image size" else 1


VTK_CAMERA_SCHEMA = "https://autoscoperm.slicer.org/vtkCamera-schema-1.0.json"
"""The ``@schema`` of a VTK camera 1.0 file, as Autoscoper checks it."""


def load_vtk_camera(path: str | os.PathLike[str], pixel_spacing: float | tuple[float, float] = 1.0) -> Camera:
    """Read a VTK camera 1.0 JSON file (module docstring) as Autoscoper's ``loadVTKCamera`` does.

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON, another schema or version, a
            field missing or malformed, a degenerate view (the focal point at the camera, the view
            up along the view direction) or a view angle outside (0, 180) degrees.
    """
    p = check_input_file(path, "VTK camera file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig", errors="replace"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not a JSON file ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or doc.get("@schema") != VTK_CAMERA_SCHEMA:
        raise ValueError(f"{p}: expected a VTK camera with '@schema' {VTK_CAMERA_SCHEMA!r}, got "
                         f"{doc.get('@schema') if isinstance(doc, dict) else type(doc).__name__!r}")

    def number(key: str, n: int | None = None) -> np.ndarray:
        try:
            v = np.asarray(doc[key], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{p}: {key!r}: expected {'a number' if n is None else f'{n} numbers'}") from None
        if v.shape != (() if n is None else (n,)) or not np.isfinite(v).all():
            raise ValueError(f"{p}: {key!r}: expected {'a number' if n is None else f'{n} numbers'}, got {doc[key]!r}")
        return v

    if float(number("version")) != 1.0:
        raise ValueError(f"{p}: 'version': expected 1.0, got {doc['version']!r}")
    W, H = float(number("image-width")), float(number("image-height"))
    if W != int(W) or H != int(H) or W < 1 or H < 1:
        raise ValueError(f"{p}: image size: expected positive integers, got {W:g} x {H:g}")
    pos, focal, up = number("camera-position", 3), number("focal-point", 3), number("view-up", 3)
    angle = float(number("view-angle"))
    if not 0.0 < angle < 180.0:
        raise ValueError(f"{p}: 'view-angle': expected degrees in (0, 180), got {angle:g}")
    forward = focal - pos
    side = np.cross(forward, up)
    if np.linalg.norm(forward) == 0 or np.linalg.norm(side) <= 1e-12 * np.linalg.norm(forward) * np.linalg.norm(up):
        raise ValueError(f"{p}: degenerate view: the focal point lies at the camera or view-up is along the view")
    forward /= np.linalg.norm(forward)
    side /= np.linalg.norm(side)
    R = np.stack([side, -np.cross(side, forward), forward])  # OpenCV rows: x right, y down, z forward
    tan_half = np.tan(np.radians(angle) / 2)
    K = np.array([[W / (2 * tan_half), 0.0, W / 2], [0.0, H / (2 * tan_half), H / 2 - 1], [0.0, 0.0, 1.0]])
    return _camera(K, R, -R @ pos, int(W), int(H), pixel_spacing, p)


def _camera(K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int,
            pixel_spacing: float | tuple[float, float], p: Path) -> Camera:
    du, dv = (float(v) for v in np.broadcast_to(np.asarray(pixel_spacing, float), (2,)))
    try:
        return Camera(K=K, R=R, t=t, width=width, height=height, pixel_spacing=(du, K[0, 0] * du / K[1, 1]))
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None


def load_mayacam(path: str | os.PathLike[str], pixel_spacing: float | tuple[float, float] = 1.0) -> Camera:
    """Read a MayaCam 2.0 (XMALab, Autoscoper, :func:`save_mayacam`) or 1.0 file
    (:func:`load_mayacam1`, chosen as Autoscoper does by the first line), or a VTK camera
    (:func:`load_vtk_camera`, a name ending in ``.json``, as Autoscoper decides).

    The file has no detector pitch: ``pixel_spacing`` (mm, default 1) only sets the informative
    ``Camera.sdd = fx * du``; projections use K alone. Titles are matched by name and blank lines
    are optional (Autoscoper itself needs the exact layout :func:`save_mayacam` writes).

    Raises:
        FileNotFoundError: no such file. ValueError: a block missing or malformed, an image size
            that is not two positive integers, or K/R not an intrinsic matrix / a rotation.
    """
    p = check_input_file(path, "MayaCam file")
    if p.suffix == ".json":  # Autoscoper's Camera constructor: a .json camera is a VTK camera
        return load_vtk_camera(p, pixel_spacing)
    if mayacam_version(p) == 1:
        return load_mayacam1(p, pixel_spacing)
    blocks: dict[str, list[tuple[int, str]]] = {}
    key = None
    for n, raw in enumerate(p.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line[0].isalpha():
            key = line.lower()
            blocks[key] = []
        elif key is None:
            raise ValueError(f"{p}:{n}: numbers before the first title line")
        else:
            blocks[key].append((n, line))
    need = {"image size": (1, 2), "camera matrix": (3, 3), "rotation": (3, 3), "translation": (3, 1)}
    values: dict[str, np.ndarray] = {}
    for k, (rows, cols) in need.items():
        got = blocks.get(k)
        if got is None or len(got) != rows:
            raise ValueError(f"{p}: expected a block {k!r} of {rows} line(s) of {cols} number(s) (MayaCam 2.0), "
                             f"got {'none' if got is None else len(got)}")
        values[k] = np.array([_numbers(p, n, line, cols) for n, line in got])
    if "undistortion" in blocks:  # XMALab: 8 lines of one number; its own reader: one line of 8
        coeffs = [float(x) for _, line in blocks["undistortion"] for x in line.split(",") if x.strip()]
        if any(c != 0 for c in coeffs):
            warnings.warn(f"{p}: the file's lens-distortion coefficients apply to raw frames and are not used: "
                          "give undistorted frames (as Autoscoper does)", stacklevel=2)
    w, h = values["image size"][0]
    if not (w == int(w) and h == int(h) and w > 0 and h > 0):
        raise ValueError(f"{p}: image size: expected two positive integers (width,height), got {w:g},{h:g}")
    return _camera(values["camera matrix"], values["rotation"], values["translation"].ravel(), int(w), int(h),
                   pixel_spacing, p)


# ---------------------------------------------------------------------------------------- 1.0
def _euler_zyx(M: np.ndarray) -> tuple[float, float, float]:
    """``(rz, ry, rx)`` in degrees with ``M = Rz(rz) Ry(ry) Rx(rx)``: Autoscoper's ``to_xyzypr``
    angles, except that ``rz`` is taken from ``M Rx(rx)^T`` rather than from ``M[0:2, 0]``. At
    ``ry = +-90`` both ``M[0:2, 0]`` and ``M[2, 1:3]`` are rounding noise, so taking ``rz`` and
    ``rx`` from them independently gives a wrong ``rz -+ rx``; derotating by whatever ``rx`` came
    out keeps the pair consistent."""
    x = math.atan2(M[2, 1], M[2, 2])
    s, c = math.sin(x), math.cos(x)
    rz = math.degrees(math.atan2(s * M[0, 2] - c * M[0, 1], c * M[1, 1] - s * M[1, 2]))
    ry = math.degrees(math.atan2(-M[2, 0], math.hypot(M[2, 1], M[2, 2])))
    return rz, ry, math.degrees(x)


def save_mayacam1(cam: Camera, path: str | os.PathLike[str], scale: float = 0.1) -> Path:
    """Write one camera as MayaCam 1.0 (module docstring).

    Raises:
        ValueError: ``fx != fy`` or a skew: the format's single focal length would move pixels by
            more than :data:`MAYACAM_TOLERANCE_PX`.
    """
    K = cam.K
    f = 0.5 * (K[0, 0] + K[1, 1])
    # f moves a pixel by |fx - f| |u - cx| / fx: the farthest pixel from the principal point
    # counts, which lies well past half the image when the principal point is off centre.
    reach = max(max(abs(K[0, 2]), abs(cam.width - 1 - K[0, 2])) / K[0, 0],
                max(abs(K[1, 2]), abs(cam.height - 1 - K[1, 2])) / K[1, 1])
    loss = 0.5 * abs(K[0, 0] - K[1, 1]) * reach + _skew_shift_px(cam)
    if loss > MAYACAM_TOLERANCE_PX:
        raise ValueError(f"{path}: MayaCam 1.0 holds one focal length and no skew; this camera (fx={K[0, 0]:.6g}, "
                         f"fy={K[1, 1]:.6g}, skew={K[0, 1]:.3g}) would move pixels by up to {loss:.3g} px: "
                         "write MayaCam 2.0 (save_mayacam) instead")
    rz, ry, rx = _euler_zyx(cam.R.T @ _GL)  # camera(OpenGL) -> world
    u0, v0 = K[0, 2] + 1.0, cam.height - K[1, 2]
    # Line 3 as XMALab's Camera::getMayaCam computes it (Autoscoper recomputes the film plane).
    film = (scale * (cam.width / 2 - u0), scale * (cam.height / 2 - v0), -scale * f)
    rows: list[Sequence[float]] = [cam.center.tolist(), (rx, ry, rz), film, (u0, v0, -f),
                                   (scale, cam.width, cam.height)]
    atomic_write_text(path, "".join(",".join(_fmt(v) for v in row) + "\n" for row in rows))
    return Path(path)


def load_mayacam1(path: str | os.PathLike[str], pixel_spacing: float | tuple[float, float] = 1.0) -> Camera:
    """Read a MayaCam 1.0 file (module docstring) as Autoscoper does: 5 lines of 3 numbers, an
    image size of 0 meaning 1024, the focal length ``|Z|``."""
    p = check_input_file(path, "MayaCam file")
    lines = [(n, s.strip()) for n, s in enumerate(p.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1)]
    lines = [(n, s) for n, s in lines if s]
    if len(lines) < 5:
        raise ValueError(f"{p}: expected 5 lines of 3 comma-separated numbers (MayaCam 1.0; a MayaCam 2.0 file starts "
                         f"with 'image size'), got {len(lines)} line(s)")
    rows = [_numbers(p, n, s, 3) for n, s in lines[:5]]
    center, (rx, ry, rz), _film, (u0, v0, z), (_scale, w, h) = rows
    w = 1024.0 if w == 0 else w
    h = 1024.0 if h == 0 else h
    if not (w == int(w) and h == int(h) and w > 0 and h > 0):
        raise ValueError(f"{p}:{lines[4][0]}: image size: expected two positive integers, got {w:g},{h:g}")
    f = abs(z)
    if f == 0:
        raise ValueError(f"{p}:{lines[3][0]}: the focal length Z is 0")
    world_from_gl = euler_to_matrix(np.radians([rz, ry, rx]), "ZYX")
    R = _GL @ world_from_gl.T
    K = np.array([[f, 0.0, u0 - 1.0], [0.0, f, h - v0], [0.0, 0.0, 1.0]])
    return _camera(K, R, -R @ np.asarray(center), int(w), int(h), pixel_spacing, p)

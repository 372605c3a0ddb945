"""Export a calibrated rig: ``rig.json`` (stereodrr), XMALab/DLTdv DLT CSV, OpenCV-style YAML,
MayaCam 2.0 camera files (Autoscoper/XMALab), and per-view 2D point tables.

MayaCam 2.0 (text; the layout of Autoscoper's file specification "Camera Calibration File
Format"): ``image size`` (``height,width``), ``camera matrix`` (``fx,0,cx / 0,fy,cy / 0,0,1``),
``rotation`` (rows ``r0, -r1, -r2``) and ``translation`` (``-x, y, -z``), each block after its
title line and followed by a blank line. We read the template's ``r`` and ``(x, y, z)`` as the
OpenCV ``R`` and ``t`` of the view; :func:`load_mayacam` inverts :func:`save_mayacam` exactly.

The YAML (``cv2.FileStorage``) holds, per view ``<name>``: ``<name>_image_size`` (W, H),
``<name>_camera_matrix`` K, ``<name>_dist_coeffs`` (zeros: a flat-panel detector has no lens
distortion), ``<name>_R``, ``<name>_t``, ``<name>_P``; and for the first two views the
``cv2.stereoCalibrate`` quantities ``R``, ``T`` (view 2 relative to view 1,
``x_2 = R x_1 + T``), ``E = [T]_x R`` and ``F`` (``x2^T F x1 = 0``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..fileio import atomic_path, atomic_write_text
from ..geometry import Camera, StereoRig, dlt_pixel_flip, fundamental_from_cameras, save_dlt_csv, save_rig, skew
from .dlt import rig_isocenter

__all__ = ["save_opencv_yaml", "load_opencv_yaml", "export_calibration", "save_mayacam", "load_mayacam",
           "points_table", "save_points_csv"]

# Sign flips of the MayaCam 2.0 template: rotation rows (1, -1, -1), translation (-1, 1, -1).
_MAYA_R = np.array([1.0, -1.0, -1.0])
_MAYA_T = np.array([-1.0, 1.0, -1.0])


def save_mayacam(cam: Camera, path: str | os.PathLike[str]) -> Path:
    """Write one view as a MayaCam 2.0 text file (see the module docstring)."""
    R = cam.R * _MAYA_R[:, None]
    t = cam.t * _MAYA_T
    fmt = lambda row: ",".join(f"{v:.17g}" for v in row)  # noqa: E731
    text = ("image size\n" f"{cam.height},{cam.width}\n\n"
            "camera matrix\n" + "\n".join(fmt(r) for r in cam.K) + "\n\n"
            "rotation\n" + "\n".join(fmt(r) for r in R) + "\n\n"
            "translation\n" + "\n".join(f"{v:.17g}" for v in t) + "\n")
    atomic_write_text(path, text)
    return Path(path)


def load_mayacam(path: str | os.PathLike[str], pixel_spacing: float | tuple[float, float] = 1.0) -> Camera:
    """Read a MayaCam 2.0 file written by :func:`save_mayacam` (or XMALab/Autoscoper in the same
    layout). The file has no pixel pitch: give ``pixel_spacing`` (mm) for the detector."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"MayaCam file {str(p)!r} does not exist")
    blocks: dict[str, list[list[float]]] = {}
    key = None
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line[0].isalpha():
            key = line.lower()
            blocks[key] = []
            continue
        if key is None:
            raise ValueError(f"{p}:{n}: numbers before the first title line")
        try:
            blocks[key].append([float(x) for x in line.split(",")])
        except ValueError:
            raise ValueError(f"{p}:{n}: expected comma-separated numbers, got {line!r}") from None
    need = {"image size": (1, 2), "camera matrix": (3, 3), "rotation": (3, 3), "translation": (3, 1)}
    for k, shape in need.items():
        if k not in blocks or np.shape(blocks[k]) != shape:
            raise ValueError(f"{p}: expected a block {k!r} of {shape[0]}x{shape[1]} numbers (MayaCam 2.0), "
                             f"got {np.shape(blocks.get(k, []))}")
    h, w = (int(v) for v in blocks["image size"][0])
    R = np.asarray(blocks["rotation"]) * _MAYA_R[:, None]
    t = np.asarray(blocks["translation"]).ravel() * _MAYA_T
    du, dv = np.broadcast_to(np.asarray(pixel_spacing, float), (2,))
    K = np.asarray(blocks["camera matrix"])
    return Camera(K=K, R=R, t=t, width=w, height=h, pixel_spacing=(du, K[0, 0] * du / K[1, 1]))


def points_table(table: pd.DataFrame, height: int) -> pd.DataFrame:
    """A view's identified balls for export: ``marker_id, u, v`` (OpenCV pixels: 0-based, v
    down), ``residual_px`` (to the calibrated reprojection) and XMALab's 1-based, y-up pixel
    ``x_xmalab, y_xmalab`` (``x = u + 1, y = H - v``, :func:`stereodrr.geometry.dlt_pixel_flip`)."""
    uv1 = np.c_[table["u"].to_numpy(), table["v"].to_numpy(), np.ones(len(table))]
    xy = uv1 @ dlt_pixel_flip(height).T
    return pd.DataFrame({"marker_id": table["marker_id"].to_numpy(), "u": uv1[:, 0], "v": uv1[:, 1],
                         "residual_px": table["residual_px"].to_numpy(), "x_xmalab": xy[:, 0], "y_xmalab": xy[:, 1]})


def save_points_csv(table: pd.DataFrame, height: int, path: str | os.PathLike[str]) -> Path:
    """Write :func:`points_table` as CSV."""
    with atomic_path(path) as tmp:
        points_table(table, height).to_csv(tmp, index=False, float_format="%.6f")
    return Path(path)


def _node(name: str) -> str:
    """A FileStorage node name (letters, digits, underscore; not starting with a digit)."""
    key = re.sub(r"\W", "_", name)
    return key if re.match(r"[A-Za-z_]", key) else f"v_{key}"


def save_opencv_yaml(rig: StereoRig, path: str | os.PathLike[str]) -> Path:
    """Write the rig as OpenCV-style YAML (see the module docstring); returns the path."""
    names = rig.names
    with atomic_path(path) as tmp:
        fs = cv2.FileStorage(str(tmp), cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_FORMAT_YAML)
        try:
            fs.write("views", ",".join(names))
            for name, cam in rig.cameras.items():
                k = _node(name)
                fs.write(f"{k}_image_size", np.array([[cam.width, cam.height]], dtype=np.float64))
                fs.write(f"{k}_pixel_spacing", np.array([cam.pixel_spacing], dtype=np.float64))
                fs.write(f"{k}_camera_matrix", cam.K)
                fs.write(f"{k}_dist_coeffs", np.zeros((1, 5)))
                fs.write(f"{k}_R", cam.R)
                fs.write(f"{k}_t", cam.t.reshape(3, 1))
                fs.write(f"{k}_P", cam.P)
            if len(names) >= 2:
                c1, c2 = rig[names[0]], rig[names[1]]
                R = c2.R @ c1.R.T
                T = c2.t - R @ c1.t
                fs.write("R", R)
                fs.write("T", T.reshape(3, 1))
                fs.write("E", skew(T) @ R)
                fs.write("F", fundamental_from_cameras(c1, c2))
        finally:
            fs.release()
    return Path(path)


def load_opencv_yaml(path: str | os.PathLike[str]) -> StereoRig:
    """Read a rig written by :func:`save_opencv_yaml` (K, R, t, detector size and pitch per view)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"OpenCV YAML {str(p)!r} does not exist")
    fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_READ)
    try:
        node = fs.getNode("views")
        if node.empty():
            raise ValueError(f"{p}: missing node 'views' (not written by stereodrr?)")
        cams = {}
        for name in node.string().split(","):
            k = _node(name)
            mats = {m: fs.getNode(f"{k}_{m}").mat() for m in ("image_size", "pixel_spacing", "camera_matrix", "R", "t")}
            absent = [m for m, v in mats.items() if v is None]
            if absent:
                raise ValueError(f"{p}: view {name!r} lacks node(s) {[f'{k}_{m}' for m in absent]}")
            w, h = mats["image_size"].ravel()
            cams[name] = Camera(K=mats["camera_matrix"], R=mats["R"], t=mats["t"].ravel(), width=int(w),
                                height=int(h), pixel_spacing=(float(mats["pixel_spacing"].ravel()[0]),
                                                                       float(mats["pixel_spacing"].ravel()[1])))
    finally:
        fs.release()
    return StereoRig(cams, rig_isocenter(cams))


def export_calibration(rig: StereoRig, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``rig.json``, ``dlt_coefficients.csv`` (11 x n, XMALab/DLTdv), ``opencv.yaml`` and
    one ``mayacam_<view>.txt`` per view into ``out_dir``; returns the paths by kind."""
    out = Path(out_dir)
    paths = {"rig": out / "rig.json", "dlt": out / "dlt_coefficients.csv", "yaml": out / "opencv.yaml"}
    save_rig(rig, paths["rig"])
    save_dlt_csv(rig, paths["dlt"])
    save_opencv_yaml(rig, paths["yaml"])
    for name, cam in rig.cameras.items():
        paths[f"mayacam_{name}"] = save_mayacam(cam, out / f"mayacam_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.txt")
    return paths

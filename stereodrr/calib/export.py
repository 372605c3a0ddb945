"""Export a calibrated rig: ``rig.json`` (stereodrr), XMALab/DLTdv DLT CSV, OpenCV-style YAML,
MayaCam 2.0 camera files (Autoscoper/XMALab), and per-view 2D point tables.

MayaCam files are :mod:`stereodrr.interop.mayacam`'s (as XMALab writes them, plain OpenCV K, R, t).

The YAML (``cv2.FileStorage``) holds ``views``, the view names comma-separated (a one-view rig's
name followed by a comma: OpenCV reads a lone ``true`` or ``null`` back as a number or nothing);
per view ``<name>``: ``<name>_image_size`` (W, H),
``<name>_pixel_spacing`` (mm), ``<name>_camera_matrix`` K, ``<name>_dist_coeffs`` (zeros: a
flat-panel detector has no lens distortion), ``<name>_R``, ``<name>_t``, ``<name>_P``,
``<name>_sdd`` (mm); and for the first two views the ``cv2.stereoCalibrate`` quantities ``R``, ``T`` (view 2 relative to view 1,
``x_2 = R x_1 + T``), ``E = [T]_x R`` and ``F`` (``x2^T F x1 = 0``); ``isocenter`` (3x1, world
mm) is the rig's.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import cv2
import numpy as np
import pandas as pd

from ..fileio import atomic_path
from ..geometry import Camera, StereoRig, dlt_pixel_flip, fundamental_from_cameras, save_dlt_csv, save_rig, skew
from ..interop.mayacam import save_mayacam
from .dlt import rig_isocenter

if TYPE_CHECKING:
    from ..distortion import DistortionMap

__all__ = ["EXPORTERS", "save_opencv_yaml", "load_opencv_yaml", "export_calibration", "check_view_names", "points_table",
           "save_points_csv"]


def points_table(table: pd.DataFrame, height: int) -> pd.DataFrame:
    """A view's identified balls for export: ``marker_id, u, v`` (OpenCV pixels: 0-based, v
    down; calibrated through an intensifier's map, the corrected pixels), ``residual_px`` (to
    the marker re-projected by the identification's fit of that view,
    :func:`stereodrr.calib.identify.identify_markers`) and XMALab's 1-based, y-up pixel
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
    """A FileStorage node name (ASCII letters, digits, underscore; not starting with a digit)."""
    key = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return key if re.match(r"[A-Za-z_]", key) else f"v_{key}"


def check_view_names(names: list[str]) -> None:
    """Refuse view names the exported files cannot keep apart: a comma (the YAML's ``views``
    list), or two views that map to one YAML node or file name (``"cam 1"`` and ``"cam-1"``).

    Raises:
        ValueError: naming the views.
    """
    if any("," in n for n in names):
        raise ValueError(f"view names: expected no commas (the YAML lists the views comma-separated), got {names}")
    for what, key in (("OpenCV YAML node", _node), ("file name", _file_name)):
        seen: dict[str, str] = {}
        for n in names:
            if key(n) in seen:
                raise ValueError(f"view names {seen[key(n)]!r} and {n!r} give one {what} {key(n)!r}: rename a view")
            seen[key(n)] = n


def save_opencv_yaml(rig: StereoRig, path: str | os.PathLike[str]) -> Path:
    """Write the rig as OpenCV-style YAML (see the module docstring); returns the path.

    Raises:
        ValueError: view names it cannot keep apart (:func:`check_view_names`).
    """
    names = rig.names
    check_view_names(names)
    with atomic_path(path) as tmp:
        fs = cv2.FileStorage(str(tmp), cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_FORMAT_YAML)
        try:
            fs.write("views", ",".join(names) + ("," if len(names) == 1 else ""))
            fs.write("isocenter", rig.isocenter.reshape(3, 1))
            for name, cam in rig.cameras.items():
                k = _node(name)
                fs.write(f"{k}_image_size", np.array([[cam.width, cam.height]], dtype=np.float64))
                fs.write(f"{k}_pixel_spacing", np.array([cam.pixel_spacing], dtype=np.float64))
                fs.write(f"{k}_camera_matrix", cam.K)
                fs.write(f"{k}_dist_coeffs", np.zeros((1, 5)))
                fs.write(f"{k}_R", cam.R)
                fs.write(f"{k}_t", cam.t.reshape(3, 1))
                fs.write(f"{k}_P", cam.P)
                fs.write(f"{k}_sdd", cam.sdd)
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
    """Read a rig written by :func:`save_opencv_yaml` (K, R, t, detector size and pitch per view,
    the isocenter; a file without one gets the point nearest the principal rays)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"OpenCV YAML {str(p)!r} does not exist")
    fs = cv2.FileStorage(str(p), cv2.FILE_STORAGE_READ)
    try:
        node = fs.getNode("views")
        if node.empty():
            raise ValueError(f"{p}: missing node 'views' (not written by stereodrr?)")
        cams = {}
        listed = node.string().split(",")
        for name in listed[:-1] if len(listed) == 2 and listed[1] == "" else listed:
            k = _node(name)
            mats = {m: fs.getNode(f"{k}_{m}").mat() for m in ("image_size", "pixel_spacing", "camera_matrix", "R", "t")}
            absent = [m for m, v in mats.items() if v is None]
            if absent:
                raise ValueError(f"{p}: view {name!r} lacks node(s) {[f'{k}_{m}' for m in absent]}")
            w, h = mats["image_size"].ravel()
            sdd = fs.getNode(f"{k}_sdd")  # absent from older files: fx * du, Camera's default
            cams[name] = Camera(K=mats["camera_matrix"], R=mats["R"], t=mats["t"].ravel(), width=int(w),
                                height=int(h), pixel_spacing=(float(mats["pixel_spacing"].ravel()[0]),
                                                                       float(mats["pixel_spacing"].ravel()[1])),
                                sdd=float("nan") if sdd.empty() else sdd.real())
        # The rays' nearest point may lie behind a view (parallel or diverging rays): the
        # written isocenter is the one the rig was built around.
        iso = fs.getNode("isocenter").mat()
    finally:
        fs.release()
    return StereoRig(cams, rig_isocenter(cams) if iso is None else iso.ravel())


def _export_dlt(rig: StereoRig, out: Path) -> dict[str, Path]:
    path = out / "dlt_coefficients.csv"
    save_dlt_csv(rig, path)
    return {"dlt": path}


def _export_mayacam(rig: StereoRig, out: Path) -> dict[str, Path]:
    """One ``mayacam_<view>.txt`` per view; a view with a skew MayaCam cannot hold gets none (a
    warning names it)."""
    paths = {}
    for name, cam in rig.cameras.items():
        try:
            paths[f"mayacam_{name}"] = save_mayacam(cam, out / f"mayacam_{_file_name(name)}.txt")
        except ValueError as exc:
            warnings.warn(f"view {name!r}: no MayaCam file: {exc}", stacklevel=3)
    return paths


#: The calibrated rig's file formats: name -> ``write(rig, folder) -> {kind: path}``, written in
#: this order by :func:`export_calibration`. Add a format by adding its writer here.
EXPORTERS: dict[str, Callable[[StereoRig, Path], dict[str, Path]]] = {
    "rig": lambda rig, out: {"rig": save_rig(rig, out / "rig.json")},
    "dlt": _export_dlt,
    "yaml": lambda rig, out: {"yaml": save_opencv_yaml(rig, out / "opencv.yaml")},
    "mayacam": _export_mayacam,
}


def _file_name(view: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", view)


def export_calibration(rig: StereoRig, out_dir: str | os.PathLike[str],
                       distortion: Mapping[str, DistortionMap] | None = None) -> dict[str, Path]:
    """Write every format of :data:`EXPORTERS` into ``out_dir`` (``rig.json``,
    ``dlt_coefficients.csv`` (11 x n, XMALab/DLTdv), ``opencv.yaml``, one ``mayacam_<view>.txt``
    (MayaCam 2.0) per view); returns the paths by kind.

    ``distortion``: the image intensifiers' maps the rig was calibrated through (recorded ->
    ideal pixels, per view). The rig's formats describe the ideal pinhole cameras, so a frame
    must be corrected by its view's map before they apply: each map is written beside them as
    ``distortion_<view>.json`` (kind ``distortion_<view>``), the file ``--distortion`` of
    ``stereodrr beads|track|calibrate|undistort`` reads, as XMALab keeps undistortion per camera;
    a view without a map loses the ``distortion_<view>.json`` an earlier export left there.

    Raises:
        ValueError: a map for a view the rig does not have, or for another image size; view
            names the files cannot keep apart (:func:`check_view_names`); a format that cannot
            hold the rig. Nothing in ``out_dir`` changes unless every file was written.
    """
    from ..distortion import check_maps, save_distortion

    check_maps(distortion, rig)
    check_view_names(rig.names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Every file is written into a staging folder first: an exporter that refuses the rig (a
    # DLT whose world origin lies in a view's principal plane) leaves out_dir as it was.
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as tmp:
        staged: dict[str, Path] = {}
        for write in EXPORTERS.values():
            staged.update(write(rig, Path(tmp)))
        for name, m in (distortion or {}).items():
            staged[f"distortion_{name}"] = save_distortion(m, Path(tmp) / f"distortion_{_file_name(name)}.json")
        paths = {kind: out / p.name for kind, p in staged.items()}
        for kind, p in staged.items():
            os.replace(p, paths[kind])
    # A map an earlier export left for a view this rig was calibrated without no longer belongs to it.
    for name in rig.names:
        if name not in (distortion or {}):
            (out / f"distortion_{_file_name(name)}.json").unlink(missing_ok=True)
    return paths

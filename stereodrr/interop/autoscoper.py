"""Autoscoper's files: trial configurations (``.cfg``), frame folders, TIFF volumes placed as
Autoscoper places them, and tracking results (``.tra``).

**Trial file** (``libautoscoper/src/Trial.cpp``, ``Trial::parse``): one ``Key value`` per line,
blank lines and ``#`` lines skipped, unknown keys ignored; each key collects a list in order of
appearance:

- ``Version M.m`` (absent: 1.0; in 1.1 and later 1.x, relative paths are relative to the file's
  folder; ``MeshFile`` lines are loaded from 1.2 on);
- ``mayaCam_csv PATH`` (one per camera; MayaCam 2.0 or 1.0, or a VTK camera ``.json``),
  ``CameraRootDir DIR`` (one per camera); these and ``VolumeFile`` paths may use backslashes (a
  trial saved on Windows): they are read with slashes, as Autoscoper does;
- ``VolumeFile PATH``, ``VoxelSize sx sy sz`` (mm, one per volume), ``VolumeFlip fx fy fz``
  (0/1, the i-th line applies to the i-th volume; missing lines, missing numbers and a line with no
  value mean no flip);
- ``RenderResolution W H`` (the last one wins; default 512 512),
  ``OptimizationOffsets`` (six numbers, the last one wins; default 0.1 each), ``MeshFile PATH``.

**Frames** (``Video.cpp``): the files of a camera folder whose name does not start with ``.`` and
whose extension (the whole name if it has no ``.``) starts with ``tif`` (case-sensitive), sorted
by name; frame ``i`` is the i-th
file of every camera.

**Volume placement** (``Volume.cpp``, ``VolumeDescription.cpp``, ``RayCaster.cl``): a TIFF stack
of ``D`` pages of ``H`` rows by ``W`` columns, flipped first as ``VolumeFlip`` says (x reverses
columns, y rows, z pages), puts voxel (column ``i``, row ``j``, page ``k``) at the object-frame
point ``(sx (i + 1/2), sy (H - 1/2 - j), -sz (k + 1/2))`` mm: x along the columns, y up the rows,
z against the pages. :func:`load_autoscoper_volume` returns a :class:`~stereodrr.volume.Volume`
whose world frame *is* that object frame (``direction = diag(1, -1, -1)``), so a pose Autoscoper
tracks is this volume's CT -> world matrix.

**Tracking results** (``AutoscoperMainWindow::save_tracking_results`` / ``load_tracking_results``):
one line per frame of the trial; per volume 16 numbers (the 4x4 CT -> world matrix, row by row,
translation in mm; the default "matrix, rows, commas, mm" of the export dialog; a "Column" export,
the matrix column by column, is told by its last four numbers and read too) or 6
(``x, y, z, yaw, pitch, roll``: translation and the intrinsic Z-Y-X angles in degrees,
``R = Rz(yaw) Ry(pitch) Rx(roll)``); an untracked frame is all ``NaN``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ..fileio import atomic_write_text, check_input_file, open_tiff
from ..geometry import euler_to_matrix
from ..volume import Volume
from .mayacam import _euler_zyx

__all__ = ["AutoscoperVolumeEntry", "AutoscoperTrialFile", "read_trial_file", "write_trial_file", "frame_files",
           "load_autoscoper_volume", "read_tiff_stack", "save_tra", "load_tra", "xyzypr_to_matrix", "matrix_to_xyzypr"]


@dataclass(frozen=True)
class AutoscoperVolumeEntry:
    """One ``VolumeFile`` of a trial file with its voxel size (mm, x y z) and flips."""

    path: Path
    voxel_size: tuple[float, float, float]
    flip: tuple[bool, bool, bool] = (False, False, False)


@dataclass
class AutoscoperTrialFile:
    """A trial file's content, paths resolved (:func:`read_trial_file`)."""

    cameras: list[Path]
    camera_dirs: list[Path]
    volumes: list[AutoscoperVolumeEntry]
    version: tuple[int, int] = (1, 1)
    render_resolution: tuple[int, int] = (512, 512)
    optimization_offsets: tuple[float, ...] = (0.1,) * 6
    meshes: list[Path] = field(default_factory=list)
    source: Path | None = None


def _numbers(src: str, key: str, value: str, n: int, kind: type = float) -> list:
    parts = value.split()
    try:
        out = [kind(float(p)) if kind is int else float(p) for p in parts[:n]]
    except ValueError:
        out = []
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{src}: {key}: expected {n} numbers, got {value.strip()!r}")
    return out


def _unix_slashes(path: str) -> str:
    """``Trial::convertToUnixSlashes``: a trial saved on Windows names its files with
    backslashes; ``//`` made ``/`` scanning forward, a trailing slash dropped."""
    path = path.replace("\\", "/")
    pos = path.find("//")
    while pos != -1:
        path = path[:pos] + "/" + path[pos + 2:]
        pos = path.find("//", pos + 1)
    return path[:-1] if len(path) > 1 and path.endswith("/") and not (len(path) == 3 and path[1] == ":") else path


def _resolve(path: str, base: Path, version: tuple[int, int]) -> Path:
    p = Path(path.strip())
    if p.is_absolute():
        return p
    if version[0] == 1 and version[1] >= 1:  # Autoscoper resolves against the file from 1.1 on, 1.x only
        return base / p
    # Version 1.0 (and any other) leaves relative paths to Autoscoper's working directory; a file
    # moved with its data is more likely beside the trial file, so that is the fallback.
    return p if p.exists() or not (base / p).exists() else base / p


def _trial_lines(p: Path) -> dict[str, list[str]]:
    """The values of each key Trial.cpp reads, line by line as it reads them (the key up to the
    first space); lines it cannot read (a key after blanks or a tab) are counted in a warning."""
    src = str(p)
    lists: dict[str, list[str]] = {k: [] for k in ("mayaCam_csv", "CameraRootDir", "VolumeFile", "VoxelSize",
                                                   "VolumeFlip", "RenderResolution", "OptimizationOffsets",
                                                   "MeshFile", "Version")}
    unread = 0  # lines whose key follows blanks or a tab: Trial.cpp's key (up to the first space) misses it
    for raw in p.read_text(encoding="utf-8-sig", errors="replace").splitlines():
        line = raw.rstrip("\r")
        if not line or line[0] == "#":
            continue
        key, _, value = line.partition(" ")
        if key in lists:  # Trial::parse gives these three (not MeshFile) unix slashes as it reads them
            lists[key].append(_unix_slashes(value) if key in ("mayaCam_csv", "CameraRootDir", "VolumeFile") else value)
        elif line.split() and line.split()[0] in lists:
            unread += 1
    if unread:
        warnings.warn(f"{src}: {unread} line(s) start with blanks or separate their key by a tab; Autoscoper "
                      "reads neither, nor does this reader: start each line with its key and one space", stacklevel=3)
    return lists


def read_trial_file(path: str | os.PathLike[str], volumes: bool = True) -> AutoscoperTrialFile:
    """Parse an Autoscoper trial file (module docstring) the way ``Trial.cpp`` does, with its
    checks: at least one camera, as many camera folders as cameras, at least one volume, a voxel
    size per volume, no mesh or one per volume. ``volumes=False`` reads only the cameras and
    their folders (what bead tracking needs): the volume lines are neither required nor read.

    Raises:
        FileNotFoundError: no such file. ValueError: a check fails or a number is malformed (the
            message names the key and the file).
    """
    p = check_input_file(path, "trial file")
    src = str(p)
    lists = _trial_lines(p)
    version = (1, 0)
    if lists["Version"]:
        parts = (lists["Version"][-1].strip().split(".") + ["0"])[:2]
        try:
            version = (int(parts[0]), int(parts[1]))
        except ValueError:
            raise ValueError(f"{src}: Version: expected M.m, got {lists['Version'][-1]!r}") from None
    cams, dirs, vols, sizes = (lists[k] for k in ("mayaCam_csv", "CameraRootDir", "VolumeFile", "VoxelSize"))
    if not cams:
        raise ValueError(f"{src}: expected at least one mayaCam_csv line (a camera)")
    if len(cams) != len(dirs):
        raise ValueError(f"{src}: expected one CameraRootDir per camera, got {len(cams)} mayaCam_csv and "
                         f"{len(dirs)} CameraRootDir lines")
    if not volumes:
        vols, sizes = [], []
    elif not vols:
        raise ValueError(f"{src}: expected at least one VolumeFile line")
    if len(vols) != len(sizes):
        raise ValueError(f"{src}: expected one VoxelSize per volume, got {len(vols)} VolumeFile and {len(sizes)} "
                         "VoxelSize lines")
    meshes = lists["MeshFile"] if volumes else []
    if meshes and len(meshes) != len(vols):
        raise ValueError(f"{src}: expected a MeshFile for every volume or none, got {len(meshes)} for {len(vols)}")
    base = p.parent
    entries = []
    for i, (v, s) in enumerate(zip(vols, sizes)):
        size = _numbers(src, f"VoxelSize (volume {i})", s, 3)
        if min(size) <= 0:
            raise ValueError(f"{src}: VoxelSize (volume {i}): expected positive sizes in mm, got {s.strip()!r}")
        flip = [0, 0, 0]
        if i < len(lists["VolumeFlip"]):
            # Trial.cpp streams three ints into zeros: "VolumeFlip 1" flips x alone, and a
            # "VolumeFlip" line with no value (an empty stream) flips nothing
            given = lists["VolumeFlip"][i]
            n_given = min(len(given.split()), 3)
            if n_given:
                flip[:n_given] = _numbers(src, f"VolumeFlip (volume {i})", given, n_given, int)
        entries.append(AutoscoperVolumeEntry(_resolve(v, base, version), (size[0], size[1], size[2]),
                                             (bool(flip[0]), bool(flip[1]), bool(flip[2]))))
    res = (512, 512)
    if lists["RenderResolution"]:
        w, h = _numbers(src, "RenderResolution", lists["RenderResolution"][-1], 2, int)
        res = (w, h)
    offsets: tuple[float, ...] = (0.1,) * 6
    if lists["OptimizationOffsets"]:
        offsets = tuple(_numbers(src, "OptimizationOffsets", lists["OptimizationOffsets"][-1], 6))
    return AutoscoperTrialFile(
        cameras=[_resolve(c, base, version) for c in cams], camera_dirs=[_resolve(d, base, version) for d in dirs],
        volumes=entries, version=version, render_resolution=res, optimization_offsets=offsets,
        meshes=[_resolve(m, base, version) for m in meshes], source=p)


def _relative(path: Path, base: Path) -> str:
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
    except ValueError:  # another drive (Windows): no relative path leads there
        rel = os.path.abspath(path)
    return rel.replace(os.sep, "/")


def write_trial_file(trial: AutoscoperTrialFile, path: str | os.PathLike[str]) -> Path:
    """Write a trial file as ``Trial::save`` does: ``Version 1.1``, paths relative to the file,
    each volume's ``VolumeFile``, ``VolumeFlip``, ``VoxelSize``, then the render resolution and
    the optimisation offsets (12 significant digits). With meshes, ``Version 1.2`` and their
    ``MeshFile`` lines (Autoscoper loads meshes only from 1.2 on)."""
    base = Path(path).parent
    lines = ["Version 1.2" if trial.meshes else "Version 1.1"]
    lines += [f"mayaCam_csv {_relative(c, base)}" for c in trial.cameras]
    lines += [f"CameraRootDir {_relative(d, base)}" for d in trial.camera_dirs]
    for v in trial.volumes:
        lines += [f"VolumeFile {_relative(v.path, base)}", "VolumeFlip " + " ".join(str(int(f)) for f in v.flip),
                  "VoxelSize " + " ".join(f"{s:.12g}" for s in v.voxel_size)]
    lines += [f"MeshFile {_relative(m, base)}" for m in trial.meshes]
    lines.append(f"RenderResolution {trial.render_resolution[0]} {trial.render_resolution[1]}")
    lines.append("OptimizationOffsets " + " ".join(f"{o:.12g}" for o in trial.optimization_offsets))
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """A camera folder's frames as Autoscoper finds them (module docstring).

    Raises:
        FileNotFoundError: no such folder. ValueError: not a folder, or no TIFF frame in it.
    """
    d = Path(folder)
    if not d.exists():
        raise FileNotFoundError(f"camera folder {str(d)!r} does not exist")
    if not d.is_dir():
        raise ValueError(f"camera folder {str(d)!r} is not a folder")
    # Video.cpp: the text after the last '.' (the whole name when there is none) starts with "tif".
    # Sorted by the names' bytes, as Video.cpp sorts them (Path order is case-blind on Windows).
    files = sorted((f for f in d.iterdir() if not f.name.startswith(".")
                    and f.name.rsplit(".", 1)[-1].startswith("tif") and f.is_file()), key=lambda f: os.fsencode(f.name))
    if not files:
        raise ValueError(f"camera folder {str(d)!r} holds no TIFF frame (*.tif, *.tiff)")
    return files


def read_tiff_stack(path: str | os.PathLike[str]) -> np.ndarray:
    """The pages of a TIFF as a ``(pages, rows, columns)`` array (one page: ``(1, H, W)``), each
    page in its stored row order (Autoscoper ignores the orientation tag too).

    Raises:
        FileNotFoundError: no such file. ValueError: not a readable TIFF, pages of different sizes
            or types, or not one sample per pixel.
    """
    import tifffile

    p = check_input_file(path, "TIFF file")
    try:
        with open_tiff(p) as tif:
            pages = tif.pages
            if len(pages) == 0:
                raise ValueError(f"{p}: the TIFF holds no page")
            first = pages[0]
            shape, dtype = first.shape, first.dtype
            if len(shape) != 2:
                raise ValueError(f"{p}: expected single-channel pages, got page shape {shape}")
            arrays = []
            for i, page in enumerate(pages):
                if page.shape != shape or page.dtype != dtype:
                    raise ValueError(f"{p}: page {i} is {page.shape} {page.dtype}, page 0 is {shape} {dtype}: "
                                     "expected uniform pages")
                arrays.append(page.asarray())
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(p)):
            raise
        raise ValueError(f"{p}: cannot read as a TIFF ({exc})") from None
    return np.stack(arrays)


def load_autoscoper_volume(path: str | os.PathLike[str], voxel_size: Sequence[float],
                           flip: Sequence[bool] = (False, False, False)) -> Volume:
    """A TIFF volume placed in Autoscoper's object frame (module docstring), values as stored
    (bone-masked intensities, not HU).

    Raises:
        FileNotFoundError: no such file. ValueError: not a TIFF stack of unsigned 8/16-bit pages
            (what Autoscoper accepts), or a voxel size that is not three positive numbers.
    """
    size = np.asarray(voxel_size, dtype=np.float64)
    if size.shape != (3,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise ValueError(f"voxel_size: expected three positive sizes in mm (x y z), got {list(voxel_size)}")
    data = read_tiff_stack(path)
    if data.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: expected unsigned 8- or 16-bit voxels (as Autoscoper), got {data.dtype}")
    fx, fy, fz = (bool(f) for f in flip)
    data = data[::-1 if fz else 1, ::-1 if fy else 1, ::-1 if fx else 1]
    depth, height, _ = data.shape
    origin = np.array([0.5 * size[0], size[1] * (height - 0.5), -0.5 * size[2]])
    return Volume.from_numpy(data.astype(np.float32), spacing=size, origin=origin,
                             direction=np.diag([1.0, -1.0, -1.0]))


# ---------------------------------------------------------------------------------------- .tra
def xyzypr_to_matrix(xyzypr: Sequence[float] | np.ndarray) -> np.ndarray:
    """``4x4`` from Autoscoper's ``x, y, z, yaw, pitch, roll`` (``CoordFrame::from_xyzypr``:
    ``R = Rz(yaw) Ry(pitch) Rx(roll)``, degrees)."""
    x, y, z, yaw, pitch, roll = (float(v) for v in xyzypr)
    M = np.eye(4)
    M[:3, :3] = euler_to_matrix(np.radians([yaw, pitch, roll]), "ZYX")
    M[:3, 3] = (x, y, z)
    return M


def matrix_to_xyzypr(M: np.ndarray) -> np.ndarray:
    """Inverse of :func:`xyzypr_to_matrix` (``CoordFrame::to_xyzypr``; pitch in [-90, 90]; at
    pitch +-90, yaw and roll that rebuild the matrix, which ``to_xyzypr`` does not guarantee)."""
    return np.array([*np.asarray(M)[:3, 3], *_euler_zyx(np.asarray(M, dtype=np.float64)[:3, :3])])


TraLayout = Literal["matrix", "xyzypr"]


def save_tra(poses: np.ndarray, path: str | os.PathLike[str], layout: TraLayout = "matrix",
             separator: Literal[",", " "] = ",") -> Path:
    """Write a ``.tra`` (module docstring) as Autoscoper's export does.

    Args:
        poses: ``(F, 4, 4)`` for one volume or ``(F, V, 4, 4)``: CT -> world per frame, all-NaN
            for an untracked frame.
        layout: ``"matrix"`` (16 numbers, row by row) or ``"xyzypr"`` (6).

    Raises:
        ValueError: a wrong shape, or a frame that is partly NaN or not a rigid transform.
    """
    P = np.asarray(poses, dtype=np.float64)
    if P.ndim == 3:
        P = P[:, None]
    if P.ndim != 4 or P.shape[2:] != (4, 4) or P.shape[0] < 1:
        raise ValueError(f"poses: expected (frames, 4, 4) or (frames, volumes, 4, 4), got {np.shape(poses)}")
    rows = []
    for f in range(P.shape[0]):
        cells = []
        for v in range(P.shape[1]):
            M = P[f, v]
            n = 16 if layout == "matrix" else 6
            if np.isnan(M).all():
                cells += ["NaN"] * n
                continue
            if not np.all(np.isfinite(M)) or np.abs(M[:3, :3] @ M[:3, :3].T - np.eye(3)).max() > 1e-6 \
                    or np.abs(M[3] - (0, 0, 0, 1)).max() > 1e-12 or np.linalg.det(M[:3, :3]) < 0:
                raise ValueError(f"poses[{f}, {v}]: expected a rigid 4x4 transform or all NaN")
            values = M.ravel() if layout == "matrix" else matrix_to_xyzypr(M)
            cells += [f"{x:.16f}" for x in values]
        rows.append(separator.join(cells))
    atomic_write_text(path, "\n".join(rows) + "\n")
    return Path(path)


def load_tra(path: str | os.PathLike[str], n_volumes: int = 1, layout: TraLayout | None = None) -> np.ndarray:
    """Read a ``.tra``: ``(F, n_volumes, 4, 4)``, NaN for untracked frames.

    The separator (comma or blanks) and the layout (16 or 6 numbers per volume) are read off the
    file unless ``layout`` is given, and so is the orientation of the 16 numbers: row by row (the
    export dialog's default: the last four are ``0 0 0 1``) or column by column (Autoscoper's
    "Column" option: the translation comes last), which is read transposed back (a file whose
    every translation is 0 cannot tell them apart and is read row by row). Autoscoper's
    other export options (cm, radians) leave no mark in the file: convert such files with the
    tool that wrote them.

    Raises:
        FileNotFoundError: no such file. ValueError: lines of another length, non-numbers, or
            16 numbers that are a rigid transform's neither row by row nor column by column.
    """
    p = check_input_file(path, "tracking file")
    frames: list[list[np.ndarray]] = []
    matrices: list[tuple[int, int]] = []  # (frame, volume) of the cells read as 16 numbers
    for n, raw in enumerate(p.read_text(encoding="utf-8-sig", errors="replace").splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        parts = [s for s in line.replace(",", " ").split()]
        per = {"matrix": 16, "xyzypr": 6, None: None}[layout]
        if per is None:
            per = 16 if len(parts) == 16 * n_volumes else 6 if len(parts) == 6 * n_volumes else 0
        if not per or len(parts) != per * n_volumes:
            raise ValueError(f"{p}:{n}: expected {16 * n_volumes} (matrix) or {6 * n_volumes} (xyzypr) numbers for "
                             f"{n_volumes} volume(s), got {len(parts)}")
        try:
            values = np.array([float(s) for s in parts])
        except ValueError:
            raise ValueError(f"{p}:{n}: expected numbers or NaN, got {line[:80]!r}") from None
        poses = []
        for v in range(n_volumes):
            cell = values[v * per:(v + 1) * per]
            if np.isnan(cell).any():
                poses.append(np.full((4, 4), np.nan))
            else:
                poses.append(cell.reshape(4, 4) if per == 16 else xyzypr_to_matrix(cell))
                if per == 16:
                    matrices.append((len(frames), v))
        frames.append(poses)
    if not frames:
        raise ValueError(f"{p}: the file holds no frame")
    out = np.asarray(frames)
    if matrices:
        # AutoscoperMainWindow::save_tracking_results writes CoordFrame::to_matrix (column-major)
        # reordered row by row, or as it is with "Column": then the translation is the last row.
        index = tuple(np.array(matrices).T)
        M = out[index]
        last = np.array([0.0, 0.0, 0.0, 1.0])
        if np.abs(M[:, 3] - last).max() > 1e-9:
            if np.abs(M[:, :, 3] - last).max() > 1e-9:
                raise ValueError(f"{p}: expected 16 numbers per volume forming a 4x4 transform row by row (numbers "
                                 "13-16 are 0 0 0 1) or column by column (numbers 4, 8, 12, 16 are 0 0 0 1)")
            out[index] = M.transpose(0, 2, 1)
    return out

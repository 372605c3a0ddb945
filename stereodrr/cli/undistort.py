"""``stereodrr undistort``: correct images or point tables with a measured distortion map.

``--images``: each image corrected (every ideal pixel the average of the recorded image over the
pre-image of its area) and written under the output folder with its own name, format and dtype
(integers rounded and clipped to their range). ``--points``: a CSV with columns ``u, v``
(recorded pixels, centres at integers) becomes one with ``u_distorted, v_distorted, u_corrected,
v_corrected`` (other columns kept in front; empty ``u, v`` stay empty).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from ..distortion import DistortionMap, load_distortion
from ..fileio import atomic_path, check_input_file, open_tiff
from ..trial import read_frame, read_page_sizes
from ._args import UsageError, input_file, output_file, output_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("undistort", help="correct images or a point table with a distortion map",
                       description="Apply a distortion map (distortion.json from `stereodrr distortion`) to images "
                                   "(area-preserving resampling, same format and dtype) or to a CSV of points "
                                   "(columns u, v).")
    p.add_argument("--distortion", required=True, metavar="MAP",
                   help="distortion.json, or the folder `stereodrr distortion` wrote it into")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", nargs="+", metavar="IMAGE", help="recorded images (TIFF, PNG, JPEG, BMP) of the map's size")
    what.add_argument("--points", metavar="CSV", help="a CSV with columns u, v (recorded pixels)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder for --images, output CSV file for --points")
    p.set_defaults(func=run)


_WRITABLE = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")  # formats written as read (tifffile, OpenCV)


def _map(path: str) -> DistortionMap:
    p = Path(path)
    if p.is_dir():
        p = p / "distortion.json"
    return load_distortion(input_file(p, "--distortion", "distortion map"))


def _undistort_stack(src: Path, dst: Path, dmap: DistortionMap) -> int:
    """Every page of a TIFF stack corrected into a stack of the same dtype, page by page (a
    trial's stack need not fit in memory), atomically; the pages written."""
    import tifffile

    with open_tiff(src) as tif, atomic_path(dst) as tmp, tifffile.TiffWriter(tmp) as out:
        for page in tqdm(tif.pages, desc=src.name, unit="page", disable=len(tif.pages) < 2):
            a = page.asarray()
            out.write(dmap.correct_frame(a), contiguous=True)
        return len(tif.pages)


def _write_frame(path: Path, data: np.ndarray) -> None:
    """Write a PNG or JPEG frame (OpenCV, the format of the suffix), atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), data):
            raise ValueError(f"{path}: OpenCV cannot write a {data.dtype} image in this format")


def run(args: argparse.Namespace) -> int:
    return _images(args) if args.images else _points(args)


def _images(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = output_folder(args.output)
    dmap = _map(args.distortion)
    paths = [check_input_file(p, "--images") for p in args.images]
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise UsageError("--images: two images share a file name; they would overwrite each other in the output folder")
    for p in paths:
        if p.suffix.lower() not in _WRITABLE:
            raise UsageError(f"--images {p}: undistort writes each image in its own format, one of "
                             f"{', '.join(_WRITABLE)}; convert it to TIFF first (nothing written)")
        if (out / p.name).resolve() == p.resolve():
            raise UsageError(f"--images {p}: the output would overwrite the input; choose another -o folder")
        for k, (w, h) in enumerate(read_page_sizes(p)):
            if (w, h) != (dmap.width, dmap.height):
                page = f" page {k}" if k else ""
                raise ValueError(f"--images {p}{page}: {w} x {h} pixels, but the distortion map "
                                 f"{args.distortion} is for {dmap.width} x {dmap.height} images")
    out.mkdir(parents=True, exist_ok=True)
    frames = 0
    for p in paths:
        if p.suffix.lower() in (".tif", ".tiff"):  # a stack: every page
            frames += _undistort_stack(p, out / p.name, dmap)
        else:
            image = read_frame(p)
            _write_frame(out / p.name, dmap.correct_frame(image))
            frames += 1
    print(f"wrote {len(paths)} corrected image(s), {frames} frame(s), to {out} ({dmap.model} map, "
          f"{time.perf_counter() - t0:.1f} s)")
    return 0


def _points(args: argparse.Namespace) -> int:
    out_csv = output_file(args.output)
    dmap = _map(args.distortion)
    src = check_input_file(args.points, "--points")
    if Path(out_csv).resolve() == src.resolve():
        raise UsageError(f"--points {src}: -o would overwrite the input; choose another output file")
    try:  # as text: the other columns go out as they came in (IDs with leading zeros, any precision)
        table = pd.read_csv(src, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"--points {src}: not a CSV table ({' '.join(str(exc).split())})") from None
    missing = [c for c in ("u", "v") if c not in table.columns]
    if missing:
        raise ValueError(f"--points {src}: expected columns u, v (recorded pixels), missing {', '.join(missing)}; "
                         f"found {', '.join(map(repr, table.columns)) or 'none'}")
    new = ["u_distorted", "v_distorted", "u_corrected", "v_corrected"]
    taken = [c for c in new if c in table.columns]
    if taken:
        raise ValueError(f"--points {src}: already has column(s) {', '.join(taken)}, which the output would "
                         "replace; rename them")
    try:
        q = table[["u", "v"]].replace(r"^\s*$", "nan", regex=True).to_numpy().astype(np.float64)
    except ValueError:
        raise ValueError(f"--points {src}: columns u, v must hold numbers") from None
    p = dmap.undistort_points(q)
    # An empty (or NaN) cell is a point not recorded and stays empty; a point given but not
    # corrected (inf, or so far outside that the map overflows) would be written empty as well.
    recorded = ~np.isnan(q).any(axis=1)
    lost = np.flatnonzero(recorded & ~np.isfinite(p).all(axis=1))
    if len(lost):
        k = lost[0]
        raise ValueError(f"--points {src}: row {k + 1}: u {q[k, 0]:g}, v {q[k, 1]:g} cannot be corrected (expected "
                         f"finite pixels near the map's {dmap.width} x {dmap.height} image; leave u, v empty for a "
                         f"point not recorded); {len(lost)} such row(s), nothing written")
    outside = np.flatnonzero(recorded & ((q < -0.5) | (q > [dmap.width - 0.5, dmap.height - 0.5])).any(axis=1))
    if len(outside):
        warnings.warn(f"--points {src}: {len(outside)} point(s) lie outside the map's {dmap.width} x {dmap.height} image "
                      f"(first: row {outside[0] + 1}, u {q[outside[0], 0]:g}, v {q[outside[0], 1]:g}); their correction "
                      "is extrapolated: are u and v swapped, or the map another camera's?", stacklevel=2)
    rest = table.drop(columns=["u", "v"])
    result = rest.assign(**{c: [("" if np.isnan(x) else f"{x:.6f}") for x in col]
                            for c, col in zip(new, (q[:, 0], q[:, 1], p[:, 0], p[:, 1]))})
    with atomic_path(out_csv) as tmp:
        result.to_csv(tmp, index=False)
    print(f"wrote {len(result)} point(s) to {out_csv} ({dmap.model} map)")
    return 0

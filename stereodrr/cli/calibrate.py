"""``stereodrr calibrate``: calibrate a stereo rig from a user's images of a marker phantom.

Runs :func:`stereodrr.calib.pipeline.calibrate_stereo` (detect, identify, F with every method,
epipolar validation, DLT, triangulation) and writes into the output folder: ``report.json``,
``summary.txt``, ``markers.csv`` (per-marker errors), ``points_<view>.csv`` (the 2D detections:
OpenCV and XMALab pixels), ``epipolar.csv``, the calibrated rig (``rig.json``,
``dlt_coefficients.csv``, ``opencv.yaml``, ``mayacam_<view>.txt``) and the figures ``stereo_pair.png``,
``marker_errors.png`` and ``rig.png`` (the nominal and the calibrated rig side by side in 3D, with
the triangulated markers).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np
import pandas as pd

from ..calib.detect import APERTURES, KINDS
from ..calib.export import export_calibration, save_points_csv
from ..calib.fundamental import METHODS
from ..calib.identify import MIN_MARGIN
from ..calib.pipeline import CalibrationOptions, StereoCalibration, calibrate_stereo
from ..calib.verdict import Tolerances
from ..fileio import atomic_path, atomic_write_text, json_ready, listed_files
from ..geometry import StereoRig, load_rig
from ..phantoms import load_phantom
from ..plot.calib import plot_marker_errors, plot_stereo_pair
from ..plot.rig import plot_rig
from ..trial.frames import read_image
from ._args import UsageError, bad_argument, distinct_files, input_file, integer, load_view_maps, number, output_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="calibrate a stereo rig from images of a marker phantom",
                       description="Detect and identify the phantom's markers, estimate F with every OpenCV "
                                   "method, validate the epipolar error, DLT-calibrate and triangulate.")
    p.add_argument("--images", nargs="+", required=True, metavar="IMAGE",
                   help="one image per rig view, in the rig's view order (TIFF, PNG, JPEG, BMP, DICOM, MHA or NRRD; "
                        "8/16-bit or float)")
    p.add_argument("--phantom", required=True, help="phantom JSON with the markers, or a built-in name (e.g. lego_stereo)")
    p.add_argument("--rig", required=True, help="nominal rig.json (detector sizes, starting point only)")
    p.add_argument("-o", "--output", default="out", help="output folder")
    p.add_argument("--kind", choices=KINDS, default="auto", help="image kind (default: decide from the image)")
    p.add_argument("--threshold", type=number(0.0, open_lo=True, what="threshold in px"), default=1.0, help="epipolar pass threshold, mean px (default 1)")
    p.add_argument("--shared-intrinsics", action="store_true", help="one K for all views in the DLT refinement")
    p.add_argument("--aperture", choices=APERTURES, default="area",
                   help="detector pixel sampling the ball fit models: 'area' (flat panels, stereodrr's default "
                        "renderer) or 'point' (images sampled at pixel centres)")
    d = Tolerances()
    p.add_argument("--tol-source-mm", type=number(0.0, open_lo=True, what="tolerance"), default=d.source_mm,
                   help=f"PASS needs each calibrated source within this of the nominal one (default {d.source_mm:g} mm)")
    p.add_argument("--tol-ray-deg", type=number(0.0, open_lo=True, what="tolerance"), default=d.principal_ray_deg,
                   help=f"... and each principal ray within this angle (default {d.principal_ray_deg:g} deg)")
    p.add_argument("--tol-sdd", type=number(0.0, open_lo=True, what="tolerance"), default=d.sdd_rel, help=f"... SDD relative (default {d.sdd_rel:g})")
    p.add_argument("--tol-magnification", type=number(0.0, open_lo=True, what="tolerance"), default=d.magnification_rel,
                   help=f"... magnification relative (default {d.magnification_rel:g})")
    p.add_argument("--tol-aspect", type=number(0.0, open_lo=True, what="tolerance"), default=d.pixel_aspect_rel,
                   help=f"... pixel aspect fy/fx relative (default {d.pixel_aspect_rel:g})")
    p.add_argument("--min-margin", type=number(0.0, what="margin in markers"), default=MIN_MARGIN,
                   help=f"identification evidence margin over the runner-up labelling, markers (default {MIN_MARGIN:g})")
    p.add_argument("--seed", type=integer(0, 2**32 - 1, what="seed"), default=0)
    p.add_argument("--preset", default=None,
                   help="polychromatic detector preset that made the -log(I/I_open) images (e.g. fluoro80): its "
                        "scatter model is removed and the ball fit uses the beam's own steel transmission curve")
    p.add_argument("--distortion", nargs="+", default=None, metavar="MAP",
                   help="images from image intensifiers: one distortion.json per view, in the rig's view order "
                        "(stereodrr distortion measures them from grid images); detected centres are corrected")
    p.set_defaults(func=run)


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> Path:
    """Write a uint16 or float32 image (TIFF keeps both exactly) atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise ValueError(f"could not write image {str(path)!r}")
    return Path(path)


def write_results(result: StereoCalibration, images: Mapping[str, np.ndarray], out: Path,
                  extra: Mapping[str, Any] | None = None, title: str = "",
                  nominal: StereoRig | None = None) -> dict:
    """Write the report, tables, calibrated rig and figures; returns the report dict.
    ``nominal``: drawn beside the calibrated rig in ``rig.png`` (without it, the calibrated alone)."""
    out.mkdir(parents=True, exist_ok=True)
    report = {**result.report(), **(extra or {})}
    report["files"] = {k: str(v) for k, v in export_calibration(result.rig, out, result.distortion).items()}
    a, b = result.views[:2]
    plot_stereo_pair({a: images[a], b: images[b]}, result.detections,
                     {n: result.identified[n].table for n in (a, b)},
                     result.fundamental[result.best_method].F, out / "stereo_pair.png",
                     title=f"{title} F: {result.best_method}, mean symmetric epipolar error "
                           f"{report['epipolar_error_px']:.4f} px")
    plot_marker_errors(result.errors, out / "marker_errors.png", title=title, heldout=result.loo_errors)
    rigs = {"calibrated": result.rig} if nominal is None else {"nominal": nominal, "calibrated": result.rig}
    plot_rig(rigs, out / "rig.png", markers=result.triangulations["nview"].points,
             title=f"{title} markers: triangulated by the calibrated rig".strip())
    errors = result.errors.copy()
    errors["heldout_error_mm"] = result.loo_errors["error_mm"].to_numpy()
    errors["heldout_depth_mm"] = result.loo_errors["depth_mm"].to_numpy()
    with atomic_path(out / "markers.csv") as tmp:
        errors.to_csv(tmp, index=False, float_format="%.6g")
    for n in result.views:
        f = f"points_{n}.csv"
        save_points_csv(result.identified[n].table, result.rig[n].height, out / f)
        report["files"][f"points_{n}"] = str(out / f)
    ep = pd.concat([r.table().assign(method=m) for m, r in result.epipolar.items()], ignore_index=True)
    with atomic_path(out / "epipolar.csv") as tmp:
        ep.to_csv(tmp, index=False, float_format="%.6g")
    report["files"].update({k: str(out / f) for k, f in (
        ("stereo_pair", "stereo_pair.png"), ("marker_errors", "marker_errors.png"), ("rig_figure", "rig.png"),
        ("markers", "markers.csv"), ("epipolar", "epipolar.csv"), ("summary", "summary.txt"))})
    atomic_write_text(out / "summary.txt", result.summary() + "\n")
    earlier = listed_files(out / "report.json")
    atomic_write_text(out / "report.json", json.dumps(json_ready(report), indent=2) + "\n")
    # Per-view files an earlier run wrote for views this rig does not have (mayacam_view2.txt
    # beside this run's mayacam_left.txt) would be read as this calibration's: removed.
    for name in earlier - {Path(f).name for f in report["files"].values()}:
        (out / name).unlink(missing_ok=True)
    return report


def _tolerances(args: argparse.Namespace) -> Tolerances:
    try:
        return Tolerances(args.tol_source_mm, args.tol_ray_deg, args.tol_sdd, args.tol_magnification, args.tol_aspect)
    except ValueError as e:
        raise UsageError(f"--tol-*: {e}") from None


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    output_folder(args.output)
    detector = None
    if args.preset:
        from ..imaging import detector_preset

        with bad_argument():  # an unknown name is a bad argument (exit 2)
            detector = detector_preset(args.preset)
        if args.kind == "intensity":
            raise UsageError("--preset: expects -log(I / I_open) images (--kind line_integral or auto), "
                             "not raw intensities")
    nominal = load_rig(input_file(args.rig, "--rig", "rig file"))
    if len(args.images) != len(nominal):
        raise UsageError(f"--images: the rig {args.rig} has {len(nominal)} views {nominal.names}, "
                         f"got {len(args.images)} image(s)")
    images = {n: read_image(p) for n, p in zip(nominal.names, args.images)}
    phantom = load_phantom(args.phantom)
    if not phantom.markers:
        raise ValueError(f"--phantom {args.phantom}: the phantom has no markers")
    maps = load_view_maps(args.distortion, nominal.names)
    options = CalibrationOptions(kind=args.kind, epipolar_threshold_px=args.threshold, methods=tuple(METHODS),
                                 shared_intrinsics=args.shared_intrinsics, seed=args.seed, aperture=args.aperture,
                                 min_margin=args.min_margin, detector=detector, tolerances=_tolerances(args),
                                 distortion=maps)
    # After the files' own checks (a file twice is refused once each file is known to be readable).
    distinct_files(args.images, "--images", nominal.names)
    result = calibrate_stereo(images, phantom.marker_table(), nominal, options)
    result.seconds = time.perf_counter() - t0
    write_results(result, images, Path(args.output), {"images": list(args.images)}, nominal=nominal)
    print(result.summary())
    print(f"wrote {args.output}/report.json, rig.json, dlt_coefficients.csv, opencv.yaml, figures (rig.png: nominal "
          f"and calibrated rig) "
          f"({result.seconds:.1f} s)")
    if not result.verdict.passed:  # results are written for inspection, but a script must not take them as good
        print("stereodrr calibrate: the verdict is not PASS (see the reasons above); exit status 1", file=sys.stderr)
        return 1
    return 0

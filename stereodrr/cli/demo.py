"""``stereodrr demo -o out/``: the whole calibration on a simulated stereo shot.

A 5 deg convergent rig (SID 750 mm, SDD 1200 mm, a 1024 x 1024 flat panel of 0.15 mm pixels
by default; ``--pixel 0.3 --size 512 512`` for the project's coarse default detector) is the
nominal rig;
the rig that takes the pictures is the nominal one moved by a few millimetres and tenths of a
degree (seeded), as a real installation differs from its drawing. Both views of the LEGO stereo
phantom (plastic bricks voxelized, steel balls analytic) are rendered with a flat-panel
detector model (Poisson noise at ``--photons`` per pixel, read-out noise, detector blur; 16-bit
raw frames) or noise-free (``--no-noise``: float line integrals). Then the calibration runs
from the images alone, exactly as ``stereodrr calibrate`` on a user's files, and every result
is scored against the ground truth.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..calib.fundamental import METHODS
from ..calib.pipeline import CalibrationOptions, calibrate_stereo
from ..calib.scene import flat_panel, perturbed_rig, render_calibration_images
from ..distortion import (
    DistortionMap,
    GridPlate,
    IntensifierField,
    fit_distortion,
    grid_image,
    intensifier_field,
    save_distortion,
)
from ..geometry import StereoRig, save_rig
from ..imaging import detector_preset
from ..phantoms import load_phantom
from ..render.aperture import APERTURES
from ..resources import MAX_BLUR_PX, MAX_PHOTONS, PIXEL_PITCH_MM, SHOT_BYTES_PER_PIXEL, check_memory, render_bytes
from ._args import bad_argument, integer, number, output_folder
from .calibrate import write_image, write_results

# XMALab's reported precision (mm): the reference figure issue 5 compares the noisy demo with.
XMALAB_PRECISION_MM = 0.043


def _default_phantom() -> str:
    return "lego_stereo"  # built-in (package data), found from any folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate a stereo calibration shot and calibrate from it",
                       description="Render the LEGO stereo phantom with a 5 deg convergent rig and run the full "
                                   "calibration (detect, identify, F, epipolar validation, DLT, triangulation).")
    p.add_argument("-o", "--output", default="out", help="output folder")
    p.add_argument("--no-noise", action="store_true", help="render noise-free line integrals")
    p.add_argument("--angle", type=number(0.0, 179.0, open_lo=True, what="angle in degrees"), default=5.0, help="stereo angle in degrees (default 5)")
    p.add_argument("--photons", type=number(0.0, MAX_PHOTONS, open_lo=True, what="photon count"), default=1e4, help="photons per pixel without attenuation")
    p.add_argument("--electronic-noise", type=number(0.0, MAX_PHOTONS, what="noise sigma"), default=2.0, help="read-out noise sigma, photons")
    p.add_argument("--blur", type=number(0.0, MAX_BLUR_PX, what="blur sigma in px"), default=0.5, help="detector blur sigma, px")
    p.add_argument("--pixel", type=number(*PIXEL_PITCH_MM, what="pixel pitch in mm"), default=0.15, help="detector pixel pitch, mm (default 0.15)")
    p.add_argument("--size", type=integer(1, what="pixel count"), nargs=2, default=[1024, 1024], metavar=("W", "H"),
                   help="detector pixels (default 1024 1024)")
    p.add_argument("--phantom", default=None, help="phantom JSON file or built-in name (default lego_stereo)")
    p.add_argument("--seed", type=integer(0, 2**32 - 1, what="seed"), default=0, help="seed of the rig perturbation and the noise")
    p.add_argument("--preset", default=None,
                   help="polychromatic detector preset (e.g. fluoro80: 80 kVp, CsI, scatter behind a grid, "
                        "noise); replaces --photons/--electronic-noise/--blur")
    p.add_argument("--aperture", choices=APERTURES, default="area",
                   help="detector pixels: 'area' (average over the pixel, a flat panel) or 'point' (pixel centre)")
    p.add_argument("--distortion", choices=("mild", "strong"), default=None,
                   help="record both views through an image intensifier of this strength (its round field left "
                        "open), measure each view's map from a rendered grid image and calibrate with the maps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = output_folder(args.output)
    w, h = args.size
    check_memory(render_bytes([(w, h)] * 2, SHOT_BYTES_PER_PIXEL), f"demo: two {w} x {h} px views (--size)")
    phantom = load_phantom(args.phantom or _default_phantom())
    nominal = StereoRig.convergent(args.angle, 750.0, 1200.0, args.pixel, args.size[0], args.size[1])
    truth = perturbed_rig(nominal, seed=args.seed)
    noisy = not args.no_noise
    detector = None
    if args.preset:
        with bad_argument():  # an unknown name is a bad argument (exit 2)
            detector = detector_preset(args.preset)
        if args.no_noise:
            detector = detector.with_(photons=None, electronic_sigma=0.0)
    panel = flat_panel(args.photons if noisy else None, args.electronic_noise if noisy else 0.0,
                       args.blur if noisy else 0.0, aperture=args.aperture)
    chain = detector or panel
    maps: dict[str, DistortionMap] | None = None
    grids: dict[str, np.ndarray] = {}
    if args.distortion:
        field = intensifier_field(args.distortion, w, h)
        chain = chain.with_(distortion=field)
        maps, grids = _grid_maps(field, nominal.names, args.seed)
    shots = render_calibration_images(phantom, truth, chain, seed=args.seed)
    t_render = time.perf_counter() - t0
    options = CalibrationOptions(kind=shots.kind, methods=tuple(METHODS), seed=args.seed, aperture=args.aperture,
                                 detector=detector, distortion=maps)
    result = calibrate_stereo(shots.images, phantom.marker_table(), nominal, options, truth=truth,
                              truth_centres_px=shots.centres_px)
    result.seconds = time.perf_counter() - t0
    # Written once the calibration has run: a failed one leaves an earlier run's folder as it was.
    _write_grid_maps(out, maps, grids, nominal.names)
    paths = [write_image(out / "images" / f"{n}.tif", img) for n, img in shots.images.items()]
    save_rig(nominal, out / "nominal_rig.json")
    save_rig(truth, out / "true_rig.json")
    noise = (f"Poisson {args.photons:g} photons/px, read-out {args.electronic_noise:g}, blur {args.blur:g} px"
             if noisy else "noise-free")
    if detector is not None:
        noise = f"preset {args.preset} ({detector.spectrum.description}), " + (
            f"{detector.photons:g} photons/px" if detector.photons else "noise-free")
    if args.distortion and maps is not None:
        noise += f", {args.distortion} image intensifier (grid maps: {', '.join(m.model for m in maps.values())})"
    report = write_results(result, shots.images, out, {
        "noise": noise, "stereo_angle_deg": nominal.stereo_angle_deg(), "render_seconds": t_render,
        "phantom": str(args.phantom or _default_phantom()), "xmalab_precision_mm": XMALAB_PRECISION_MM,
        "images": [str(p) for p in paths],
    }, title=f"demo, {nominal.stereo_angle_deg():.1f} deg, {noise}.", nominal=nominal)
    print(f"stereodrr demo: {nominal.stereo_angle_deg():.1f} deg convergent rig, {phantom.name}, {noise}")
    print(result.summary())
    print(f"triangulation RMS {report['triangulation_rms_mm']:.4f} mm vs XMALab's reported precision "
          f"{XMALAB_PRECISION_MM} mm")
    print(f"total {result.seconds:.1f} s (rendering {t_render:.1f} s); wrote {out}/report.json, figures, "
          f"calibrated rig, images/ (re-run: stereodrr calibrate --images {paths[0]} {paths[1]} "
          f"--phantom {args.phantom or _default_phantom()} --rig {out / 'nominal_rig.json'} -o {out / 'calibrate'}"
          + (f" --distortion {' '.join(str(out / 'distortion' / n / 'distortion.json') for n in nominal.names)})"
             if args.distortion else ")"))
    return 0


def _write_grid_maps(out: Path, maps: dict[str, DistortionMap] | None, grids: dict[str, np.ndarray],
                     views: list[str]) -> None:
    """Each view's grid image and map under ``out/distortion/VIEW/``; without maps, remove those
    an earlier ``--distortion`` run wrote (and their folders, where nothing else is left in
    them): they are not this run's."""
    if maps is not None:
        for n, m in maps.items():
            write_image(out / "distortion" / n / "grid.tif", grids[n])
            save_distortion(m, out / "distortion" / n / "distortion.json")
        return
    for n in views:
        for name in ("grid.tif", "distortion.json"):
            (out / "distortion" / n / name).unlink(missing_ok=True)
        for folder in (out / "distortion" / n, out / "distortion"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _grid_maps(field: IntensifierField, views: list[str], seed: int
               ) -> tuple[dict[str, DistortionMap], dict[str, np.ndarray]]:
    """Each view's map, measured as a user would: a hex plate imaged through the intensifier
    (1e4 photons/px), ``fit_distortion``; the maps and the grid images (float32) by view."""
    maps, grids = {}, {}
    for k, n in enumerate(views):
        grid = grid_image(field, GridPlate("hex", 32.0 * field.width / 1024, 16.0 * field.width / 1024),
                          photons=1e4, seed=seed + 100 + k)
        grids[n] = grid.astype(np.float32)  # as written; the fit sees the image as rendered
        maps[n] = fit_distortion(grid, name=f"view {n!r} grid")
    return maps, grids

"""``stereodrr render``: DRRs of a CT (HU) and/or a phantom for every view of a rig.

Writes per view ``<view>.tif`` (float32 line integral, readable by OpenCV and SimpleITK) and
``<view>.png`` (8-bit preview: attenuation bright, like a radiograph), a copy of the rig as
``rig.json`` and, with a phantom, ``markers_px.csv`` (exact projected marker centres per view).

Both go through the imaging pipeline (:func:`stereodrr.imaging.simulate`). With any of
``--kvp``, ``--spectrum``, ``--preset``, ``--detector``, ``--scatter`` the render is
polychromatic (the materials route): ``<view>.tif`` is then
``-log(I / I_open)`` of the detector model (``I_open``: the same detector with nothing in the
beam; noisy when the model has a photon count), ``<view>_counts.png`` the 16-bit raw frame when
the model has a bit depth, and ``detector.json`` the spectrum and detector that made them. One
line at ``--energy`` with the ideal detector and no scatter gives the monochromatic image.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from tqdm import tqdm

from ..fileio import atomic_path, atomic_write_text
from ..geometry import StereoRig, load_rig, save_rig
from ..imaging import PRESETS, DetectorModel, Scene, Voxels, detector_preset, simulate
from ..imaging.materials import DECOMPOSITIONS
from ..physics import LAYERS, SCATTER_MODELS, Spectrum
from ..render import MODES, Projector, RaysMissWarning
from ..render.aperture import APERTURES, BALL_SUBPIXELS
from ..resources import MAX_PHOTONS, MIN_STEP_MM, check_memory, render_bytes, voxelize_bytes
from ..volume import load_volume
from ._args import UsageError, bad_argument, input_file, integer, number, output_folder, torch_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render DRRs of a CT and/or phantom for every view of a rig",
                       description="Render the line integral of mu for each view of a rig.json; writes "
                                   "<view>.tif (float32), <view>.png (preview) and rig.json to the output folder.")
    p.add_argument("--ct", help="CT volume in HU (NIfTI, MHA, NRRD or a DICOM folder)")
    p.add_argument("--phantom", help="phantom definition (JSON file or built-in name): plastic/tissue voxelised, "
                                     "markers rendered as exact spheres")
    p.add_argument("--rig", required=True, help="rig.json (schema stereodrr.rig/1)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--energy", type=number(10.0, 200.0, what="energy in keV"), default=60.0, help="effective energy in keV for HU -> mu (default 60)")
    p.add_argument("--mode", choices=list(MODES), default="auto",
                   help="auto (default: joseph, on CPU and CUDA alike), trilinear (ray marching), joseph "
                        "(one bilinear sample per slab of slices) or exact (Siddon)")
    p.add_argument("--step", type=number(MIN_STEP_MM, what="step in mm"), default=None,
                   help="trilinear: step in mm (default half the smallest voxel); joseph: slab thickness in mm "
                        "(default the largest voxel spacing)")
    p.add_argument("--voxel", type=number(0.0, open_lo=True, what="voxel size in mm"), default=0.5, help="phantom voxel size in mm (default 0.5)")
    p.add_argument("--aperture", choices=APERTURES, default=None,
                   help="marker balls: area (each pixel averages the transmitted intensity over its area, as a flat "
                        "panel; default, or the --preset's) or point (the pixel-centre ray). Bodies and CTs are sampled at the "
                        "pixel centre")
    p.add_argument("--subpixels", type=integer(1, 64, what="sub-rays per pixel axis"), default=None,
                   help=f"sub-rays per pixel axis of --aperture area (default {BALL_SUBPIXELS}, or the --preset's)")
    p.add_argument("--device", type=torch_device, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default cuda when torch sees a GPU, else cpu)")
    g = p.add_argument_group("polychromatic physics (any of these switches the render to the detector model)")
    g.add_argument("--preset", help="detector preset: " + ", ".join(sorted(PRESETS)))
    g.add_argument("--kvp", type=number(0.0, open_lo=True, what="tube potential in kV"), help="tube potential in kV: a spekpy tungsten-anode spectrum")
    g.add_argument("--filter", default=None, help="added filtration, MATERIAL:MM[,...] (default Al:2.5 with --kvp)")
    g.add_argument("--anode-angle", type=number(0.0, 90.0, open_lo=True, what="anode angle in degrees"), default=12.0, help="anode angle, deg (default 12)")
    g.add_argument("--spectrum", help="spectrum table CSV (energy_kev, fluence) instead of --kvp")
    g.add_argument("--detector", choices=sorted(LAYERS), help="scintillator: ideal (eta = 1), csi, gos")
    g.add_argument("--scatter", choices=sorted(SCATTER_MODELS), help="scatter model: none, kernel, grid")
    g.add_argument("--photons", type=number(0.0, MAX_PHOTONS, open_lo=True, what="photon count"), help="open-field photons per pixel (adds quantum noise)")
    g.add_argument("--decomposition", choices=list(DECOMPOSITIONS), default="tissue_bone",
                   help="HU -> materials (default tissue_bone; HU taken at --energy)")
    g.add_argument("--seed", type=integer(0, 2**32 - 1, what="seed"), default=None,
                   help="noise seed (default 0; view i uses seed + i): with --photons or a preset that has them")
    p.set_defaults(func=run)


def detector_from_args(args: argparse.Namespace) -> DetectorModel | None:
    """The detector model the options ask for, or ``None`` for the plain line-integral render.

    Raises:
        UsageError: conflicting options, or a value the model refuses (an unknown preset, a tube
            potential outside spekpy's range, an unknown filter material): bad arguments.
        ValueError: a malformed ``--spectrum`` table (a failure, not a usage error).
    """
    physics = ("preset", "kvp", "filter", "spectrum", "detector", "scatter", "photons")
    if not any(getattr(args, k, None) is not None for k in physics):
        return None
    if args.kvp is not None and args.spectrum:
        raise UsageError("give --kvp or --spectrum, not both")
    if args.filter is not None and args.kvp is None:
        raise UsageError("--filter needs --kvp (filtration of a spekpy tube spectrum)")
    changes: dict = {}
    if args.spectrum and args.kvp is None:
        changes["spectrum"] = Spectrum.from_csv(args.spectrum)  # a file: its errors are failures
    with bad_argument():
        det = detector_preset(args.preset) if args.preset else DetectorModel(spectrum=Spectrum.monochromatic(args.energy))
        if args.kvp is not None:
            changes["spectrum"] = Spectrum.from_tube(args.kvp, args.filter if args.filter is not None else "Al:2.5",
                                                     args.anode_angle)
        if args.detector is not None:
            changes["layer"] = LAYERS[args.detector]
        if args.scatter is not None:
            changes["scatter"] = SCATTER_MODELS[args.scatter]
        if args.photons is not None:
            changes["photons"] = args.photons
        for key in ("aperture", "subpixels"):
            if getattr(args, key, None) is not None and getattr(args, key) != getattr(det, key):
                changes[key] = getattr(args, key)
        return det.with_(**changes, name=det.name if not changes else f"{det.name}+options") if changes else det


def write_float_tiff(image: np.ndarray, path: Path) -> None:
    """``(H, W)`` float32 TIFF via SimpleITK (OpenCV reads it with ``IMREAD_UNCHANGED``)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.GetImageFromArray(image.astype(np.float32)), str(tmp))


def preview_png(image: np.ndarray, path: Path) -> None:
    """8-bit preview: the 0.5-99.5 percentile window of the line integral, high attenuation bright."""
    lo, hi = np.percentile(image, [0.5, 99.5])
    scaled = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.round(scaled * 255).astype(np.uint8)):
            raise ValueError(f"{path}: OpenCV could not write the PNG")


def _scene(args: argparse.Namespace, polychromatic: bool) -> Scene:
    """The scene of ``--ct`` (HU) and ``--phantom`` (bodies voxelized at ``--voxel`` after a
    memory check of the grid, markers as exact balls)."""
    voxels: list[Voxels] = []
    if args.ct:
        ct = load_volume(args.ct)
        lo, hi = float(ct.data.min()), float(ct.data.max())
        if lo >= 0.0 and 0.0 < hi < 10.0:  # mu of tissue and bone; HU of anything but water span hundreds
            warnings.warn(f"--ct {args.ct}: values {lo:.3g} to {hi:.3g} look like attenuation in 1/mm, but --ct "
                          "reads Hounsfield units (air -1000, water 0), so this renders as water: convert it with "
                          "stereodrr.volume.mu_to_hu", stacklevel=2)
        voxels.append(Voxels(ct.to(args.device), "hu"))
    balls = None
    if args.phantom:
        from ..phantoms import load_phantom  # phantoms sit beside volumes, upstream of render
        from ..phantoms.voxelize import phantom_grid

        ph = load_phantom(args.phantom)
        grid = phantom_grid(ph, args.voxel)[3]
        check_memory(voxelize_bytes(*grid), f"voxelizing {ph.name} onto {' x '.join(map(str, grid))} voxels "
                                            f"(--voxel {args.voxel:g})", args.device)
        body = Scene.from_phantom(ph, args.voxel, args.energy, device=args.device, progress=True)
        voxels += list(body.voxels)
        balls = body.balls
    return Scene(tuple(voxels), balls, args.energy, args.decomposition if polychromatic else "none")


def _check_file_names(names: list[str], rig_path: str) -> None:
    """Each view is written as ``<name>.tif`` under ``-o``: a name that is a path is refused."""
    for name in names:
        if Path(name).name != name or name in (".", "..") or "\\" in name or len(name.encode()) > 200:
            raise ValueError(f"--rig {rig_path}: view name {name[:60]!r} cannot name a file in -o (no / or \\, "
                             "at most 200 bytes); rename the view")


def _earlier_outputs(out: Path) -> set[Path]:
    """The files an earlier render wrote into ``out`` (its ``rig.json`` names the views), which
    this one replaces or, where it writes no such file, removes: a folder never mixes two renders."""
    try:
        names = load_rig(out / "rig.json").names if (out / "rig.json").is_file() else []
    except ValueError:  # not a render's rig file: nothing of the folder is touched
        return set()
    files = {out / f for n in names for f in (f"{n}.tif", f"{n}.png", f"{n}_counts.png")}
    files |= {out / "detector.json", out / "markers_px.csv"} if names else set()
    return {f for f in files if f.is_file()}


def _check_ignored_options(args: argparse.Namespace, det: DetectorModel | None) -> None:
    """Refuse an option this render would ignore: a step for Siddon's exact line integrals (no
    samples), a noise seed without noise."""
    if args.step is not None and args.mode == "exact":
        raise UsageError("--step: the exact mode integrates every voxel's segment and takes no step; drop --step "
                         "or choose --mode joseph or trilinear")
    if args.seed is not None and (det is None or det.photons is None):
        raise UsageError("--seed: these images have no noise to seed; add --photons (or a --preset with photons)")


def run(args: argparse.Namespace) -> int:
    if not args.ct and not args.phantom:
        raise UsageError("give --ct and/or --phantom")
    out = output_folder(args.output)
    rig = load_rig(input_file(args.rig, "--rig", "rig file"))
    _check_file_names(rig.names, args.rig)
    sizes = [(c.width, c.height) for c in rig.cameras.values()]
    check_memory(render_bytes(sizes), f"rendering {len(rig)} view(s) of " + ", ".join(f"{w} x {h}" for w, h in sizes)
                 + f" px (--rig {args.rig})", args.device)
    det = detector_from_args(args)
    _check_ignored_options(args, det)
    scene = _scene(args, det is not None)
    b = scene.balls
    marker_rows = [] if b is None else [{"view": name, "marker_id": int(i), "u": float(p[0]), "v": float(p[1])}
                                        for name, cam in rig.cameras.items()
                                        for i, p in zip(b.ids, cam.project(b.centers)[0])]
    images, counts = _render(args, rig, scene, det)
    written = _write(out, args, rig, images, counts, det, marker_rows)
    what = "" if det is None else (f" ({det.spectrum.description}, {'ideal' if det.layer is None else det.layer.material}"
                                   f" detector, scatter {'off' if det.scatter is None else 'on'})")
    print(f"wrote {len(rig)} view(s) to {out}/{what}: " + ", ".join(written))
    return 0


def _render(args: argparse.Namespace, rig: StereoRig, scene: Scene, det: DetectorModel | None
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """The views' images (line integrals, or ``-log(I / I_open)`` of the detector's counts) and
    the counts (``None`` without a detector)."""
    projector = Projector(args.mode, args.step)
    with torch.no_grad(), warnings.catch_warnings():
        # A view that sees nothing of the scene is a wrong rig or a misplaced CT: said before writing.
        warnings.simplefilter("error", RaysMissWarning)
        try:
            if det is None:
                mono = DetectorModel(spectrum=Spectrum.monochromatic(args.energy), aperture=args.aperture or "area",
                                     subpixels=args.subpixels or BALL_SUBPIXELS)
                return simulate(scene, rig, projector, mono, output="line_integral"), None
            counts = simulate(scene, rig, projector, det, seed=args.seed or 0, output="counts")
            return {n: det.negative_log(c) for n, c in counts.items()}, counts
        except RaysMissWarning as exc:
            view = exc.view if isinstance(exc.view, str) else rig.names[exc.view]
            raise ValueError(f"--rig {args.rig}: no ray of view {view!r} meets the "
                             f"{'CT' if args.ct else 'phantom'}'s box; check the rig and where the CT lies "
                             "(nothing written)") from None


def _write(out: Path, args: argparse.Namespace, rig: StereoRig, images: dict[str, torch.Tensor],
           counts: dict[str, torch.Tensor] | None, det: DetectorModel | None, marker_rows: list[dict]) -> list[str]:
    """Write the views, ``rig.json``, ``detector.json`` and ``markers_px.csv`` (what applies), and
    remove what an earlier render into ``out`` wrote that this one does not; the names written."""
    counts_png = counts is not None and det is not None and det.bit_depth is not None and det.bit_depth <= 16
    earlier = _earlier_outputs(out)
    paths: set[Path] = set()
    for name in tqdm(rig.names, desc="write", disable=len(rig) < 2):
        img = images[name].detach().cpu().numpy()
        write_float_tiff(img, out / f"{name}.tif")
        preview_png(img, out / f"{name}.png")
        paths |= {out / f"{name}.tif", out / f"{name}.png"}
        if counts is not None and counts_png:
            with atomic_path(out / f"{name}_counts.png") as tmp:
                if not cv2.imwrite(str(tmp), counts[name].cpu().numpy().astype(np.uint16)):
                    raise ValueError(f"{out / name}_counts.png: OpenCV could not write the PNG")
            paths.add(out / f"{name}_counts.png")
    paths.add(save_rig(rig, out / "rig.json"))
    written = [f"{n}.tif/.png" + (f", {n}_counts.png" if counts_png else "") for n in rig.names] + ["rig.json"]
    if det is not None:
        atomic_write_text(out / "detector.json", json.dumps({
            "schema": "stereodrr.detector/1", "detector": det.to_dict(), "reference_energy_kev": args.energy,
            "decomposition": args.decomposition, "image": "-log(I / I_open)"}, indent=1))
        paths.add(out / "detector.json")
        written.append("detector.json")
    if marker_rows:
        with atomic_path(out / "markers_px.csv") as tmp:
            pd.DataFrame(marker_rows).to_csv(tmp, index=False)
        paths.add(out / "markers_px.csv")
        written.append("markers_px.csv")
    for stale in sorted(earlier - paths):  # an earlier render's views and files this one did not replace
        stale.unlink(missing_ok=True)
    return written

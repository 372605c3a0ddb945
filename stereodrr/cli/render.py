"""``stereodrr render``: DRRs of a CT (HU) and/or a phantom for every view of a rig.

Writes per view ``<view>.tif`` (float32 line integral, readable by OpenCV and SimpleITK) and
``<view>.png`` (8-bit preview: attenuation bright, like a radiograph), a copy of the rig as
``rig.json`` and, with a phantom, ``markers_px.csv`` (exact projected marker centres per view).

With any of ``--kvp``, ``--spectrum``, ``--preset``, ``--detector``, ``--scatter`` the render is
polychromatic (:func:`stereodrr.render.render_polychromatic`): ``<view>.tif`` is then
``-log(I / I_open)`` of the detector model (``I_open``: the same detector with nothing in the
beam; noisy when the model has a photon count), ``<view>_counts.png`` the 16-bit raw frame when
the model has a bit depth, and ``detector.json`` the spectrum and detector that made them. One
line at ``--energy`` with the ideal detector and no scatter gives the monochromatic image.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from tqdm import tqdm

from ..fileio import atomic_path
from ..geometry import load_rig, save_rig
from ..render import LAYERS, MODES, SCATTER_MODELS, DetectorModel, detector_preset, render_rig
from ..render.aperture import APERTURES, BALL_SUBPIXELS
from ..render.markers import sphere_transmission
from ..render.polychromatic import DECOMPOSITIONS, render_polychromatic
from ..resources import MIN_STEP_MM, check_memory, render_bytes, voxelize_bytes
from ..volume import hu_to_mu, load_volume, mu_to_hu
from ._args import UsageError, input_file, integer, number, output_folder


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
                   help="auto (default: joseph on CPU, trilinear on CUDA), trilinear (ray marching), joseph "
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
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g = p.add_argument_group("polychromatic physics (any of these switches the render to the detector model)")
    g.add_argument("--preset", help="detector preset: " + ", ".join(sorted(_preset_names())))
    g.add_argument("--kvp", type=number(0.0, open_lo=True, what="tube potential in kV"), help="tube potential in kV: a spekpy tungsten-anode spectrum")
    g.add_argument("--filter", default=None, help="added filtration, MATERIAL:MM[,...] (default Al:2.5 with --kvp)")
    g.add_argument("--anode-angle", type=number(0.0, 90.0, open_lo=True, what="anode angle in degrees"), default=12.0, help="anode angle, deg (default 12)")
    g.add_argument("--spectrum", help="spectrum table CSV (energy_kev, fluence) instead of --kvp")
    g.add_argument("--detector", choices=sorted(LAYERS), help="scintillator: ideal (eta = 1), csi, gos")
    g.add_argument("--scatter", choices=sorted(SCATTER_MODELS), help="scatter model: none, kernel, grid")
    g.add_argument("--photons", type=number(0.0, open_lo=True, what="photon count"), help="open-field photons per pixel (adds quantum noise)")
    g.add_argument("--decomposition", choices=list(DECOMPOSITIONS), default="tissue_bone",
                   help="HU -> materials (default tissue_bone; HU taken at --energy)")
    g.add_argument("--seed", type=integer(0, 2**32 - 1, what="seed"), default=0, help="noise seed (view i uses seed + i)")
    p.set_defaults(func=run)


def _preset_names() -> list[str]:
    from ..render.detector import PRESETS

    return list(PRESETS)


def detector_from_args(args: argparse.Namespace) -> DetectorModel | None:
    """The detector model the options ask for, or ``None`` for the plain line-integral render."""
    from ..physics import Spectrum

    physics = ("preset", "kvp", "filter", "spectrum", "detector", "scatter", "photons")
    if not any(getattr(args, k, None) is not None for k in physics):
        return None
    if args.kvp is not None and args.spectrum:
        raise ValueError("give --kvp or --spectrum, not both")
    if args.filter is not None and args.kvp is None:
        raise ValueError("--filter needs --kvp (filtration of a spekpy tube spectrum)")
    det = detector_preset(args.preset) if args.preset else DetectorModel(spectrum=Spectrum.monochromatic(args.energy))
    changes: dict = {}
    if args.kvp is not None:
        changes["spectrum"] = Spectrum.from_tube(args.kvp, args.filter if args.filter is not None else "Al:2.5",
                                                 args.anode_angle)
    elif args.spectrum:
        changes["spectrum"] = Spectrum.from_csv(args.spectrum)
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


def _phantom_bodies(args: argparse.Namespace):
    """The phantom of ``--phantom`` and its bodies voxelized at ``--voxel`` (markers carved out:
    they are rendered as exact spheres), after a memory check of the grid."""
    from ..phantoms import load_phantom, voxelize  # phantoms sit beside volumes, upstream of render
    from ..phantoms.voxelize import phantom_grid

    ph = load_phantom(args.phantom)
    grid = phantom_grid(ph, args.voxel)[3]
    check_memory(voxelize_bytes(*grid), f"voxelizing {ph.name} onto {' x '.join(map(str, grid))} voxels "
                                        f"(--voxel {args.voxel:g})")
    return ph, voxelize(ph, args.voxel, energy_kev=args.energy, markers="carve", device=args.device).mu


def run(args: argparse.Namespace) -> int:
    if not args.ct and not args.phantom:
        raise UsageError("give --ct and/or --phantom")
    out = output_folder(args.output)
    rig = load_rig(input_file(args.rig, "--rig", "rig file"))
    sizes = [(c.width, c.height) for c in rig.cameras.values()]
    check_memory(render_bytes(sizes), f"rendering {len(rig)} view(s) of " + ", ".join(f"{w} x {h}" for w, h in sizes)
                 + f" px (--rig {args.rig})")
    det = detector_from_args(args)
    if det is not None:
        return _run_polychromatic(args, rig, out, det)
    images: dict[str, torch.Tensor | float] = {name: 0.0 for name in rig.names}
    marker_rows = []
    if args.ct:
        ct = load_volume(args.ct)
        vol = hu_to_mu(ct, args.energy).to(args.device)
        for name, img in render_rig(vol, rig, mode=args.mode, step_mm=args.step).items():
            images[name] = images[name] + img
    if args.phantom:
        ph, bodies = _phantom_bodies(args)
        for name, img in render_rig(bodies.to(args.device), rig, mode=args.mode, step_mm=args.step).items():
            images[name] = images[name] + img
        m = ph.marker_arrays(args.energy)
        if len(m.ids):
            for name in tqdm(rig.names, desc="markers", disable=len(rig) < 2):
                # The detector averages intensity, so an area-averaged ball is -log of its mean transmission.
                t = sphere_transmission(m.centers, m.diameters, m.mu, rig[name], args.aperture or "area",
                                        args.subpixels, device=args.device)
                images[name] = images[name] + (-torch.log(t)).to(torch.float32)
                uv = rig[name].project(m.centers)[0]
                marker_rows += [{"view": name, "marker_id": int(i), "u": float(p[0]), "v": float(p[1])}
                                for i, p in zip(m.ids, uv)]
    for name in tqdm(rig.names, desc="write", disable=len(rig) < 2):
        img = torch.as_tensor(images[name]).detach().cpu().numpy()
        write_float_tiff(img, out / f"{name}.tif")
        preview_png(img, out / f"{name}.png")
    save_rig(rig, out / "rig.json")
    if marker_rows:
        with atomic_path(out / "markers_px.csv") as tmp:
            pd.DataFrame(marker_rows).to_csv(tmp, index=False)
    print(f"wrote {len(rig)} view(s) to {out}/: " + ", ".join(f"{n}.tif/.png" for n in rig.names) + ", rig.json"
          + (", markers_px.csv" if marker_rows else ""))
    return 0


def _run_polychromatic(args: argparse.Namespace, rig, out: Path, det: DetectorModel) -> int:
    """CT and/or phantom through the detector model: ``<view>.tif = -log(I / I_open)``."""
    import json

    from ..fileio import atomic_write_text

    hu = load_volume(args.ct).to(args.device) if args.ct else None
    spheres, marker_rows = None, []
    if args.phantom:
        ph, mu = _phantom_bodies(args)
        body_hu = mu.with_data(mu_to_hu(mu.data, args.energy))
        if hu is not None:
            raise ValueError("the polychromatic render takes --ct or --phantom, not both (their grids differ)")
        hu = body_hu
        m = ph.marker_arrays(args.energy)
        if len(m.ids):
            spheres = (m.centers, m.diameters, [mk.material.name for mk in ph.markers])
            for name in rig.names:
                uv = rig[name].project(m.centers)[0]
                marker_rows += [{"view": name, "marker_id": int(i), "u": float(p[0]), "v": float(p[1])}
                                for i, p in zip(m.ids, uv)]
    with torch.no_grad():
        counts = render_polychromatic(hu, rig, det, reference_kev=args.energy, decomposition=args.decomposition,
                                      spheres=spheres, mode=args.mode, step_mm=args.step, seed=args.seed,
                                      output="counts")
    for name in tqdm(rig.names, desc="write", disable=len(rig) < 2):
        img = det.negative_log(counts[name]).cpu().numpy()
        write_float_tiff(img, out / f"{name}.tif")
        preview_png(img, out / f"{name}.png")
        if det.bit_depth is not None and det.bit_depth <= 16:
            with atomic_path(out / f"{name}_counts.png") as tmp:
                if not cv2.imwrite(str(tmp), counts[name].cpu().numpy().astype(np.uint16)):
                    raise ValueError(f"{out / name}_counts.png: OpenCV could not write the PNG")
    save_rig(rig, out / "rig.json")
    atomic_write_text(out / "detector.json", json.dumps({
        "schema": "stereodrr.detector/1", "detector": det.to_dict(), "reference_energy_kev": args.energy,
        "decomposition": args.decomposition, "image": "-log(I / I_open)"}, indent=1))
    if marker_rows:
        with atomic_path(out / "markers_px.csv") as tmp:
            pd.DataFrame(marker_rows).to_csv(tmp, index=False)
    print(f"wrote {len(rig)} view(s) to {out}/ ({det.spectrum.description}, "
          f"{'ideal' if det.layer is None else det.layer.material} detector, "
          f"scatter {'off' if det.scatter is None else 'on'}): " + ", ".join(f"{n}.tif" for n in rig.names)
          + ", rig.json, detector.json" + (", markers_px.csv" if marker_rows else ""))
    return 0

"""``stereodrr render``: DRRs of a CT (HU) and/or a phantom for every view of a rig.

Writes per view ``<view>.tif`` (float32 line integral, readable by OpenCV and SimpleITK) and
``<view>.png`` (8-bit preview: attenuation bright, like a radiograph), a copy of the rig as
``rig.json`` and, with a phantom, ``markers_px.csv`` (exact projected marker centres per view).
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

from .._io import atomic_path
from .._resources import MIN_STEP_MM, check_memory, render_bytes, voxelize_bytes
from ..geometry import load_rig, save_rig
from ..render import render_rig, render_spheres
from ..volume import Volume, hu_to_mu, load_volume
from ._args import UsageError, input_file, number, output_folder


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
    p.add_argument("--mode", choices=["trilinear", "exact"], default="trilinear")
    p.add_argument("--step", type=number(MIN_STEP_MM, what="step in mm"), default=None, help="trilinear step in mm (default half the smallest voxel)")
    p.add_argument("--voxel", type=number(0.0, open_lo=True, what="voxel size in mm"), default=0.5, help="phantom voxel size in mm (default 0.5)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(func=run)


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


def run(args: argparse.Namespace) -> int:
    if not args.ct and not args.phantom:
        raise UsageError("give --ct and/or --phantom")
    out = output_folder(args.output)
    rig = load_rig(input_file(args.rig, "--rig", "rig file"))
    sizes = [(c.width, c.height) for c in rig.cameras.values()]
    check_memory(render_bytes(sizes), f"rendering {len(rig)} view(s) of " + ", ".join(f"{w} x {h}" for w, h in sizes)
                 + f" px (--rig {args.rig})")
    images = {name: 0.0 for name in rig.names}
    marker_rows = []
    if args.ct:
        ct = load_volume(args.ct)
        vol = Volume(hu_to_mu(ct.data, args.energy), ct.origin, ct.spacing, ct.direction).to(args.device)
        for name, img in render_rig(vol, rig, mode=args.mode, step_mm=args.step).items():
            images[name] = images[name] + img
    if args.phantom:
        from ..phantoms import load_phantom, voxelize  # phantoms sit beside volumes, upstream of render

        from ..phantoms.voxelize import phantom_grid

        ph = load_phantom(args.phantom)
        grid = phantom_grid(ph, args.voxel)[3]
        check_memory(voxelize_bytes(*grid), f"voxelizing {ph.name} onto {' x '.join(map(str, grid))} voxels "
                                            f"(--voxel {args.voxel:g})")
        bodies = voxelize(ph, args.voxel, energy_kev=args.energy, markers="carve", device=args.device).mu
        for name, img in render_rig(bodies.to(args.device), rig, mode=args.mode, step_mm=args.step).items():
            images[name] = images[name] + img
        m = ph.marker_arrays(args.energy)
        if len(m.ids):
            for name in tqdm(rig.names, desc="markers", disable=len(rig) < 2):
                balls, uv = render_spheres(m.centers, m.diameters, m.mu, rig[name], device=args.device)
                images[name] = images[name] + balls[0]
                marker_rows += [{"view": name, "marker_id": int(i), "u": float(p[0]), "v": float(p[1])}
                                for i, p in zip(m.ids, uv[0].cpu().numpy())]
    for name in tqdm(rig.names, desc="write", disable=len(rig) < 2):
        img = images[name].detach().cpu().numpy()
        write_float_tiff(img, out / f"{name}.tif")
        preview_png(img, out / f"{name}.png")
    save_rig(rig, out / "rig.json")
    if marker_rows:
        with atomic_path(out / "markers_px.csv") as tmp:
            pd.DataFrame(marker_rows).to_csv(tmp, index=False)
    print(f"wrote {len(rig)} view(s) to {out}/: " + ", ".join(f"{n}.tif/.png" for n in rig.names) + ", rig.json"
          + (", markers_px.csv" if marker_rows else ""))
    return 0

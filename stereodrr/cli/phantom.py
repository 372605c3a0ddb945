"""``stereodrr phantom``: voxelize a phantom definition into CT-like volumes, ground truth and a figure."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..fileio import listed_files
from ..phantoms import load_phantom, material_table, rigid_pose, save_voxelized, voxelize
from ..phantoms.voxelize import VoxelGrid, VoxelizeOptions, phantom_grid
from ..plot.phantoms import plot_voxelized
from ..resources import MAX_SUPERSAMPLE, check_memory, voxelize_bytes
from ._args import UsageError, integer, number, output_folder, torch_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom", help="voxelize a phantom JSON into mu/HU/label volumes, markers.csv and a MIP figure",
        description="Voxelize a phantom definition (phantoms/*.json) with partial-volume anti-aliasing. Writes "
                    "mu (1/mm, true metal values), hu (clipped to 12 bits), labels, markers.csv (world mm), "
                    "mip.png and voxelize.json into the output folder.")
    p.add_argument("definition", help="phantom JSON file (e.g. my_phantom.json) or a built-in name: lego_stereo, "
                                      "lego_cube, torso")
    p.add_argument("--spacing", type=number(0.0, open_lo=True, what="voxel size in mm"), nargs="+", default=[0.5], metavar="MM", help="voxel size: one value or x y z (default 0.5)")
    p.add_argument("--size", type=integer(1, what="voxel count"), nargs=3, metavar=("NX", "NY", "NZ"), help="grid size in voxels (default: phantom + margin)")
    p.add_argument("--margin", type=number(0.0, what="margin in mm"), default=5.0, help="air margin around the phantom for an automatic grid, mm")
    p.add_argument("--energy", type=number(10.0, 200.0, what="energy in keV"), default=60.0, help="effective energy in keV for mu and HU (default 60)")
    p.add_argument("--supersample", type=integer(1, MAX_SUPERSAMPLE, what="sub-sample count"), default=4,
                   help=f"sub-samples per axis in boundary voxels, 1-{MAX_SUPERSAMPLE} (default 4)")
    p.add_argument("--markers", choices=["include", "exclude", "carve"], default="include",
                   help="paint the marker balls, leave them out, or carve them as air (for analytic rendering)")
    p.add_argument("--rotate", type=number(what="angle in degrees"), nargs=3, default=None, metavar=("RX", "RY", "RZ"),
                   help="move the phantom: rotation in degrees (extrinsic x, y, z) about the world origin")
    p.add_argument("--translate", type=number(-1e6, 1e6, what="distance in mm"), nargs=3, default=None, metavar=("X", "Y", "Z"), help="then translate, mm")
    p.add_argument("--format", choices=["mha", "nii.gz", "nii", "nrrd"], default="mha",
                   help="image format (default mha: exact geometry; NIfTI headers store float32)")
    p.add_argument("--no-clip", action="store_true", help="keep unclipped HU (written as float32) instead of the 12-bit range")
    p.add_argument("--device", type=torch_device, default="cpu", help="torch device for the voxelization (default cpu)")
    p.add_argument("-o", "--output", default="out", help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output_folder(args.output)
    if len(args.spacing) not in (1, 3):
        raise UsageError(f"--spacing: expected one or three values, got {len(args.spacing)}")
    phantom = load_phantom(args.definition)
    if args.rotate is not None or args.translate is not None:
        phantom = phantom.moved(rigid_pose(args.rotate or (0.0, 0.0, 0.0), args.translate or (0.0, 0.0, 0.0)))
    spacing = args.spacing[0] if len(args.spacing) == 1 else args.spacing
    nx, ny, nz = phantom_grid(phantom, spacing, args.margin, size=args.size)[3]
    check_memory(voxelize_bytes(nx, ny, nz), f"voxelizing {phantom.name} onto {nx} x {ny} x {nz} voxels "
                                             f"(--spacing {' '.join(map(str, args.spacing))})", args.device)
    t0 = time.perf_counter()
    vox = voxelize(phantom, spacing, energy_kev=args.energy, markers=args.markers,
                   grid=VoxelGrid(args.size, margin_mm=args.margin),
                   options=VoxelizeOptions(args.supersample, None if args.no_clip else (-1024.0, 3071.0),
                                           device=args.device))
    t_vox = time.perf_counter() - t0
    # An earlier run's volumes in another --format (its mu.mha beside this run's mu.nii.gz) would
    # be read as part of this voxelization: removed below where this run writes no such file.
    earlier = listed_files(Path(args.output) / "voxelize.json")
    paths = save_voxelized(vox, args.output, args.format, phantom)
    paths["mip"] = plot_voxelized(vox, Path(args.output) / "mip.png", phantom.name)
    for stale in sorted(earlier - {Path(p).name for p in paths.values()}):
        (Path(args.output) / stale).unlink(missing_ok=True)
    used = {b.material.name for b in phantom.bodies} | {m.material.name for m in phantom.markers}
    mats = material_table(args.energy)
    mats = mats[mats.material.isin(used)][["material", "density_g_cm3", "label", "mu_per_mm", "hu"]]
    nx, ny, nz = vox.mu.size
    print(f"phantom {phantom.name}: {len(phantom.bodies)} bodies, {len(phantom.markers)} markers")
    print(f"grid {nx} x {ny} x {nz} voxels at {np.round(vox.mu.spacing, 4).tolist()} mm, origin "
          f"{np.round(vox.mu.origin, 3).tolist()} mm; voxelized in {t_vox:.1f} s (supersample {args.supersample})")
    print(f"materials at {args.energy:g} keV (HU unclipped; the hu volume is clipped to "
          f"{'none' if args.no_clip else '-1024..3071'}, mu keeps the true values):")
    print(mats.to_string(index=False, float_format=lambda v: f"{v:.5g}"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0

"""``stereodrr rig``: build a convergent, biplanar or arc rig, write rig.json, print a table."""

from __future__ import annotations

import argparse

from ..geometry import StereoRig, depth_inplane_ratio, save_dlt_csv, save_rig
from ..resources import PIXEL_PITCH_MM
from ._args import integer, number, output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rig", help="build a stereo rig, write rig.json and print its geometry",
                       description="Build a rig (sources at SID from the isocenter, principal rays through it).")
    p.add_argument("--angle", type=number(0.0, 179.0, open_lo=True, what="angle in degrees"), default=5.0, help="stereo angle in degrees (default 5; 3-7 recommended)")
    p.add_argument("--kind", choices=["convergent", "biplanar", "arc"], default="convergent")
    p.add_argument("--views", type=integer(2, 360, what="view count"), default=3, help="number of views for --kind arc (spread over --angle)")
    p.add_argument("--sid", type=number(0.0, open_lo=True, what="distance in mm"), default=750.0, help="source-isocenter distance, mm")
    p.add_argument("--sdd", type=number(0.0, open_lo=True, what="distance in mm"), default=1200.0, help="source-detector distance, mm")
    p.add_argument("--pixel", type=number(*PIXEL_PITCH_MM, what="pixel pitch in mm"), default=0.3, help="detector pixel pitch, mm")
    p.add_argument("--size", type=integer(1, what="pixel count"), nargs=2, default=[512, 512], metavar=("W", "H"), help="detector pixels")
    p.add_argument("--isocenter", type=number(what="coordinate in mm"), nargs=3, default=[0.0, 0.0, 0.0], metavar=("X", "Y", "Z"))
    p.add_argument("--disparity-error", type=number(0.0, open_lo=True, what="disparity error in px"), default=0.1, help="px, for the depth-resolution line")
    p.add_argument("-o", "--output", default="rig.json", help="rig file to write")
    p.add_argument("--dlt", help="also write the XMALab/DLTdv DLT coefficients (CSV, 11 x n) here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    output_file(args.output)
    if args.dlt:
        output_file(args.dlt, "--dlt")
    w, h = args.size
    common = dict(sid=args.sid, sdd=args.sdd, pixel_spacing=args.pixel, width=w, height=h, isocenter=args.isocenter)
    if args.kind == "convergent":
        rig = StereoRig.convergent(args.angle, **common)
    elif args.kind == "biplanar":
        rig = StereoRig.biplanar(**common)
    else:
        rig = StereoRig.arc(args.views, args.angle, **common)
    save_rig(rig, args.output)
    if args.dlt:
        save_dlt_csv(rig, args.dlt)
    print(rig.summary().to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if len(rig) >= 2:
        theta = rig.stereo_angle_deg()
        print(f"stereo angle   {theta:.3f} deg (first two views)")
        print(f"baseline       {rig.baseline():.2f} mm")
        print(f"depth resolution at the isocenter for {args.disparity_error:g} px disparity error: "
              f"{rig.depth_resolution(args.disparity_error):.4f} mm")
        print(f"depth / in-plane error ratio  {depth_inplane_ratio(theta):.2f}")
    print(f"wrote {args.output}" + (f" and {args.dlt}" if args.dlt else ""))
    return 0

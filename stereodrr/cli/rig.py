"""``stereodrr rig``: build a convergent, biplanar or arc rig, write rig.json, print a table;
``--figure`` draws it in 3D (sources, detectors, central rays; ``--phantom`` adds a phantom's
markers, ``--compare`` another rig, e.g. the calibrated one, beside it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from ..geometry import DltConvention, StereoRig, depth_inplane_ratio, load_rig, save_dlt_csv, save_rig
from ..phantoms import load_phantom
from ..resources import PIXEL_PITCH_MM
from ._args import UsageError, input_file, integer, number, output_file


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rig", help="build a stereo rig, write rig.json and print its geometry",
                       description="Build a rig (sources at SID from the isocenter, principal rays through it).")
    p.add_argument("--angle", type=number(0.0, 179.0, open_lo=True, what="angle in degrees"), default=None, help="stereo angle in degrees (default 5; 3-7 recommended; not with --kind biplanar, "
                   "which is 90)")
    p.add_argument("--kind", choices=["convergent", "biplanar", "arc"], default="convergent")
    p.add_argument("--views", type=integer(2, 360, what="view count"), default=None, help="number of views for --kind arc (spread over --angle; default 3)")
    p.add_argument("--sid", type=number(0.0, open_lo=True, what="distance in mm"), default=750.0, help="source-isocenter distance, mm")
    p.add_argument("--sdd", type=number(0.0, open_lo=True, what="distance in mm"), default=1200.0, help="source-detector distance, mm")
    p.add_argument("--pixel", type=number(*PIXEL_PITCH_MM, what="pixel pitch in mm"), default=0.3, help="detector pixel pitch, mm")
    p.add_argument("--size", type=integer(1, what="pixel count"), nargs=2, default=[512, 512], metavar=("W", "H"), help="detector pixels")
    p.add_argument("--isocenter", type=number(what="coordinate in mm"), nargs=3, default=[0.0, 0.0, 0.0], metavar=("X", "Y", "Z"))
    p.add_argument("--disparity-error", type=number(0.0, 1e4, open_lo=True, what="disparity error in px"), default=0.1, help="px, for the depth-resolution line")
    p.add_argument("-o", "--output", default="rig.json", help="rig file to write")
    p.add_argument("--dlt", help="also write the XMALab/DLTdv DLT coefficients (CSV, 11 x n) here")
    p.add_argument("--dlt-convention", choices=get_args(DltConvention), default="xmalab",
                   help="pixels of --dlt: 'xmalab' (XMALab, DLTdv7 and earlier: 1-based, y up) or 'dltdv8' "
                        "(DLTdv8: 1-based, y down)")
    p.add_argument("--figure", help="also draw the rig in 3D (PNG, or PDF/SVG by the suffix): sources, detectors, "
                                    "central rays, isocenter")
    p.add_argument("--phantom", help="with --figure: draw this phantom's markers (a built-in name or a phantom JSON)")
    p.add_argument("--compare", metavar="RIG", help="with --figure: draw this rig file (e.g. a calibrated rig.json) "
                                                     "beside the one built here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.kind == "biplanar" and args.angle is not None and args.angle != 90.0:
        raise UsageError(f"--angle {args.angle:g}: a biplanar rig is 90 deg; for another angle use --kind convergent")
    if args.views is not None and args.kind != "arc":
        raise UsageError(f"--views: only with --kind arc (a {args.kind} rig has two views)")
    output_file(args.output)
    if args.dlt:
        output_file(args.dlt, "--dlt")
    if (args.phantom or args.compare) and not args.figure:
        raise UsageError("--phantom and --compare draw into --figure: give --figure rig.png")
    _check_distinct_files({"-o": args.output, "--dlt": args.dlt, "--figure": args.figure, "--compare": args.compare})
    other = None
    if args.figure:
        output_file(args.figure, "--figure")
        from ..plot._save import figure_format  # (matplotlib: imported only when a figure is asked for)

        try:
            figure_format(args.figure)
        except ValueError as exc:
            raise UsageError(f"--figure: {exc}") from None
        if args.compare:
            other = load_rig(input_file(args.compare, "--compare", "rig file"))
        markers = load_phantom(args.phantom).marker_table()[["x", "y", "z"]].to_numpy() if args.phantom else None
    angle = 5.0 if args.angle is None else args.angle
    w, h = args.size
    common = dict(sid=args.sid, sdd=args.sdd, pixel_spacing=args.pixel, width=w, height=h, isocenter=args.isocenter)
    if args.kind == "convergent":
        rig = StereoRig.convergent(angle, **common)
    elif args.kind == "biplanar":
        rig = StereoRig.biplanar(**common)
    else:
        rig = StereoRig.arc(3 if args.views is None else args.views, angle, **common)
    # What can fail first (the report, then the DLT, which writes nothing when a view has none),
    # so a failed command leaves the files it names as they were.
    report = _report(rig, args.disparity_error)
    if args.dlt:
        save_dlt_csv(rig, args.dlt, args.dlt_convention)
    save_rig(rig, args.output)
    print(report)
    if args.figure:
        from ..plot.rig import plot_rig

        rigs = {f"{Path(args.output).name} ({args.kind})": rig, Path(args.compare).name: other} if other is not None else rig
        plot_rig(rigs, args.figure, markers=markers,
                 title=f"{Path(args.output).name}" + (f", markers of {args.phantom}" if args.phantom else ""))
    written = [args.output, *(p for p in (args.dlt, args.figure) if p)]
    print(f"wrote {', '.join(written)}")
    return 0


def _check_distinct_files(paths: dict[str, str | None]) -> None:
    """Refuse two options that name one file (the nominal rig written over the ``--compare``d
    calibration, or a DLT table over the rig)."""
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        key = Path(path).expanduser().resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {option} name one file ({path}); give each its own")
        seen[key] = option


def _report(rig: StereoRig, disparity_error: float) -> str:
    """The rig's table and, for two views or more, its stereo angle, baseline and depth resolution."""
    lines = [rig.summary().to_string(index=False, float_format=lambda v: f"{v:.2f}")]
    if len(rig) >= 2:
        theta = rig.stereo_angle_deg()
        lines += [f"stereo angle   {theta:.3f} deg (first two views)",
                  f"baseline       {rig.baseline():.2f} mm",
                  f"depth resolution at the isocenter for {disparity_error:g} px disparity error: "
                  f"{rig.depth_resolution(disparity_error):.4f} mm",
                  f"depth / in-plane error ratio  {depth_inplane_ratio(theta):.2f}"]
    return "\n".join(lines)

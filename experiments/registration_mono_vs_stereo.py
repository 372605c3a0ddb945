"""Study: how much does a second view fix the depth of a 2D/3D registration?

One CT (the torso phantom ``phantoms/torso.json`` voxelized at 2.5 mm, or the built-in
``torso_phantom`` with ``--ct builtin``), known true pose (the identity), ``--trials`` random
initial poses (rotation vector components uniform in +-10 deg, translation components in
+-20 mm about the volume centre; fixed seed, the same poses for every setup), three rigs with
the same detector (SID 750 mm, SDD 1200 mm, a ``--detector-mm`` wide detector of ``--size`` pixels):

* ``single``: one AP view;
* ``stereo5``: a convergent 5 deg pair (:meth:`StereoRig.convergent`);
* ``biplanar``: AP + lateral (:meth:`StereoRig.biplanar`);
* ``nanodrr``: nanodrr's single-view ``Registration`` (bench extra) on the single-view problem,
  the peer baseline, skipped with a note when nanodrr is not installed.

The targets are simulated X-rays of the patient, not the optimiser's own model: the phantom
voxelized ``--patient-factor`` times finer than the CT (a stand-in for the continuous anatomy),
exact (Siddon) line integrals, Poisson quantum noise at ``--photons`` per unattenuated pixel
(drawn afresh for every trial), -log. The registration renders trilinear DRRs of the coarser CT,
so, as with a real CT, the optimum is not exactly the truth. ``--targets ct`` renders the
targets with the optimiser's own model instead (trilinear DRRs of the CT), so that noise is the
only error and the spread over trials can be held against the Cramér–Rao bound. The truth is
used only to score the result.

First ``<out>/bounds.csv``: the Cramér–Rao bound of each setup (:func:`stereodrr.registration.pose_crlb`,
the smallest depth, in-plane and rotation error any unbiased registration reaches at this dose;
``--bounds-only`` stops there). Then ``<out>/results.csv`` (setup, trial, success, mtre_mm, depth_error_mm, inplane_error_mm,
rotation_error_deg, seconds, ...; success = mTRE over the 8 box corners < 1 mm) after every trial,
``<out>/results.png`` and prints a summary table. Example::

    python experiments/registration_mono_vs_stereo.py --trials 20 --size 128 --out out/registration
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stereodrr.fileio import atomic_path
from stereodrr.geometry import StereoRig, invert, rigid_matrix
from stereodrr.imaging import detect, negative_log
from stereodrr.phantoms import torso_phantom
from stereodrr.plot.register import plot_registration_study
from stereodrr.registration import (
    RegistrationOptions,
    RigidPose,
    moved_extrinsics,
    pose_crlb,
    register,
    registration_errors,
)
from stereodrr.render import Projector, render_drr
from stereodrr.render.threads import set_cpu_threads  # noqa: E402
from stereodrr.volume import Volume, hu_to_mu

SETUPS = ("single", "stereo5", "biplanar", "nanodrr")
SID, SDD = 750.0, 1200.0
COLUMNS = ["setup", "trial", "success", "mtre_mm", "depth_error_mm", "inplane_error_mm", "rotation_error_deg",
           "seconds", "status", "init_mtre_mm", "iterations"]


def load_ct(kind: str, spacing: float) -> Volume:
    """The CT as attenuation (1/mm, 60 keV); ``voxelize`` and ``torso_phantom`` centre the box on
    the phantom, so CTs of different spacings share one world frame."""
    if kind == "torso_json":
        from stereodrr.phantoms import load_phantom, voxelize

        path = Path(__file__).resolve().parents[1] / "phantoms" / "torso.json"
        return voxelize(load_phantom(path), spacing, progress=False).mu
    ct = torso_phantom(spacing=spacing)
    return ct.with_data(hu_to_mu(ct.data))


def build_rigs(size: int, detector_mm: float) -> dict[str, StereoRig]:
    common = dict(sid=SID, sdd=SDD, pixel_spacing=detector_mm / size, width=size, height=size)
    single = StereoRig.arc(1, 0.0, names=("ap",), **common)
    return {"single": single, "stereo5": StereoRig.convergent(5.0, **common), "biplanar": StereoRig.biplanar(**common),
            "nanodrr": single}


def simulate_xrays(line: torch.Tensor, photons: float | None, seed: int) -> torch.Tensor:
    """Noise-free line integrals ``(V, H, W)`` -> Poisson counts -> -log images."""
    if photons is None:
        return line
    return negative_log(detect(line, photons, seed=seed), photons)


def initial_poses(n: int, seed: int, center: np.ndarray, max_deg: float, max_mm: float) -> list[RigidPose]:
    rng = np.random.default_rng(seed)
    return [RigidPose.from_degrees(rng.uniform(-max_deg, max_deg, 3), rng.uniform(-max_mm, max_mm, 3), center)
            for _ in range(n)]


def run_nanodrr(volume: Volume, rig: StereoRig, target: torch.Tensor, init: RigidPose,
                iterations: tuple[int, ...], lr_rotation_deg: float, lr_translation_mm: float) -> tuple[RigidPose, int]:
    """nanodrr's single-view ``Registration`` on the same problem: its multiscale NCC ([None, 13],
    weights 0.5/0.5), Adam with our rotation/translation learning rates, and its ``rescale_``
    pyramid with our level sizes and iteration limits (1/4, 1/2, 1 of the detector). Its
    parameters perturb the camera about the volume centre; the final camera is converted
    back to a volume pose."""
    from nanodrr.data import Subject
    from nanodrr.metrics import MultiscaleNormalizedCrossCorrelation2d
    from nanodrr.registration import Registration

    cam = next(iter(rig.cameras.values()))
    data = volume.data.to(torch.float32)[None, None]
    v2w = torch.as_tensor(volume.affine, dtype=torch.float64)
    subject = Subject(data, torch.zeros_like(data), v2w.float(), torch.linalg.inv(v2w).float(),
                      Subject._make_voxel_to_grid(data.shape), torch.as_tensor(volume.center, dtype=torch.float32),
                      convert_to_mu=False)
    # nanodrr puts pixel centres at (u + 1/2, v + 1/2); stereodrr at integers.
    K = cam.K.copy()
    K[:2, 2] += 0.5
    E = rigid_matrix(cam.R, cam.t)
    E0 = rigid_matrix(*moved_extrinsics(cam.R, cam.t, init.matrix))  # the camera that sees the start pose
    torch.manual_seed(0)  # Registration draws its tiny initial perturbation at random
    reg = Registration(subject, torch.as_tensor(invert(E0), dtype=torch.float32)[None],
                       torch.as_tensor(np.linalg.inv(K), dtype=torch.float32)[None],
                       torch.tensor([cam.sdd], dtype=torch.float32), cam.height, cam.width)
    loss_fn = MultiscaleNormalizedCrossCorrelation2d([None, 13], [0.5, 0.5])
    opt = torch.optim.Adam([{"params": [reg._rot], "lr": math.radians(lr_rotation_deg)},
                            {"params": [reg._xyz], "lr": lr_translation_mm}])
    steps = 0
    for scale, n_it in zip((0.25, 0.5, 1.0), iterations):
        reg.rescale_(scale / (reg.height / cam.height))
        tgt = torch.nn.functional.interpolate(target[None, None].float(), size=(reg.height, reg.width), mode="area")
        for _ in range(n_it):
            opt.zero_grad()
            loss = -loss_fn(reg(n_samples=256), tgt).mean()
            loss.backward()
            opt.step()
            steps += 1
    with torch.no_grad():
        cam_to_world = reg.pose[0].double().numpy()
    # E T = inv(cam_to_world)  =>  T = inv(E) inv(cam_to_world)
    T = invert(E) @ invert(cam_to_world)
    return RigidPose.from_matrix(T, volume.center), steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--out", default="out/registration")
    ap.add_argument("--size", type=int, default=128, help="detector pixels per side")
    ap.add_argument("--detector-mm", type=float, default=512.0,
                    help="detector side in mm (default 512: the whole 320 mm torso in the field at SID 750 / SDD 1200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    ap.add_argument("--ct", choices=["torso_json", "builtin"], default="torso_json")
    ap.add_argument("--spacing", type=float, default=2.5, help="CT voxel size, mm")
    ap.add_argument("--targets", choices=["patient", "ct"], default="patient",
                    help="X-rays of the finer patient (default) or the optimiser's own model of the CT (noise only)")
    ap.add_argument("--patient-factor", type=int, default=2,
                    help="the X-rays are rendered from the phantom voxelized this many times finer than the CT")
    ap.add_argument("--photons", type=float, default=1e4, help="photons per unattenuated pixel; 0 = noise-free")
    ap.add_argument("--max-deg", type=float, default=10.0)
    ap.add_argument("--max-mm", type=float, default=20.0)
    ap.add_argument("--similarity", default="mncc")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--bounds-only", action="store_true",
                    help="only write <out>/bounds.csv: the Cramer-Rao bound of each setup")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads (default 1: on a shared CPU one thread per run is fastest)")
    args = ap.parse_args(argv)
    if args.trials < 1 or args.size < 16 or args.patient_factor < 1:
        ap.error("--trials and --patient-factor must be >= 1 and --size >= 16")
    set_cpu_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)  # stereo-angle notes and the like; failures are in the table
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    volume = load_ct(args.ct, args.spacing)
    patient = load_ct(args.ct, args.spacing / args.patient_factor) if args.targets == "patient" else volume
    rigs = build_rigs(args.size, args.detector_mm)
    truth = RigidPose.identity(volume.center)
    inits = initial_poses(args.trials, args.seed, volume.center, args.max_deg, args.max_mm)
    corners = volume.corners()
    photons = args.photons if args.photons > 0 else None
    setups = list(args.setups)
    if "nanodrr" in setups:
        try:
            import nanodrr  # noqa: F401
        except ImportError:
            print("note: nanodrr is not installed (make bench-install); skipping the nanodrr baseline")
            setups.remove("nanodrr")
    source = f"the phantom at {patient.spacing.tolist()} mm" if args.targets == "patient" else "the CT itself"
    print(f"CT {args.ct}: {volume.size} voxels of {volume.spacing.tolist()} mm (X-rays from {source}); detector {args.size}^2 px of "
          f"{args.detector_mm / args.size:.2f} mm; {f'{photons:g}' if photons else 'no'} photons/pixel; {args.trials} trials; setups {setups}")

    photons_bound = photons if photons else 1e4
    bounds = pd.DataFrame([{"setup": s, **pose_crlb(volume, rigs[s], photons=photons_bound)}
                           for s in setups if s != "nanodrr"])
    if "single" in set(bounds["setup"]):
        bounds["depth_gain_bound"] = float(bounds.loc[bounds["setup"] == "single", "depth_mm"].iloc[0]) / bounds["depth_mm"]
    print(f"Cramer-Rao bound at {photons_bound:g} photons/px (std; the smallest error any unbiased registration reaches):")
    print(bounds.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    with atomic_path(out / "bounds.csv") as tmp:
        bounds.to_csv(tmp, index=False)
    if args.bounds_only:
        return 0

    rows: list[dict] = []
    csv = out / "results.csv"
    for setup in setups:
        rig = rigs[setup]
        line = (render_drr(patient, rig, Projector("exact")) if args.targets == "patient"
                else render_drr(volume, rig, Projector("trilinear")))
        for trial, init in enumerate(inits):
            targets = simulate_xrays(line, photons, args.seed * 100_003 + trial)
            t0 = time.perf_counter()
            if setup == "nanodrr":
                pose, n_it = run_nanodrr(volume, rig, targets[0], init, (150, 100, 40), 0.5, 2.0)
                status = "fixed_iterations"
            else:
                res = register(volume, rig, targets, init, RegistrationOptions(
                    similarity=args.similarity, optimizer=args.optimizer, progress=False))
                pose, status, n_it = res.pose, res.status, len(res.history)
            seconds = time.perf_counter() - t0
            err = registration_errors(pose, truth, rigs["single"] if setup == "nanodrr" else rig, corners)
            row = {"setup": setup, "trial": trial, "success": bool(err["mtre_mm"] < 1.0), **err, "seconds": seconds,
                   "status": status, "init_mtre_mm": registration_errors(init, truth, rig, corners)["mtre_mm"],
                   "iterations": n_it}
            rows.append(row)
            print(f"{setup:9s} trial {trial:3d}: mTRE {err['mtre_mm']:8.3f} mm  depth {err['depth_error_mm']:7.3f}  "
                  f"in-plane {err['inplane_error_mm']:7.3f}  rot {err['rotation_error_deg']:6.3f} deg  "
                  f"{seconds:6.1f} s  {status}", flush=True)
            with atomic_path(csv) as tmp:
                pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp, index=False)

    df = pd.DataFrame(rows, columns=COLUMNS)
    summary = df.groupby("setup", sort=False).agg(
        trials=("trial", "size"), success_pct=("success", lambda s: 100 * s.mean()),
        median_mtre_mm=("mtre_mm", "median"), median_depth_mm=("depth_error_mm", "median"),
        median_inplane_mm=("inplane_error_mm", "median"), median_rotation_deg=("rotation_error_deg", "median"),
        median_seconds=("seconds", "median"),
        rms_depth_mm=("depth_error_mm", lambda d: float(np.sqrt(np.mean(np.square(d))))))
    # The bound is a standard deviation: compare it with the RMS depth error.
    summary["depth_bound_mm"] = bounds.set_index("setup")["depth_mm"].reindex(summary.index).to_numpy()
    if "nanodrr" in summary.index and "single" in set(bounds["setup"]):
        summary.loc["nanodrr", "depth_bound_mm"] = float(bounds.set_index("setup").loc["single", "depth_mm"])
    if "single" in summary.index:
        summary["depth_vs_single"] = summary.loc["single", "median_depth_mm"] / summary["median_depth_mm"]
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    plot_registration_study(df, out / "results.png",
                            f"{args.trials} random starts (+-{args.max_deg:g} deg, +-{args.max_mm:g} mm), "
                            f"{args.size}x{args.size} px, {f'{photons:g}' if photons else 'no'} photons/px")
    print(f"wrote {csv} and {out / 'results.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

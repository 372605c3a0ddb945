"""Memory bounds of the chunked renderer, measured as the peak RSS of a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, resource, sys
import numpy as np, torch


def peak_rss():
    # VmHWM is this process's own high-water mark; ru_maxrss also carries the parent's RSS at
    # fork over exec on Linux, so it read 5.7 GB when pytest itself had grown that large.
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

from stereodrr.geometry import Camera
from stereodrr.render import Projector, drr
from stereodrr.volume import Volume
nx, ny, nz, size, mode = (int(a) for a in sys.argv[1:6])
backend = sys.argv[6]
data = torch.rand(nz, ny, nx, generator=torch.Generator().manual_seed(0)) * 0.02
vol = Volume(data, origin=(0.0, 0.0, 0.0), spacing=(0.8, 0.8, 1.0), direction=np.eye(3))
base = peak_rss()
cam = Camera.look_at(vol.center + np.array([30.0, -700.0, 20.0]), vol.center, sdd=1100, pixel_spacing=0.6 * 1024 / size,
                     width=size, height=size)
A = torch.linalg.inv(torch.tensor(vol.affine)).float()
K, R, t = (x[None] for x in cam.to_torch())
img = drr(vol.data, A, K, R, t, size, size, projector=Projector(mode=["trilinear", "exact"][mode], backend=backend))
peak = peak_rss()
print(json.dumps({"base": base, "peak": peak, "finite": bool(torch.isfinite(img).all()), "max": float(img.max())}))
"""


def _peak(nx: int, ny: int, nz: int, size: int, mode: int = 0, backend: str = "auto") -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(nx), str(ny), str(nz), str(size), str(mode), backend],
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_1024_view_of_512x512x300_within_4gb():
    r = _peak(512, 512, 300, 1024)
    assert r["finite"] and r["max"] > 0
    assert r["peak"] < 4 * 2**30


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_peak_memory_does_not_grow_with_image_size(backend):
    small, large = _peak(96, 96, 80, 128, backend=backend), _peak(96, 96, 80, 512, backend=backend)
    output_growth = (512 * 512 - 128 * 128) * 4
    # Growth beyond the output image stays within the few MB of per-ray bookkeeping of one chunk.
    assert (large["peak"] - large["base"]) - (small["peak"] - small["base"]) <= output_growth + 24 * 2**20

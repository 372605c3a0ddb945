"""Memory budget: estimate what a job needs before allocating it, and refuse beyond a budget.

The budget is a fraction of the memory available when the check runs (``MemAvailable`` on
Linux; for a job on a CUDA device, that device's free memory), by default
:data:`DEFAULT_FRACTION`; the environment variable
``STEREODRR_MEMORY_BUDGET`` overrides it with a size (``"8G"``, ``"512M"``, ``"2e9"`` bytes) or
a fraction of available memory (``"0.8"`` or ``"80%"``). A refused job raises
:class:`ResourceError` naming the size it would need and what it is for, before the
allocation, instead of a torch/numpy out-of-memory error deep inside (or swapping for minutes).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Iterable, TypeGuard

if TYPE_CHECKING:
    import torch

__all__ = ["ResourceError", "DEFAULT_FRACTION", "ENV", "available_memory", "memory_budget", "check_memory",
           "format_bytes", "render_bytes", "voxelize_bytes"]

ENV = "STEREODRR_MEMORY_BUDGET"
"""The environment variable that sets the memory budget (``8G``, ``0.8`` or ``80%``)."""
DEFAULT_FRACTION = 0.5
"""The default memory budget: this fraction of the available memory."""
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class ResourceError(ValueError):
    """A job would need more memory than the budget allows."""


def format_bytes(n: float) -> str:
    """``1.5e9`` -> ``'1.4 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _on_cuda(device: torch.device | str | None) -> TypeGuard[torch.device | str]:
    return device is not None and str(device).startswith("cuda")


def available_memory(device: torch.device | str | None = None) -> int:
    """Bytes of memory available to a new allocation without swapping (``MemAvailable``), or
    free on ``device`` when it is a CUDA device (where the job's tensors will be), counting the
    blocks torch's caching allocator holds unused (a loop of renders would otherwise see its
    budget shrink by what earlier iterations freed)."""
    if _on_cuda(device):
        import torch

        d = torch.device(device)
        cached = torch.cuda.memory_reserved(d) - torch.cuda.memory_allocated(d)
        return int(torch.cuda.mem_get_info(d)[0]) + int(cached)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # other POSIX systems: free physical pages
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30  # unknown: assume a modest machine


def memory_budget(device: torch.device | str | None = None) -> tuple[int, str]:
    """The budget in bytes and a phrase saying where it comes from (``device``: as
    :func:`available_memory`).

    Raises:
        ValueError: ``STEREODRR_MEMORY_BUDGET`` is set but not a size or a fraction.
    """
    text = os.environ.get(ENV, "").strip()
    avail = available_memory(device)
    where = f" on {device}" if _on_cuda(device) else ""
    if not text:
        return int(DEFAULT_FRACTION * avail), (f"{DEFAULT_FRACTION:.0%} of the {format_bytes(avail)} available{where}; "
                                               f"set {ENV} to change it")
    m = re.fullmatch(r"([0-9.eE+]+)\s*(%|[KMGT]i?B?|B)?", text, flags=re.IGNORECASE)
    try:
        value = float(m.group(1)) if m else -1.0
    except ValueError:
        value = -1.0
    if m is None or not 0 < value < float("inf"):
        raise ValueError(f"{ENV}={text!r}: expected a size (e.g. 8G, 512M, bytes) or a fraction of available "
                         "memory (e.g. 0.8 or 80%)")
    unit = (m.group(2) or "").upper()
    # A percentage is always a share of the available memory (150% allows a job past it); a
    # bare number up to 1 is a fraction, above it a count of bytes, which must be whole: "1.5"
    # or "150" meant as a share would otherwise leave a budget of one or a hundred bytes.
    if unit == "%" or (unit == "" and value <= 1.0):
        share = value / 100.0 if unit == "%" else value
        return int(share * avail), f"{share:.0%} of the {format_bytes(avail)} available{where} ({ENV})"
    if unit in ("", "B") and value != int(value):
        raise ValueError(f"{ENV}={text!r}: expected a fraction of available memory up to 1 (e.g. 0.8 or 80%) or a "
                         "whole number of bytes (e.g. 8G, 512M, 2000000000)")
    return int(value * _UNITS[unit[:1]]), f"{ENV}={text}"


def check_memory(nbytes: float, what: str, device: torch.device | str | None = None) -> None:
    """Refuse a job that needs ``nbytes`` when that exceeds the budget.

    Args:
        nbytes: estimated peak bytes of the job.
        what: the job, as the user knows it (e.g. ``"render: 2 views of 100000 x 100000 px"``).
        device: where the job's tensors live (a CUDA device: its free memory is the base of the
            budget; ``None`` or a CPU device: the host's).

    Raises:
        ResourceError: over the budget; the message names the job, its size and the budget.
    """
    budget, source = memory_budget(device)
    if nbytes > budget:
        raise ResourceError(f"{what} needs about {format_bytes(nbytes)} of memory, over the budget of "
                            f"{format_bytes(budget)} ({source})")


# ---- bounds on values that are not physical or make the work explode (named in errors by
# the CLI and the dataset config)
#: Detector pixel pitch, mm: photon-counting panels reach 0.055, image intensifiers ~1.
PIXEL_PITCH_MM = (0.005, 10.0)
#: Detector blur sigma, px: the Gaussian kernel spans about 8 sigma, so a larger sigma costs
#: more than the image it blurs.
MAX_BLUR_PX = 64.0
#: Photons per pixel (open field): torch's Poisson draws keep their mean and variance up to 1e12
#: (measured; at 1e15 the variance is 18x too large), far above any real exposure.
MAX_PHOTONS = 1e12
#: Trilinear ray-marching step, mm: finer steps only multiply the samples per ray.
MIN_STEP_MM = 0.01
#: Voxel size of a dataset's subject, mm: finer than a micro-CT's (a torso of 1e-300 mm voxels
#: overflowed the voxelizer's counts).
MIN_VOXEL_MM = 0.01
#: Sub-samples per axis in boundary voxels (the voxelizer itself raises it to at most 16).
MAX_SUPERSAMPLE = 16
#: Seeds and item counts are stored as int64 (manifest, item records).
MAX_INT64 = (1 << 63) - 1


# ---- estimates (peak bytes; generous, since they only guard against sizes that cannot work)
#: Per detector pixel and view of a render as the CLI runs it: the float32 line integral, its
#: numpy copy, the float64 preview window and the written image.
RENDER_BYTES_PER_PIXEL = 32
#: Per detector pixel and view of a simulated shot that is then calibrated (demo): the render,
#: the detector model's float64 noise and blur buffers, and detection's float64 working images.
SHOT_BYTES_PER_PIXEL = 160
#: Per detector pixel and view of a registration or a tracking: the float64 target and weights,
#: the DRR and its float64 copy, the similarity's float64 working images and the autograd
#: graph that keeps them for the gradient.
REGISTER_BYTES_PER_PIXEL = 160
#: Per voxel of a voxelization: mu, HU, labels and marker-fraction volumes (float32 each).
VOXELIZE_BYTES_PER_VOXEL = 16
#: Working set of a voxelization (sub-samples of one chunk: coordinates, coverage, masks).
VOXELIZE_WORKING_BYTES = 48 * (1 << 22)


def render_bytes(sizes: Iterable[tuple[int, int]], per_pixel: int = RENDER_BYTES_PER_PIXEL) -> int:
    """Peak bytes of rendering views of ``(W, H)`` pixels each."""
    return int(sum(int(w) * int(h) for w, h in sizes) * per_pixel)


def voxelize_bytes(nx: int, ny: int, nz: int) -> int:
    """Peak bytes of voxelizing onto an ``nx x ny x nz`` grid."""
    return int(nx) * int(ny) * int(nz) * VOXELIZE_BYTES_PER_VOXEL + VOXELIZE_WORKING_BYTES

"""Thread pools of the CPU renderer: torch's OpenMP pool and Numba's, without spinning.

On CPU a render alternates small torch operations (pixel rays, clipping, sample counts) with
the Numba kernel. torch and Numba's ``omp`` threading layer load two different libgomp copies,
so there are two thread pools; with libgomp's default wait policy each pool's idle workers
spin for a while after every parallel region, on the very cores the other pool needs next.
On a shared or small machine that inflates a render several-fold (the renderer benchmark's
runs measure it). Sleeping idle workers (``OMP_WAIT_POLICY=PASSIVE``) cost microseconds per
region instead.

libgomp reads the policy once, when it loads, so the package sets it (unless the user already
chose one) in the environment:

* ``import stereodrr`` sets it first thing: when torch is not imported yet (the ``stereodrr``
  command, scripts that import stereodrr first) both pools get it;
* :func:`numba_kernel` wraps every Numba call: Numba loads its pool at its first parallel
  launch, after that line has run, so Numba's pool gets it whatever was imported first.

Child processes (Dask workers) inherit the setting.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

__all__ = ["prefer_passive_openmp", "numba_kernel", "single_threaded_torch", "set_cpu_threads"]


def prefer_passive_openmp() -> bool:
    """``OMP_WAIT_POLICY=PASSIVE`` in the environment unless it is set; True if set here."""
    if "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


@contextlib.contextmanager
def numba_kernel() -> Iterator[None]:
    """Context of one Numba kernel call: the passive policy is in place before Numba's
    threading layer (and its libgomp) first loads."""
    if "numba.np.ufunc.omppool" not in sys.modules:
        prefer_passive_openmp()
    yield


@contextlib.contextmanager
def single_threaded_torch() -> Iterator[None]:
    """torch's intra-op pool off (one thread) inside the block, restored after.

    The CPU renderer's ray set-up is a handful of element-wise ops on ``O(rays)`` values: waking
    a pool for each costs more than it saves, and on a loaded machine far more (measured on 2
    shared cores: a 40k-ray pixel grid 80 ms with 2 threads, 0.6 ms with 1; the set-up of a
    200^2 view 624 ms against a 820 ms Numba kernel).
    """
    import torch

    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def set_cpu_threads(n: int) -> None:
    """Cap both CPU pools, torch's intra-op pool and Numba's (when installed), at ``n`` threads
    (``register --threads``, the studies' one thread per run)."""
    import torch

    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"threads: expected a positive count, got {n!r}")
    torch.set_num_threads(int(n))
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))

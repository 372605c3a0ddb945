"""Thread pools of the CPU renderer (torch's OpenMP pool and Numba's) and of the ball fits
(OpenBLAS's), without contention.

On CPU a render alternates small torch operations (pixel rays, clipping, slab counts) with the
Numba kernel. Numba's ``omp`` threading layer loads a second libgomp next to torch's, and
after its first parallel launch every small torch operation of the process slows down by tens
of milliseconds, even with torch at one thread and idle workers told to sleep (measured on the
2 shared cores, ``amax`` of a (40000, 3) tensor: 0.2 ms before the first Numba launch, 20-70 ms
after it with ``omp``, 0.3-0.9 ms with ``workqueue``; a 200² Joseph view's ray set-up 180 ms ->
a few ms). So:

* :func:`numba_kernel` wraps every Numba call: before Numba's first parallel launch it picks
  Numba's own ``workqueue`` layer (no OpenMP; the kernels are plain ``prange`` loops over rays,
  as fast there), unless the user chose a layer (``NUMBA_THREADING_LAYER`` or
  ``numba.config.THREADING_LAYER``). ``workqueue`` must not be entered from two Python threads
  at once, so the calls hold one process-wide lock (each call uses every core anyway).
* ``import stereodrr`` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user chose a policy) before
  torch loads libgomp: torch's idle workers sleep instead of spinning on the cores Numba's
  threads need next. libgomp reads it once, at load; child processes (Dask workers) inherit it.
* :func:`single_threaded_blas` runs the ball fits of marker detection with OpenBLAS on one
  thread: their products and SVDs are of ~1000 x 100 matrices, which OpenBLAS splits over every
  core, and each split waits for the slowest thread (measured on 2 shared cores at load 3-8: one
  950 x 109 SVD 0.2-2 s instead of 5-15 ms, a 1024^2 calibration image 16-70 s instead of 2-4 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from typing import Any, Callable, Iterator

__all__ = ["prefer_passive_openmp", "numba_kernel", "announce_compile", "single_threaded_torch", "single_threaded_blas",
           "set_cpu_threads"]


def prefer_passive_openmp() -> bool:
    """``OMP_WAIT_POLICY=PASSIVE`` in the environment unless it is set; True if set here."""
    if "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


_NUMBA_CALL = threading.RLock()


def _prefer_workqueue() -> None:
    """Numba's ``workqueue`` threading layer unless the user chose one or a layer already runs."""
    try:
        import numba
        from numba.np.ufunc import parallel
    except ImportError:  # pragma: no cover - numba is a core dependency
        return
    if parallel._is_initialized or "NUMBA_THREADING_LAYER" in os.environ:
        return
    config: Any = numba.config  # its settings are set at run time, unknown to a type checker
    if config.THREADING_LAYER == "default":
        config.THREADING_LAYER = "workqueue"


@contextlib.contextmanager
def numba_kernel() -> Iterator[None]:
    """Context of one Numba kernel call: the threading layer chosen above (and the passive
    OpenMP policy, should a user's choice load libgomp there), one call at a time."""
    with _NUMBA_CALL:
        if "numba.np.ufunc.omppool" not in sys.modules:
            prefer_passive_openmp()
        _prefer_workqueue()
        yield


_ANNOUNCED = threading.Event()


def announce_compile(kernel: Any, args: tuple[Any, ...]) -> None:
    """One line on stderr, once per process, before a Numba kernel compiles for ``args``' types:
    on a new install the fused kernels compile on their first call (the Joseph backward pass
    about 16 s on 2 cores), then load from Numba's cache in a second or two. Silent when this
    process has the kernel for those types or the cache holds it (looked up through Numba's
    cache index; a Numba whose cache cannot be inspected so gives no line). Only to a terminal:
    a script's or a pipeline's stderr stays as the commands define it."""
    if _ANNOUNCED.is_set() or not sys.stderr.isatty():
        return
    try:
        sig = tuple(kernel.typeof_pyval(a) for a in args)
        cache = kernel._cache
        if sig in kernel.overloads or not getattr(cache, "_enabled", False):
            return
        if cache._index_key(sig, kernel.targetctx.codegen()) in cache._cache_file._load_index():
            return
    except Exception:  # noqa: BLE001 - Numba's cache internals differ between versions: say nothing
        return
    _ANNOUNCED.set()
    print("stereodrr: compiling the CPU renderer's kernels for this machine (once: Numba caches them for "
          "later runs; up to a minute or two) ...", file=sys.stderr, flush=True)


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


@functools.cache
def _openblas_thread_setters() -> tuple[Callable[[int], int], ...]:
    """``openblas_set_num_threads_local`` (sets the thread count, returns the previous one;
    OpenBLAS >= 0.3.27) of every OpenBLAS this process has loaded: numpy's and SciPy's wheels
    each bring one. Found through ``/proc/self/maps`` (Linux); elsewhere, or with another BLAS
    (MKL, Accelerate), none: the calls then run with that library's own threads."""
    try:
        with open("/proc/self/maps") as maps:
            fields = [line.split(maxsplit=5) for line in maps]
    except OSError:
        return ()
    paths = {f[5].strip() for f in fields if len(f) == 6}
    setters = []
    for path in sorted(p for p in paths if "openblas" in os.path.basename(p).lower()):
        try:
            setter = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
        setters.append(setter)
    return tuple(setters)


_BLAS_CALL = threading.RLock()


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """OpenBLAS on one thread inside the block, restored after (the setting is process-wide:
    one block at a time). Its results then no longer depend on the machine's core count either."""
    import numpy  # noqa: F401 - loads numpy's OpenBLAS before the look-up
    import scipy.linalg  # noqa: F401 - and SciPy's

    with _BLAS_CALL:
        setters = _openblas_thread_setters()
        before = [setter(1) for setter in setters]
        try:
            yield
        finally:
            for setter, n in zip(setters, before):
                setter(n)


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
    _prefer_workqueue()  # set_num_threads starts Numba's threads
    config: Any = numba.config
    numba.set_num_threads(min(int(n), config.NUMBA_NUM_THREADS))

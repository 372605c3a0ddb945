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

__all__ = ["prefer_passive_openmp", "numba_kernel"]


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

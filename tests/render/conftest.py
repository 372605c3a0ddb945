"""Shared fixtures for renderer tests: small analytic volumes and cameras, and every backend.

Without a CUDA device the Triton kernels run in Triton's interpreter on CPU tensors; the switch
is read when a kernel is defined (stereodrr imports its Triton module lazily, at first use), so
setting it here, before any test renders, is early enough.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from stereodrr.geometry import rotvec_to_matrix

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_TRITON = importlib.util.find_spec("triton") is not None
# (mode, backend) of each renderer implementation (joseph on CUDA runs the torch backend).
PATHS = ([("trilinear", b) for b in ("numba", "torch", "triton")] + [("joseph", b) for b in ("numba", "torch")]
         + [("exact", "torch")])


def device_for(backend: str) -> str:
    """Where a backend's test tensors live: CUDA for triton when there is a GPU."""
    return "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"


@pytest.fixture
def oblique_direction() -> np.ndarray:
    """A proper rotation that is far from any axis permutation (volume direction cosines)."""
    return rotvec_to_matrix(np.array([0.3, -0.5, 0.7]))


@pytest.fixture(params=PATHS, ids=[f"{m}-{b}" for m, b in PATHS])
def render_path(request) -> dict:
    """Each renderer implementation once: the ``mode`` and ``backend`` keywords to pass."""
    mode, backend = request.param
    if backend == "triton" and not HAS_TRITON:
        pytest.skip("triton not installed (pip install 'stereodrr[gpu]')")
    return {"mode": mode, "backend": backend}


@pytest.fixture(params=["numba", "torch", "triton"])
def backend(request) -> str:
    """Each trilinear backend once."""
    if request.param == "triton" and not HAS_TRITON:
        pytest.skip("triton not installed (pip install 'stereodrr[gpu]')")
    return request.param

"""Shared fixtures for renderer tests: small analytic volumes and cameras."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.geometry import rotvec_to_matrix


@pytest.fixture
def oblique_direction() -> np.ndarray:
    """A proper rotation that is far from any axis permutation (volume direction cosines)."""
    return rotvec_to_matrix(np.array([0.3, -0.5, 0.7]))


@pytest.fixture(params=["trilinear-fused", "trilinear-torch", "exact"])
def render_path(request, monkeypatch) -> str:
    """Each renderer implementation once: returns the ``mode`` to pass."""
    from stereodrr.render import _fused

    if request.param == "trilinear-torch":
        monkeypatch.setattr(_fused, "available", lambda data: False)
    elif request.param == "trilinear-fused" and not _fused.available(torch.zeros(1)):
        pytest.skip("numba not installed")
    return request.param.split("-")[0]

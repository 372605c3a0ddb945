"""Synthetic ground truth for the calibration tests: known cameras and known 3D points."""

from __future__ import annotations

import numpy as np
import pytest

from stereodrr.geometry import StereoRig


@pytest.fixture(scope="session")
def rig5() -> StereoRig:
    """5 deg convergent rig, SID 750, SDD 1200, 0.3 mm pixels, 512x512."""
    return StereoRig.convergent(5.0, 750.0, 1200.0, 0.3, 512, 512)


@pytest.fixture(scope="session")
def points3d() -> np.ndarray:
    """30 points spread through a 60 mm cube around the isocenter (non-coplanar)."""
    return np.random.default_rng(7).uniform(-30.0, 30.0, (30, 3))


def _project(rig: StereoRig, X: np.ndarray) -> dict[str, np.ndarray]:
    return {name: cam.project(X)[0] for name, cam in rig.cameras.items()}


@pytest.fixture(scope="session")
def project():
    """``project(rig, X) -> {view: (N, 2) pixels}``."""
    return _project

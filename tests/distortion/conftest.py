"""Shared grid images (made once per session by the independent reference, not by the package)."""

import numpy as np
import pytest

from . import reference as ref

SMALL = 320


@pytest.fixture(scope="session")
def small_field() -> ref.Field:
    return ref.strong(SMALL)


@pytest.fixture(scope="session")
def small_plate() -> ref.Plate:
    return ref.Plate(pitch=16.0, diameter=8.0, angle_deg=3.0)


@pytest.fixture(scope="session")
def small_grid(small_field, small_plate) -> np.ndarray:
    """A 320^2 strong-field hex plate, noise-free (about 310 usable holes)."""
    return ref.plate_image(small_field, small_plate)


@pytest.fixture(scope="session")
def small_maps(small_grid):
    """Every model's map of ``small_grid`` and the chosen one's name."""
    from stereodrr.distortion import fit_maps, measure_grid

    return fit_maps(measure_grid(small_grid))

import pytest

from stereodrr.dataset import validate_config

# A torso of 24x18x16 voxels of 12 mm and 32x24-pixel detectors: a few ms per view.
TINY = {
    "seed": 3,
    "subject": {"kind": "torso", "size": [24, 18, 16], "spacing_mm": 12.0},
    "rig": {"detector_px": [32, 24], "pixel_spacing_mm": 6.4},
}


@pytest.fixture
def tiny_raw() -> dict:
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_config(tiny_raw) -> dict:
    return validate_config(tiny_raw)

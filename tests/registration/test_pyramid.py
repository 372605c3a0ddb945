"""Anisotropic pyramids: per-axis volume blocks and registration of a CT with thick slices."""

import numpy as np
import pytest
import torch

from stereodrr.geometry import StereoRig
from stereodrr.phantoms import torso_phantom
from stereodrr.registration import (
    Level,
    RegistrationOptions,
    RigidPose,
    auto_volume_factor,
    pixel_footprint_mm,
    register,
    registration_errors,
    render_views,
)
from stereodrr.volume import Volume, hu_to_mu


def test_per_axis_downsample_averages_blocks_and_keeps_the_box():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 8, 9)).astype(np.float32)  # (Z, Y, X)
    vol = Volume.from_numpy(a, spacing=(0.5, 0.7, 2.0), origin=(3.0, -1.0, 4.0))
    low = vol.downsample((3, 2, 1))
    assert low.data.shape == (6, 4, 3)
    np.testing.assert_allclose(low.spacing, [1.5, 1.4, 2.0])
    # Block (i 0..2, j 0..1, k 0) averaged by numpy, independent of avg_pool3d.
    assert float(low.data[0, 0, 0]) == pytest.approx(float(a[0, 0:2, 0:3].mean()), rel=1e-5)
    assert float(low.data[5, 3, 2]) == pytest.approx(float(a[5, 6:8, 6:9].mean()), rel=1e-5)
    np.testing.assert_allclose(low.center, vol.center, atol=1e-9)
    np.testing.assert_allclose(low.bounding_box()[0], vol.bounding_box()[0], atol=1e-9)
    assert vol.downsample((1, 1, 1)) is vol
    for bad in ((2, 0, 1), (1.5, 1, 1), (2, 2)):
        with pytest.raises(ValueError, match="factor"):
            vol.downsample(bad)


def test_auto_factor_respects_thick_slices():
    rig = StereoRig.convergent(5.0, 750, 1200, 4.0, 128, 128)
    footprint = pixel_footprint_mm(rig, 1)
    assert footprint == pytest.approx(4.0 * 750 / 1200)  # the detector pixel at the isocenter
    vol = Volume.from_numpy(np.zeros((4, 4, 4), np.float32), spacing=(0.7, 0.7, 2.5))
    assert auto_volume_factor(vol, rig, 1) == (3, 3, 1)
    assert auto_volume_factor(vol, rig, 4) == (14, 14, 4)
    with pytest.raises(ValueError, match="volume_factor"):
        Level(2, 10, (2, 0, 1))


@pytest.fixture(scope="module")
def anisotropic():
    ct = torso_phantom(size=(120, 96, 40), spacing=(1.0, 1.0, 3.0))
    return ct.with_data(hu_to_mu(ct.data))


@pytest.mark.parametrize("init", [
    ([5.0, -4.0, 3.0], [10.0, -8.0, 10.0]),
    pytest.param(([-5.0, 5.0, -5.0], [-10.0, 10.0, -10.0]), marks=pytest.mark.slow),
])
def test_anisotropic_ct_registers_with_the_default_pyramid(anisotropic, init):
    # 1 x 1 x 3 mm voxels, 2 mm pixel footprint: the coarse levels merge x and y, not the slices.
    rig = StereoRig.convergent(5.0, 750, 1200, 3.2, 64, 64)
    truth = RigidPose.identity(anisotropic.center)
    targets = render_views(anisotropic, rig, truth)
    start = RigidPose.from_degrees(*init, anisotropic.center)
    res = register(anisotropic, rig, targets, start, RegistrationOptions(progress=False), truth=truth)
    err = registration_errors(res.pose, truth, rig, anisotropic.corners())
    assert registration_errors(start, truth, rig, anisotropic.corners())["mtre_mm"] > 15
    assert err["mtre_mm"] < 0.3, err
    factors = res.history.groupby("level")["volume_factor"].first().tolist()
    assert factors == ["8x8x2", "4x4x1", "2x2x1", "1x1x1"]
    # The full-resolution levels march one (merged) voxel per step: 2 mm, then 1 mm.
    steps = res.history.groupby("level")["step_mm"].first().tolist()
    assert steps[2:] == [pytest.approx(2.0), pytest.approx(1.0)]
    assert res.status == "converged", res.message
    assert torch.isfinite(torch.tensor(res.loss))

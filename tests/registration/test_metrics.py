import numpy as np
import pytest

from stereodrr.geometry import StereoRig
from stereodrr.registration import (
    RigidPose,
    mean_viewing_direction,
    registration_errors,
    rotation_error_deg,
    target_registration_error,
    translation_errors,
)
from stereodrr.volume import Volume


def test_mean_viewing_direction_of_rigs():
    np.testing.assert_allclose(mean_viewing_direction(StereoRig.convergent(5, 750, 1200, 0.5, 64, 64)), [0, 1, 0],
                               atol=1e-12)
    # Biplanar: AP (+y) and lateral (beam towards the right, -x): the bisector.
    n = mean_viewing_direction(StereoRig.biplanar(750, 1200, 0.5, 64, 64))
    np.testing.assert_allclose(n, np.array([-1.0, 1.0, 0.0]) / np.sqrt(2), atol=1e-12)
    with pytest.raises(ValueError, match="cancel"):
        mean_viewing_direction(StereoRig.arc(2, 180, 750, 1200, 0.5, 64, 64))


def test_errors_of_known_offsets():
    vol = Volume.from_numpy(np.zeros((4, 6, 8), np.float32), spacing=(10, 10, 10), origin=(-35, -25, -15))
    truth = RigidPose.identity(vol.center)
    rig = StereoRig.convergent(5, 750, 1200, 0.5, 64, 64)
    # A pure translation: every landmark moves by it; depth is its y part, in-plane its x, z part.
    est = RigidPose(np.zeros(3), [3.0, 4.0, 0.0], vol.center)
    np.testing.assert_allclose(target_registration_error(est, truth, vol.corners()), 5.0)
    inplane, depth = translation_errors(est, truth, mean_viewing_direction(rig))
    assert inplane == pytest.approx(3.0) and depth == pytest.approx(4.0)
    # A rotation by a about z through the centre: corner at radius r moves 2 r sin(a/2).
    a = np.radians(2.0)
    est = RigidPose(np.array([0, 0, a]), np.zeros(3), vol.center)
    r = np.linalg.norm(vol.corners()[:, :2] - vol.center[:2], axis=1)
    np.testing.assert_allclose(target_registration_error(est, truth, vol.corners()), 2 * r * np.sin(a / 2), rtol=1e-12)
    assert rotation_error_deg(est, truth) == pytest.approx(2.0)
    e = registration_errors(est, truth, rig, vol.corners())
    assert e["inplane_error_mm"] == pytest.approx(0.0, abs=1e-12) and e["depth_error_mm"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="landmarks"):
        target_registration_error(est, truth, np.zeros((0, 3)))

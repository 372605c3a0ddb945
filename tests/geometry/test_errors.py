import numpy as np
import pytest

from stereodrr.geometry import (
    StereoRig,
    depth_directions,
    mean_viewing_direction,
    rotation_angle_deg,
    rotvec_to_matrix,
    split_depth_inplane,
)


def test_rotation_angle_of_known_rotations():
    R0 = rotvec_to_matrix(np.array([0.2, -0.4, 0.1]))
    axis = np.array([1.0, 2.0, -2.0]) / 3.0
    R1 = rotvec_to_matrix(np.radians(7.5) * axis) @ R0
    assert rotation_angle_deg(R1, R0) == pytest.approx(7.5, abs=1e-9)
    assert rotation_angle_deg(R0, R0) == pytest.approx(0.0, abs=1e-9)


def test_split_is_pythagorean_and_signed():
    rng = np.random.default_rng(3)
    e = rng.normal(size=(20, 3))
    n = rng.normal(size=(20, 3))
    depth, inplane = split_depth_inplane(e, n)
    nu = n / np.linalg.norm(n, axis=1, keepdims=True)
    assert np.allclose(depth, np.einsum("ij,ij->i", e, nu))
    assert np.allclose(depth**2 + inplane**2, np.sum(e**2, axis=1))
    d1, i1 = split_depth_inplane(np.array([[0.0, -2.0, 3.0]]), np.array([0.0, 1.0, 0.0]))
    assert d1[0] == pytest.approx(-2.0) and i1[0] == pytest.approx(3.0)


def test_bisector_at_isocenter_is_mean_viewing_direction():
    rig = StereoRig.convergent(5, 750, 1200, 0.5, 64, 64, isocenter=np.array([3.0, -4.0, 10.0]))
    d = depth_directions(list(rig.cameras.values()), rig.isocenter[None])
    assert np.allclose(d[0], mean_viewing_direction(rig), atol=1e-12)

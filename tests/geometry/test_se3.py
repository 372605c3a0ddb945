import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from stereodrr.geometry import (
    compose,
    euler_to_matrix,
    invert,
    matrix_to_euler,
    matrix_to_quaternion,
    matrix_to_rotvec,
    quaternion_to_matrix,
    rigid_matrix,
    rotate_about,
    rotvec_to_matrix,
    transform_points,
)


def test_rotvec_matches_scipy(rng):
    r = rng.normal(size=(50, 3)) * 1.5
    assert np.allclose(rotvec_to_matrix(r), Rotation.from_rotvec(r).as_matrix(), atol=1e-12)
    assert np.allclose(matrix_to_rotvec(rotvec_to_matrix(r)), Rotation.from_rotvec(r).as_rotvec(), atol=1e-9)


def test_rotvec_near_zero_and_near_pi():
    small = np.array([1e-9, -2e-9, 0.5e-9])
    assert np.allclose(rotvec_to_matrix(small), Rotation.from_rotvec(small).as_matrix(), atol=1e-15)
    r = np.array([0, np.pi - 1e-7, 0])
    assert np.allclose(rotvec_to_matrix(matrix_to_rotvec(rotvec_to_matrix(r))), rotvec_to_matrix(r), atol=1e-9)
    g = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    rotvec_to_matrix(g).sum().backward()
    assert torch.all(torch.isfinite(g.grad))


def test_quaternion_round_trip_and_scipy(rng):
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    R = quaternion_to_matrix(q)
    # scipy uses scalar-last quaternions
    assert np.allclose(R, Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix(), atol=1e-12)
    q2 = matrix_to_quaternion(R)
    assert np.allclose(np.abs((q2 * q).sum(1)), 1, atol=1e-12)  # same rotation up to sign
    assert np.all(q2[:, 0] >= 0)


@pytest.mark.parametrize("seq", ["ZYX", "XYZ", "zyx", "xyz", "ZXZ", "yxy"])
def test_euler_matches_scipy(rng, seq):
    a = rng.uniform(-1.2, 1.2, size=(20, 3))
    R = euler_to_matrix(a, seq)
    assert np.allclose(R, Rotation.from_euler(seq, a).as_matrix(), atol=1e-12)
    assert np.allclose(euler_to_matrix(matrix_to_euler(R, seq), seq), R, atol=1e-10)


def test_euler_bad_sequence():
    with pytest.raises(ValueError, match="Euler sequence"):
        euler_to_matrix(np.zeros(3), "ZYx")
    with pytest.raises(ValueError, match="consecutive"):
        euler_to_matrix(np.zeros(3), "ZZX")


def test_compose_invert_rotate_about(rng):
    T1 = rigid_matrix(rotvec_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 10)
    T2 = rigid_matrix(rotvec_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 10)
    X = rng.normal(size=(10, 3)) * 50
    assert np.allclose(transform_points(compose(T1, T2), X), transform_points(T1, transform_points(T2, X)))
    assert np.allclose(compose(T1, invert(T1)), np.eye(4), atol=1e-12)
    c = np.array([10.0, -5.0, 3.0])
    T = rotate_about(rotvec_to_matrix(np.array([0, 0, 0.7])), c)
    assert np.allclose(transform_points(T, c[None]), c[None])
    # distances to the centre are kept
    assert np.allclose(np.linalg.norm(transform_points(T, X) - c, axis=1), np.linalg.norm(X - c, axis=1))

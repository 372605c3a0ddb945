import json

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera, StereoRig, quaternion_to_matrix, rotvec_to_matrix
from stereodrr.registration import RigidPose, load_pose, moved_extrinsics, pose_matrix, save_pose


@pytest.fixture
def pose(rng):
    return RigidPose(rng.normal(size=3) * 0.3, rng.normal(size=3) * 10, rng.normal(size=3) * 50)


def test_matrix_moves_points_about_the_centre(pose, rng):
    x = rng.normal(size=(5, 3)) * 100
    R = rotvec_to_matrix(pose.rotvec)
    expected = (x - pose.center) @ R.T + pose.center + pose.translation
    np.testing.assert_allclose(pose.apply(x), expected, atol=1e-10)
    # The centre moves by the translation only.
    np.testing.assert_allclose(pose.apply(pose.center[None])[0], pose.center + pose.translation, atol=1e-10)


def test_round_trips(pose, tmp_path, rng):
    back = RigidPose.from_matrix(pose.matrix, pose.center)
    np.testing.assert_allclose(back.rotvec, pose.rotvec, atol=1e-12)
    np.testing.assert_allclose(back.translation, pose.translation, atol=1e-10)
    assert RigidPose.from_dict(json.loads(json.dumps(pose.to_dict()))) == RigidPose.from_dict(pose.to_dict())
    path = save_pose(pose, tmp_path / "pose.json")
    loaded = load_pose(path)
    np.testing.assert_allclose(loaded.matrix, pose.matrix, atol=1e-12)
    np.testing.assert_allclose(pose.compose(pose.inverse()).matrix, np.eye(4), atol=1e-12)
    # The same pose about another centre is the same world transform.
    other = RigidPose.from_matrix(pose.matrix, rng.normal(size=3) * 30)
    np.testing.assert_allclose(other.matrix, pose.matrix, atol=1e-10)
    # A quaternion in the file means the same rotation.
    q = np.array([0.9, 0.1, -0.3, 0.2])
    d = {"schema": "stereodrr.pose/1", "center": [0, 0, 0], "quaternion": q.tolist(), "translation_mm": [1, 2, 3]}
    np.testing.assert_allclose(RigidPose.from_dict(d).rotation, quaternion_to_matrix(q), atol=1e-12)
    # A matrix alone is the whole transform: no centre needed (one about any centre is the same pose),
    # while a rotation vector or quaternion without its centre is refused.
    bare = {"schema": "stereodrr.pose/1", "matrix": pose.matrix.tolist()}
    np.testing.assert_allclose(RigidPose.from_dict(json.loads(json.dumps(bare))).matrix, pose.matrix, atol=1e-10)
    with pytest.raises(ValueError, match="center"):
        RigidPose.from_dict({"schema": "stereodrr.pose/1", "rotvec_deg": [1, 2, 3], "translation_mm": [0, 0, 0]})


def test_moved_volume_equals_moved_cameras(pose, rng):
    """Camera (R, t) looking at the moved volume == camera (R R_p, R t_p + t) looking at the original."""
    rig = StereoRig.convergent(5.0, 750, 1200, 0.5, 256, 256)
    x = rng.normal(size=(20, 3)) * 60
    for cam in rig.cameras.values():
        R2, t2 = moved_extrinsics(cam.R[None], cam.t[None], pose.matrix)
        moved_cam = Camera(cam.K, R2[0], t2[0], cam.width, cam.height, cam.pixel_spacing, cam.sdd)
        uv_a, d_a = cam.project(pose.apply(x))
        uv_b, d_b = moved_cam.project(x)
        np.testing.assert_allclose(uv_b, uv_a, atol=1e-8)
        np.testing.assert_allclose(d_b, d_a, atol=1e-8)
        # In blocks: R' = R R_p, t' = R t_p + t.
        np.testing.assert_allclose(R2[0], cam.R @ pose.matrix[:3, :3], atol=1e-12)
        np.testing.assert_allclose(t2[0], cam.R @ pose.matrix[:3, 3] + cam.t, atol=1e-9)


def test_pose_matrix_is_differentiable():
    r = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64, requires_grad=True)
    tau = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([5.0, -4.0, 2.0], dtype=torch.float64)
    torch.autograd.gradcheck(lambda a, b: pose_matrix(rotvec_to_matrix(a), b, c), (r, tau))


def test_bad_pose_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pose(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: malformed JSON at line 1, column 2"):
        load_pose(bad)
    with pytest.raises(ValueError, match="schema"):
        RigidPose.from_dict({"schema": "other", "center": [0, 0, 0]})
    with pytest.raises(ValueError, match="rotation"):
        RigidPose.from_dict({"schema": "stereodrr.pose/1", "center": [0, 0, 0], "translation_mm": [0, 0, 0]})
    with pytest.raises(ValueError, match="translation"):
        RigidPose(np.zeros(3), [np.nan, 0, 0], np.zeros(3))
    with pytest.raises(ValueError, match="rigid"):
        RigidPose.from_matrix(np.diag([2.0, 1, 1, 1]), np.zeros(3))
    # A matrix edited beside the rotation vector it was written with is not silently ignored
    # (a 50 mm shift in the matrix alone started and scored a registration at the identity).
    d = RigidPose.from_degrees([0, 0, 0], [0, 0, 0], np.zeros(3)).to_dict()
    assert RigidPose.from_dict(json.loads(json.dumps(d))) == RigidPose.from_degrees([0, 0, 0], [0, 0, 0], np.zeros(3))
    d["matrix"][0][3] = 50.0
    with pytest.raises(ValueError, match="'matrix' disagrees with the rotation and 'translation_mm'"):
        RigidPose.from_dict(d, "init.json")

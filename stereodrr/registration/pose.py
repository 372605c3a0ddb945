"""The volume pose of the registration: defined in :mod:`stereodrr.geometry.pose` (dataset
generation and rendering use it too); imported here so ``stereodrr.registration`` users find it."""

from ..geometry.pose import POSE_SCHEMA, RigidPose, load_pose, moved_extrinsics, pose_matrix, save_pose

__all__ = ["POSE_SCHEMA", "RigidPose", "pose_matrix", "moved_extrinsics", "save_pose", "load_pose"]

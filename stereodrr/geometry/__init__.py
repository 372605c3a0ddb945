"""Cameras (OpenCV pinhole), rigid transforms, stereo/biplanar/N-view rigs, two-view geometry,
rig files and the XMALab/DLTdv DLT convention."""

from .camera import (
    Camera,
    camera_center,
    crop_camera,
    decompose_projection,
    intrinsic_matrix,
    look_at_rotation,
    oversampled_camera,
    pixel_to_ray,
    project_points,
    projection_matrix,
    stack_cameras,
)
from .dlt_coefficients import DltConvention, dlt_from_projection, dlt_pixel_flip, projection_from_dlt
from .epipolar import epipolar_lines, epipoles, fundamental_from_cameras, fundamental_from_projections
from .errors import depth_directions, mean_viewing_direction, rotation_angle_deg, split_depth_inplane
from .pose import POSE_SCHEMA, RigidPose, load_pose, moved_extrinsics, pose_matrix, save_pose
from .rig import RECOMMENDED_STEREO_ANGLE_DEG, StereoAngleWarning, StereoRig, depth_inplane_ratio
from .rigfile import RIG_SCHEMA, load_dlt_csv, load_rig, rig_from_dict, rig_to_dict, save_dlt_csv, save_rig
from .se3 import (
    compose,
    euler_to_matrix,
    invert,
    is_rotation,
    kabsch,
    matrix_to_euler,
    matrix_to_quaternion,
    matrix_to_rotvec,
    quaternion_to_matrix,
    rigid_matrix,
    rotate_about,
    rotvec_to_matrix,
    skew,
    transform_points,
)

__all__ = [
    "Camera", "camera_center", "crop_camera", "oversampled_camera", "decompose_projection", "intrinsic_matrix", "look_at_rotation",
    "pixel_to_ray", "project_points", "projection_matrix", "stack_cameras",
    "DltConvention", "dlt_from_projection", "dlt_pixel_flip", "projection_from_dlt",
    "depth_directions", "mean_viewing_direction", "rotation_angle_deg", "split_depth_inplane",
    "epipolar_lines", "epipoles", "fundamental_from_cameras", "fundamental_from_projections",
    "POSE_SCHEMA", "RigidPose", "load_pose", "moved_extrinsics", "pose_matrix", "save_pose",
    "RECOMMENDED_STEREO_ANGLE_DEG", "StereoAngleWarning", "StereoRig", "depth_inplane_ratio",
    "RIG_SCHEMA", "load_dlt_csv", "load_rig", "rig_from_dict", "rig_to_dict", "save_dlt_csv", "save_rig",
    "compose", "euler_to_matrix", "invert", "is_rotation", "kabsch", "matrix_to_euler", "matrix_to_quaternion",
    "matrix_to_rotvec", "quaternion_to_matrix", "rigid_matrix", "rotate_about", "rotvec_to_matrix",
    "skew", "transform_points",
]

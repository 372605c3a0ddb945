"""Multi-view 2D/3D registration: one rigid world-frame pose of a CT fitted to every X-ray view
of a rig at once, by gradient descent through the differentiable renderer."""

import sys as _sys
import types as _types
from typing import Any as _Any

from .metrics import (
    mean_viewing_direction,
    registration_errors,
    rotation_error_deg,
    target_registration_error,
    translation_errors,
)
from .optimize import (
    OPTIMIZERS,
    Level,
    RegistrationDivergedWarning,
    RegistrationInputWarning,
    RegistrationResult,
    StoppingRule,
    auto_volume_factor,
    default_levels,
    downsample_images,
    multiview_loss,
    pixel_footprint_mm,
    register,
    render_views,
    scale_intrinsics,
    translation_basis,
    views_seeing,
)
from .pose import POSE_SCHEMA, RigidPose, load_pose, moved_extrinsics, pose_matrix, save_pose
from .precision import PARAMETERS, pose_crlb, pose_fisher_information, pose_jacobian
from .similarity import (
    SIMILARITIES,
    bandpass_ncc,
    check_target,
    count_weighted_ncc,
    get_similarity,
    gradient_ncc,
    multiscale_ncc,
    ncc,
    patch_ncc,
    sobel_ncc,
)

__all__ = [
    "mean_viewing_direction", "registration_errors", "rotation_error_deg", "target_registration_error",
    "translation_errors",
    "default_levels", "OPTIMIZERS", "Level", "RegistrationDivergedWarning", "RegistrationInputWarning", "StoppingRule",
    "pixel_footprint_mm", "RegistrationResult", "auto_volume_factor", "downsample_images", "multiview_loss", "register",
    "render_views", "scale_intrinsics", "translation_basis", "views_seeing",
    "PARAMETERS", "pose_crlb", "pose_fisher_information", "pose_jacobian",
    "POSE_SCHEMA", "RigidPose", "load_pose", "moved_extrinsics", "pose_matrix", "save_pose",
    "SIMILARITIES", "bandpass_ncc", "check_target", "count_weighted_ncc", "get_similarity", "gradient_ncc",
    "multiscale_ncc", "ncc", "patch_ncc", "sobel_ncc",
]


class _CallablePackage(_types.ModuleType):
    """``stereodrr.register`` is the subpackage and, called, :func:`register`: the top-level
    ``sd.register(volume, rig, images)`` and the subpackage share the attribute name
    ``stereodrr.register`` (importing the subpackage binds it), so the package forwards calls."""

    def __call__(self, *args: _Any, **kwargs: _Any) -> RegistrationResult:
        return register(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage

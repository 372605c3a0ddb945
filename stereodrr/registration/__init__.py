"""Multi-view 2D/3D registration: one rigid world-frame pose of a CT fitted to every X-ray view
of a rig at once, by gradient descent through the differentiable renderer.

:func:`register` (also ``stereodrr.register``) with :class:`RegistrationOptions`; its pieces,
one module each: the loss (``objective``), the pose parameters (``params``), the pyramid
(``pyramid``, ``binning``), the optimisers (``optimizers``: :data:`OPTIMIZERS`), the stopping
rule (``stopping``), the input checks (``checks``), the run (``run``).
"""

from .binning import downsample_images, scale_intrinsics
from .checks import RegistrationInputWarning, check_registration_memory
from .metrics import (
    mean_viewing_direction,
    registration_errors,
    rotation_error_deg,
    target_registration_error,
    translation_errors,
)
from .objective import (
    multiview_drr,
    multiview_loss,
    record_views,
    render_each_view,
    render_views,
    view_losses,
    views_seeing,
)
from .optimizers import OPTIMIZERS, Optimizer, OptimizerName
from .options import ProgressCallback, RegistrationOptions, RegistrationProgress
from .params import translation_basis
from .pose import POSE_SCHEMA, RigidPose, load_pose, moved_extrinsics, pose_matrix, save_pose
from .precision import PARAMETERS, pose_crlb, pose_fisher_information, pose_jacobian
from .pyramid import Level, VolumeFactor, auto_volume_factor, default_levels, factor_axes, pixel_footprint_mm
from .result import RegistrationDivergedWarning, RegistrationResult
from .run import register
from .similarity import (
    SIMILARITIES,
    SimilarityName,
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
from .stopping import StoppingRule

__all__ = [
    "mean_viewing_direction", "registration_errors", "rotation_error_deg", "target_registration_error",
    "translation_errors",
    "register", "RegistrationOptions", "RegistrationProgress", "ProgressCallback", "RegistrationResult",
    "RegistrationDivergedWarning", "RegistrationInputWarning", "check_registration_memory",
    "Level", "VolumeFactor", "factor_axes", "default_levels", "auto_volume_factor", "pixel_footprint_mm", "scale_intrinsics", "downsample_images",
    "OPTIMIZERS", "Optimizer", "OptimizerName", "StoppingRule",
    "multiview_drr", "multiview_loss", "record_views", "view_losses", "render_views", "render_each_view", "views_seeing", "translation_basis",
    "PARAMETERS", "pose_crlb", "pose_fisher_information", "pose_jacobian",
    "POSE_SCHEMA", "RigidPose", "load_pose", "moved_extrinsics", "pose_matrix", "save_pose",
    "SIMILARITIES", "SimilarityName", "bandpass_ncc", "check_target", "count_weighted_ncc", "get_similarity",
    "gradient_ncc", "multiscale_ncc", "ncc", "patch_ncc", "sobel_ncc",
]

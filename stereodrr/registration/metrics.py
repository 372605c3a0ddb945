"""Registration errors against a known pose: mTRE, rotation error, in-plane / depth translation.

The translation error is the displacement of the volume centre, split along the rig's mean
viewing direction ``n`` (the normalised sum of the views' principal rays): the component along
``n`` is the depth error, the rest the in-plane error. For one view ``n`` is its principal ray,
the direction a single radiograph cannot see well. Where the principal rays cancel (views spread
evenly all round, an opposed pair) no direction is seen worse than another and the first view's
principal ray stands in (:func:`depth_axis`).
"""

from __future__ import annotations

import numpy as np

from ..geometry import StereoRig, mean_viewing_direction, rotation_angle_deg, split_depth_inplane, transform_points
from .pose import RigidPose

__all__ = ["mean_viewing_direction", "target_registration_error", "rotation_error_deg",
           "translation_errors", "registration_errors"]


def depth_axis(rig: StereoRig) -> np.ndarray:
    """``(3,)`` the rig-level depth axis of a volume pose: :func:`mean_viewing_direction`, or the
    first view's principal ray where the principal rays cancel (three views 120 deg apart, four
    90 deg apart, an opposed pair): such a rig sees every direction alike, so the axis only has
    to be defined (the translation basis, the error split), not to single out the depth."""
    try:
        return mean_viewing_direction(rig)
    except ValueError:
        return next(iter(rig.cameras.values())).principal_ray


def target_registration_error(estimate: RigidPose, truth: RigidPose, landmarks: np.ndarray) -> np.ndarray:
    """Per-landmark TRE ``|T_est x - T_true x|`` in mm.

    Args:
        landmarks: ``(N, 3)`` world mm in the volume's own (unmoved) frame, e.g.
            :meth:`Volume.corners`.

    Returns:
        ``(N,)``; its mean is the mTRE.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0 or not np.all(np.isfinite(pts)):
        raise ValueError(f"landmarks: expected a finite (N, 3) array with N >= 1, got shape {pts.shape}")
    return np.linalg.norm(transform_points(estimate.matrix, pts) - transform_points(truth.matrix, pts), axis=-1)


def rotation_error_deg(estimate: RigidPose, truth: RigidPose) -> float:
    """Angle of ``R_est R_true^T`` in degrees."""
    return rotation_angle_deg(estimate.rotation, truth.rotation)


def translation_errors(estimate: RigidPose, truth: RigidPose, direction: np.ndarray) -> tuple[float, float]:
    """In-plane and depth error (mm) of the displacement ``d = T_est c - T_true c`` of the truth's
    centre ``c`` (the volume centre for a pose about it, as :func:`~stereodrr.registration.register`
    takes and gives them: ``RigidPose.from_matrix(T, volume.center)``).

    ``depth = |d . n|``, ``in-plane = |d - (d . n) n|``, ``n`` a unit viewing direction.
    """
    c = truth.center[None]
    depth, inplane = split_depth_inplane(transform_points(estimate.matrix, c) - transform_points(truth.matrix, c), direction)
    return float(inplane[0]), abs(float(depth[0]))


def registration_errors(estimate: RigidPose, truth: RigidPose, rig: StereoRig,
                        landmarks: np.ndarray) -> dict[str, float]:
    """All errors at once: ``mtre_mm``, ``rotation_error_deg``, ``inplane_error_mm``, ``depth_error_mm``."""
    inplane, depth = translation_errors(estimate, truth, depth_axis(rig))
    return {
        "mtre_mm": float(target_registration_error(estimate, truth, landmarks).mean()),
        "rotation_error_deg": rotation_error_deg(estimate, truth),
        "inplane_error_mm": inplane,
        "depth_error_mm": depth,
    }

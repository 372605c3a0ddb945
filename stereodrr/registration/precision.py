"""How precisely can a rig's X-rays fix the pose of a CT? The Cramér–Rao bound of the registration.

With Poisson quantum noise of ``N0`` photons per unattenuated pixel, a log image
``p = -log(counts / N0)`` has variance ``exp(p) / N0`` per pixel (delta method, pixels
independent). For a pose parameter vector ``theta`` the Fisher information of all views is::

    F = sum_pixels  J^T J / var,     J = d DRR / d theta

and no unbiased estimator of ``theta`` has a covariance below ``F^-1`` (Cramér–Rao). The
parameters are those the optimiser moves (:mod:`stereodrr.registration.params`): a rotation vector
about the volume centre in world axes (degrees) and a translation along the rig's axes
``[u, v, n]`` (:func:`~stereodrr.registration.params.translation_basis`, mm), ``n`` the mean
viewing direction, so ``sqrt(F^-1)_nn`` is the depth precision of the rig.

The bound scales as ``1 / sqrt(N0)`` for every rig alike, so ratios between rigs (how much a
second view improves depth) depend only on the geometry and the anatomy in the field.
``J`` is taken by central differences of the trilinear renderer.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry import StereoRig, matrix_to_rotvec, rotvec_to_matrix
from ..volume import Volume
from .objective import render_views
from .params import translation_basis
from .pose import RigidPose

__all__ = ["PARAMETERS", "pose_jacobian", "pose_fisher_information", "pose_crlb"]

PARAMETERS = ("rx_deg", "ry_deg", "rz_deg", "u_mm", "v_mm", "depth_mm")
"""The pose parameters of :func:`pose_crlb`, in its order."""


def _moved(pose: RigidPose, basis: np.ndarray, delta: np.ndarray) -> RigidPose:
    """``pose`` moved by the optimiser's increment ``delta = (dr_deg (3,), dt_mm (3,))``."""
    R = rotvec_to_matrix(np.radians(delta[:3])) @ pose.rotation
    return RigidPose(matrix_to_rotvec(R), pose.translation + basis @ delta[3:], pose.center)


def _about_volume_centre(pose: RigidPose, volume: Volume) -> RigidPose:
    """The same CT -> world matrix as a pose about the volume centre, about which the parameters
    turn (a pose read from a file may be about another point: ``pose.json``'s ``center``)."""
    if np.array_equal(pose.center, volume.center):
        return pose
    return RigidPose.from_matrix(pose.matrix, volume.center)


def pose_jacobian(volume: Volume, rig: StereoRig, pose: RigidPose | None = None, *,
                  h_deg: float = 0.1, h_mm: float = 0.1, step_mm: float | None = None) -> torch.Tensor:
    """Derivative of every view's DRR with respect to the six pose parameters (:data:`PARAMETERS`).

    Args:
        volume: mu in 1/mm.
        rig: the views (one detector size).
        pose: where to linearise (default: identity, the volume where its geometry puts it); only
            its matrix counts: the rotations turn about the volume centre whatever its ``center``.
        h_deg, h_mm: central-difference steps for the rotations and translations.
        step_mm: trilinear sampling step (renderer default when None).

    Returns:
        ``(V, H, W, 6)`` float64: line integral per degree (columns 0-2) or per mm (3-5).
    """
    if not (h_deg > 0 and h_mm > 0):
        raise ValueError(f"h_deg, h_mm: expected positive difference steps, got {h_deg}, {h_mm}")
    pose = RigidPose.identity(volume.center) if pose is None else _about_volume_centre(pose, volume)
    basis = translation_basis(rig)
    cols = []
    for k, h in enumerate((h_deg,) * 3 + (h_mm,) * 3):
        e = np.zeros(6)
        e[k] = h
        plus = render_views(volume, rig, _moved(pose, basis, e), step_mm=step_mm).double()
        minus = render_views(volume, rig, _moved(pose, basis, -e), step_mm=step_mm).double()
        cols.append((plus - minus) / (2 * h))
    return torch.stack(cols, -1)


def pose_fisher_information(volume: Volume, rig: StereoRig, pose: RigidPose | None = None, *,
                            photons: float = 1e4, step_mm: float | None = None) -> np.ndarray:
    """Fisher information ``(6, 6)`` of the pose (module docstring) for Poisson noise of
    ``photons`` per unattenuated pixel, in the units of :data:`PARAMETERS` (1/deg^2, 1/mm^2)."""
    if not (np.isfinite(photons) and photons > 0):
        raise ValueError(f"photons: expected a positive number of photons per unattenuated pixel, got {photons}")
    pose = RigidPose.identity(volume.center) if pose is None else pose
    J = pose_jacobian(volume, rig, pose, step_mm=step_mm).reshape(-1, 6)
    line = render_views(volume, rig, pose, step_mm=step_mm).double().reshape(-1)
    weight = photons * torch.exp(-line)  # 1 / var of -log(counts / N0)
    return ((J * weight[:, None]).T @ J).cpu().numpy()  # the renders are on the volume's device


def pose_crlb(volume: Volume, rig: StereoRig, pose: RigidPose | None = None, *,
              photons: float = 1e4, step_mm: float | None = None) -> dict[str, float]:
    """Cramér–Rao bound: the smallest standard deviation of each pose parameter any unbiased
    registration can reach from these views.

    Returns:
        ``{"rx_deg", "ry_deg", "rz_deg", "u_mm", "v_mm", "depth_mm"}`` standard deviations
        (``sqrt`` of the diagonal of ``F^-1``, so each accounts for the other five being
        unknown too) and ``"inplane_mm"`` = ``sqrt(var_u + var_v)``.

    Raises:
        ValueError: when the views do not determine every parameter (a view that misses the
            volume, or a volume with no structure), naming the undetermined combination.
    """
    F = pose_fisher_information(volume, rig, pose, photons=photons, step_mm=step_mm)
    if not np.all(np.isfinite(F)):
        raise ValueError(f"rig {rig.names}: the Fisher information is not finite (a DRR with NaN or inf)")
    if np.any(np.diag(F) <= 0):
        missing = [p for p, f in zip(PARAMETERS, np.diag(F)) if f <= 0]
        raise ValueError(f"rig {rig.names}: the views carry no information about {missing} (does the volume show in them?)")
    # In common units (a degree as the motion it gives the farthest box corner, in mm), so the
    # rank test does not depend on the units.
    radius = float(np.linalg.norm(volume.corners() - volume.center, axis=1).max())
    s = np.array([radius * np.pi / 180] * 3 + [1.0] * 3)
    Fs = F / np.outer(s, s)
    w, V = np.linalg.eigh(Fs)
    if w[0] <= 1e-12 * w[-1]:
        combo = " + ".join(f"{c:.2f} {p}" for c, p in zip(V[:, 0], PARAMETERS) if abs(c) > 0.1)
        raise ValueError(f"rig {rig.names}: the views do not determine the pose; {combo} leaves the DRRs unchanged")
    cov = np.linalg.inv(Fs) / np.outer(s, s)
    std = np.sqrt(np.diag(cov))
    out = {p: float(s) for p, s in zip(PARAMETERS, std)}
    out["inplane_mm"] = float(np.hypot(std[3], std[4]))
    return out

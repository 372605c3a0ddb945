"""The six pose parameters one pyramid level optimises, relative to its starting pose ``(R0, tau0)``::

    R = exp([dr]_x) R0           (dr: rotation vector about the volume centre, world axes)
    tau = tau0 + B dt            (B = [u, v, n]: two in-plane axes and the mean viewing direction)

Expressing the translation in the rig's frame keeps the poorly constrained depth ``dt_3`` on
its own coordinate, where Adam's per-coordinate step size and L-BFGS's curvature estimate can
treat it separately from the well-seen in-plane motion. (``rotation="quaternion"`` uses a
unit quaternion ``dq`` instead of ``dr``.) The parameters and the pose matrix are float64 (the
renderer runs in the volume's dtype): line searches then compare losses that do not depend on
float32 rounding.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..geometry import StereoRig, matrix_to_rotvec, quaternion_to_matrix, rotvec_to_matrix
from .metrics import depth_axis
from .pose import RigidPose, pose_matrix

__all__ = ["Rotation", "PoseParameters", "translation_basis"]

Rotation = Literal["rotvec", "quaternion"]
"""How a level parametrises its rotation increment."""


def translation_basis(rig: StereoRig) -> np.ndarray:
    """``(3, 3)`` orthonormal columns ``[u, v, n]``: ``n`` the mean viewing direction
    (:func:`~stereodrr.registration.metrics.depth_axis`: the first view's principal ray where the
    principal rays cancel), ``u`` the first view's image x-axis made orthogonal to ``n``, ``v = n x u``."""
    n = depth_axis(rig)
    first = next(iter(rig.cameras.values()))
    u = first.R[0] - (first.R[0] @ n) * n
    if np.linalg.norm(u) < 1e-6:
        u = first.R[1] - (first.R[1] @ n) * n
    u = u / np.linalg.norm(u)
    return np.stack([u, np.cross(n, u), n], axis=1)


class PoseParameters:
    """Pose increments of one level (module docstring), float64: ``rot`` (3 or 4) and ``trans``
    (3), the leaf tensors an optimiser moves."""

    def __init__(self, start: RigidPose, basis: Float[Tensor, "3 3"], rotation: Rotation, device: torch.device):
        dtype = torch.float64
        self.R0 = torch.tensor(start.rotation, dtype=dtype, device=device)
        self.tau0 = torch.tensor(start.translation, dtype=dtype, device=device)
        self.center = torch.tensor(start.center, dtype=dtype, device=device)
        self.basis = basis.to(dtype)
        self.rotation = rotation
        if rotation == "rotvec":
            self.rot = torch.zeros(3, dtype=dtype, device=device, requires_grad=True)
        else:
            self.rot = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=device, requires_grad=True)
        self.trans = torch.zeros(3, dtype=dtype, device=device, requires_grad=True)

    @property
    def rotation_gain(self) -> float:
        """Radians of rotation per unit of ``rot`` (a quaternion increment ``dq`` turns by ``2|dq_xyz|``)."""
        return 1.0 if self.rotation == "rotvec" else 2.0

    def rotation_translation(self) -> tuple[Float[Tensor, "3 3"], Float[Tensor, " 3"]]:
        """``(R (3, 3), tau (3,))`` of the current increments."""
        dR = rotvec_to_matrix(self.rot) if self.rotation == "rotvec" else quaternion_to_matrix(self.rot)
        return dR @ self.R0, self.tau0 + self.basis @ self.trans

    def matrix(self) -> Float[Tensor, "4 4"]:
        return pose_matrix(*self.rotation_translation(), self.center)

    def pose(self) -> RigidPose:
        with torch.no_grad():
            R, tau = self.rotation_translation()
        return RigidPose(matrix_to_rotvec(R.cpu().numpy()), tau.cpu().numpy(), self.center.cpu().numpy())

    def finite(self) -> bool:
        return bool(torch.isfinite(self.rot).all() and torch.isfinite(self.trans).all())

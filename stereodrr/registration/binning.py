"""A detector binned by an integer factor: its intrinsics and its images (the pyramid's levels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

__all__ = ["scale_intrinsics", "downsample_images"]


def scale_intrinsics(K: Float[Tensor, "*batch 3 3"], scale: int) -> Float[Tensor, "*batch 3 3"]:
    """Intrinsics of a detector binned by ``scale``: ``K' = A K`` with ``u' = (u + 1/2)/s - 1/2``.

    ``A = [[1/s, 0, (1/s - 1)/2], [0, 1/s, (1/s - 1)/2], [0, 0, 1]]`` maps full-resolution pixel
    coordinates (centres at integers) to those of the binned image (centres at integers).
    """
    s = float(scale)
    A = torch.tensor([[1 / s, 0.0, (1 / s - 1) / 2], [0.0, 1 / s, (1 / s - 1) / 2], [0.0, 0.0, 1.0]],
                     dtype=K.dtype, device=K.device)
    return A @ K


def downsample_images(images: Float[Tensor, "B H W"], scale: int) -> Float[Tensor, "B h w"]:
    """Average ``scale x scale`` pixel blocks of ``(B, H, W)`` images (a partial edge block is dropped)."""
    return images if scale == 1 else F.avg_pool2d(images[:, None], scale)[:, 0]

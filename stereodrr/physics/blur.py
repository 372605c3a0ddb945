"""Gaussian blur of detector images, and the focal spot's blur of an object at a depth.

The focal-spot blur of an object at source distance ``z`` on a detector at SDD is the focal
spot (its nominal size taken as the FWHM) magnified by ``(SDD - z) / z``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

__all__ = ["FWHM_PER_SIGMA", "gaussian_blur", "focal_spot_sigma_px"]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""A Gaussian's full width at half maximum per sigma, ``2 sqrt(2 ln 2) = 2.3548``."""


def gaussian_blur(image: Float[Tensor, "*batch H W"], sigma_px: float | tuple[float, float]) -> Float[Tensor, "*batch H W"]:
    """Separable Gaussian blur of ``(..., H, W)`` images (reflect padding, kernel +-4 sigma,
    normalised so flat fields keep their value); differentiable.

    Args:
        sigma_px: standard deviation in pixels, one value or ``(sigma_v, sigma_u)``.
    """
    sv, su = ((float(sigma_px), float(sigma_px)) if isinstance(sigma_px, (int, float))
              else (float(sigma_px[0]), float(sigma_px[1])))
    if not (sv >= 0 and su >= 0):
        raise ValueError(f"sigma_px: expected non-negative pixels, got {sigma_px}")
    shape = image.shape
    x = image.reshape(-1, 1, *shape[-2:])
    # cuDNN runs float32 convolutions in TF32 on Ampere and later GPUs by default (a 10-bit
    # mantissa: ~5e-4 of the value, tens of 16-bit counts): float64 there instead.
    if x.is_cuda and x.dtype == torch.float32:
        x = x.double()
    for sigma, dim in ((sv, -2), (su, -1)):
        if sigma == 0:
            continue
        r = max(1, int(math.ceil(4.0 * sigma)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=x.device, dtype=x.dtype) / sigma) ** 2)
        k = k / k.sum()
        if dim == -2:
            pad, kernel = (0, 0, r, r), k.reshape(1, 1, -1, 1)
        else:
            pad, kernel = (r, r, 0, 0), k.reshape(1, 1, 1, -1)
        mode = "reflect" if min(shape[-2:]) > r else "replicate"
        x = F.conv2d(F.pad(x, pad, mode=mode), kernel)
    return x.reshape(shape).to(image.dtype)


def focal_spot_sigma_px(focal_spot_mm: float, sdd: float, source_object_mm: float, pixel_spacing: float) -> float:
    """Gaussian sigma (pixels) of the focal-spot blur for objects at ``source_object_mm``.

    A focal spot of nominal size ``f`` (taken as the FWHM) blurs an object at distance ``z``
    from the source by ``f (SDD - z) / z`` on the detector.
    """
    if not (0 < source_object_mm < sdd):
        raise ValueError(f"source_object_mm: expected 0 < z < SDD ({sdd} mm), got {source_object_mm}")
    if focal_spot_mm < 0 or pixel_spacing <= 0:
        raise ValueError(f"focal_spot_mm >= 0 and pixel_spacing > 0 expected, got {focal_spot_mm}, {pixel_spacing}")
    return focal_spot_mm * (sdd - source_object_mm) / source_object_mm / FWHM_PER_SIGMA / pixel_spacing

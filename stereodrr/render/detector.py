"""Flat-panel detector model: line integrals -> counts, with blur and noise, and back.

Order of operations (each optional step is skipped when its parameter is 0/None)::

    I   = I0 exp(-L)                       Beer-Lambert, I0 photons per pixel (mean)
    I   = G_focal * I                      focal-spot blur (the source is not a point)
    N   ~ Poisson(I)                       quantum noise (counts are whole photons)
    N   = G_det * N                        detector blur (scintillator light spread; blurs the noise too)
    N  += Normal(0, sigma_e^2)             electronic (read-out) noise, white
    L'  = -log(max(N, eps) / I0)           the negative-log image clinical viewers show

The focal-spot blur of an object at source distance ``z`` on a detector at SDD is the focal
spot magnified by ``(SDD - z) / z``; :func:`focal_spot_sigma_px` evaluates it at one depth
(usually the isocenter). All random draws use a seeded ``torch.Generator``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "beer_lambert", "gaussian_blur", "focal_spot_sigma_px", "detect", "negative_log",
    "to_uint16", "FWHM_PER_SIGMA",
]

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # Gaussian FWHM = 2.3548 sigma


def beer_lambert(line_integral: Tensor, i0: float = 1.0) -> Tensor:
    """``I = I0 exp(-L)`` (any shape)."""
    if not (i0 > 0 and math.isfinite(i0)):
        raise ValueError(f"i0: expected a positive photon count / intensity, got {i0}")
    return i0 * torch.exp(-line_integral)


def gaussian_blur(image: Tensor, sigma_px: float | tuple[float, float]) -> Tensor:
    """Separable Gaussian blur of ``(..., H, W)`` images (reflect padding, kernel +-4 sigma,
    normalised so flat fields keep their value); differentiable.

    Args:
        sigma_px: standard deviation in pixels, one value or ``(sigma_v, sigma_u)``.
    """
    sv, su = (sigma_px, sigma_px) if np.isscalar(sigma_px) else sigma_px
    if not (sv >= 0 and su >= 0):
        raise ValueError(f"sigma_px: expected non-negative pixels, got {sigma_px}")
    shape = image.shape
    x = image.reshape(-1, 1, *shape[-2:])
    for sigma, dim in ((sv, -2), (su, -1)):
        if sigma == 0:
            continue
        r = max(1, int(math.ceil(4.0 * sigma)))
        k = torch.exp(-0.5 * (torch.arange(-r, r + 1, device=image.device, dtype=image.dtype) / sigma) ** 2)
        k = k / k.sum()
        if dim == -2:
            pad, kernel = (0, 0, r, r), k.reshape(1, 1, -1, 1)
        else:
            pad, kernel = (r, r, 0, 0), k.reshape(1, 1, 1, -1)
        mode = "reflect" if min(shape[-2:]) > r else "replicate"
        x = F.conv2d(F.pad(x, pad, mode=mode), kernel)
    return x.reshape(shape)


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


def detect(
    line_integral: Tensor,
    photons: float | None = 1e4,
    *,
    electronic_sigma: float = 0.0,
    detector_blur_px: float = 0.0,
    focal_spot_blur_px: float = 0.0,
    seed: int | None = 0,
) -> Tensor:
    """Simulated detector counts from line integrals (module docstring for the chain).

    Args:
        line_integral: ``(..., H, W)`` ``L`` (dimensionless).
        photons: mean photon count per pixel without attenuation (``I0``); ``None`` gives the
            noiseless expected intensity ``exp(-L)`` (``I0 = 1``, no Poisson step).
        electronic_sigma: standard deviation of the read-out noise, in photons.
        detector_blur_px, focal_spot_blur_px: Gaussian sigmas in pixels.
        seed: seed of the random generator (``None``: torch's global generator).

    Returns:
        Counts, same shape, float in ``line_integral``'s dtype (can be negative with read-out
        noise, as real offset-corrected data can).
    """
    if not bool(torch.isfinite(line_integral).all()):
        raise ValueError("line_integral: contains NaN or inf")
    if electronic_sigma < 0:
        raise ValueError(f"electronic_sigma: expected >= 0 photons, got {electronic_sigma}")
    gen = None
    if seed is not None:
        gen = torch.Generator(device=line_integral.device)
        gen.manual_seed(int(seed))
    i = beer_lambert(line_integral, 1.0 if photons is None else float(photons))
    if focal_spot_blur_px:
        i = gaussian_blur(i, focal_spot_blur_px)
    if photons is not None:
        i = torch.poisson(i.detach(), generator=gen).to(i.dtype)
    if detector_blur_px:
        i = gaussian_blur(i, detector_blur_px)
    if electronic_sigma:
        noise = torch.randn(i.shape, generator=gen, device=i.device, dtype=i.dtype)
        i = i + electronic_sigma * noise
    return i


def negative_log(counts: Tensor, i0: float, floor: float = 0.5) -> Tensor:
    """``-log(max(N, floor) / I0)``: the line-integral estimate clinical viewers display.

    ``floor`` (photons) keeps pixels that recorded no photon finite.
    """
    if not (i0 > 0 and floor > 0):
        raise ValueError(f"i0 and floor: expected positive counts, got {i0}, {floor}")
    return -torch.log(counts.clamp_min(floor) / i0)


def to_uint16(image: Tensor | np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Quantise a non-negative image to 16 bits: ``round(image * scale)`` clipped to 0..65535.

    Args:
        image: ``(H, W)`` (any float).
        scale: counts per unit; default maps the image maximum to 65535.

    Returns:
        ``(H, W)`` uint16 array and the scale used (divide by it to get values back).
    """
    a = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if not np.all(np.isfinite(a)):
        raise ValueError("image: contains NaN or inf")
    if scale is None:
        peak = float(a.max()) if a.size else 0.0
        scale = 65535.0 / peak if peak > 0 else 1.0
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale: expected a positive number, got {scale}")
    return np.clip(np.rint(a * scale), 0, 65535).astype(np.uint16), float(scale)

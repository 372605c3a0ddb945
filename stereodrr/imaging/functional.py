"""The detector of one energy as plain functions, line integrals in, images out::

    I   = I0 exp(-L)                       beer_lambert
    N   = detect(L, I0, ...)               focal blur, Poisson, detector blur, read-out noise
    L'  = -log(max(N, eps) / I0)           negative_log, the image clinical viewers show
    to_uint16(image)                       16-bit frames

:func:`detect` is :class:`~stereodrr.imaging.DetectorModel` with gain 1, no offset and no bit
depth, through the same stages (draw for draw).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from .detector import DetectorModel, Signal, run_stages

__all__ = ["beer_lambert", "detect", "negative_log", "zero_floor", "to_uint16"]


def beer_lambert(line_integral: Float[Tensor, "*shape"], i0: float = 1.0) -> Float[Tensor, "*shape"]:
    """``I = I0 exp(-L)`` (any shape)."""
    if not (i0 > 0 and math.isfinite(i0)):
        raise ValueError(f"i0: expected a positive photon count / intensity, got {i0}")
    return i0 * torch.exp(-line_integral)


def detect(
    line_integral: Float[Tensor, "*batch H W"],
    photons: float | None = 1e4,
    *,
    electronic_sigma: float = 0.0,
    detector_blur_px: float = 0.0,
    focal_spot_blur_px: float = 0.0,
    seed: int | None = 0,
) -> Float[Tensor, "*batch H W"]:
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
    det = DetectorModel(photons=photons, electronic_sigma=electronic_sigma, detector_blur_px=detector_blur_px,
                        focal_spot_blur_px=focal_spot_blur_px)
    return run_stages(Signal(torch.exp(-line_integral)), det, None, seed, first="exposure", last="readout_noise").image


def negative_log(counts: Float[Tensor, "*shape"], i0: float, floor: float = 0.5) -> Float[Tensor, "*shape"]:
    """``-log(max(N, floor) / I0)``: the line-integral estimate clinical viewers display.

    ``floor`` (photons) keeps pixels that recorded no photon finite.
    """
    if not (i0 > 0 and floor > 0):
        raise ValueError(f"i0 and floor: expected positive counts, got {i0}, {floor}")
    return -torch.log(counts.clamp_min(floor) / i0)


def zero_floor(image: np.ndarray) -> float:
    """The value a recorded intensity image's zero pixels are raised to before ``-log``: half a
    count, or half the smallest value recorded where that is below a count (a flat-field
    normalised ``I / I0`` in ``[0, 1]``: a floor of half a count would flatten every pixel
    behind half the open field). A count image gets 0.5, as :func:`negative_log`'s default."""
    positive = image[image > 0]
    return min(0.5, 0.5 * float(positive.min())) if positive.size else 0.5


def to_uint16(image: Float[Tensor, "H W"] | np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
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

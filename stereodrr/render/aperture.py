"""The pixel aperture: a flat-panel pixel reports the average over its own area of what reaches
it; point sampling (the pixel centre's ray) is the other option.

The area average is computed above the renderer: ``s x s`` sub-rays per pixel at offsets
``((a + 0.5) / s - 0.5)`` px from the centre, i.e. ``s^2`` renders of cameras whose principal
point is moved by minus the offset (:func:`subpixel_cameras`), averaged (the midpoint rule in
each axis).

Choosing ``s`` (:func:`auto_subpixels`). The midpoint rule is exact on a profile that is
linear across a sub-pixel; its error comes from kinks. An edge of height ``Delta`` spread over
``w`` pixels (the projected voxel size for a trilinear volume) has slope ``Delta / w``; a kink
inside one sub-interval of width ``h = 1/s`` costs at most ``(Delta / w) h^2 / 8`` of the pixel
average, so the edge pixel is within ``tol`` (relative to ``Delta``) of its area average when

    1 / (8 w s^2) <= tol,   i.e.   s = ceil(sqrt(1 / (8 w tol))),

``s = 12`` for ``w = 1`` px and ``tol = 1e-3``, ``8`` for ``w = 2``, ``6`` for ``w = 4``. A
sharper profile (an analytic ball's square-root rim) needs the edge width it actually has; pass
``subpixels`` explicitly there.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np

from ..geometry import Camera

__all__ = ["Aperture", "APERTURES", "BALL_SUBPIXELS", "EDGE_TOLERANCE", "auto_subpixels", "subpixel_offsets", "subpixel_cameras",
           "check_aperture"]

Aperture = Literal["area", "point"]
APERTURES: tuple[str, ...] = get_args(Aperture)
# Edge pixels are within this fraction of the edge height of their area average.
EDGE_TOLERANCE = 1e-3
# Sub-rays per pixel axis through analytic marker balls (calibration shots, the detector model):
# their square-root rim is sharper than the smooth-edge rule of auto_subpixels assumes.
BALL_SUBPIXELS = 6
# Upper bound of the automatic choice (s^2 renders per image).
MAX_AUTO_SUBPIXELS = 16


def check_aperture(aperture: Aperture, subpixels: int | None) -> None:
    """Raise ``ValueError`` unless ``aperture`` is known and ``subpixels`` is None or >= 1."""
    if aperture not in APERTURES:
        raise ValueError(f"aperture: expected one of {APERTURES}, got {aperture!r}")
    if subpixels is not None and (isinstance(subpixels, bool) or int(subpixels) != subpixels or subpixels < 1):
        raise ValueError(f"subpixels: expected a positive integer (sub-rays per pixel axis) or None, got {subpixels!r}")


def auto_subpixels(edge_width_px: float, tol: float = EDGE_TOLERANCE) -> int:
    """Sub-rays per pixel axis for edges spread over ``edge_width_px`` pixels:
    ``ceil(sqrt(1 / (8 w tol)))`` (module docstring), at least 1, at most ``MAX_AUTO_SUBPIXELS``."""
    if not (edge_width_px > 0 and tol > 0):
        raise ValueError(f"edge_width_px, tol: expected positive numbers, got {edge_width_px}, {tol}")
    return int(min(max(math.ceil(math.sqrt(1.0 / (8.0 * edge_width_px * tol)) - 1e-9), 1), MAX_AUTO_SUBPIXELS))


def subpixel_offsets(subpixels: int) -> np.ndarray:
    """``(s,)`` offsets of the sub-ray positions from the pixel centre, in pixels."""
    s = int(subpixels)
    return (np.arange(s) + 0.5) / s - 0.5


def subpixel_cameras(camera: Camera, subpixels: int) -> list[Camera]:
    """The ``s^2`` cameras whose pixel ``(u, v)`` centre ray is the sub-ray ``(u + ou, v + ov)`` of
    ``camera``: the principal point moved by ``(-ou, -ov)``."""
    out = []
    for ov in subpixel_offsets(subpixels):
        for ou in subpixel_offsets(subpixels):
            K = camera.K.copy()
            K[0, 2] -= ou
            K[1, 2] -= ov
            out.append(Camera(K=K, R=camera.R, t=camera.t, width=camera.width, height=camera.height,
                              pixel_spacing=camera.pixel_spacing, sdd=camera.sdd))
    return out

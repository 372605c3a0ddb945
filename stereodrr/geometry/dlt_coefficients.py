"""The 11-coefficient DLT of XMALab and DLTdv, and its relation to ``P = K [R | t]``.

DLTdv (Hedrick 2008) and XMALab write a camera as 11 numbers ``L1..L11`` with

    x = (L1 X + L2 Y + L3 Z + L4) / (L9 X + L10 Y + L11 Z + 1)
    y = (L5 X + L6 Y + L7 Z + L8) / (L9 X + L10 Y + L11 Z + 1)

in *their* image convention, MATLAB-style 1-based pixel indices (:data:`DltConvention`):

- ``"xmalab"``: XMALab's export (``Camera::getDLT``), DLTdv7 and earlier and the XROMM MATLAB
  tools: the y axis points up (origin at the bottom-left pixel), ``x = u + 1``, ``y = H - v``;
- ``"dltdv8"``: DLTdv8, whose images have their origin at the top left (its "Flip DLT
  coefficients" menu converts older files): ``x = u + 1``, ``y = v + 1``,

for the OpenCV pixel ``(u, v)`` (0-based, v down) of an image ``H`` pixels high. That is
``(x, y, 1)^T = A (u, v, 1)^T`` with ``A = [[1, 0, 1], [0, -1, H], [0, 0, 1]]`` or
``[[1, 0, 1], [0, 1, 1], [0, 0, 1]]`` (:func:`dlt_pixel_flip`), and the DLT matrix is ``A P``
scaled so its (3, 4) entry is 1. The coefficient file layout is 11 rows x n cameras (one column
per camera), as XMALab's "DLT coefficients" CSV export and DLTdv's ``*_DLTcoefs.csv``.

Naming: "DLT" alone means these 11 coefficients; conversions are named ``<result>_from_<input>``
(:func:`dlt_from_projection`, :func:`projection_from_dlt`), and the DLT *fit* of a camera to
3D-2D correspondences is :func:`stereodrr.calib.dlt.projection_from_points`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["DltConvention", "dlt_from_projection", "projection_from_dlt", "dlt_pixel_flip"]

DltConvention = Literal["xmalab", "dltdv8"]
"""The pixels of DLT coefficients (module docstring): ``"xmalab"`` (XMALab, DLTdv7 and earlier:
1-based, y up) or ``"dltdv8"`` (DLTdv8: 1-based, y down)."""


def dlt_pixel_flip(height: int, convention: DltConvention = "xmalab") -> np.ndarray:
    """``A`` (3x3) taking OpenCV pixels ``(u, v, 1)`` to the DLT's pixels ``(x, y, 1)``.

    Raises:
        ValueError: an unknown convention, or for ``"xmalab"`` (whose y flip needs it) a ``height``
            that is not a positive whole number of pixels (a NaN or 0 would give coefficients silently).
    """
    if convention == "xmalab":
        if isinstance(height, (bool, np.bool_)) or not (
                isinstance(height, (int, float, np.integer, np.floating))
                and np.isfinite(height) and height == int(height) and height > 0):
            raise ValueError(f"height: expected the image height, a positive whole number of pixels, got {height!r}")
        return np.array([[1.0, 0.0, 1.0], [0.0, -1.0, float(height)], [0.0, 0.0, 1.0]])
    if convention == "dltdv8":
        return np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    raise ValueError(f"convention: expected 'xmalab' or 'dltdv8', got {convention!r}")


def dlt_from_projection(P: np.ndarray, height: int, convention: DltConvention = "xmalab") -> np.ndarray:
    """The 11 DLT coefficients of an OpenCV projection matrix.

    Args:
        P: ``(3, 4)`` OpenCV projection matrix (pixels 0-based, v down).
        height: image height in pixels (the y flip needs it).
        convention: the DLT's pixels (:data:`DltConvention`; default XMALab's).

    Returns:
        ``(11,)`` ``L1..L11``.

    Raises:
        ValueError: a bad ``height`` (:func:`dlt_pixel_flip`), or the world origin in the camera's
            principal plane (``P[2, 3] = 0``): the DLT normalisation ``L12 = 1`` cannot represent
            that camera.
    """
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (3, 4) or not np.all(np.isfinite(P)):
        raise ValueError(f"P: expected a finite 3x4 projection matrix, got shape {P.shape}")
    M = dlt_pixel_flip(height, convention) @ P
    if abs(M[2, 3]) < 1e-12 * np.abs(M[2, :3]).max():
        raise ValueError("P: the world origin lies in the camera's principal plane; the 11-term DLT "
                         "(L12 = 1) cannot represent it — move the world origin")
    return (M / M[2, 3]).ravel()[:11]


def projection_from_dlt(L: np.ndarray, height: int, convention: DltConvention = "xmalab") -> np.ndarray:
    """OpenCV projection matrix ``(3, 4)`` from 11 DLT coefficients (inverse of :func:`dlt_from_projection`).

    The scale is fixed so that ``det(P[:, :3]) > 0`` (world points in front of the camera have
    positive depth) and ``||P[2, :3]|| = 1``.

    Raises:
        ValueError: not 11 finite numbers, a bad ``height`` (:func:`dlt_pixel_flip`), or
            coefficients whose 3x3 block is singular (no camera).
    """
    L = np.asarray(L, dtype=np.float64).ravel()
    if L.shape != (11,) or not np.all(np.isfinite(L)):
        raise ValueError(f"DLT coefficients: expected 11 finite numbers, got shape {L.shape}")
    P = np.linalg.inv(dlt_pixel_flip(height, convention)) @ np.append(L, 1.0).reshape(3, 4)
    M = P[:, :3]
    if not abs(np.linalg.det(M)) > 1e-12 * np.prod(np.linalg.norm(M, axis=1)):
        raise ValueError("DLT coefficients: L1-L3, L5-L7, L9-L11 form a singular matrix (not a camera)")
    P = P / np.linalg.norm(P[2, :3])
    return -P if np.linalg.det(P[:, :3]) < 0 else P

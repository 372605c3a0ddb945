"""Fundamental matrix from point correspondences with OpenCV, with the pitfalls made explicit.

``x2^T F x1 = 0`` (Hartley-Zisserman, as :mod:`stereodrr.geometry.epipolar`). OpenCV's
``findFundamentalMat`` converts the points to float32 (about 7 significant digits, so the loss
grows with the distance of the coordinates from the origin) and, for ``FM_RANSAC``, silently
runs LMedS instead when there are fewer than 15 points (calib3d ``fundam.cpp``). Here each
view's points are centred in float64 first (a translation ``T``: coordinates shrink to the
spread of the points, pixel units and thresholds stay as they are; OpenCV's kernels normalise
the scale themselves, in float64), ``F = T2^T F_c T1`` is restored in float64, and the method
OpenCV actually ran is reported. Degenerate configurations (collinear image
points; coplanar scene points or a shared camera centre, where a homography explains the
matches and F is not determined) are detected and named.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ._checks import apply_h, as_points, hartley_normalization, same_count

__all__ = ["METHODS", "FundamentalEstimate", "estimate_fundamental", "detect_degeneracy", "MIN_POINTS"]

#: Method name -> OpenCV flag.
METHODS: dict[str, int] = {
    "8point": cv2.FM_8POINT,
    "ransac": cv2.FM_RANSAC,
    "lmeds": cv2.FM_LMEDS,
    "magsac": cv2.USAC_MAGSAC,
    "accurate": cv2.USAC_ACCURATE,
}
"""Fundamental-matrix methods by name (``methods=`` of :func:`estimate_fundamental`) -> OpenCV's flag."""
MIN_POINTS = 8
# calib3d fundam.cpp: `(method & ~3) == FM_RANSAC && npoints >= 15` selects RANSAC, else LMedS.
_OPENCV_RANSAC_MIN_POINTS = 15
# LMedS scores a model by err[n // 2] (0-based, nth_element): a 7-point model fitted exactly to
# its sample has a zero score unless n // 2 >= 7.
_LMEDS_MIN_POINTS = 14


@dataclass(frozen=True)
class FundamentalEstimate:
    """Result of :func:`estimate_fundamental`.

    Attributes:
        F: ``(3, 3)`` rank-2 fundamental matrix, unit Frobenius norm, float64.
        method: the method asked for (a key of :data:`METHODS`).
        method_used: the method OpenCV ran (differs from ``method`` on OpenCV's fallbacks).
        inliers: ``(N,)`` bool, the points the estimator kept (all True for 8-point).
        degeneracy: ``None``, or a sentence naming the degenerate configuration found.
        note: why ``method_used`` differs from ``method``, or why the result is doubtful
            (empty when neither).
    """

    F: np.ndarray
    method: str
    method_used: str
    inliers: np.ndarray
    degeneracy: str | None = None
    note: str = ""


def _centring(points: np.ndarray) -> np.ndarray:
    """``(3, 3)`` translation moving the centroid of ``(N, 2)`` points to the origin."""
    T = np.eye(3)
    T[:2, 2] = -points.mean(axis=0)
    return T


def detect_degeneracy(pts1: np.ndarray, pts2: np.ndarray, tol_px: float = 0.5) -> str | None:
    """Name the configuration if the correspondences cannot determine F, else ``None``.

    Collinear: in a view, the RMS distance of the points from their best-fit line (the smallest
    singular value of the centred points over sqrt(N)) is below ``tol_px``. Planar: a homography
    ``x2 ~ H x1`` (least squares, ``cv2.findHomography``) transfers every point within ``tol_px``
    RMS: the scene points are (nearly) coplanar or the views share their centre, and F has a
    family of solutions.

    Args:
        pts1, pts2: ``(N, 2)`` pixel coordinates, float64.
        tol_px: residual in pixels below which a configuration counts as degenerate (set it
            near the point localisation error).
    """
    p1 = as_points("pts1", pts1, 2)
    p2 = as_points("pts2", pts2, 2)
    same_count(pts1=p1, pts2=p2)
    for name, p in (("view 1", p1), ("view 2", p2)):
        s = np.linalg.svd(p - p.mean(axis=0), compute_uv=False)
        if s[-1] / np.sqrt(len(p)) < tol_px:
            return (f"collinear: the points in {name} lie within {s[-1] / np.sqrt(len(p)):.3g} px RMS of a line; "
                    "F is not determined")
    if len(p1) >= 4:
        T1, T2 = hartley_normalization(p1), hartley_normalization(p2)
        Hn, _ = cv2.findHomography(apply_h(T1, p1), apply_h(T2, p2), 0)
        if Hn is not None:
            H = np.linalg.solve(T2, Hn @ T1)
            rms = float(np.sqrt(np.mean(np.sum((apply_h(H, p1) - p2) ** 2, axis=1))))
            if rms < tol_px:
                return (f"planar: a homography maps view 1 onto view 2 within {rms:.3g} px RMS (coplanar "
                        "3D points or a shared camera centre); F is not determined")
    return None


def estimate_fundamental(
    pts1: np.ndarray,
    pts2: np.ndarray,
    method: str = "ransac",
    threshold_px: float = 1.0,
    confidence: float = 0.999,
    max_iters: int = 10000,
    seed: int = 0,
    degeneracy_tol_px: float = 0.5,
) -> FundamentalEstimate:
    """Estimate F with OpenCV from ``N >= 8`` correspondences.

    Solves ``x2_c^T F_c x1_c = 0`` on float64-centred points ``x_c = T x`` (a translation only:
    OpenCV's 7- and 8-point kernels scale the points themselves, in float64, and its USAC
    methods score in pixel units -- with Hartley's extra scaling to mean distance sqrt 2 and the
    threshold scaled alike, MAGSAC keeps the outliers out but its F misses the good points by
    ~2.7 px instead of < 0.2 px in ``test_robust_methods_reject_outliers``) and returns
    ``F = T2^T F_c T1`` (unit Frobenius norm).

    Args:
        pts1, pts2: ``(N, 2)`` pixel coordinates of the same points in views 1 and 2.
        method: ``"8point"``, ``"ransac"``, ``"lmeds"``, ``"magsac"`` (USAC_MAGSAC) or
            ``"accurate"`` (USAC_ACCURATE).
        threshold_px: inlier threshold of the robust methods, pixels (point-to-epipolar-line).
        confidence: robust methods' confidence.
        max_iters: robust methods' iteration cap.
        seed: OpenCV RNG seed, so robust results are reproducible.
        degeneracy_tol_px: see :func:`detect_degeneracy`.

    Returns:
        :class:`FundamentalEstimate`; ``degeneracy`` says when the configuration is degenerate
        (the F returned is then one member of a family and must not be trusted).

    Raises:
        ValueError: unknown method, fewer than 8 points, NaN, mismatched counts, or OpenCV
            finding no F.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    p1 = as_points("pts1", pts1, 2, MIN_POINTS, "a fundamental matrix")
    p2 = as_points("pts2", pts2, 2, MIN_POINTS, "a fundamental matrix")
    n = same_count(pts1=p1, pts2=p2)
    if not threshold_px > 0:
        raise ValueError(f"threshold_px: expected a positive number of pixels, got {threshold_px}")
    degeneracy = detect_degeneracy(p1, p2, degeneracy_tol_px)
    T1, T2 = _centring(p1), _centring(p2)
    q1 = apply_h(T1, p1).astype(np.float32)
    q2 = apply_h(T2, p2).astype(np.float32)
    used, notes = method, []
    if method == "ransac" and n < _OPENCV_RANSAC_MIN_POINTS:
        used = "lmeds"
        notes.append(f"OpenCV runs LMedS instead of RANSAC below {_OPENCV_RANSAC_MIN_POINTS} points ({n} given)")
    if used == "lmeds" and n < _LMEDS_MIN_POINTS:
        notes.append(f"LMedS is unreliable below {_LMEDS_MIN_POINTS} points: OpenCV's median is the "
                     f"{n // 2 + 1}th smallest error, which any 7-point model fits exactly")
    cv2.setRNGSeed(seed)
    try:
        if method == "8point":
            Fn, mask = cv2.findFundamentalMat(q1, q2, cv2.FM_8POINT)
        else:
            Fn, mask = cv2.findFundamentalMat(q1, q2, METHODS[method], threshold_px, confidence, max_iters)
    except cv2.error:
        # USAC asserts (`!model.empty()`) instead of returning nothing when no model has support.
        Fn, mask = None, None
    if Fn is None or Fn.shape != (3, 3):
        raise ValueError(f"fundamental matrix ({method}): OpenCV found no solution from {n} points"
                         + (f"; {degeneracy}" if degeneracy else ""))
    F = T2.T @ Fn.astype(np.float64) @ T1
    F /= np.linalg.norm(F)
    inliers = np.ones(n, bool) if mask is None else mask.ravel().astype(bool)
    return FundamentalEstimate(F=F, method=method, method_used=used, inliers=inliers, degeneracy=degeneracy,
                               note="; ".join(notes))

"""Triangulation of marker images from calibrated views, and its error budget.

- Two-view linear: ``cv2.triangulatePoints`` in float64 (the homogeneous DLT, HZ 12.2).
- Two-view optimal: ``cv2.correctMatches`` moves each pair to the nearest pair that satisfies
  ``x2^T F x1 = 0`` exactly (HZ alg. 12.1, minimising the image distance), then linear.
- N-view: linear (SVD of the stacked ``u p3^T - p1^T, v p3^T - p2^T`` rows per view, each row
  scaled to unit norm) refined by minimising the reprojection error with scipy
  ``least_squares``.

Per point it reports the reprojection error in each view and the crossing-line distance: the
shortest distance between the back-projected rays of two views (the quantity ISO 16087 uses to
check radiostereometric analysis). Against ground truth, the 3D error is split into its depth
component (along the bisector of the rays from the sources to the point) and its in-plane
magnitude (perpendicular to it); the error the rig geometry predicts for an image error
``sigma`` follows by propagation, ``Cov X = sigma^2 (J^T J)^-1`` with ``J`` the stacked
``d(u, v)/dX`` of all views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.sparse import lil_matrix

from ..geometry import Camera, fundamental_from_projections, project_points, split_depth_inplane
from ..geometry.errors import depth_directions as _bisectors
from ._checks import as_points, same_count

__all__ = [
    "METHODS",
    "triangulate_linear",
    "triangulate_optimal",
    "triangulate_nview",
    "crossing_line_distance",
    "projection_jacobian",
    "depth_directions",
    "split_error",
    "predicted_error",
    "Triangulation",
    "triangulate",
    "error_table",
]

METHODS = ("linear", "optimal", "nview")


def _check_P(P: np.ndarray, name: str) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (3, 4) or not np.all(np.isfinite(P)):
        raise ValueError(f"{name}: expected a finite 3x4 projection matrix, got shape {P.shape}")
    return P


def _pair_points(uv1: np.ndarray, uv2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p1 = as_points("uv1", uv1, 2)
    p2 = as_points("uv2", uv2, 2)
    same_count(uv1=p1, uv2=p2)
    return p1, p2


def triangulate_linear(P1: np.ndarray, P2: np.ndarray, uv1: np.ndarray, uv2: np.ndarray) -> np.ndarray:
    """Two-view linear triangulation with ``cv2.triangulatePoints`` (float64).

    Args:
        P1, P2: ``(3, 4)``; uv1, uv2: ``(N, 2)`` pixels.

    Returns:
        ``(N, 3)`` world mm.
    """
    P1, P2 = _check_P(P1, "P1"), _check_P(P2, "P2")
    p1, p2 = _pair_points(uv1, uv2)
    Xh = cv2.triangulatePoints(P1, P2, np.ascontiguousarray(p1.T), np.ascontiguousarray(p2.T))
    return (Xh[:3] / Xh[3]).T


def triangulate_optimal(P1: np.ndarray, P2: np.ndarray, uv1: np.ndarray, uv2: np.ndarray) -> np.ndarray:
    """Two-view optimal triangulation: ``cv2.correctMatches`` with ``F`` of the two cameras, then linear.

    Returns:
        ``(N, 3)`` world mm.
    """
    P1, P2 = _check_P(P1, "P1"), _check_P(P2, "P2")
    p1, p2 = _pair_points(uv1, uv2)
    F = fundamental_from_projections(P1, P2)
    c1, c2 = cv2.correctMatches(F, p1[None], p2[None])
    return triangulate_linear(P1, P2, c1[0], c2[0])


def _check_views(Ps: Sequence[np.ndarray] | np.ndarray, uvs: Sequence[np.ndarray] | np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    if len(Ps) != len(uvs):
        raise ValueError(f"triangulation: {len(Ps)} projection matrices but {len(uvs)} point sets")
    if len(Ps) < 2:
        raise ValueError(f"triangulation: expected at least 2 views, got {len(Ps)}")
    P = np.stack([_check_P(p, f"P[{i}]") for i, p in enumerate(Ps)])
    pts = [as_points(f"uv[{i}]", u, 2) for i, u in enumerate(uvs)]
    same_count(**{f"uv[{i}]": p for i, p in enumerate(pts)})
    return P, np.stack(pts)


def triangulate_nview(Ps: Sequence[np.ndarray] | np.ndarray, uvs: Sequence[np.ndarray] | np.ndarray,
                      refine: bool = True) -> np.ndarray:
    """N-view triangulation: linear, then (optionally) minimum reprojection error.

    Args:
        Ps: ``V`` projection matrices ``(3, 4)``, ``V >= 2``.
        uvs: ``V`` arrays ``(N, 2)`` of pixels of the same points.
        refine: minimise ``sum_v ||pi(P_v X) - x_v||^2`` per point (scipy ``least_squares``).

    Returns:
        ``(N, 3)`` world mm.
    """
    P, uv = _check_views(Ps, uvs)
    V, N = uv.shape[:2]
    rows = np.concatenate([
        uv[..., 0:1] * P[:, None, 2] - P[:, None, 0],
        uv[..., 1:2] * P[:, None, 2] - P[:, None, 1],
    ])  # (2V, N, 4)
    A = np.transpose(rows, (1, 0, 2))
    A = A / np.linalg.norm(A, axis=2, keepdims=True)
    Xh = np.linalg.svd(A)[2][:, -1]
    X = Xh[:, :3] / Xh[:, 3:]
    if not refine:
        return X

    def residuals(x: np.ndarray) -> np.ndarray:
        return (project_points(P, x.reshape(N, 3))[0] - uv).transpose(1, 0, 2).ravel()

    sparsity = lil_matrix((2 * V * N, 3 * N), dtype=int)
    for i in range(N):
        sparsity[2 * V * i: 2 * V * (i + 1), 3 * i: 3 * i + 3] = 1
    sol = least_squares(residuals, X.ravel(), jac_sparsity=sparsity, method="trf", x_scale="jac",
                        xtol=1e-14, ftol=1e-14, gtol=1e-14)
    return sol.x.reshape(N, 3)


def crossing_line_distance(cam1: Camera, cam2: Camera, uv1: np.ndarray, uv2: np.ndarray) -> np.ndarray:
    """``(N,)`` shortest distance (mm) between the back-projected rays of ``uv1`` and ``uv2``:
    ``|(o2 - o1) . (d1 x d2)| / |d1 x d2|``."""
    p1, p2 = _pair_points(uv1, uv2)
    o1, d1 = cam1.pixel_to_ray(p1)
    o2, d2 = cam2.pixel_to_ray(p2)
    n = np.cross(d1, d2)
    return np.abs(np.sum((o2 - o1) * n, axis=1)) / np.linalg.norm(n, axis=1)


def projection_jacobian(P: np.ndarray, X: np.ndarray) -> np.ndarray:
    """``(N, 2, 3)`` derivative of the pixel position w.r.t. the world point,
    ``d(u, v)/dX = (p_{1,2} - (u, v) p_3) / (p_3 . (X, 1))`` with ``p_k`` the rows of ``P[:, :3]``."""
    P = _check_P(P, "P")
    X = as_points("X", X, 3)
    uv, _ = project_points(P, X)
    w = X @ P[2, :3] + P[2, 3]
    return (P[None, :2, :3] - uv[:, :, None] * P[None, 2:3, :3]) / w[:, None, None]


def depth_directions(cameras: Sequence[Camera], X: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit bisector of the viewing rays (source -> point) of all views at each point."""
    return _bisectors(cameras, as_points("X", X, 3))


def split_error(X_est: np.ndarray, X_true: np.ndarray, cameras: Sequence[Camera]) -> tuple[np.ndarray, np.ndarray]:
    """Split the 3D error into depth and in-plane parts.

    Returns:
        depth ``(N,)`` signed component along :func:`depth_directions` (mm);
        inplane ``(N,)`` magnitude of the component perpendicular to it (mm).
    """
    Xe = as_points("X_est", X_est, 3)
    Xt = as_points("X_true", X_true, 3)
    same_count(X_est=Xe, X_true=Xt)
    return split_depth_inplane(Xe - Xt, depth_directions(cameras, Xt))


def predicted_error(cameras: Sequence[Camera], X: np.ndarray, sigma_px: float | np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """3D error the rig geometry predicts for independent image errors of ``sigma_px`` in every
    view: ``Cov X = (sum_views J^T diag(sigma^-2) J)^-1``. With ``sigma_px`` the Cramér–Rao bound of
    the detected centres this is the bound of the triangulation.

    Args:
        sigma_px: one standard deviation for every coordinate, or ``(V, N, 2)`` per view, point and
            image axis.

    Returns:
        depth_sd ``(N,)`` standard deviation along the depth direction (mm);
        inplane_rms ``(N,)`` RMS magnitude of the in-plane error (mm).
    """
    X = as_points("X", X, 3)
    sigma = np.asarray(sigma_px, dtype=np.float64)
    shape = (len(cameras), len(X), 2)
    if not ((sigma.ndim == 0 and sigma >= 0) or (sigma.shape == shape and np.all(sigma > 0))):
        raise ValueError(f"sigma_px: expected a pixel error >= 0 or a positive {shape} array, "
                         f"got shape {sigma.shape}, values {sigma.ravel()[:4]}")
    # A scalar scales the unit-weight covariance; per-coordinate errors weigh each residual.
    weights = np.ones(shape) if sigma.ndim == 0 else sigma**-2
    jacobians = [projection_jacobian(c.P, X) for c in cameras]
    info = sum(np.einsum("nai,na,naj->nij", J, w, J) for J, w in zip(jacobians, weights))
    cov = np.linalg.inv(info) * (sigma**2 if sigma.ndim == 0 else 1.0)
    d = depth_directions(cameras, X)
    var_d = np.einsum("ni,nij,nj->n", d, cov, d)
    var_in = np.trace(cov, axis1=1, axis2=2) - var_d
    return np.sqrt(var_d), np.sqrt(np.maximum(var_in, 0.0))


@dataclass(frozen=True)
class Triangulation:
    """Triangulated points and their self-consistency measures.

    Attributes:
        points: ``(N, 3)`` world mm.
        reprojection_px: ``(V, N)`` reprojection error per view.
        crossing_mm: ``(N,)`` crossing-line distance of the first two views.
        method: ``"linear"``, ``"optimal"`` or ``"nview"``.
        views: view names in order.
    """

    points: np.ndarray
    reprojection_px: np.ndarray
    crossing_mm: np.ndarray
    method: str
    views: list[str]


def triangulate(cameras: Mapping[str, Camera], uvs: Mapping[str, np.ndarray], method: str = "nview") -> Triangulation:
    """Triangulate the same points seen in several views.

    Args:
        cameras: view name -> calibrated camera.
        uvs: view name -> ``(N, 2)`` pixels (rows are the same points in every view).
        method: ``"linear"`` / ``"optimal"`` (two views: the first two of ``uvs``) or ``"nview"``.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    names = list(uvs)
    missing = [n for n in names if n not in cameras]
    if missing:
        raise ValueError(f"triangulate: no camera for view(s) {missing}")
    cams = [cameras[n] for n in names]
    P, uv = _check_views([c.P for c in cams], [uvs[n] for n in names])
    if method == "nview":
        X = triangulate_nview(P, uv)
    else:
        fn = triangulate_linear if method == "linear" else triangulate_optimal
        X = fn(P[0], P[1], uv[0], uv[1])
    reproj = np.linalg.norm(project_points(P, X)[0] - uv, axis=2)
    crossing = crossing_line_distance(cams[0], cams[1], uv[0], uv[1])
    return Triangulation(X, reproj, crossing, method, names)


def error_table(tri: Triangulation, X_true: np.ndarray, cameras: Mapping[str, Camera],
                ids: Sequence | np.ndarray | None = None, sigma_px: float | None = None) -> pd.DataFrame:
    """One row per point: id, 3D error, depth and in-plane parts, reprojection RMS over views,
    crossing-line distance and, with ``sigma_px``, the predicted depth / in-plane error."""
    cams = [cameras[n] for n in tri.views]
    Xt = as_points("X_true", X_true, 3)
    same_count(triangulated=tri.points, X_true=Xt)
    depth, inplane = split_error(tri.points, Xt, cams)
    table = pd.DataFrame({
        "id": np.arange(len(Xt)) if ids is None else np.asarray(ids),
        "error_mm": np.linalg.norm(tri.points - Xt, axis=1),
        "depth_mm": depth,
        "inplane_mm": inplane,
        "reprojection_px": np.sqrt(np.mean(tri.reprojection_px**2, axis=0)),
        "crossing_mm": tri.crossing_mm,
    })
    if sigma_px is not None:
        table["predicted_depth_mm"], table["predicted_inplane_mm"] = predicted_error(cams, Xt, sigma_px)
    return table

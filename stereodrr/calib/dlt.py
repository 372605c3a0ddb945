"""DLT camera calibration from known 3D marker positions and their images.

Per view, the 11-parameter DLT (``P`` up to scale, 11 degrees of freedom) is the null vector of
the stacked equations ``[X^T 1 0 -u X^T -u; 0 X^T 1 -v X^T -v] p = 0`` (HZ alg. 7.1) solved on
Hartley-normalised points (2D: centroid at 0, mean distance sqrt 2; 3D: mean distance sqrt 3)
and denormalised ``P = T2d^-1 P_n T3d``. It needs >= 6 non-coplanar points (coplanar points
leave a family of solutions). ``P`` is decomposed into ``K, R, t`` (RQ) and all views are then
refined jointly by minimising the reprojection error (scipy ``least_squares``) over
``f_u, f_v, c_u, c_v`` (optionally the skew, optionally shared by all views) and each pose.
OpenCV's ``calibrateCamera`` (with the DLT intrinsics as a guess) and ``solvePnP`` give an
independent cross-check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import cv2
import numpy as np
from scipy.optimize import least_squares

from ..geometry import (
    Camera,
    StereoRig,
    decompose_projection,
    matrix_to_rotvec,
    project_points,
    projection_matrix,
    rotation_angle_deg,
    rotvec_to_matrix,
)
from ._checks import apply_h, as_points, hartley_normalization, same_count

__all__ = [
    "MIN_DLT_POINTS",
    "check_noncoplanar",
    "projection_from_points",
    "reprojection_errors",
    "ViewCalibration",
    "RigCalibration",
    "calibrate_rig",
    "opencv_crosscheck",
    "rig_isocenter",
]

MIN_DLT_POINTS = 6


def _check_correspondences(points3d: np.ndarray, points2d: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    X = as_points(f"{what} 3D points", points3d, 3, MIN_DLT_POINTS, "a DLT")
    uv = as_points(f"{what} 2D points", points2d, 2, MIN_DLT_POINTS, "a DLT")
    same_count(**{f"{what} 3D points": X, f"{what} 2D points": uv})
    return X, uv


def check_noncoplanar(points3d: np.ndarray, tol: float = 1e-3, what: str = "3D points") -> None:
    """Raise when the points are (nearly) coplanar or collinear.

    The RMS distance from the best-fit plane (smallest singular value of the centred points)
    must exceed ``tol`` times the RMS spread within the plane (the largest).
    """
    s = np.linalg.svd(points3d - points3d.mean(axis=0), compute_uv=False)
    if s[-1] <= tol * s[0]:
        raise ValueError(
            f"{what}: the points are coplanar (out-of-plane spread {s[-1] / np.sqrt(len(points3d)):.3g} mm RMS vs "
            f"{s[0] / np.sqrt(len(points3d)):.3g} mm in plane); a DLT needs non-coplanar points"
        )


def projection_from_points(points3d: np.ndarray, points2d: np.ndarray, what: str = "view") -> np.ndarray:
    """Linear 11-parameter DLT of one view with Hartley normalisation.

    Args:
        points3d: ``(N, 3)`` world mm, ``N >= 6``, not coplanar.
        points2d: ``(N, 2)`` pixels.
        what: name used in error messages.

    Returns:
        ``(3, 4)`` projection matrix, scaled so ``||P[2, :3]|| = 1`` and ``det P[:, :3] > 0``
        (points in front of the camera have positive depth).

    Raises:
        ValueError: fewer than 6 points, NaN, mismatched counts, coplanar points.
    """
    X, uv = _check_correspondences(points3d, points2d, what)
    check_noncoplanar(X, what=f"{what} 3D points")
    T3, T2 = hartley_normalization(X), hartley_normalization(uv)
    Xn = np.c_[apply_h(T3, X), np.ones(len(X))]
    un = apply_h(T2, uv)
    z = np.zeros_like(Xn)
    A = np.concatenate([
        np.c_[Xn, z, -un[:, :1] * Xn],
        np.c_[z, Xn, -un[:, 1:] * Xn],
    ])
    Pn = np.linalg.svd(A)[2][-1].reshape(3, 4)
    P = np.linalg.solve(T2, Pn @ T3)
    P /= np.linalg.norm(P[2, :3])
    return -P if np.linalg.det(P[:, :3]) < 0 else P


def reprojection_errors(P: np.ndarray, points3d: np.ndarray, points2d: np.ndarray) -> np.ndarray:
    """``(N,)`` Euclidean distance in pixels between ``P X`` and the measured points."""
    uv_hat, _ = project_points(np.asarray(P, np.float64), np.asarray(points3d, np.float64))
    return np.linalg.norm(uv_hat - np.asarray(points2d, np.float64), axis=1)


@dataclass(frozen=True)
class ViewCalibration:
    """One calibrated view.

    Attributes:
        camera: the calibrated :class:`Camera` (after refinement when it ran).
        P_linear: ``(3, 4)`` the linear DLT before refinement.
        errors_px: ``(N,)`` reprojection error per point of the final camera.
        errors_linear_px: ``(N,)`` of the linear DLT.
    """

    camera: Camera
    P_linear: np.ndarray
    errors_px: np.ndarray
    errors_linear_px: np.ndarray

    @property
    def rms_px(self) -> float:
        return float(np.sqrt(np.mean(self.errors_px**2)))

    @property
    def rms_linear_px(self) -> float:
        return float(np.sqrt(np.mean(self.errors_linear_px**2)))


@dataclass(frozen=True)
class RigCalibration:
    """All calibrated views: ``rig`` (a :class:`StereoRig`) and per-view details."""

    rig: StereoRig
    views: dict[str, ViewCalibration]
    refined: bool
    shared_intrinsics: bool

    @property
    def rms_px(self) -> float:
        """RMS reprojection error over all views and points."""
        e = np.concatenate([v.errors_px for v in self.views.values()])
        return float(np.sqrt(np.mean(e**2)))

    def to_dict(self) -> dict:
        return {
            "rms_px": self.rms_px,
            "refined": self.refined,
            "shared_intrinsics": self.shared_intrinsics,
            "views": {n: {"rms_px": v.rms_px, "rms_linear_px": v.rms_linear_px, "n_points": int(len(v.errors_px)),
                          "K": v.camera.K.tolist(), "R": v.camera.R.tolist(), "t": v.camera.t.tolist()}
                      for n, v in self.views.items()},
        }


# Principal rays within this angle of their mean direction are "parallel" for rig_isocenter:
# uniplanar RSA rigs (sources side by side above one detector plane) have parallel axes by design.
_PARALLEL_DEG = 10.0


def rig_isocenter(cameras: Mapping[str, Camera]) -> np.ndarray:
    """``(3,)`` the point closest (least squares) to every principal ray; for one view, the
    point on its principal ray at half the SDD.

    Where the principal rays are nearly parallel (within 10 degrees of their mean direction, as in
    a uniplanar RSA rig) their closest point is undetermined along them, and may land far past
    the detectors or behind the sources; where it lies outside every view's source-to-detector
    span, the isocenter is the mean of the rays' points at half the SDD instead."""
    cams = list(cameras.values())
    if len(cams) == 1:
        return cams[0].center + 0.5 * cams[0].sdd * cams[0].principal_ray
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for cam in cams:
        d = cam.principal_ray
        M = np.eye(3) - np.outer(d, d)  # projector orthogonal to the ray
        A += M
        b += M @ cam.center
    try:
        x = np.linalg.solve(A, b)
    except np.linalg.LinAlgError:  # A is singular only for exactly parallel rays
        x = np.full(3, np.nan)
    mean = np.sum([cam.principal_ray for cam in cams], axis=0)
    cos_max = np.cos(np.radians(_PARALLEL_DEG)) * np.linalg.norm(mean)
    parallel = all(cam.principal_ray @ mean >= cos_max for cam in cams)
    if not parallel or all(0.0 < (x - cam.center) @ cam.principal_ray < cam.sdd for cam in cams):
        return x
    return np.mean([cam.center + 0.5 * cam.sdd * cam.principal_ray for cam in cams], axis=0)


def _unpack(x: np.ndarray, n_views: int, shared: bool, skew: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    nk = 5 if skew else 4
    intr = x[: nk * (1 if shared else n_views)].reshape(-1, nk)
    poses = x[intr.size:].reshape(n_views, 6)
    out = []
    for i in range(n_views):
        k = intr[0 if shared else i]
        K = np.array([[k[0], k[4] if skew else 0.0, k[2]], [0.0, k[1], k[3]], [0.0, 0.0, 1.0]])
        out.append((K, rotvec_to_matrix(poses[i, :3]), poses[i, 3:]))
    return out


def calibrate_rig(
    correspondences: Mapping[str, tuple[np.ndarray, np.ndarray]],
    detectors: Mapping[str, Camera],
    refine: bool = True,
    shared_intrinsics: bool = False,
    skew: bool = False,
) -> RigCalibration:
    """DLT-calibrate every view, then refine all views jointly.

    Minimises ``sum_views sum_i ||pi(K_v [R_v | t_v] X_i) - x_vi||^2`` with scipy
    ``least_squares`` (trust region), starting from the RQ decomposition of each linear DLT.

    Args:
        correspondences: view name -> (``(N_v, 3)`` world mm, ``(N_v, 2)`` pixels).
        detectors: view name -> a camera giving the detector (width, height, pixel pitch) of
            that view, e.g. the nominal rig's; its K, R, t are not used.
        refine: run the nonlinear refinement.
        shared_intrinsics: one ``K`` for all views (identical detectors and SDD).
        skew: estimate the skew ``K[0, 1]`` (otherwise 0, as a physical detector).

    Returns:
        :class:`RigCalibration`; the rig's isocenter is the least-squares meeting point of the
        calibrated principal rays.
    """
    names = list(correspondences)
    if not names:
        raise ValueError("correspondences: expected at least one view")
    missing = [n for n in names if n not in detectors]
    if missing:
        raise ValueError(f"detectors: no detector given for view(s) {missing}")
    data = {n: _check_correspondences(*correspondences[n], what=f"view {n!r}") for n in names}
    P_lin = {n: projection_from_points(*data[n], what=f"view {n!r}") for n in names}
    krt = [decompose_projection(P_lin[n]) for n in names]

    def intr(K: np.ndarray) -> np.ndarray:
        k = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]] + ([K[0, 1]] if skew else [])
        return np.array(k)

    Ks = [intr(K) for K, _, _ in krt]
    x0 = np.concatenate(
        ([np.mean(Ks, axis=0)] if shared_intrinsics else Ks)
        + [np.r_[matrix_to_rotvec(R), t] for _, R, t in krt]
    )
    if refine:
        def residuals(x: np.ndarray) -> np.ndarray:
            res = []
            for (K, R, t), n in zip(_unpack(x, len(names), shared_intrinsics, skew), names):
                X, uv = data[n]
                res.append((project_points(projection_matrix(K, R, t), X)[0] - uv).ravel())
            return np.concatenate(res)

        sol = least_squares(residuals, x0, method="trf", x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12)
        x = sol.x
    else:
        x = x0
    views, cams = {}, {}
    for (K, R, t), n in zip(_unpack(x, len(names), shared_intrinsics, skew), names):
        if not refine:  # keep the linear DLT exactly (with its skew)
            K, R, t = krt[names.index(n)]
        det = detectors[n]
        # Calibrated: K, R, t. Derived, so the file agrees with its own K (fx du = fy dv = SDD):
        # SDD = fx x the detector's nominal du (a DLT cannot separate focal length from pitch),
        # and dv = SDD / fy (the calibrated pixel aspect).
        sdd = float(K[0, 0] * det.pixel_spacing[0])
        cam = Camera(K=K, R=R, t=t, width=det.width, height=det.height,
                     pixel_spacing=(det.pixel_spacing[0], sdd / K[1, 1]), sdd=sdd)
        X, uv = data[n]
        views[n] = ViewCalibration(cam, P_lin[n], reprojection_errors(cam.P, X, uv), reprojection_errors(P_lin[n], X, uv))
        cams[n] = cam
    return RigCalibration(StereoRig(cams, rig_isocenter(cams)), views, refine, shared_intrinsics)


def opencv_crosscheck(camera: Camera, points3d: np.ndarray, points2d: np.ndarray) -> dict:
    """Independent check of a calibrated view with OpenCV.

    ``cv2.calibrateCamera`` (non-planar target: needs ``CALIB_USE_INTRINSIC_GUESS``; distortion
    fixed at zero, as a flat-panel detector) starts from ``camera.K``; ``cv2.solvePnP`` estimates
    the pose with ``camera.K`` fixed. OpenCV's calibrateCamera takes float32 points.

    Returns:
        ``calibrate_rms_px``, ``calibrate_focal_rel_diff`` (max relative difference of
        ``f_u, f_v``), ``calibrate_principal_diff_px``, ``calibrate_center_diff_mm`` (source
        position), ``pnp_rms_px``, ``pnp_rotation_diff_deg``, ``pnp_center_diff_mm``; where
        ``cv2.calibrateCamera`` refuses the camera (a principal point outside the image), its four
        values are NaN and ``note`` says why.
    """
    X, uv = _check_correspondences(points3d, points2d, "cross-check")
    flags = (cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3
             | cv2.CALIB_ZERO_TANGENT_DIST)
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    # Object points centred (the fit is translation-equivariant) so float32 keeps their precision.
    c = X.mean(axis=0)
    nan = float("nan")
    out: dict = {"calibrate_rms_px": nan, "calibrate_focal_rel_diff": nan, "calibrate_principal_diff_px": nan,
                 "calibrate_center_diff_mm": nan}
    try:
        rms, K_cv, _, rvecs, tvecs = cv2.calibrateCamera(
            [(X - c).astype(np.float32)], [uv.astype(np.float32)], (camera.width, camera.height),
            camera.K.copy(), np.zeros(5), flags=flags, criteria=crit)
    except cv2.error as exc:  # e.g. a principal point outside the image, which OpenCV will not start from
        out["note"] = f"cv2.calibrateCamera refused the camera: {str(exc).strip().splitlines()[-1][:200]}"
    else:
        R_cv = rotvec_to_matrix(np.asarray(rvecs[0], np.float64).ravel())
        t_cv = np.asarray(tvecs[0], np.float64).ravel() - R_cv @ c
        out.update({
            "calibrate_rms_px": float(rms),
            "calibrate_focal_rel_diff": float(np.max(np.abs(np.diag(K_cv)[:2] / np.diag(camera.K)[:2] - 1))),
            "calibrate_principal_diff_px": float(np.linalg.norm(K_cv[:2, 2] - camera.K[:2, 2])),
            "calibrate_center_diff_mm": float(np.linalg.norm(-R_cv.T @ t_cv - camera.center)),
        })
    ok, rvec, tvec = cv2.solvePnP(X, uv, camera.K, None, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("cross-check: cv2.solvePnP found no pose")
    R_pnp = rotvec_to_matrix(rvec.ravel().astype(np.float64))
    t_pnp = tvec.ravel().astype(np.float64)
    cam_cv = camera.with_pose(R_pnp, t_pnp)
    return {
        **out,
        "pnp_rms_px": float(np.sqrt(np.mean(reprojection_errors(cam_cv.P, X, uv) ** 2))),
        "pnp_rotation_diff_deg": rotation_angle_deg(R_pnp, camera.R),
        "pnp_center_diff_mm": float(np.linalg.norm(cam_cv.center - camera.center)),
    }

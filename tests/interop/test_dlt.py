"""DLT coefficient files: what stereodrr writes is what XMALab exports (``Camera::getDLT``,
src/core/Camera.cpp 623-671 at XROMMPackages/xmalab ce5f06ec) and projects, through DLTdv's own
functions (DLTdv8a_internal/dlt_inverse.m, dlt_reconstruct.m, dlt_invert.m at tlhedrick/dltdv
a81d654), where DLTdv7 (y up) and DLTdv8 (y down, images drawn with ``'ydir','reverse'``) put
the OpenCV pixel ``(u, v)``."""

import numpy as np
import pytest

from stereodrr.geometry import Camera, StereoRig, load_dlt_csv, projection_from_dlt, rotvec_to_matrix, save_dlt_csv


def xmalab_get_dlt(K, R, t, height):
    """``Camera::getDLT``: y-inverted pose (rows 0 and 2 of R and t negated), ``cy' = H - 1 - cy``,
    ``P = K' [R' | t']``, then ``L[i] = (P[i] + P[i+8]) / P[11]``, ``L[i+4] = (P[i+4] + P[i+8]) /
    P[11]``, ``L[i+8] = P[i+8] / P[11]`` (the +1 of 1-based pixels)."""
    cam, Rt, tt = K.copy(), R.copy(), t.copy()
    tt[0], tt[2] = -tt[0], -tt[2]
    Rt[0], Rt[2] = -Rt[0], -Rt[2]
    cam[1, 2] = (height - 1) - cam[1, 2]
    out = (cam @ np.c_[Rt, tt]).ravel()
    for i in range(4):
        out[i] = (out[i] + out[i + 8]) / out[11]
        out[i + 4] = (out[i + 4] + out[i + 8]) / out[11]
        out[i + 8] = out[i + 8] / out[11]
    return out[:11]


def dlt_inverse(c, xyz):
    """``dlt_inverse.m``: image coordinates of world points."""
    den = xyz[:, 0] * c[8] + xyz[:, 1] * c[9] + xyz[:, 2] * c[10] + 1
    return np.c_[(xyz[:, 0] * c[0] + xyz[:, 1] * c[1] + xyz[:, 2] * c[2] + c[3]) / den,
                 (xyz[:, 0] * c[4] + xyz[:, 1] * c[5] + xyz[:, 2] * c[6] + c[7]) / den]


def dlt_reconstruct(c, cam_pts):
    """``dlt_reconstruct.m`` for one frame: least squares over the cameras that see the point."""
    n = c.shape[1]
    m1, m2 = np.zeros((2 * n, 3)), np.zeros(2 * n)
    for k in range(n):
        x, y = cam_pts[2 * k], cam_pts[2 * k + 1]
        m1[2 * k], m1[2 * k + 1] = x * c[8:11, k] - c[0:3, k], y * c[8:11, k] - c[4:7, k]
        m2[2 * k], m2[2 * k + 1] = c[3, k] - x, c[7, k] - y
    return np.linalg.lstsq(m1, m2, rcond=None)[0]


def dlt_invert(c, height):
    """``dlt_invert.m`` (``cFlip`` with ``DLTcameraPosition``): DLTdv8's "Flip DLT coefficients"."""
    m1 = np.array([[c[0], c[1], c[2]], [c[4], c[5], c[6]], [c[8], c[9], c[10]]])
    xyz = np.linalg.inv(m1) @ np.array([-c[3], -c[7], -1.0])
    D = (1 / (c[8] ** 2 + c[9] ** 2 + c[10] ** 2)) ** 0.5
    Uo = D ** 2 * (c[0] * c[8] + c[1] * c[9] + c[2] * c[10])
    Vo = D ** 2 * (c[4] * c[8] + c[5] * c[9] + c[6] * c[10])
    du = (((Uo * c[8] - c[0]) ** 2 + (Uo * c[9] - c[1]) ** 2 + (Uo * c[10] - c[2]) ** 2) * D ** 2) ** 0.5
    dv = (((Vo * c[8] - c[4]) ** 2 + (Vo * c[9] - c[5]) ** 2 + (Vo * c[10] - c[6]) ** 2) * D ** 2) ** 0.5
    Z = -np.mean([du, dv])
    T3 = D * np.array([[(Uo * c[8] - c[0]) / du, (Uo * c[9] - c[1]) / du, (Uo * c[10] - c[2]) / du],
                       [(Vo * c[8] - c[4]) / dv, (Vo * c[9] - c[5]) / dv, (Vo * c[10] - c[6]) / dv],
                       [c[8], c[9], c[10]]])
    if np.linalg.det(T3) < 0:
        T3 = -T3
    T = np.zeros((4, 4))
    T[:3, :3] = np.linalg.inv(T3)
    T[3] = [*xyz, 1.0]
    K = np.array([[Z, 0, Uo], [0, Z, Vo - height], [0, 0, 1]])
    R = T[:3, :3]
    tv = T[3, :3] @ R
    P1e = np.vstack([np.c_[R.T, tv], [0, 0, 0, 1]])
    coefs = (K @ np.c_[np.eye(3), np.zeros(3)] @ P1e).ravel()
    out = coefs[:11] / coefs[-1]
    out[[0, 1, 2, 7, 8, 9, 10]] *= -1
    return out


def _rig(fy=3100.0):
    """Two cameras of different heights, off-centre principal points, a world origin off the
    isocenter."""
    rng = np.random.default_rng(4)
    cams = {}
    for name, (w, h) in {"cam1": (640, 480), "cam2": (512, 700)}.items():
        K = np.array([[3000.0, 0, rng.uniform(200, 400)], [0, fy, rng.uniform(200, 400)], [0, 0, 1]])
        R = rotvec_to_matrix(rng.normal(size=3) * 0.3)
        cams[name] = Camera(K=K, R=R, t=np.array([5.0, -3, 800]) - R @ np.array([1.0, 2, 3]), width=w, height=h)
    return StereoRig(cams, np.array([1.0, 2, 3])), rng.uniform(-30, 30, size=(25, 3)) + [1, 2, 3]


def test_xmalab_coefficients_are_xmalabs_own_and_project_as_dltdv7(tmp_path):
    rig, X = _rig()
    table = save_dlt_csv(rig, tmp_path / "dlt.csv")
    L = load_dlt_csv(tmp_path / "dlt.csv")
    np.testing.assert_array_equal(L, table)
    for k, cam in enumerate(rig.cameras.values()):
        np.testing.assert_allclose(L[:, k], xmalab_get_dlt(cam.K, cam.R, cam.t, cam.height), rtol=1e-12, atol=1e-15)
        uv, _ = cam.project(X)
        np.testing.assert_allclose(dlt_inverse(L[:, k], X), np.c_[uv[:, 0] + 1, cam.height - uv[:, 1]], atol=1e-9)


@pytest.mark.parametrize("convention", ["xmalab", "dltdv8"])
def test_dltdv_reconstructs_points_digitised_in_its_own_pixels(tmp_path, convention):
    rig, X = _rig()
    L = save_dlt_csv(rig, tmp_path / "dlt.csv", convention)
    digitised = []
    for cam in rig.cameras.values():
        uv, _ = cam.project(X)
        # DLTdv8 draws the image with its origin top left: the pixel (u, v) centre is (u + 1, v + 1).
        digitised.append(uv + 1 if convention == "dltdv8" else np.c_[uv[:, 0] + 1, cam.height - uv[:, 1]])
    for k in range(2):
        np.testing.assert_allclose(dlt_inverse(L[:, k], X), digitised[k], atol=1e-9)
    pts = np.hstack(digitised)
    np.testing.assert_allclose([dlt_reconstruct(L, p) for p in pts], X, atol=1e-7)
    for k, cam in enumerate(rig.cameras.values()):
        P = projection_from_dlt(L[:, k], cam.height, convention)
        np.testing.assert_allclose(P * cam.P[2, 3] / P[2, 3], cam.P, rtol=1e-9, atol=1e-9)


def test_dltdv8s_own_flip_of_xmalab_coefficients_lands_one_pixel_short():
    """What docs/trials.md warns about: DLTdv8's "Flip DLT coefficients" flips by H, not H + 1, so
    XMALab's coefficients flipped there put the OpenCV pixel (u, v) at (u + 1, v), one row above
    DLTdv8's own (u + 1, v + 1); ``convention="dltdv8"`` writes the latter directly. (Square
    pixels: the flip rebuilds the camera with one focal length.)"""
    rig, X = _rig(fy=3000.0)
    for cam in rig.cameras.values():
        L = xmalab_get_dlt(cam.K, cam.R, cam.t, cam.height)
        uv, _ = cam.project(X)
        np.testing.assert_allclose(dlt_inverse(dlt_invert(L, cam.height), X), np.c_[uv[:, 0] + 1, uv[:, 1]], atol=1e-6)

"""An X-ray simulator for the calibration tests that shares no code with ``stereodrr.render``.

It images a marker phantom the way a flat panel does: steel balls (analytic chords) inside a
water ball (analytic chord), each detector pixel averaging ``I0 exp(-L)`` over its own area
(``s x s`` sub-rays at ``((a + 0.5) / s - 0.5)`` pixel offsets), then a Gaussian blur of the
intensity (scintillator), then Poisson counts. The only stereodrr code used is the camera
(``K, R, t`` and the detector size), which is what the test is about.

Speed: the water chord is smooth on the pixel scale (radius 55 mm, ~400 px), so away from the
balls the pixel average is taken as the centre sample (relative error < 1e-6, the curvature
term ``f'' / 24``); inside a square around every ball all ``s^2`` sub-rays are traced.

Rigs unlike the demo's (:func:`odd_rig`): 900 x 700 px at 0.2 mm (``dv = du / 1.002``, so
``fy`` is 0.2 % above ``fx``), principal point (+12, -7) px off the detector centre, SDD 1000,
and pairs separated left-right, vertically, or biplanar.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from stereodrr.geometry import Camera, StereoRig, rotvec_to_matrix

# Linear attenuation at 60 keV (1/mm), NIST XCOM: water 0.2059 cm^2/g, stainless steel taken as
# iron 1.205 cm^2/g x 7.9 g/cm^3. The numbers need not match stereodrr's material table.
MU_WATER = 0.02059
MU_STEEL = 0.9520
WATER_RADIUS_MM = 55.0


def odd_camera(source: np.ndarray, target: np.ndarray, up: np.ndarray, sdd: float = 1000.0,
               width: int = 900, height: int = 700, du: float = 0.2, fy_over_fx: float = 1.002,
               principal_offset_px: tuple[float, float] = (12.0, -7.0)) -> Camera:
    """A camera looking from ``source`` at ``target`` with a non-square, off-centre detector."""
    dv = du / fy_over_fx
    off = (principal_offset_px[0] * du, principal_offset_px[1] * dv)
    return Camera.look_at(source, target, sdd, (du, dv), width, height, up=up, principal_offset_mm=off)


def odd_rig(kind: str = "horizontal", angle_deg: float = 5.0, sid: float = 700.0, sdd: float = 1000.0,
            width: int = 900, height: int = 700, du: float = 0.2) -> StereoRig:
    """Two views of the isocenter (origin): ``kind`` = ``"horizontal"`` (sources apart left-right,
    rotated about world +z), ``"vertical"`` (apart up-down, about world +x) or ``"biplanar"``
    (90 deg about +z)."""
    axis = {"horizontal": np.array([0.0, 0.0, 1.0]), "vertical": np.array([1.0, 0.0, 0.0]),
            "biplanar": np.array([0.0, 0.0, 1.0])}[kind]
    angles = (0.0, 90.0) if kind == "biplanar" else (-angle_deg / 2, angle_deg / 2)
    names = ("frontal", "lateral") if kind == "biplanar" else ("left", "right")
    d0 = np.array([0.0, 1.0, 0.0])
    cams = {}
    for n, a in zip(names, angles):
        d = rotvec_to_matrix(axis * np.radians(a)) @ d0
        cams[n] = odd_camera(-sid * d, np.zeros(3), np.array([0.0, 0.0, 1.0]), sdd, width, height, du)
    return StereoRig(cams, np.zeros(3))


def _rays(cam: Camera, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source ``(3,)`` and unit directions ``(..., 3)`` through pixel positions ``u, v``."""
    src = -cam.R.T @ cam.t
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)
    d = pix @ np.linalg.inv(cam.K).T @ cam.R  # R^T K^-1 x, row-vector form
    return src, d / np.linalg.norm(d, axis=-1, keepdims=True)


def _chord(src: np.ndarray, d: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    w = centre - src
    perp = w - (d @ w)[..., None] * d
    h2 = radius**2 - np.sum(perp * perp, axis=-1)
    return 2.0 * np.sqrt(np.maximum(h2, 0.0))


def simulate(cam: Camera, markers: pd.DataFrame, *, subpixels: int = 8, blur_px: float = 0.5,
             photons: float | None = None, seed: int = 0, mirror: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One view: the image and the exact projected ball centres.

    Args:
        cam: the true camera.
        markers: ``marker_id, x, y, z, diameter_mm`` (world mm).
        subpixels: sub-rays per pixel axis of the area average.
        blur_px: Gaussian sigma of the detector blur (on the intensity), px.
        photons: unattenuated photons per pixel; ``None``: the noise-free ``-log(I / I0)``.
        mirror: flip the image left-right (a detector read out mirrored).

    Returns:
        image ``(H, W)`` (float64 ``-log`` image when noise-free, else uint16 counts) and the
        ``(M, 2)`` exact projections of the ball centres (of the unmirrored image).
    """
    H, W = cam.height, cam.width
    X = markers[["x", "y", "z"]].to_numpy(np.float64)
    rad = 0.5 * markers["diameter_mm"].to_numpy(np.float64)
    x_cam = X @ cam.R.T + cam.t
    uvw = x_cam @ cam.K.T
    centres = uvw[:, :2] / uvw[:, 2:]
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    src, d = _rays(cam, uu, vv)
    L = MU_WATER * _chord(src, d, np.zeros(3), WATER_RADIUS_MM)
    intensity = np.exp(-L)
    s = int(subpixels)
    off = (np.arange(s) + 0.5) / s - 0.5
    for c, r, (uc, vc), z in zip(X, rad, centres, x_cam[:, 2]):
        half = int(np.ceil(cam.K[0, 0] * r / z)) + 2
        u0, u1 = max(int(np.floor(uc)) - half, 0), min(int(np.ceil(uc)) + half + 1, W)
        v0, v1 = max(int(np.floor(vc)) - half, 0), min(int(np.ceil(vc)) + half + 1, H)
        # Sub-ray grid (rows v, cols u) of shape (patch_h * s, patch_w * s).
        su = (np.arange(u0, u1)[:, None] + off[None, :]).ravel()
        sv = (np.arange(v0, v1)[:, None] + off[None, :]).ravel()
        gv, gu = np.meshgrid(sv, su, indexing="ij")
        s_src, s_d = _rays(cam, gu, gv)
        Ls = MU_WATER * _chord(s_src, s_d, np.zeros(3), WATER_RADIUS_MM)
        for c2, r2 in zip(X, rad):  # every ball, so overlapping shadows add up
            if np.linalg.norm(c2 - c) < r + r2 + 2 * half * cam.pixel_spacing[0]:
                Ls = Ls + (MU_STEEL - MU_WATER) * _chord(s_src, s_d, c2, r2)
        I_sub = np.exp(-Ls).reshape(v1 - v0, s, u1 - u0, s).mean(axis=(1, 3))
        intensity[v0:v1, u0:u1] = I_sub
    if blur_px > 0:
        intensity = gaussian_filter(intensity, blur_px, mode="nearest", truncate=5.0)
    if mirror:
        intensity = intensity[:, ::-1]
    if photons is None:
        return -np.log(intensity), centres
    counts = np.random.default_rng(seed).poisson(photons * intensity)
    return np.clip(counts, 0, 65535).astype(np.uint16), centres


def simulate_rig(rig: StereoRig, markers: pd.DataFrame, **kw) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """:func:`simulate` for every view (view ``i`` uses ``seed + i``)."""
    seed = kw.pop("seed", 0)
    images, centres = {}, {}
    for i, (n, cam) in enumerate(rig.cameras.items()):
        images[n], centres[n] = simulate(cam, markers, seed=seed + i, **kw)
    return images, centres


def offset_rig(rig: StereoRig, rotate_deg: float = 0.0, shift_mm: float = 0.0, views: tuple[str, ...] | None = None,
               axis: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> StereoRig:
    """The nominal rig a user might bring: ``views`` (default all) orbited by ``rotate_deg`` about
    ``axis`` through the isocenter and their sources shifted by ``shift_mm`` (perpendicular to
    the principal ray, along the image's +u), detectors unchanged."""
    cams = {}
    Rz = rotvec_to_matrix(np.asarray(axis, float) / np.linalg.norm(axis) * np.radians(rotate_deg))
    for n, cam in rig.cameras.items():
        if views is not None and n not in views:
            cams[n] = cam
            continue
        src = Rz @ (cam.center - rig.isocenter) + rig.isocenter + shift_mm * (Rz @ cam.R[0])
        R = cam.R @ Rz.T
        cams[n] = Camera(K=cam.K, R=R, t=-R @ src, width=cam.width, height=cam.height,
                         pixel_spacing=cam.pixel_spacing, sdd=cam.sdd)
    return StereoRig(cams, rig.isocenter)

"""Synthetic bead trials as real Autoscoper files, rendered here independently of the detector.

Beads are metal spheres of known radius placed in rigid bodies that move by known rigid
motions; each camera (a real MayaCam calibration) sees them through the exact path length of
each ray through each sphere, area-integrated over every pixel by supersampling, on a smooth
open field with soft tissue and bone-like texture, blurred, with Poisson noise, inside an image
intensifier's round field. Frames are written as TIFF sequences (uint8 or uint16, air bright or
inverted) with a ``.cfg`` naming the cameras and folders (:func:`write_trial_file`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter

from stereodrr.calib.dlt import rig_isocenter
from stereodrr.geometry import Camera
from stereodrr.interop.autoscoper import AutoscoperTrialFile, write_trial_file
from stereodrr.interop.mayacam import load_mayacam

SUPERSAMPLE = 6


@dataclass
class SyntheticTrial:
    """What was rendered: ``positions`` ``(F, B, 3)`` bead centres (mm), ``body`` ``(B,)`` body per
    bead, ``motions`` ``(F, nb, 4, 4)`` each body's motion from frame 0, ``radius_mm`` ``(B,)``."""

    cfg: Path
    cameras: dict[str, Camera]
    positions: np.ndarray
    body: np.ndarray
    motions: np.ndarray
    radius_mm: np.ndarray
    uv: dict[str, np.ndarray] = field(default_factory=dict)


def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(deg)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def bead_bodies(rng: np.random.Generator, centre: np.ndarray, n_bodies: int = 3, beads: tuple[int, int] = (4, 8),
                spacing_mm: float = 30.0, spread_mm: float = 10.0, min_gap_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Bead centres ``(B, 3)`` (mm) and body per bead: ``n_bodies`` clusters around ``centre``,
    ``spacing_mm`` apart, each of a random count in ``beads`` within ``spread_mm`` of its centre,
    beads at least ``min_gap_mm`` apart."""
    pts: list[np.ndarray] = []
    body: list[int] = []
    for b in range(n_bodies):
        ang = 2 * np.pi * b / n_bodies
        c = centre + spacing_mm * np.array([np.cos(ang), np.sin(ang), 0.3 * np.sin(2 * ang)])
        n = int(rng.integers(beads[0], beads[1] + 1))
        placed = 0
        while placed < n:
            p = c + rng.uniform(-spread_mm, spread_mm, 3)
            if all(np.linalg.norm(p - q) >= min_gap_mm for q in pts):
                pts.append(p)
                body.append(b)
                placed += 1
    return np.array(pts), np.array(body)


def body_motions(rng: np.random.Generator, n_frames: int, n_bodies: int, step_deg: float = 4.0,
                 step_mm: float = 3.0) -> np.ndarray:
    """``(F, nb, 4, 4)`` rigid motions from frame 0 (about each body's own axis, a steady drift)."""
    M = np.tile(np.eye(4), (n_frames, n_bodies, 1, 1))
    for b in range(n_bodies):
        axis, shift = rng.normal(size=3), rng.normal(size=3)
        shift *= step_mm / np.linalg.norm(shift)
        for f in range(1, n_frames):
            M[f, b, :3, :3] = _rotation(axis, step_deg * f)
            M[f, b, :3, 3] = shift * f
    return M


def _rays(cam: Camera, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Unit world directions of the rays through pixel positions ``u, v`` (any equal shapes)."""
    h = np.stack([u, v, np.ones_like(u)], axis=-1)
    d = h @ np.linalg.inv(cam.K).T @ cam.R  # R^T K^-1 x, row vectors
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _bead_path(cam: Camera, centres: np.ndarray, radii: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` mean path length (mm) through the beads over each pixel (supersampled)."""
    L = np.zeros(shape)
    C = cam.center
    uv, _ = cam.project(centres)
    off = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    for (cu, cv), X, r in zip(uv, centres, radii):
        dist = np.linalg.norm(X - C)
        half = int(np.ceil(r * cam.K[0, 0] / (dist - r))) + 2
        c0, r0 = int(round(cu)) - half, int(round(cv)) - half
        cols = np.arange(max(c0, 0), min(c0 + 2 * half + 1, shape[1]))
        rows = np.arange(max(r0, 0), min(r0 + 2 * half + 1, shape[0]))
        if len(cols) == 0 or len(rows) == 0:
            continue
        uu = (cols[:, None] + off[None]).ravel()
        vv = (rows[:, None] + off[None]).ravel()
        U, V = np.meshgrid(uu, vv)
        d = _rays(cam, U, V)
        s = X - C
        along = d @ s
        perp2 = np.maximum(s @ s - along**2, 0.0)
        chord = 2.0 * np.sqrt(np.maximum(r * r - perp2, 0.0))
        fine = chord.reshape(len(rows), SUPERSAMPLE, len(cols), SUPERSAMPLE).mean(axis=(1, 3))
        L[np.ix_(rows, cols)] += fine
    return L


def _tissue(rng: np.random.Generator, shape: tuple[int, int], anchors: np.ndarray, scale: float) -> np.ndarray:
    """Attenuation of soft tissue and bones: a broad soft-tissue slab, a bone (dense rim, textured
    inside) along every anchor point (projected body centres), ``scale`` px per mm."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    a = 0.6 * np.exp(-(((xx - W / 2) / (0.45 * W)) ** 2 + ((yy - H / 2) / (0.6 * H)) ** 2)).astype(np.float32)
    texture = gaussian_filter(rng.normal(size=(H // 2, W // 2)).astype(np.float32), 1.5)
    texture = np.kron(texture / texture.std(), np.ones((2, 2), np.float32))[:H, :W]
    for cu, cv in anchors:
        ang = rng.uniform(0, np.pi)
        ca, sa = np.cos(ang), np.sin(ang)
        x, y = (xx - cu) * ca + (yy - cv) * sa, -(xx - cu) * sa + (yy - cv) * ca
        rr = np.sqrt((x / (45 * scale)) ** 2 + (y / (14 * scale)) ** 2)
        inside = rr < 1.0
        a += np.where(inside, 0.35 + 0.06 * texture, 0.0) + 0.3 * np.exp(-(((rr - 0.95) / 0.05) ** 2))
    return a


def render_view(rng: np.random.Generator, cam: Camera, centres: np.ndarray, radii: np.ndarray, tissue: np.ndarray,
                mu_per_mm: float = 1.2, blur_px: float = 1.2, counts: float = 800.0, field: bool = True) -> np.ndarray:
    """Intensity ``(H, W)`` float in [0, 1] (air bright): open field x exp(-tissue - mu x path), blurred,
    Poisson noise of ``counts`` in the open field, 0 outside the round field."""
    H, W = tissue.shape
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xx - W / 2) ** 2 + (yy - H / 2) ** 2) / (0.5 * min(H, W)) ** 2
    open_field = 1.0 - 0.25 * r2
    image = open_field * np.exp(-tissue - mu_per_mm * _bead_path(cam, centres, radii, (H, W)))
    image = gaussian_filter(image.astype(np.float32), blur_px)
    image = rng.poisson(np.maximum(image, 0) * counts).astype(np.float32) / counts
    if field:
        image[r2 > 0.94**2] = 0.0
    return np.clip(image, 0.0, 1.0)


def write_frame(path: Path, image: np.ndarray, dtype: str = "uint8", inverted: bool = False) -> None:
    """``image`` in [0, 1] as an 8-bit (full scale 255) or 16-bit (12 bits used) TIFF."""
    full = 255 if dtype == "uint8" else 4095
    q = np.round(np.clip(image, 0, 1) * full)
    if inverted:
        q = full - q
    tifffile.imwrite(path, q.astype(dtype))


def make_trial(folder: Path, camera_files: list[Path], rng: np.random.Generator, n_frames: int = 5,
               n_bodies: int = 3, beads: tuple[int, int] = (4, 8), bead_mm: float | tuple[float, float] = 1.0,
               dtype: str = "uint8", inverted: bool = False, counts: float = 800.0, blur_px: float = 1.2,
               mu_per_mm: float = 1.2, field: bool = True, no_beads: bool = False,
               offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0), spacing_mm: float = 30.0,
               step_mm: float = 3.0, step_deg: float = 4.0) -> SyntheticTrial:
    """Render a trial into ``folder`` (cameras from ``camera_files``; see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    cams = {f"cam{i + 1}": load_mayacam(p) for i, p in enumerate(camera_files)}
    iso = rig_isocenter(cams) + np.asarray(offset_mm)
    X0, body = bead_bodies(rng, iso, n_bodies, beads, spacing_mm)
    lo, hi = (bead_mm, bead_mm) if np.isscalar(bead_mm) else bead_mm  # type: ignore[misc]
    radii = rng.uniform(lo, hi, len(X0)) / 2.0
    M = body_motions(rng, n_frames, n_bodies, step_deg, step_mm)
    centroids = np.array([X0[body == b].mean(axis=0) for b in range(n_bodies)])
    positions = np.empty((n_frames, len(X0), 3))
    for f in range(n_frames):
        for b in range(n_bodies):
            R, t = M[f, b, :3, :3], M[f, b, :3, 3]
            # Each body turns about its own centroid, then drifts.
            positions[f, body == b] = (X0[body == b] - centroids[b]) @ R.T + centroids[b] + t
            M[f, b, :3, 3] = centroids[b] + t - R @ centroids[b]
    dirs = []
    uv_all: dict[str, np.ndarray] = {}
    for name, cam in cams.items():
        d = folder / f"{name}_frames"
        d.mkdir(exist_ok=True)
        dirs.append(d)
        scale = cam.K[0, 0] / np.linalg.norm(iso - cam.center)
        anchors = cam.project(centroids)[0]
        tissue = _tissue(rng, (cam.height, cam.width), anchors, scale)
        uv_all[name] = np.stack([cam.project(positions[f])[0] for f in range(n_frames)])
        for f in range(n_frames):
            beads_now = np.zeros((0, 3)) if no_beads else positions[f]
            img = render_view(rng, cam, beads_now, radii[: len(beads_now)], tissue, mu_per_mm, blur_px, counts, field)
            write_frame(d / f"frame_{name}.{f:04d}.tif", img, dtype, inverted)
    cfg = folder / "trial.cfg"
    write_trial_file(AutoscoperTrialFile([Path(p) for p in camera_files], dirs, []), cfg)
    return SyntheticTrial(cfg, cams, positions, body, M, 2 * radii, uv_all)

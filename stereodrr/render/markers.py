"""Analytic spherical markers (e.g. 1-2 mm steel balls): exact line integrals and exact
projected centres, with no voxelisation.

A pixel ray ``x(s) = C + s d`` (unit ``d``) meets a sphere of centre ``c`` and radius ``r`` along
the chord::

    ell = 2 sqrt(max(r^2 - |w - (w . d) d|^2, 0)),   w = c - C

so the sphere adds ``mu * ell`` to the pixel (per pixel-centre ray, no supersampling). The ray
starts at the source (``s >= 0``, as the volume renderer clips it): of a ball the source's
plane cuts only the part in front counts, ``|[w . d - ell/2, w . d + ell/2] & [0, inf)|``, and a
ball behind the source casts no shadow. The
perpendicular distance is formed as a vector before squaring, which keeps full relative
precision when the source is far from the sphere. The gradient w.r.t. the centre is finite
everywhere (zero outside the silhouette; it grows as ``1/ell`` towards the rim, as the chord does).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..geometry import Camera, StereoRig, pixel_to_ray, project_points, projection_matrix, stack_cameras
from .aperture import Aperture
from .drr import camera_batch
from .integrate import SAMPLE_BUDGET
from .rays import pixel_grid_chunk

__all__ = ["sphere_drr", "sphere_centers_px", "render_spheres", "shadow_pixels", "sphere_subpixel_integrals",
           "sphere_transmission"]


def _check(centers: Tensor, diameters: Tensor, mu: Tensor, K: Tensor, R: Tensor, t: Tensor) -> None:
    if centers.ndim != 2 or centers.shape[1] != 3:
        raise ValueError(f"centers: expected shape (M, 3), got {tuple(centers.shape)}")
    m = centers.shape[0]
    for name, x in (("diameters", diameters), ("mu", mu)):
        if tuple(x.shape) != (m,):
            raise ValueError(f"{name}: expected shape ({m},) (one per centre), got {tuple(x.shape)}")
    for name, x in (("centers", centers), ("diameters", diameters), ("mu", mu), ("K", K), ("R", R), ("t", t)):
        if x.device != centers.device or x.dtype != centers.dtype:
            raise ValueError(f"{name}: on {x.device} as {x.dtype}, expected {centers.device} {centers.dtype} like centers")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name}: contains NaN or inf")
    if bool((diameters <= 0).any()):
        raise ValueError("diameters: expected positive sizes in mm")


def sphere_drr(centers: Tensor, diameters: Tensor, mu: Tensor, K: Tensor, R: Tensor, t: Tensor,
               height: int, width: int) -> Tensor:
    """Exact line integrals of spheres: ``L_b(u, v) = sum_m mu_m ell_m(u, v)``.

    Args:
        centers: ``(M, 3)`` world mm; diameters: ``(M,)`` mm; mu: ``(M,)`` 1/mm.
        K, R: ``(B, 3, 3)``; t: ``(B, 3)`` (same dtype/device as ``centers``).
        height, width: detector size.

    Returns:
        ``(B, H, W)``, differentiable w.r.t. centres, diameters, mu and the poses; add it to a
        CT render (:func:`stereodrr.render.drr`) of the same cameras.
    """
    _check(centers, diameters, mu, K, R, t)
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(f"image size: expected positive integers, got height={height}, width={width}")
    n_pix = height * width
    chunk = max(1, SAMPLE_BUDGET // max(centers.shape[0], 1))
    views = []
    for b in range(K.shape[0]):
        parts = [_chord_sums(centers, diameters, mu, K[b], R[b], t[b],
                             pixel_grid_chunk(start, min(start + chunk, n_pix), width, centers.device, centers.dtype))
                 for start in range(0, n_pix, chunk)]
        views.append(torch.cat(parts).reshape(height, width))
    return torch.stack(views)


def _chord_sums(centers: Tensor, diameters: Tensor, mu: Tensor, K: Tensor, R: Tensor, t: Tensor, uv: Tensor) -> Tensor:
    """``(N,)`` ``sum_m mu_m ell_m`` along the rays of pixel coordinates ``uv`` ``(N, 2)`` of one view."""
    src, d = pixel_to_ray(K, R, t, uv)  # (N, 3)
    w = centers[None, :, :] - src[:, None, :]  # (N, M, 3)
    along = (w * d[:, None, :]).sum(-1, keepdim=True)  # (N, M, 1) path length to the closest point
    perp = w - along * d[:, None, :]
    h2 = (0.5 * diameters)[None, :] ** 2 - (perp * perp).sum(-1)
    inside = h2 > 0
    half = torch.sqrt(torch.where(inside, h2, torch.ones_like(h2)))
    # The ray starts at the source (s >= 0, as the volume path clips it): a ball whose chord
    # starts behind the source counts only its part in front, one behind the source nothing.
    along = along[..., 0]
    chord = torch.where(along >= half, 2.0 * half, (along + half).clamp_min(0.0) - (along - half).clamp_min(0.0))
    return (torch.where(inside, chord, torch.zeros_like(chord)) * mu[None, :]).sum(-1)


def _tangent_extremes(a: np.ndarray, z: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Extremes of ``x = a' / z'`` over a ball of radius ``r`` centred at camera coordinates
    ``(a, z)`` (``z > r``): the planes through the source tangent to the ball,
    ``(a - x z)^2 = r^2 (1 + x^2)``."""
    den = z * z - r * r
    root = r * np.sqrt(a * a + den)
    return (a * z - root) / den, (a * z + root) / den


def shadow_pixels(centers: np.ndarray, diameters: np.ndarray, camera: Camera, margin_px: float = 2.0) -> np.ndarray:
    """Flat (row-major) indices ``(N,)`` of the pixels whose area a ball's shadow may touch: the
    bounding box of each ball's silhouette (the cone from the source tangent to the ball), with
    the square of half-width ``r f / (z - r)`` around its projected centre (the bound on the
    principal axis, which off-axis silhouettes outgrow; kept so that images near the axis keep
    their bytes), each widened by ``margin_px``; a ball that reaches the source's plane shadows
    every pixel."""
    c = np.asarray(centers, np.float64)
    r = 0.5 * np.asarray(diameters, np.float64).reshape(-1)
    # checked here, where the balls first meet numpy: a NaN would otherwise fail as a cast to int
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"centers: expected shape (M, 3), got {c.shape}")
    if r.shape != (len(c),):
        raise ValueError(f"diameters: expected shape ({len(c)},) (one per centre), got {np.shape(diameters)}")
    if not (np.isfinite(c).all() and np.isfinite(r).all()):
        raise ValueError("centers, diameters: contain NaN or inf")
    if (r <= 0).any():
        raise ValueError("diameters: expected positive sizes in mm")
    mask = np.zeros((camera.height, camera.width), bool)
    if len(c):
        uv, z = camera.project(c)
        f = max(camera.K[0, 0], camera.K[1, 1])
        half = r * f / np.maximum(z - r, 1e-9) + margin_px
        boxes = [(u - h, u + h, v - h, v + h) for (u, v), h in zip(uv, half)]
        X, Y, Z = (c @ camera.R.T + camera.t).T
        front = Z > r
        if front.any():
            x0, x1 = _tangent_extremes(X[front], Z[front], r[front])
            y0, y1 = _tangent_extremes(Y[front], Z[front], r[front])
            K = camera.K
            corners_u = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2] for x in (x0, x1) for y in (y0, y1)])
            corners_v = np.stack([K[1, 1] * y + K[1, 2] for y in (y0, y1)])
            boxes += [(u0 - margin_px, u1 + margin_px, v0 - margin_px, v1 + margin_px) for u0, u1, v0, v1 in zip(
                corners_u.min(0), corners_u.max(0), corners_v.min(0), corners_v.max(0))]
        if not front.all():
            boxes.append((0.0, camera.width - 1.0, 0.0, camera.height - 1.0))
        for ua, ub, va, vb in boxes:
            u0, u1 = int(max(np.floor(ua), 0)), int(min(np.ceil(ub), camera.width - 1))
            v0, v1 = int(max(np.floor(va), 0)), int(min(np.ceil(vb), camera.height - 1))
            if u0 <= u1 and v0 <= v1:
                mask[v0:v1 + 1, u0:u1 + 1] = True
    return np.flatnonzero(mask)


def sphere_subpixel_integrals(centers: Tensor | np.ndarray, diameters: Tensor | np.ndarray,
                              mu: Tensor | np.ndarray | Sequence[float] | float, camera: Camera,
                              pixels: np.ndarray, subpixels: int, *, device: torch.device | str = "cpu",
                              dtype: torch.dtype = torch.float64) -> Tensor:
    """The balls' line integrals along ``s x s`` sub-rays of each pixel in ``pixels`` (flat
    indices, e.g. :func:`shadow_pixels`), sub-ray offsets as in
    :func:`stereodrr.render.aperture.subpixel_offsets`.

    Returns:
        ``(N, s * s)``: a pixel's area average of a function of the line integral is the mean
        of that function over the row (the midpoint rule in each axis).
    """
    from .aperture import subpixel_offsets

    c = torch.as_tensor(centers, device=device, dtype=dtype).reshape(-1, 3)
    dia = torch.as_tensor(diameters, device=device, dtype=dtype).reshape(-1)
    mu_t = torch.as_tensor(mu, device=device, dtype=dtype).reshape(-1).expand(c.shape[0])
    K, R, t = camera.to_torch(device, dtype)
    pix = torch.as_tensor(np.asarray(pixels, np.int64), device=device)
    o = torch.as_tensor(subpixel_offsets(subpixels), device=device, dtype=dtype)
    ov, ou = torch.meshgrid(o, o, indexing="ij")
    base = torch.stack([(pix % camera.width).to(dtype), (pix // camera.width).to(dtype)], -1)  # (N, 2)
    uv = (base[:, None, :] + torch.stack([ou.reshape(-1), ov.reshape(-1)], -1)[None]).reshape(-1, 2)
    chunk = max(1, SAMPLE_BUDGET // max(c.shape[0], 1))
    _check(c, dia, mu_t.contiguous(), K[None], R[None], t[None])
    out = torch.cat([_chord_sums(c, dia, mu_t, K, R, t, uv[s:s + chunk]) for s in range(0, uv.shape[0], chunk)]) \
        if uv.shape[0] else uv.new_zeros(0)
    return out.reshape(len(pixels), subpixels * subpixels)  # explicit: no shadow on the detector is (0, s*s)


def sphere_transmission(centers: np.ndarray, diameters: np.ndarray, mu: np.ndarray | float, camera: Camera,
                        aperture: Aperture = "area", subpixels: int | None = None, *,
                        device: torch.device | str = "cpu") -> Tensor:
    """``(H, W)`` float64 transmission ``exp(-L_balls)`` of one view through the pixel aperture:
    ``"area"`` averages it over ``subpixels x subpixels`` sub-rays in the pixels the shadows
    touch (default :data:`~stereodrr.render.aperture.BALL_SUBPIXELS`), ``"point"`` takes the
    pixel-centre ray."""
    from .aperture import BALL_SUBPIXELS, check_aperture

    check_aperture(aperture, subpixels)
    if aperture == "point":
        return torch.exp(-render_spheres(centers, diameters, mu, camera, device=device, dtype=torch.float64)[0][0])
    pix = shadow_pixels(centers, diameters, camera)
    L = sphere_subpixel_integrals(centers, diameters, mu, camera, pix, subpixels or BALL_SUBPIXELS, device=device)
    out = torch.ones(camera.height * camera.width, device=device, dtype=torch.float64)
    out[torch.as_tensor(pix, device=device)] = torch.exp(-L).mean(1)
    return out.reshape(camera.height, camera.width)


def sphere_centers_px(centers: Tensor, K: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """Exact projected centres ``(B, M, 2)`` (u, v) of ``(M, 3)`` world points: ``Camera.project``
    of each centre, the ground truth for marker detection.

    (The centroid of a sphere's shadow sits slightly off this point away from the principal
    point, by perspective; detectors are judged against the projected centre.)
    """
    P = projection_matrix(K, R, t)
    uv, _ = project_points(P, centers.expand(K.shape[0], *centers.shape))
    return uv


def render_spheres(
    centers: Tensor | np.ndarray | Sequence[Sequence[float]],
    diameters: Tensor | np.ndarray | Sequence[float],
    mu: Tensor | np.ndarray | Sequence[float] | float,
    cameras: Camera | Sequence[Camera] | Mapping[str, Camera] | StereoRig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Render spheres for cameras of one detector size.

    Args:
        centers: ``(M, 3)`` world mm; diameters: ``(M,)`` mm; mu: ``(M,)`` or one value, 1/mm.
        cameras: as in :func:`stereodrr.render.render_drr`.

    Returns:
        images ``(B, H, W)`` (line integrals) and projected centres ``(B, M, 2)``.
    """
    names, cams = camera_batch(cameras)
    if len({(c.height, c.width) for c in cams}) > 1:
        listing = ", ".join(f"{n} {c.width}x{c.height}" for n, c in zip(names, cams))
        raise ValueError(f"cameras: expected one detector size, got {listing}")
    c = torch.as_tensor(centers, device=device, dtype=dtype)
    m = c.shape[0] if c.ndim == 2 else -1
    dia = torch.as_tensor(diameters, device=device, dtype=dtype).reshape(-1)
    mu_t = torch.as_tensor(mu, device=device, dtype=dtype).reshape(-1)
    if mu_t.numel() == 1 and m >= 0:  # one value for every ball, none included (a phantom without markers)
        mu_t = mu_t.expand(m)
    K, R, t = stack_cameras(cams, torch.device(device), dtype)
    return sphere_drr(c, dia, mu_t, K, R, t, cams[0].height, cams[0].width), sphere_centers_px(c, K, R, t)

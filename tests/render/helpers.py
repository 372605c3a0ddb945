"""Independent truths for the renderer tests (numpy, float64)."""

from __future__ import annotations

import numpy as np
import torch

from stereodrr.geometry import Camera
from stereodrr.volume import Volume


def render(volume: Volume, cam: Camera, data: np.ndarray | None = None, mode: str = "trilinear",
           step_mm: float | None = None, dtype=torch.float64, backend: str = "auto") -> np.ndarray:
    """Render (H, W) in float64 through the functional core (Volume stores float32); triton
    renders on CUDA when there is a GPU, else in Triton's interpreter on CPU."""
    from stereodrr.render import Projector, drr

    from .conftest import device_for

    dev = device_for(backend)
    d = torch.as_tensor(volume.data.numpy() if data is None else data, dtype=dtype, device=dev)
    A = torch.linalg.inv(torch.tensor(volume.affine, dtype=torch.float64)).to(dev, dtype)
    K, R, t = (x[None] for x in cam.to_torch(dev, dtype))
    img = drr(d, A, K, R, t, cam.height, cam.width, projector=Projector(mode=mode, step_mm=step_mm, backend=backend))
    return img[0].cpu().numpy()


def pixel_rays(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World source (3,) and unit directions (H, W, 3) of every pixel centre."""
    v, u = np.mgrid[0:cam.height, 0:cam.width]
    origin, d = cam.pixel_to_ray(np.stack([u.ravel(), v.ravel()], 1).astype(float))
    return origin[0], d.reshape(cam.height, cam.width, 3)


def ellipsoid_chord(src: np.ndarray, d: np.ndarray, center: np.ndarray, axes_world: np.ndarray,
                    semi: np.ndarray) -> np.ndarray:
    """Chord length of rays ``src + s d`` through the ellipsoid ``|diag(1/semi) Q^T (x - c)| <= 1``
    (``Q`` columns = world directions of the semi-axes): roots of a quadratic in ``s``."""
    a_ = (d @ axes_world) / semi
    b_ = ((src - center) @ axes_world) / semi
    qa = (a_ * a_).sum(-1)
    qb = 2 * (a_ * b_).sum(-1)
    qc = (b_ * b_).sum(-1) - 1
    disc = qb * qb - 4 * qa * qc
    return np.where(disc > 0, np.sqrt(np.maximum(disc, 0)) / qa, 0.0)

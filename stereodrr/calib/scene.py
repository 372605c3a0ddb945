"""Simulated calibration shots: a marker phantom imaged by a stereo rig, as a detector records it.

The plastic bodies are voxelized (balls carved out as air) and rendered as a DRR; the steel
balls are added as exact analytic spheres (``mu x chord``), whose projected centres are the
ground truth for detection. The detector model (:func:`stereodrr.render.detector.detect`) then
gives raw counts with Poisson and electronic noise and detector blur, stored as 16-bit like a
flat panel's raw frame; without noise the image is the float32 line integral.

:func:`perturbed_rig` makes the "real" rig that a nominal rig only approximately describes, so
a calibration must recover the real geometry from the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import Camera, StereoRig, rotvec_to_matrix
from ..phantoms import Phantom, voxelize
from ..render import render_rig, render_spheres
from ..render.aperture import BALL_SUBPIXELS, check_aperture
from ..render.detector import DetectorModel, to_uint16
from ..render.detector import detect as detector_counts
from ..render.markers import sphere_transmission
from ..render.polychromatic import render_polychromatic
from ..volume import mu_to_hu

__all__ = ["CalibrationShots", "perturbed_rig", "render_calibration_images"]


def perturbed_rig(nominal: StereoRig, seed: int = 0, source_mm: float = 3.0, aim_mm: float = 2.0,
                  roll_deg: float = 0.5, sdd_mm: float = 4.0, principal_mm: float = 1.0) -> StereoRig:
    """A rig near ``nominal``: each source moved by ``N(0, source_mm)`` per axis, its principal
    ray aimed ``N(0, aim_mm)`` off the isocenter, the detector rolled by ``N(0, roll_deg)``
    about the principal ray, the SDD changed by ``N(0, sdd_mm)`` and the principal point moved
    by ``N(0, principal_mm)`` mm on the detector. Seeded."""
    rng = np.random.default_rng(seed)
    cams = {}
    for name, cam in nominal.cameras.items():
        src = cam.center + rng.normal(0.0, source_mm, 3)
        target = nominal.isocenter + rng.normal(0.0, aim_mm, 3)
        # The nominal 'up' is minus the camera's +v axis; roll it about the principal ray.
        up = rotvec_to_matrix(cam.principal_ray * np.radians(rng.normal(0.0, roll_deg))) @ -cam.R[1]
        cams[name] = Camera.look_at(src, target, cam.sdd + rng.normal(0.0, sdd_mm), cam.pixel_spacing,
                                    cam.width, cam.height, up=up,
                                    principal_offset_mm=rng.normal(0.0, principal_mm, 2))
    return StereoRig(cams, nominal.isocenter)


@dataclass(frozen=True)
class CalibrationShots:
    """Images of a marker phantom.

    Attributes:
        images: view name -> ``(H, W)`` image: uint16 raw counts (``kind == "intensity"``) or
            float32 line integrals (``kind == "line_integral"``).
        kind: ``"intensity"`` or ``"line_integral"``.
        centres_px: view name -> ``(M, 2)`` exact projected ball centres (marker table order).
        marker_ids: ``(M,)``.
    """

    images: dict[str, np.ndarray]
    kind: str
    centres_px: dict[str, np.ndarray]
    marker_ids: np.ndarray


def render_calibration_images(
    phantom: Phantom,
    rig: StereoRig,
    *,
    energy_kev: float = 60.0,
    voxel_mm: float = 0.5,
    photons: float | None = None,
    electronic_sigma: float = 0.0,
    detector_blur_px: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
    detector: DetectorModel | None = None,
    aperture: str = "area",
    subpixels: int = BALL_SUBPIXELS,
) -> CalibrationShots:
    """Render every view of ``rig`` looking at ``phantom``.

    Args:
        phantom: a phantom with markers (its world pose is used).
        rig: the cameras that take the pictures (the real rig, not the nominal one).
        energy_kev: effective energy for the attenuation coefficients.
        voxel_mm: voxel size of the plastic bodies.
        photons: mean photons per pixel without attenuation; ``None``: noise-free line integrals.
        electronic_sigma: read-out noise in photons; detector_blur_px: Gaussian sigma.
        seed: noise seed (view ``i`` uses ``seed + i``).
        detector: a :class:`~stereodrr.render.DetectorModel` (spectrum, scatter, noise, ...):
            the polychromatic chain replaces the arguments above; images are its float32
            ``-log(I / I_open)`` (kind ``"line_integral"``), bodies decomposed from their HU at
            ``energy_kev``, balls exact in their own material's channel.
        aperture: ``"area"``: each pixel reports the average over its area of the transmitted
            intensity ``exp(-L)`` (a flat panel), from ``subpixels x subpixels`` sub-rays through the
            balls (:func:`stereodrr.render.markers.sphere_transmission`; the plastic bodies, smooth
            on the pixel scale, at the pixel centre); noise-free images are then ``-log`` of it.
            ``"point"``: the pixel-centre ray.
    """
    check_aperture(aperture, subpixels)
    if not phantom.markers:
        raise ValueError("phantom: has no markers to calibrate with")
    vox = voxelize(phantom, voxel_mm, energy_kev=energy_kev, markers="carve", supersample=2,
                   device=device, progress=progress)
    if detector is not None:
        return _polychromatic_shots(phantom, rig, vox.mu, energy_kev, detector, seed)
    bodies = render_rig(vox.mu, rig)
    balls = phantom.marker_arrays(energy_kev)
    images, centres = {}, {}
    for i, (name, cam) in enumerate(rig.cameras.items()):
        transmitted = sphere_transmission(balls.centers, balls.diameters, balls.mu, cam, aperture, subpixels,
                                          device=device)
        _, c = render_spheres(balls.centers, balls.diameters, balls.mu, cam, device=device)
        L = bodies[name] + (-torch.log(transmitted)).to(bodies[name].device, bodies[name].dtype)
        centres[name] = c[0].cpu().numpy().astype(np.float64)
        if photons is None:
            images[name] = L.cpu().numpy().astype(np.float32)
        else:
            counts = detector_counts(L, photons, electronic_sigma=electronic_sigma,
                                     detector_blur_px=detector_blur_px, seed=seed + i)
            # One digital unit per photon while it fits in 16 bits, like a raw flat-panel frame.
            scale = 1.0 if float(counts.max()) <= 65535 else None
            images[name], _ = to_uint16(counts.clamp_min(0), scale)
    return CalibrationShots(images, "line_integral" if photons is None else "intensity", centres, balls.ids)


def _polychromatic_shots(phantom: Phantom, rig: StereoRig, mu, energy_kev: float,  # noqa: ANN001
                         detector: DetectorModel, seed: int) -> CalibrationShots:
    balls = phantom.marker_arrays(energy_kev)
    spheres = (balls.centers, balls.diameters, [m.material.name for m in phantom.markers])
    with torch.no_grad():
        imgs = render_polychromatic(mu.with_data(mu_to_hu(mu.data, energy_kev)), rig, detector,
                                    reference_kev=energy_kev, spheres=spheres, seed=seed)
    centres = {n: rig[n].project(balls.centers)[0].astype(np.float64) for n in rig.names}
    return CalibrationShots({n: im.cpu().numpy().astype(np.float32) for n, im in imgs.items()}, "line_integral",
                            centres, balls.ids)

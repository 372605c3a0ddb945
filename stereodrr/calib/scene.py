"""Simulated calibration shots: a marker phantom imaged by a stereo rig, as a detector records it.

The plastic bodies are voxelized (balls carved out as air) and rendered as a DRR; the steel
balls are added as exact analytic spheres (``mu x chord``), whose projected centres are the
ground truth for detection; all through the imaging pipeline (:func:`stereodrr.imaging.simulate`).
A monochromatic flat panel (:func:`flat_panel`) gives raw counts with Poisson and electronic
noise and detector blur, stored as 16-bit like a flat panel's raw frame; without noise the image
is the float32 line integral; a polychromatic detector gives its ``-log(I / I_open)``.

:func:`perturbed_rig` makes the "real" rig that a nominal rig only approximately describes, so
a calibration must recover the real geometry from the images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry import Camera, StereoRig, oversampled_camera, rotvec_to_matrix, stack_cameras
from ..imaging import DetectorModel, Scene, simulate, to_uint16
from ..imaging.detector import Signal, run_stages
from ..phantoms import Phantom
from ..physics import Spectrum
from ..render.aperture import BALL_SUBPIXELS, Aperture
from ..render.markers import sphere_centers_px
from .detect import ImageKind

__all__ = ["CalibrationShots", "flat_panel", "perturbed_rig", "render_calibration_images"]


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
            float32 line integrals / ``-log(I / I_open)`` (``kind == "line_integral"``).
        kind: ``"intensity"`` or ``"line_integral"``.
        centres_px: view name -> ``(M, 2)`` exact projected ball centres (marker table order), in
            the ideal (pinhole) image: where a corrected detection belongs with an intensifier.
        marker_ids: ``(M,)``.
    """

    images: dict[str, np.ndarray]
    kind: ImageKind
    centres_px: dict[str, np.ndarray]
    marker_ids: np.ndarray


def flat_panel(photons: float | None = None, electronic_sigma: float = 0.0, detector_blur_px: float = 0.0,
               energy_kev: float = 60.0, aperture: Aperture = "area", subpixels: int = BALL_SUBPIXELS
               ) -> DetectorModel:
    """The monochromatic flat panel of raw calibration frames: one line at ``energy_kev``, Poisson
    noise at ``photons`` per pixel (``None``: noise-free line integrals), read-out noise
    (photons), detector blur (px) and the pixel aperture."""
    return DetectorModel(spectrum=Spectrum.monochromatic(energy_kev), photons=photons,
                         electronic_sigma=electronic_sigma, detector_blur_px=detector_blur_px, aperture=aperture,
                         subpixels=subpixels, name="flat_panel")


def _shapes_the_image(det: DetectorModel) -> bool:
    """Whether a noise-free chain changes the line-integral image (gain and offset cancel in
    its -log)."""
    return bool(det.scatter is not None or det.focal_spot_blur_px or det.detector_blur_px
                or det.distortion is not None)


def render_calibration_images(
    phantom: Phantom,
    rig: StereoRig,
    detector: DetectorModel | None = None,
    *,
    voxel_mm: float = 0.5,
    energy_kev: float = 60.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> CalibrationShots:
    """Render every view of ``rig`` looking at ``phantom`` through :func:`stereodrr.imaging.simulate`.

    The plastic bodies are voxelized at ``voxel_mm`` (balls carved out) and the balls are exact.
    A monochromatic ``detector`` at ``energy_kev`` (:func:`flat_panel`; ``None``: its noise-free
    default) gives float32 line integrals without photons (through its scatter, blurs and
    intensifier, when it has them: ``-log`` of the expected transmission) and 16-bit raw counts
    with them (one digital unit per photon while it fits); any other :class:`~stereodrr.imaging.DetectorModel`
    (a spectrum, scatter, ...) gives its float32 ``-log(I / I_open)``, bodies decomposed from
    their HU at ``energy_kev``, balls exact in their own material's channel. View ``i`` is
    seeded with ``seed + i``.

    Args:
        phantom: a phantom with markers (its world pose is used).
        rig: the cameras that take the pictures (the real rig, not the nominal one).
        detector: the imaging chain (default ``flat_panel(energy_kev=energy_kev)``).
        voxel_mm: voxel size of the plastic bodies.
        energy_kev: the reference energy (mu of the bodies and balls, HU).
    """
    if not phantom.markers:
        raise ValueError("phantom: has no markers to calibrate with")
    det = detector if detector is not None else flat_panel(energy_kev=energy_kev)
    mono = det.spectrum.is_monochromatic and float(det.spectrum.energies_kev[0]) == float(energy_kev)
    scene = Scene.from_phantom(phantom, voxel_mm, energy_kev, supersample=2, device=device, progress=progress)
    balls = scene.balls
    assert balls is not None
    with torch.no_grad():
        if not mono:
            imgs = simulate(scene.with_(decomposition="tissue_bone"), rig, detector=det, seed=seed, output="neglog")
            centres = {n: rig[n].project(balls.centers)[0].astype(np.float64) for n in rig.names}
            return CalibrationShots({n: im.cpu().numpy().astype(np.float32) for n, im in imgs.items()},
                                    "line_integral", centres, balls.ids)
        noisy = det.photons is not None
        # The line integrals (each ball -log of its transmission through the pixel aperture) and,
        # with photons, the detector's stages on exp(-L), view i seeded with seed + i: the shots'
        # frames as they have always been made (simulate's counts multiply the transmissions
        # instead, which rounds differently).
        # Through an intensifier, its input screen's finer image (run_stages brings it to pixels).
        screens = {n: oversampled_camera(rig[n], det.render_oversample) for n in rig.names}
        imgs = simulate(scene.with_(decomposition="none"), screens, detector=det, output="line_integral")
        if noisy:
            imgs = {n: run_stages(det.line_signal(torch.exp(-imgs[n])), det, rig[n], seed + i).image
                    for i, n in enumerate(rig.names)}
        elif _shapes_the_image(det):
            # Noise-free through a chain that blurs, scatters or distorts: the expected image
            # through every stage (in float64), read back as -log of the transmission.
            imgs = {n: det.negative_log(run_stages(Signal(torch.exp(-imgs[n].double())), det, rig[n], None).image)
                    .to(imgs[n].dtype) for n in rig.names}
    # The renderer's own projected centres (float32, as the mono shots have always been scored).
    K, R, t = stack_cameras([rig[n] for n in rig.names], torch.device(device), torch.float32)
    uv = sphere_centers_px(torch.as_tensor(balls.centers, device=device, dtype=torch.float32), K, R, t)
    centres = {n: uv[i].cpu().numpy().astype(np.float64) for i, n in enumerate(rig.names)}
    images = {}
    for n, im in imgs.items():
        if noisy:
            # One digital unit per photon while it fits in 16 bits, like a raw flat-panel frame.
            images[n] = to_uint16(im.clamp_min(0), 1.0 if float(im.max()) <= 65535 else None)[0]
        else:
            images[n] = im.cpu().numpy().astype(np.float32)
    return CalibrationShots(images, "intensity" if noisy else "line_integral", centres, balls.ids)

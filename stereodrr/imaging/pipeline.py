"""The imaging pipeline: (scene, cameras, projector, detector) -> images, one function,
:func:`simulate`, for the command line, calibration shots, datasets and the polychromatic API.

Two routes, chosen by the scene alone:

* **mu** (``scene.decomposition == "none"``, and every line-integral output): each voxel body's
  mu at the scene's energy is rendered and summed into ``L``; a line-integral image adds ``-log``
  of the balls' transmission through the pixel aperture
  (:func:`stereodrr.render.markers.sphere_transmission`), a detector sees
  ``t = exp(-L)`` times that transmission (plain Poisson; behind a scintillator, the absorbed
  quanta's, :meth:`~stereodrr.imaging.DetectorModel.line_signal`). It needs a one-line spectrum
  at that energy.
* **materials** (otherwise): the bodies' HU are split into materials
  (:func:`~stereodrr.imaging.materials.decompose_hu`), one render per material, the balls exact
  in their material's channel; the detector's front end sums the spectrum (equation (1) of
  :mod:`stereodrr.physics.spectral`) through the pixel aperture: with ``aperture="area"`` each
  pixel that a ball's shadow touches averages the *intensity* over ``subpixels x subpixels``
  sub-rays (the bodies, smooth on the pixel scale, at the pixel centre).

Then the detector's stages (:data:`stereodrr.imaging.detector.STAGES`), view ``v`` seeded with
``seed + v``. A detector with an image intensifier has the scene rendered
``distortion_oversample`` times finer per axis (its input screen), brought to the recorded
pixels by the distortion stage. Everything is checked once, before any render: the scene (its constructor), the
projector (its constructor), the detector (its constructor), the cameras (pixel pitch within
:data:`stereodrr.resources.PIXEL_PITCH_MM`) and the memory the images need.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..geometry import Camera, oversampled_camera
from ..phantoms.materials import get_material
from ..render.drr import Cameras, camera_batch, render_rig
from ..render.markers import render_spheres, shadow_pixels, sphere_subpixel_integrals, sphere_transmission
from ..render.projector import Projector
from ..resources import PIXEL_PITCH_MM, check_memory, render_bytes
from ..volume import Volume
from .detector import DetectorModel, Signal, run_stages, warn_saturation
from .materials import decompose_hu
from .scene import Balls, Scene, Voxels

__all__ = ["simulate", "render_polychromatic", "line_integrals", "transmissions", "material_line_integrals",
           "primary_signals", "check_cameras", "ImageOutput"]

ImageOutput = Literal["line_integral", "counts", "neglog"]
Images = dict[str, Float[Tensor, "H W"]]


def check_cameras(cameras: Cameras) -> tuple[list[str], list[Camera]]:
    """Names and cameras of ``cameras``; raises ``ValueError`` naming a view whose pixel pitch
    lies outside :data:`~stereodrr.resources.PIXEL_PITCH_MM` (its rays would miss everything)."""
    names, cams = camera_batch(cameras)
    lo, hi = PIXEL_PITCH_MM
    for n, c in zip(names, cams):
        pitch = np.broadcast_to(np.asarray(c.pixel_spacing, np.float64), (2,))
        if not np.all((pitch >= lo) & (pitch <= hi)):
            raise ValueError(f"camera {n!r}: pixel pitch {pitch.tolist()} mm lies outside {lo:g}-{hi:g} mm")
    return names, cams


def simulate(scene: Scene, cameras: Cameras, projector: Projector | None = None,
             detector: DetectorModel | None = None, *, seed: int | None = 0,
             output: ImageOutput = "counts") -> Images:
    """Images of ``scene`` by every view (module docstring).

    Args:
        scene: voxel bodies and balls.
        cameras: a Camera, a sequence, a name -> camera mapping or a StereoRig (any sizes).
        projector: how volumes are projected (default ``Projector()``).
        detector: the imaging chain (default: one line at the scene's energy, ideal, noiseless,
            area aperture).
        seed: noise seed of the first view; view ``v`` uses ``seed + v`` (``None``: torch's
            global generator).
        output: ``"line_integral"`` (``L``, the mu route; the detector's aperture only),
            ``"counts"`` or ``"neglog"`` (``-log(I / I_open)``).

    Returns:
        ``{view: (H_v, W_v)}`` on the scene's device, differentiable w.r.t. the volumes and the
        detector's float parameters (wrap in ``torch.no_grad()`` when no gradient is wanted).

    Raises:
        ValueError: a bad scene, camera or detector; a mu-only scene with a detector that is not
            one line at its energy.
        ResourceError: over the memory budget.
    """
    det = detector if detector is not None else DetectorModel(spectrum=_line(scene.energy_kev))
    names, cams = check_cameras(cameras)
    if output not in ("line_integral", "counts", "neglog"):
        raise ValueError(f"output: expected 'line_integral', 'counts' or 'neglog', got {output!r}")
    mu_route = output == "line_integral" or scene.decomposition == "none"
    if mu_route and not (det.spectrum.is_monochromatic and float(det.spectrum.energies_kev[0]) == scene.energy_kev):
        raise ValueError(f"detector: a mu-only scene (or a line-integral image) is imaged at one energy, "
                         f"{scene.energy_kev:g} keV; got the spectrum {det.spectrum.description}")
    # An intensifier's input screen sees the scene, finer than the recorded pixels (run_stages).
    k = det.render_oversample if output != "line_integral" else 1
    screens = dict(zip(names, (oversampled_camera(c, k) for c in cams)))
    check_memory(render_bytes([(c.width, c.height) for c in screens.values()]),
                 f"imaging {len(cams)} view(s) of " + ", ".join(f"{c.width} x {c.height}" for c in screens.values())
                 + " px", scene.device)
    if mu_route:
        if output == "line_integral":
            return line_integrals(scene, screens, projector, det)
        signals = {v: det.line_signal(t) for v, t in transmissions(scene, screens, projector, det).items()}
    else:
        primary = primary_signals(scene, screens, det, projector)
        signals = {v: Signal(*primary[v]) for v in names}
    out = {}
    for i, (v, cam) in enumerate(zip(names, cams)):
        counts = run_stages(signals[v], det, cam, None if seed is None else seed + i).image
        if det.bit_depth is not None and det.photons is not None:  # (noiseless: intensities, not counts)
            warn_saturation(v, counts, det.bit_depth, stacklevel=3)
        out[v] = counts if output == "counts" else det.negative_log(counts)
    return out


def _line(energy_kev: float):  # noqa: ANN202 - a Spectrum (physics is imported by the detector)
    from ..physics.spectrum import Spectrum

    return Spectrum.monochromatic(energy_kev)


def _mu_parts(scene: Scene, cameras: Cameras, projector: Projector | None, detector: DetectorModel | None
              ) -> tuple[dict[str, Tensor | float], dict[str, Tensor]]:
    """The mu route's two parts of every view: the bodies' ``L`` (mu at the scene's energy
    rendered and summed in order; ``0.0`` without bodies) and the balls' mean transmission through
    the detector's pixel aperture (default area, :data:`~stereodrr.render.aperture.BALL_SUBPIXELS`
    sub-rays; no entry without balls)."""
    names, cams = camera_batch(cameras)
    det = detector if detector is not None else DetectorModel()
    bodies: dict[str, Tensor | float] = {n: 0.0 for n in names}
    for body in scene.voxels:
        for n, img in render_rig(body.mu(scene.energy_kev), dict(zip(names, cams)), projector).items():
            bodies[n] = bodies[n] + img
    balls = {}
    b = scene.balls
    if b is not None and len(b):
        for n, cam in zip(names, cams):
            balls[n] = sphere_transmission(b.centers, b.diameters, b.mu, cam, det.aperture, det.subpixels,
                                           device=scene.device)
    return bodies, balls


def line_integrals(scene: Scene, cameras: Cameras, projector: Projector | None = None,
                   detector: DetectorModel | None = None) -> Images:
    """The mu route's ``L`` of every view: the bodies' mu at the scene's energy rendered and
    summed in order, plus ``-log`` of the balls' transmission through the detector's pixel
    aperture (default area, :data:`~stereodrr.render.aperture.BALL_SUBPIXELS` sub-rays)."""
    bodies, balls = _mu_parts(scene, cameras, projector, detector)
    images = dict(bodies)
    for n, t in balls.items():
        # The detector averages intensity, so an area-averaged ball is -log of its mean transmission.
        images[n] = images[n] + (-torch.log(t)).to(scene.device, scene.dtype)
    return {n: torch.as_tensor(v) for n, v in images.items()}


def transmissions(scene: Scene, cameras: Cameras, projector: Projector | None = None,
                  detector: DetectorModel | None = None) -> Images:
    """The mu route's primary transmission ``t`` of every view, what its detector sees: the
    bodies' ``exp(-L)`` times the balls' mean transmission through the pixel aperture (the
    intensity, not the line integral, is what a pixel averages; ``exp(-L)`` of
    :func:`line_integrals` to rounding)."""
    names, cams = camera_batch(cameras)
    bodies, balls = _mu_parts(scene, cameras, projector, detector)
    out = {}
    for n, cam in zip(names, cams):
        L = bodies[n]
        t = (torch.exp(-L) if isinstance(L, Tensor) else
             torch.ones((cam.height, cam.width), device=scene.device, dtype=scene.dtype))
        out[n] = t * balls[n].to(t.dtype) if n in balls else t
    return out


def material_line_integrals(scene: Scene, cameras: Cameras, projector: Projector | None = None,
                            with_balls: bool = True) -> tuple[list[str], dict[str, Float[Tensor, "M H W"]]]:
    """Per-material line integrals ``L_m = integral rho_m ds`` (g/cm^3 mm) of every view: each
    body's HU decomposed (``scene.decomposition``) and rendered, the balls (``with_balls``)
    exact (chord x density) in their material's channel.

    Returns:
        Material names ``(M,)`` and ``{view: (M, H_v, W_v)}`` on the scene's device.
    """
    names_v, cams = camera_batch(cameras)
    if scene.decomposition == "none":
        raise ValueError("scene: decomposition 'none' has no materials; choose 'tissue_bone' or 'water'")
    names: list[str] = []
    per: dict[str, list[Tensor]] = {n: [] for n in names_v}

    def add(mat: str, imgs: dict[str, Tensor]) -> None:
        if mat in names:
            i = names.index(mat)
            for v in names_v:
                per[v][i] = per[v][i] + imgs[v]
        else:
            names.append(mat)
            for v in names_v:
                per[v].append(imgs[v])

    for body in scene.voxels:
        hu = body.hu(scene.energy_kev)
        mats, dens = decompose_hu(hu.data, scene.energy_kev, scene.decomposition, scene.metal)
        for mat, d in zip(mats, dens):
            add(mat, render_rig(hu.with_data(d), dict(zip(names_v, cams)), projector))
    b = scene.balls
    if with_balls and b is not None and len(b):
        for mat in sorted(set(b.materials)):
            centers, diameters = b.of_material(mat)
            rho = get_material(mat).density
            add(mat, {v: render_spheres(centers, diameters, rho, c, device=scene.device, dtype=scene.dtype)[0][0]
                      for v, c in zip(names_v, cams)})
    return names, {v: torch.stack(per[v]) for v in names_v}


def primary_signals(scene: Scene, cameras: Cameras, detector: DetectorModel, projector: Projector | None = None
                    ) -> dict[str, tuple[Float[Tensor, "H W"], Float[Tensor, "H W"]]]:
    """The materials route's front end: expected primary signal ``t`` and quantum variance
    factor ``q`` (:meth:`DetectorModel.primary`) of every view, through the detector's pixel
    aperture (module docstring).

    Returns:
        ``{view: (t (H_v, W_v), q (H_v, W_v))}``.
    """
    names_v, cams = camera_batch(cameras)
    b = scene.balls
    area = detector.aperture == "area" and b is not None and len(b) > 0
    if scene.voxels or not area:
        names, chans = material_line_integrals(scene, dict(zip(names_v, cams)), projector, with_balls=not area)
    else:
        names, chans = [], {}
    if not area:
        return {v: detector.primary(chans[v], names) for v in names_v}
    assert b is not None
    out = {}
    for v, cam in zip(names_v, cams):
        body = chans.get(v, torch.zeros((0, cam.height, cam.width), device=scene.device, dtype=scene.dtype))
        out[v] = _area_signal(body, names, scene, cam, detector)
    return out


def _area_signal(body: Tensor, names: list[str], scene: Scene, cam: Camera, detector: DetectorModel
                 ) -> tuple[Tensor, Tensor]:
    """``t, q`` of one view with the balls averaged over ``s x s`` sub-rays of the pixels their
    shadows touch; elsewhere the pixel-centre signal of the smooth bodies is the area's."""
    b = scene.balls
    assert b is not None
    ball_names = sorted(set(b.materials))
    t, q = detector.primary(torch.cat([body, body.new_zeros((len(ball_names),) + body.shape[1:])]),
                            list(names) + ball_names)
    pix = shadow_pixels(b.centers, b.diameters, cam)
    if len(pix):
        idx = torch.as_tensor(pix, device=scene.device)
        balls = [sphere_subpixel_integrals(*b.of_material(m), get_material(m).density, cam, pix, detector.subpixels,
                                           device=scene.device).to(scene.dtype) for m in ball_names]  # (N, s^2) each
        n_sub = balls[0].shape[1]
        sub = torch.cat([body.flatten(1)[:, idx, None].expand(-1, -1, n_sub),
                         torch.stack(balls)])  # (M, N, s^2) as a (M, H, W) image
        ts, qs = detector.primary(sub, list(names) + ball_names)
        t.view(-1)[idx] = ts.mean(1)
        q.view(-1)[idx] = qs.mean(1)
    return t, q


_LEGACY = ("reference_kev", "decomposition", "metal", "spheres", "mode", "step_mm")


def render_polychromatic(scene: Scene | Volume | None, cameras: Cameras, detector: DetectorModel | None = None,
                         projector: Projector | None = None, *, seed: int | None = 0, output: ImageOutput = "neglog",
                         **legacy: Any) -> Images:
    """:func:`simulate` with ``-log(I / I_open)`` images by default, for a scene or a CT in HU.

    Args:
        scene: a :class:`Scene`, or a CT in HU at 60 keV (``None``: balls only, legacy keywords).
        detector: the imaging chain (default: one line at the scene's energy, ideal, noiseless).
        output: ``"neglog"`` (default) or ``"counts"``.
        legacy: the keywords of the former signature (``reference_kev``, ``decomposition``,
            ``metal``, ``spheres=(centres, diameters, materials)``, ``mode``, ``step_mm``),
            accepted for one release with a ``DeprecationWarning``.

    Returns:
        ``{view: (H_v, W_v)}``.
    """
    unknown = sorted(set(legacy) - set(_LEGACY))
    if unknown:
        raise TypeError(f"render_polychromatic() got an unexpected keyword argument {unknown[0]!r}")
    if legacy:
        warnings.warn(f"render_polychromatic({', '.join(f'{k}=' for k in legacy)}) is deprecated: build a Scene "
                      "(and a Projector) and call stereodrr.imaging.simulate", DeprecationWarning, stacklevel=2)
        scene, projector = _legacy_scene(scene, projector, legacy)
    elif not isinstance(scene, Scene):
        scene = _legacy_scene(scene, projector, {})[0]
    if output not in ("counts", "neglog"):
        raise ValueError(f"output: expected 'counts' or 'neglog', got {output!r}")
    return simulate(scene, cameras, projector, detector, seed=seed, output=output)


def _legacy_scene(hu: Scene | Volume | None, projector: Projector | None, kw: dict[str, Any]
                  ) -> tuple[Scene, Projector | None]:
    """The scene and projector the former keywords describe."""
    if isinstance(hu, Scene):
        raise ValueError("render_polychromatic: give the scene's options in the Scene, not as keywords")
    energy = float(kw.get("reference_kev", 60.0))
    spheres = kw.get("spheres")
    balls = Balls.of(spheres[0], spheres[1], list(spheres[2]), energy) if spheres is not None and len(spheres[2]) else None
    scene = Scene((Voxels(hu, "hu"),) if hu is not None else (), balls, energy, kw.get("decomposition", "tissue_bone"),
                  kw.get("metal", "titanium"))
    if "mode" in kw or "step_mm" in kw:
        projector = Projector(kw.get("mode", "auto"), kw.get("step_mm"))
    return scene, projector

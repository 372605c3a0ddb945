"""Differentiable DRR rendering of CT volumes and analytic marker spheres (CPU and CUDA).

Images are line integrals ``L = integral mu ds`` (mu in 1/mm, s in mm) along the ray from the
source ``C = -R^T t`` through each pixel centre ``(u, v)`` (integers; images ``(H, W)``), for
cameras in the OpenCV convention (``x_cam = R x + t``, ``x ~ K x_cam``). The detector model turns
``L`` into counts.

Functional core (tensors in, tensors out; autograd flows to every floating input)::

    drr(data, index_from_world, K, R, t, height, width, *, mode="auto", step_mm=None,
        backend="auto", chunk_rays=None) -> (B, H, W)
        data (Z, Y, X) mu; index_from_world (4, 4) = inverse of Volume.affine;
        K (B, 3, 3), R (B, 3, 3), t (B, 3), all on data's device and dtype (float32 poses for a
        bfloat16/float16 volume).
        mode "auto" (default): the backend's own, "joseph" on the fused kernels (Numba, Triton),
        "trilinear" on torch.
        mode "trilinear": ray marching with the edge-clamped trilinear interpolant, ceil(len/step)
        equal steps over each ray's clipped segment (default step: half the smallest spacing).
        mode "joseph": Joseph's projector, one bilinear sample per slab of slices along each
        ray's dominant index axis weighted by its path length in the slab (step_mm: the slab
        thickness, default the largest spacing; the smallest or less gives one slice); the
        fastest on CPU.
        mode "exact": Siddon/Jacobs radiological path (the reference). A uniform box of N voxels
        integrates to N voxel lengths in every mode.
        backend: "auto", "triton" (fused GPU kernels), "numba" (fused CPU kernels) or "torch"
        (grid_sample reference); each renders every mode; see stereodrr.render.backends.
    sphere_drr(centers (M,3), diameters (M,), mu (M,), K, R, t, height, width) -> (B, H, W)
        exact mu x chord length per pixel-centre ray; add to a CT render.
    sphere_centers_px(centers (M,3), K, R, t) -> (B, M, 2)   exact projected centres.

Wrappers on :class:`~stereodrr.volume.Volume` (``volume.data`` is mu) and cameras
(a Camera, a sequence or name -> Camera mapping, or a StereoRig)::

    render_drr(volume, cameras, *, mode, step_mm) -> (B, H, W) on volume.device
        views of different detector sizes raise ValueError naming them; use
    render_rig(volume, cameras, ...) -> {name: (H_v, W_v)}   any sizes
    render_structures(volume, labels, cameras, ...) -> ((B, C, H, W), label values)
    render_spheres(centers, diameters, mu, cameras) -> (images (B, H, W), centres px (B, M, 2))

Detector model (:mod:`stereodrr.render.detector`): Beer-Lambert intensity, seeded Poisson
quantum noise, Gaussian electronic noise, Gaussian detector and focal-spot blur, 16-bit output,
negative-log image; :class:`DetectorModel` is the whole polychromatic chain (spectrum,
scintillator, scatter, PSF, noise, gain, bits) over the per-material line integrals of
:mod:`stereodrr.render.polychromatic` (``render_polychromatic``); scatter:
:mod:`stereodrr.render.scatter`.

Backends (:mod:`stereodrr.render.backends`): one kernel contract (index-space rays and their
clipped, sampled segments in, line integrals out, plus the backward) and a table chosen by
device, dtype and mode. ``auto`` runs the fused Triton kernel on CUDA (every view of a batch in
one launch, no host sync), the fused Numba kernel on CPU, and the ``grid_sample`` torch path
elsewhere. The fused kernels are ``torch.library`` custom ops, so
``torch.compile(fullgraph=True)`` keeps them.

Memory: rays are rendered in chunks into one output buffer (a bounded working set whatever the
image size; with autograd the torch path recomputes each chunk in the backward pass).

Threads: ``import stereodrr`` makes idle OpenMP workers sleep (``OMP_WAIT_POLICY=PASSIVE``
unless set), so torch's and Numba's pools do not spin against each other
(:mod:`stereodrr.render.threads`).
"""

from .detector import (
    LAYERS,
    PRESETS,
    DetectorModel,
    ScintillatorLayer,
    beer_lambert,
    detect,
    detector_preset,
    focal_spot_sigma_px,
    gaussian_blur,
    negative_log,
    to_uint16,
)
from .drr import MODES, RaysMissWarning, camera_batch, drr, render_drr, render_rig, render_structures
from .markers import render_spheres, sphere_centers_px, sphere_drr
from .polychromatic import decompose_hu, material_line_integrals, render_polychromatic
from .scatter import SCATTER_MODELS, AntiScatterGrid, ScatterModel

__all__ = [
    "beer_lambert", "detect", "focal_spot_sigma_px", "gaussian_blur", "negative_log", "to_uint16",
    "MODES", "RaysMissWarning", "camera_batch", "drr", "render_drr", "render_rig", "render_structures",
    "render_spheres", "sphere_centers_px", "sphere_drr",
    "DetectorModel", "ScintillatorLayer", "LAYERS", "PRESETS", "detector_preset",
    "decompose_hu", "material_line_integrals", "render_polychromatic",
    "ScatterModel", "AntiScatterGrid", "SCATTER_MODELS",
]

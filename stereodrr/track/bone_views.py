"""The views of one bone in one frame: cameras cropped to the bone's projected region, the images
and pixel weights cut to match, and the bone's support.

A crop is exact geometry, not a resampling: the cropped camera is the same pinhole with its
principal point moved by the crop's corner, ``K' = K - [[0, 0, u0], [0, 0, v0], [0, 0, 0]]``, and
a detector of the crop's size, so pixel ``(u', v')`` of the crop is pixel ``(u0 + u', v0 + v')``
of the full view and renders to the same value. Every view of a frame is cropped to one size
(the registration renders all views in one batch); a crop that reaches past the detector is
padded with zeros of weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import cv2
import numpy as np
import torch

from ..geometry import RigidPose, StereoRig, crop_camera
from ..volume import Volume

__all__ = ["crop_image", "support_corners", "cut_volume", "projected_boxes", "CroppedViews",
           "crop_views", "check_frame", "dilate"]


def crop_image(image: np.ndarray, u0: int, v0: int, width: int, height: int) -> np.ndarray:
    """``image[v0 : v0 + height, u0 : u0 + width]`` as float32, zeros where the crop leaves the image."""
    out = np.zeros((height, width), dtype=np.float32)
    H, W = image.shape
    r0, r1 = max(v0, 0), min(v0 + height, H)
    c0, c1 = max(u0, 0), min(u0 + width, W)
    if r1 > r0 and c1 > c0:
        out[r0 - v0:r1 - v0, c0 - u0:c1 - u0] = image[r0:r1, c0:c1]
    return out


def support_corners(volume: Volume, threshold: float = 0.0) -> np.ndarray:
    """``(8, 3)`` world corners of the tightest index box holding every voxel above ``threshold``
    (a bone-masked CT is mostly empty; its full box would make crops too large). The whole
    box when no voxel is above it."""
    data = volume.data.detach().cpu().numpy()
    idx = np.nonzero(data > threshold)
    if len(idx[0]) == 0:
        return volume.corners()
    lo = np.array([idx[2].min(), idx[1].min(), idx[0].min()], dtype=np.float64) - 0.5
    hi = np.array([idx[2].max(), idx[1].max(), idx[0].max()], dtype=np.float64) + 0.5
    ijk = np.array([[hi[0] if a else lo[0], hi[1] if b else lo[1], hi[2] if c else lo[2]]
                    for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    return volume.index_to_world(ijk)


def cut_volume(volume: Volume, layers: int = 2) -> Volume | None:
    """The bone voxels within ``layers`` voxels of a face of the volume's box that the bone touches
    (1, else 0), or None when the bone touches no face.

    A partial CT cuts the bone at its box: the DRR then ends in an edge (the cut's outline) that
    no radiograph shows, where the real bone goes on. Pixels whose rays meet these voxels are
    left out of the comparison.
    """
    if int(layers) != layers or layers < 1:
        raise ValueError(f"layers: expected a positive number of voxels, got {layers}")
    on = volume.data.detach() > 0
    cut = torch.zeros_like(on)
    Z, Y, X = on.shape
    for axis, n in enumerate((Z, Y, X)):
        for side in (0, n - 1):
            face = on.select(axis, side)
            if bool(face.any()):
                sl = [slice(None)] * 3
                sl[axis] = slice(0, layers) if side == 0 else slice(max(0, n - layers), n)
                cut[tuple(sl)] = on[tuple(sl)]
    if not bool(cut.any()):
        return None
    return volume.with_data(cut.to(volume.data.dtype))


def projected_boxes(corners: np.ndarray, rig: StereoRig, pose: RigidPose) -> dict[str, np.ndarray]:
    """Per view ``(u_min, v_min, u_max, v_max)`` of the moved corners' projection (NaN when a
    corner lies behind the source)."""
    moved = pose.apply(corners)
    out = {}
    for name, cam in rig.cameras.items():
        uv, depth = cam.project(moved)
        out[name] = (np.full(4, np.nan) if np.any(depth <= 0)
                     else np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()]))
    return out


@dataclass
class CroppedViews:
    """One frame's views cut to the bone's region.

    Attributes:
        rig: the cropped cameras (same names, one detector size), same isocenter.
        origins: per view the crop's corner ``(u0, v0)`` in full-detector pixels.
        images: per view ``(h, w)`` float32.
        weights: per view ``(h, w)`` float32 pixel weights (0 outside the detector and the mask).
        visible: per view, the fraction of the bone's projected box on the detector (and under the mask).
    """

    rig: StereoRig
    origins: dict[str, tuple[int, int]]
    images: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    visible: dict[str, float]


def crop_views(rig: StereoRig, images: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None,
               boxes: Mapping[str, np.ndarray], margin_px: int, multiple: int = 1) -> CroppedViews:
    """Crop every view to its box grown by ``margin_px``, all to the largest such size rounded up
    to a multiple of ``multiple`` (the pyramid's coarsest binning), each centred on its box.

    Args:
        rig: the full views; images, masks: per view ``(H, W)`` at their detector size (masks:
            weights, 0 = ignore; None: every pixel).
        boxes: per view ``(u_min, v_min, u_max, v_max)`` (:func:`projected_boxes`), finite.
        margin_px, multiple: see above.
    """
    sizes = np.array([[b[2] - b[0], b[3] - b[1]] for b in boxes.values()]) + 2 * margin_px + 1
    w, h = (int(np.ceil(s / multiple) * multiple) for s in sizes.max(0))
    cams, origins, imgs, wts, visible = {}, {}, {}, {}, {}
    for name, cam in rig.cameras.items():
        b = boxes[name]
        u0 = int(round(0.5 * (b[0] + b[2]) - (w - 1) / 2))
        v0 = int(round(0.5 * (b[1] + b[3]) - (h - 1) / 2))
        cams[name] = crop_camera(cam, u0, v0, w, h)
        origins[name] = (u0, v0)
        imgs[name] = crop_image(np.asarray(images[name]), u0, v0, w, h)
        full = np.ones((cam.height, cam.width), np.float32) if masks is None else np.asarray(masks[name], np.float32)
        wts[name] = crop_image(full, u0, v0, w, h)
        # The bone's own box on the detector, under the mask.
        inner = crop_image(full, int(np.floor(b[0])), int(np.floor(b[1])),
                           max(1, int(np.ceil(b[2] - b[0]))), max(1, int(np.ceil(b[3] - b[1]))))
        visible[name] = float((inner > 0).mean())
    return CroppedViews(StereoRig(cams, rig.isocenter), origins, imgs, wts, visible)


def check_frame(rig: StereoRig, images: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray] | None,
                what: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """The frame's images (and masks) as float arrays, one per rig view at its detector size.

    Raises:
        ValueError: a view missing or unknown, a wrong size, NaN/inf pixels, or a negative mask
            (the message names ``what``, e.g. ``frames[3]``, and the view).
    """
    def one(kind: str, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(data, Mapping):
            raise ValueError(f"{what}: expected a mapping view -> {kind}, got {type(data).__name__}")
        missing = [n for n in rig.names if n not in data]
        extra = [n for n in data if n not in rig.names]
        if missing or extra:
            raise ValueError(f"{what}: expected one {kind} per rig view {rig.names}; missing {missing}, unknown {extra}")
        out = {}
        for name in rig.names:
            a = np.asarray(data[name], dtype=np.float32)
            cam = rig[name]
            if a.shape != (cam.height, cam.width):
                raise ValueError(f"{what} {kind} {name!r}: expected the view's detector size {cam.height}x{cam.width} "
                                 f"(H x W), got shape {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{what} {kind} {name!r}: {int((~np.isfinite(a)).sum())} pixel(s) are NaN or inf")
            if kind == "mask" and a.min() < 0:
                raise ValueError(f"{what} mask {name!r}: expected non-negative weights")
            out[name] = a
        return out

    return one("image", images), None if masks is None else one("mask", masks)


def dilate(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """A boolean mask grown by a disc of ``radius_px``."""
    if radius_px <= 0:
        return mask.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1,) * 2)
    return cv2.dilate(mask.astype(np.uint8), k) > 0

"""The forward model: what an intensifier with a known field records.

- :func:`grid_image`: a perforated plate (hex or square lattice of round holes) lying on the
  intensifier's input screen, as recorded: each pixel the average over its area of the plate's
  transmission pulled back through the field (``T(undistort(q))``), black outside the round
  field of view; optional Poisson noise.
- :func:`distort_image`: an ideal (pinhole) image, e.g. a DRR, as the intensifier records it:
  each recorded pixel averages the ideal image over the pre-image of its area. The ideal image
  may be sampled ``s`` times finer per axis than the recorded one: a pixelated ideal image of
  the recorded size puts a staircase of its own pixels into every shadow edge the field moves
  (a ball's recorded centre off by ~0.04 px in a strong field), which ``s = 2`` cuts by 3x
  (:attr:`stereodrr.imaging.DetectorModel.distortion_oversample`, default 3).
- :func:`subpixel_points`: the ideal positions an area-sampling renderer must sample for each
  recorded pixel (``s x s`` per pixel), for scenes a renderer can evaluate anywhere (analytic
  marker balls).

Area integration of the plate: pixels whose centre lies within a pixel of a hole's edge (or of
the field's edge) are split into ``s x s`` sub-squares; over each sub-square the edge is taken
straight (its linearisation through the field's local Jacobian) and its inside fraction is exact
(:func:`stereodrr.distortion.coverage.edge_coverage`); the other pixels are wholly inside or
outside. A hole of radius ``r`` loses at most ``h / (8 r)`` of a sub-square of side ``h`` to the
straight-edge approximation, alike all round, so it shifts no centre. Where a hole's edge and the
field's edge cross one sub-square their two fractions multiply (such holes are cut by the field
and of no use anyway).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ._tensor import Images
from .coverage import edge_coverage
from .grid import LatticeKind, lattice_basis
from .model import IntensifierField
from .resample import AreaOperator, area_operator, pixel_corners

__all__ = ["GridPlate", "plate_holes", "grid_image", "distort_image", "oversample_factor", "subpixel_points",
           "field_coverage"]


@dataclass(frozen=True)
class GridPlate:
    """A perforated plate as the ideal (pinhole) image shows it, in ideal pixels.

    Attributes:
        lattice: ``"hex"`` or ``"square"``.
        pitch_px: centre distance of neighbouring holes.
        hole_diameter_px: the holes' diameter.
        angle_deg: direction of the first lattice vector from the ``u`` axis.
        offset_px: one hole's centre relative to the image centre.
        hole_transmission, plate_transmission: the fractions of the beam through a hole and
            through the metal (holes bright when the first is larger).
    """

    lattice: LatticeKind = "hex"
    pitch_px: float = 32.0
    hole_diameter_px: float = 16.0
    angle_deg: float = 0.0
    offset_px: tuple[float, float] = (0.0, 0.0)
    hole_transmission: float = 1.0
    plate_transmission: float = 0.2

    def __post_init__(self) -> None:
        if self.lattice not in ("hex", "square"):
            raise ValueError(f"plate.lattice: expected 'hex' or 'square', got {self.lattice!r}")
        if not (0 < self.hole_diameter_px < self.pitch_px):
            raise ValueError(f"plate: expected 0 < hole_diameter_px < pitch_px, got {self.hole_diameter_px}, {self.pitch_px}")
        for name in ("hole_transmission", "plate_transmission"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"plate.{name}: expected a fraction in [0, 1], got {getattr(self, name)}")

    def origin(self, width: int, height: int) -> np.ndarray:
        """``(2,)`` the ideal position of the hole with lattice index ``(0, 0)``."""
        return np.array([0.5 * (width - 1) + self.offset_px[0], 0.5 * (height - 1) + self.offset_px[1]])

    def basis(self) -> np.ndarray:
        """``(2, 2)`` the lattice vectors as columns, in ideal pixels."""
        return lattice_basis(self.lattice, self.pitch_px, self.angle_deg)


def plate_holes(plate: GridPlate, width: int, height: int, margin_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Every hole whose centre lies within ``margin_px`` of the ``width x height`` image box.

    Returns:
        ``(index (N, 2) int, ideal centres (N, 2))``.
    """
    o, B = plate.origin(width, height), plate.basis()
    box = np.array([[-0.5 - margin_px, -0.5 - margin_px], [width - 0.5 + margin_px, -0.5 - margin_px],
                    [-0.5 - margin_px, height - 0.5 + margin_px], [width - 0.5 + margin_px, height - 0.5 + margin_px]])
    ij = np.linalg.solve(B, (box - o).T).T
    lo, hi = np.floor(ij.min(0)).astype(int) - 1, np.ceil(ij.max(0)).astype(int) + 1
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    index = np.c_[i.ravel(), j.ravel()]
    centres = o + index @ B.T
    keep = ((centres[:, 0] >= box[0, 0]) & (centres[:, 0] <= box[3, 0])
            & (centres[:, 1] >= box[0, 1]) & (centres[:, 1] <= box[3, 1]))
    return index[keep], centres[keep]


def _hole_distance(plate: GridPlate, o: np.ndarray, B: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (ideal px, positive inside) of ideal points ``p (..., 2)`` from the edge of
    their nearest hole, and the unit vector from that hole's centre."""
    Binv = np.linalg.inv(B)
    f = (p - o) @ Binv.T
    base = np.floor(f)
    best = np.full(p.shape[:-1], np.inf)
    vec = np.zeros_like(p)
    # The nearest lattice point is a corner of the cell holding p (hex: the cell is two
    # equilateral triangles, and each Voronoi cell holds its triangles' nearest corners).
    for di in (0.0, 1.0):
        for dj in (0.0, 1.0):
            c = o + (base + np.array([di, dj])) @ B.T
            e = p - c
            dist = np.hypot(e[..., 0], e[..., 1])
            closer = dist < best
            best = np.where(closer, dist, best)
            vec = np.where(closer[..., None], e, vec)
    n = vec / np.maximum(best, 1e-12)[..., None]
    return 0.5 * plate.hole_diameter_px - best, n


def _jacobian(field: IntensifierField, p: np.ndarray, step: float = 1e-3) -> np.ndarray:
    """``(..., 2, 2)`` the Jacobian of ``field.distort`` at ideal points ``p`` (forward differences)."""
    f0 = field.distort(p)
    ju = (field.distort(p + [step, 0.0]) - f0) / step
    jv = (field.distort(p + [0.0, step]) - f0) / step
    return np.stack([ju, jv], -1)


def grid_image(field: IntensifierField, plate: GridPlate, subpixels: int = 4, photons: float | None = None,
               seed: int = 0) -> np.ndarray:
    """The plate as the intensifier records it, ``(H, W)`` float64 (module docstring).

    Args:
        field: the intensifier (its size is the image size).
        plate: the perforated plate in ideal pixels.
        subpixels: ``s``, sub-squares per pixel axis at the edges.
        photons: expected photons per pixel of the open beam: the image is then a Poisson draw
            divided by ``photons`` (still in units of transmission); None: noise-free.
        seed: of the Poisson draw.

    Returns:
        ``(H, W)`` transmission, 0 outside the field of view.
    """
    if int(subpixels) != subpixels or subpixels < 1:
        raise ValueError(f"subpixels: expected a positive integer, got {subpixels!r}")
    if photons is not None and not photons > 0:
        raise ValueError(f"photons: expected a positive count per pixel or None, got {photons!r}")
    H, W = field.height, field.width
    o, B = plate.origin(W, H), plate.basis()
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    q = np.stack([u, v], -1)
    p = field.undistort(q)
    d, n = _hole_distance(plate, o, B, p)
    Ju = np.linalg.inv(_jacobian(field, p))  # d ideal / d recorded
    g = np.einsum("...ij,...i->...j", Ju, n)  # d |p - c| / d q: minus the gradient of d
    # Pixels whose square reaches a hole's edge (with room for its curvature) are integrated.
    edge = np.abs(d) < 0.5 * np.abs(g).sum(-1) + 0.1
    inside = _field_coverage(field, q, 1.0)
    dt = plate.hole_transmission - plate.plate_transmission
    image = np.where(d > 0, plate.hole_transmission, plate.plate_transmission) * inside
    iy, ix = np.nonzero(edge)
    if len(iy):
        s = int(subpixels)
        off = (np.arange(s) + 0.5) / s - 0.5
        ou, ov = np.meshgrid(off, off)
        offs = np.c_[ou.ravel(), ov.ravel()]  # (s^2, 2)
        qs = q[iy, ix][:, None, :] + offs  # (M, s^2, 2)
        Jm = Ju[iy, ix][:, None]
        ps = p[iy, ix][:, None, :] + np.einsum("...ij,...j->...i", Jm, offs)
        ps = ps - np.einsum("...ij,...j->...i", Jm, field.distort(ps) - qs)  # one Newton step: exact to 1e-9 px
        ds, ns = _hole_distance(plate, o, B, ps)
        gs = np.einsum("...ij,...i->...j", Jm, ns) / s
        cov = edge_coverage(ds, np.abs(gs[..., 0]), np.abs(gs[..., 1]))
        val = (plate.plate_transmission + dt * cov) * _field_coverage(field, qs, 1.0 / s)
        image[iy, ix] = val.mean(-1)
    if photons is not None:
        image = np.random.default_rng(seed).poisson(image * photons) / photons
    return image


def subpixel_points(field: IntensifierField, subpixels: int) -> np.ndarray:
    """The ideal positions each recorded pixel's area sees: ``(H, W, s * s, 2)``, sub-pixel
    ``(a, b)`` at offset ``((b + 0.5) / s - 0.5, (a + 0.5) / s - 0.5)`` from the pixel centre
    pulled back through the field. A renderer that evaluates its scene at these points, averages
    over the last-but-one axis and multiplies by :func:`field_coverage` makes the distorted,
    area-sampled image."""
    s = int(subpixels)
    if s != subpixels or s < 1:
        raise ValueError(f"subpixels: expected a positive integer, got {subpixels!r}")
    off = (np.arange(s) + 0.5) / s - 0.5
    ou, ov = np.meshgrid(off, off)
    v, u = np.mgrid[0:field.height, 0:field.width].astype(np.float64)
    q = np.stack([u, v], -1)[:, :, None, :] + np.c_[ou.ravel(), ov.ravel()]
    return field.undistort(q)


def distort_image(image: Images, field: IntensifierField) -> Any:
    """An ideal image ``(..., s H, s W)`` (numpy or torch, differentiable in the image) as the
    intensifier records it, ``(..., H, W)`` (the field's size): each recorded pixel the average of
    the ideal image over the pre-image of its area (its corners pulled back through the field,
    :func:`area_operator`), times the fraction of the pixel inside the field of view. ``s`` (an
    integer, 1: the recorded size) is how much finer the ideal image is sampled: its pixels
    ``s u .. s u + s - 1`` tile recorded-size pixel ``u`` (:func:`stereodrr.geometry.oversampled_camera`).

    Raises:
        ValueError: the image is not an integer multiple of the field's size.
    """
    return distortion_operator(field, oversample_factor(image.shape, field, "image")).apply(image)


def oversample_factor(shape: Sequence[int], field: IntensifierField, what: str) -> int:
    """How many times finer per axis than the field's recorded pixels an image of ``shape``
    (``(..., H, W)``) is; ``what`` names the image in the error.

    Raises:
        ValueError: the image is neither the field's size nor an integer multiple of it.
    """
    h, w = int(shape[-2]), int(shape[-1])
    s = w // field.width
    if s < 1 or (h, w) != (s * field.height, s * field.width):
        raise ValueError(f"{what}: the intensifier's field is for {field.width} x {field.height} images (H, W) = "
                         f"{(field.height, field.width)} (or an integer multiple), got shape {tuple(shape)}")
    return s


@functools.lru_cache(maxsize=8)
def distortion_operator(field: IntensifierField, oversample: int = 1) -> AreaOperator:
    """The sparse operator behind :func:`distort_image` from an ideal image ``oversample`` times
    finer per axis (built once per field: seconds for 1024^2; the frames of a trial or a
    dataset's views share it)."""
    s = int(oversample)
    corners = field.undistort(pixel_corners(field.height, field.width)) * s + 0.5 * (s - 1)
    return area_operator(corners, (s * field.height, s * field.width), field_coverage(field))


def field_coverage(field: IntensifierField) -> np.ndarray:
    """``(H, W)`` the fraction of each recorded pixel inside the round field of view (all 1
    without one): what multiplies an area-sampled image to black out the outside."""
    v, u = np.mgrid[0:field.height, 0:field.width].astype(np.float64)
    return _field_coverage(field, np.stack([u, v], -1), 1.0)


def _field_coverage(field: IntensifierField, q: np.ndarray, side: float) -> np.ndarray:
    """The fraction inside the round field of view of the squares of ``side`` px centred at
    recorded points ``q (..., 2)`` (1 without a field)."""
    if not math.isfinite(field.fov_radius):
        return np.ones(q.shape[:-1])
    e = q - np.asarray(field.fov_center)
    rad = np.maximum(np.hypot(e[..., 0], e[..., 1]), 1e-12)
    return edge_coverage(field.fov_radius - rad, side * np.abs(e[..., 0]) / rad, side * np.abs(e[..., 1]) / rad)


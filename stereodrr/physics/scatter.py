"""Scattered radiation: a fast convolution model with a scatter-to-primary ratio that grows with
the object's thickness and the irradiated field, and an optional anti-scatter grid.

Model (the convolution-filtering family of Love and Kruger, "Scatter estimation for a digital
radiographic system using convolution filtering", Med. Phys. 14 (1987) 178-185, with the
thickness and field-size dependence of the scatter-to-primary ratio reported by Boone and
Seibert, "An analytical model of the scattered radiation distribution in diagnostic radiology",
Med. Phys. 15 (1988) 721-725)::

    T(u, v)  = -ln P(u, v) / mu_w(E_mean)                water-equivalent thickness, cm
    SPR(T)   = k T (1 - exp(-A / A0))                    broad-beam SPR, saturating with field area A
    S        = G_sigma * (SPR(T) P)                      scatter: a wide Gaussian of the local scatter
    I        = g_p P + g_s S                             behind the grid (primary / scatter transmission)

``P`` is the primary transmission (relative to the open field; the detector model divides ``I``
by ``g_p``, the open field behind the same grid, so ``-log(I / I_open)`` is 0 with nothing in the
beam), ``A`` the irradiated field area
on the detector (the detector's area: the beam is collimated to it), ``sigma`` the kernel width
on the detector.
Scatter reaches the detector with about the primary's spectrum, so it passes the same detector
response (an approximation: scatter is slightly softer). The constants are nominal values
chosen to reproduce the SPRs of those papers' curves within about a factor 1.5 (SPR about 1 for
10 cm and 3-4 for 20 cm of water in a large field, without grid; a 10:1 grid transmits about
70 % of the primary and 10 % of the scatter); they are not a Monte-Carlo fit and are meant for
realistic-looking images, not for dosimetry.

The blur runs on a grid coarsened so that sigma spans a few cells (scatter is smooth), then
interpolates back: the cost is a fraction of the render's. Differentiable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from .blur import gaussian_blur

__all__ = ["AntiScatterGrid", "ScatterModel", "add_scatter", "SCATTER_MODELS", "ScatterName"]


@dataclass(frozen=True)
class AntiScatterGrid:
    """A focused grid: fractions of primary and scatter it transmits (10:1 grid by default)."""

    primary_transmission: float = 0.70
    scatter_transmission: float = 0.10

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not 0 < v <= 1:
                raise ValueError(f"grid {k}: expected a fraction in (0, 1], got {v}")


@dataclass(frozen=True)
class ScatterModel:
    """Parameters of the convolution scatter model (module docstring).

    Attributes:
        spr_per_cm: ``k``, broad-beam SPR per cm of water-equivalent thickness.
        field_area_cm2: ``A0``, detector field area at which the SPR reaches 63 % of its broad-beam value.
        kernel_sigma_mm: ``sigma`` of the scatter kernel on the detector, mm.
        grid: an :class:`AntiScatterGrid` or ``None``.
    """

    spr_per_cm: float = 0.18
    field_area_cm2: float = 400.0
    kernel_sigma_mm: float = 40.0
    grid: AntiScatterGrid | None = None

    def __post_init__(self) -> None:
        for k in ("spr_per_cm", "field_area_cm2", "kernel_sigma_mm"):
            v = getattr(self, k)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"scatter {k}: expected a positive number, got {v}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScatterModel:
        d = dict(d)
        g = d.pop("grid", None)
        return cls(**d, grid=AntiScatterGrid(**g) if isinstance(g, Mapping) else g)


#: Named scatter settings for the CLI and configs: ``none`` (no scatter), ``kernel`` (scatter
#: without grid), ``grid`` (scatter behind a 10:1 grid).
ScatterName = Literal["none", "kernel", "grid"]
SCATTER_MODELS: dict[str, ScatterModel | None] = {
    "none": None, "kernel": ScatterModel(), "grid": ScatterModel(grid=AntiScatterGrid()),
}
"""Named scatter settings for the CLI and configs: ``none`` (no scatter), ``kernel`` (scatter without grid), ``grid`` (scatter behind a 10:1 grid)."""


def add_scatter(primary: Float[Tensor, "H W"], model: ScatterModel, *, pixel_spacing_mm: float,
                field_area_cm2: float, mu_water_per_mm: float) -> tuple[Float[Tensor, "H W"], Float[Tensor, "H W"]]:
    """Primary and scatter behind the grid, both relative to the open-field primary.

    Args:
        primary: ``(H, W)`` primary transmission ``P`` (1 = open field).
        pixel_spacing_mm: detector pitch.
        field_area_cm2: irradiated field area on the detector, cm^2.
        mu_water_per_mm: water's attenuation at the beam's mean energy (thickness estimate).

    Returns:
        ``(g_p P, g_s S)``, each ``(H, W)``.
    """
    if primary.ndim != 2:
        raise ValueError(f"primary: expected (H, W), got {tuple(primary.shape)}")
    if not (pixel_spacing_mm > 0 and field_area_cm2 > 0 and mu_water_per_mm > 0):
        raise ValueError("add_scatter: pixel_spacing_mm, field_area_cm2 and mu_water_per_mm must be positive")
    thickness_cm = -torch.log(primary.clamp_min(1e-12)) / mu_water_per_mm / 10.0
    spr = model.spr_per_cm * thickness_cm * (1.0 - math.exp(-field_area_cm2 / model.field_area_cm2))
    local = spr * primary
    sigma_px = model.kernel_sigma_mm / pixel_spacing_mm
    h, w = primary.shape
    q = max(1, int(sigma_px // 4))  # coarse cells per sigma >= 4
    coarse = F.avg_pool2d(local[None, None], q, ceil_mode=True) if q > 1 else local[None, None]
    blurred = _blur(coarse, sigma_px / q)
    if q > 1:
        scatter = F.interpolate(blurred, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    else:
        scatter = blurred[0, 0]
    g = model.grid
    gp, gs = (g.primary_transmission, g.scatter_transmission) if g is not None else (1.0, 1.0)
    return gp * primary, gs * scatter


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of ``(1, 1, h, w)`` with zero padding: the irradiated field is the detector's,
    so no scatter comes from outside it and scatter falls off towards the field's edges."""
    r = max(1, int(math.ceil(4 * sigma)))
    return gaussian_blur(F.pad(x, (r, r, r, r)), sigma)[..., r:-r, r:-r]

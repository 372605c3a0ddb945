"""The distortion an image intensifier applies: ideal (pinhole) pixel -> recorded pixel.

An intensifier images the pinhole projection on its curved input phosphor onto a flat output
screen through electron optics; what the camera records is the ideal image moved by a smooth
field (Gronenschild 1997; XMALab's grid correction exists for it):

- **pincushion** (radial, ``k1``, ``k2``): the curved input screen magnifies the periphery;
- **S-distortion** (``s_deg``): the earth's magnetic field turns the electron paths, a rotation
  that grows with the radius, ``phi(rho) = s * rho^2`` (changes with the C-arm's orientation);
- **decentring** (tangential ``p1``, ``p2``, OpenCV's convention): misaligned electron optics;
- the **round field of view**: outside a circle of the recorded image nothing arrives (black).

With ``x = (p - center) / radius`` (ideal pixel ``p``), ``rho^2 = |x|^2``::

    x_r = (1 + k1 rho^2 + k2 rho^4) x                         pincushion
    x_s = Rot(s rho^2) x_r                                      S-distortion
    x_d = x_s + (2 p1 x y + p2 (rho^2 + 2 x^2),                 decentring
                 p1 (rho^2 + 2 y^2) + 2 p2 x y)
    q   = center + radius * x_d                                 recorded pixel

Pixels are OpenCV's (centres at integers, ``(u, v)`` = column, row). Every formula is torch
(batched, differentiable in the points and the parameters); numpy input runs it in float64 and
returns numpy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from ._tensor import Points, as_points, back, newton_inverse

__all__ = ["IntensifierField", "PRESETS", "Preset", "SCALED_PARAMETERS", "intensifier_field", "scaled_field"]

Preset = Literal["none", "mild", "strong"]


@dataclass(frozen=True)
class IntensifierField:
    """A known intensifier distortion of a ``width x height`` image (pixels; angles in degrees).

    Attributes:
        width, height: the image size the field belongs to.
        center: ``(u, v)`` the distortion centre (the intensifier's axis) in ideal pixels.
        radius: the normalising radius in pixels (``rho = 1`` there).
        k1, k2: pincushion (``> 0``) or barrel (``< 0``) coefficients of ``rho^2``, ``rho^4``.
        s_deg: S-distortion: the rotation at ``rho = 1``, degrees (``phi = s rho^2``).
        p1, p2: decentring (tangential) coefficients, OpenCV's convention.
        fov_center, fov_radius: the round field of view in recorded pixels (``inf``: none).
    """

    width: int
    height: int
    center: tuple[float, float]
    radius: float
    k1: float = 0.0
    k2: float = 0.0
    s_deg: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    fov_center: tuple[float, float] = (0.0, 0.0)
    fov_radius: float = math.inf

    def __post_init__(self) -> None:
        if int(self.width) != self.width or int(self.height) != self.height or self.width < 8 or self.height < 8:
            raise ValueError(f"field: expected an image of at least 8 x 8 pixels, got {self.width} x {self.height}")
        if not (math.isfinite(self.radius) and self.radius > 0):
            raise ValueError(f"field.radius: expected a positive number of pixels, got {self.radius}")
        for name in ("k1", "k2", "s_deg", "p1", "p2"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"field.{name}: expected a finite number, got {getattr(self, name)}")
        if not self.fov_radius > 0:
            raise ValueError(f"field.fov_radius: expected a positive radius in pixels (inf: none), got {self.fov_radius}")

    # ------------------------------------------------------------------ the field
    def distort(self, points: Points) -> Any:
        """Ideal pixels -> recorded pixels (the formula in the module docstring)."""
        p, is_tensor = as_points(points)
        with torch.set_grad_enabled(is_tensor and torch.is_grad_enabled()):
            return back(self._forward(p), is_tensor)

    def undistort(self, points: Points) -> Any:
        """Recorded pixels -> ideal pixels: the inverse of :meth:`distort` by Newton's method
        (differentiable; NaN where it does not converge, far outside a strong field)."""
        q, is_tensor = as_points(points)
        with torch.set_grad_enabled(is_tensor and torch.is_grad_enabled()):
            guess = q - (self._forward(q.detach()) - q.detach())  # first order: the field is near the identity
            return back(newton_inverse(self._forward, q, guess), is_tensor)

    def displacement(self, points: Points) -> Any:
        """``distort(p) - p`` in pixels."""
        p, is_tensor = as_points(points)
        with torch.set_grad_enabled(is_tensor and torch.is_grad_enabled()):
            return back(self._forward(p) - p, is_tensor)

    def in_field(self, points: Points) -> Any:
        """Whether recorded pixels lie inside the round field of view (bool, numpy or torch)."""
        q, is_tensor = as_points(points)
        c = torch.as_tensor(self.fov_center, dtype=q.dtype, device=q.device)
        return back(((q - c) ** 2).sum(-1) <= self.fov_radius ** 2, is_tensor)

    def _forward(self, p: Tensor) -> Tensor:
        c = torch.as_tensor(self.center, dtype=p.dtype, device=p.device)
        x = (p - c) / self.radius
        xx, yy = x[..., 0], x[..., 1]
        r2 = xx * xx + yy * yy
        f = 1.0 + self.k1 * r2 + self.k2 * r2 * r2
        phi = math.radians(self.s_deg) * r2
        cs, sn = torch.cos(phi), torch.sin(phi)
        xd = f * (cs * xx - sn * yy) + 2 * self.p1 * xx * yy + self.p2 * (r2 + 2 * xx * xx)
        yd = f * (sn * xx + cs * yy) + self.p1 * (r2 + 2 * yy * yy) + 2 * self.p2 * xx * yy
        return c + self.radius * torch.stack([xd, yd], -1)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["center"], d["fov_center"] = list(self.center), list(self.fov_center)
        d["fov_radius"] = None if math.isinf(self.fov_radius) else self.fov_radius
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IntensifierField:
        d = dict(d)
        d["center"], d["fov_center"] = tuple(d["center"]), tuple(d.get("fov_center", (0.0, 0.0)))
        d["fov_radius"] = math.inf if d.get("fov_radius") is None else float(d["fov_radius"])
        return cls(**d)


# The presets, in units of half the image's smaller side (SCALED_PARAMETERS). "strong" moves the
# edge of a 1024^2 field by about 13 px (pincushion ~9 px, S-rotation ~5 px, decentring ~2 px),
# "mild" by about 4 px; both have a round field of view 0.98 of that radius, off the image centre
# by a few pixels, and an axis off the image centre.
PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    "mild": {"k1": 0.006, "k2": 0.001, "s_deg": 0.25, "p1": 0.0, "p2": 0.0,
             "center_du": 0.004, "center_dv": -0.002, "fov_du": 0.002, "fov_dv": 0.0, "fov_fraction": 0.98},
    "strong": {"k1": 0.018, "k2": 0.004, "s_deg": 0.7, "p1": 0.0012, "p2": -0.0008,
               "center_du": 0.015, "center_dv": -0.010, "fov_du": 0.004, "fov_dv": -0.003, "fov_fraction": 0.98},
}
"""Named distortion strengths for simulated image intensifiers (:data:`SCALED_PARAMETERS`)."""

SCALED_PARAMETERS: dict[str, tuple[float, float]] = {
    "k1": (-0.5, 0.5), "k2": (-0.5, 0.5), "s_deg": (-10.0, 10.0), "p1": (-0.05, 0.05), "p2": (-0.05, 0.05),
    "center_du": (-0.5, 0.5), "center_dv": (-0.5, 0.5), "fov_du": (-0.5, 0.5), "fov_dv": (-0.5, 0.5),
    "fov_fraction": (0.05, 2.0),
}
"""A field independent of the image size: each parameter with the interval it may take. The
unit of length is half the image's smaller side ``h``: the axis lies at the image centre plus
``(center_du, center_dv) h``, the round field of view is centred at the image centre plus
``(fov_du, fov_dv) h`` with radius ``fov_fraction h`` (absent: no round field), and ``rho = 1``
at ``h``. The intervals keep a field near enough to the identity to be inverted."""


def scaled_field(parameters: Mapping[str, float], width: int, height: int) -> IntensifierField:
    """The field of :data:`SCALED_PARAMETERS` (absent ones 0, no round field without
    ``fov_fraction``) for a ``width x height`` image.

    Raises:
        ValueError: an unknown parameter or one outside its interval.
    """
    for k, v in parameters.items():
        if k not in SCALED_PARAMETERS:
            raise ValueError(f"distortion.{k}: unknown parameter (known: {sorted(SCALED_PARAMETERS)})")
        lo, hi = SCALED_PARAMETERS[k]
        if not lo <= v <= hi:
            raise ValueError(f"distortion.{k}: expected a number in [{lo:g}, {hi:g}], got {v!r}")
    pr = {k: 0.0 for k in SCALED_PARAMETERS} | {"fov_fraction": math.inf} | dict(parameters)
    half = 0.5 * min(width, height)
    cu, cv = 0.5 * (width - 1), 0.5 * (height - 1)
    return IntensifierField(
        width, height, (cu + pr["center_du"] * half, cv + pr["center_dv"] * half), half,
        k1=pr["k1"], k2=pr["k2"], s_deg=pr["s_deg"], p1=pr["p1"], p2=pr["p2"],
        fov_center=(cu + pr["fov_du"] * half, cv + pr["fov_dv"] * half), fov_radius=pr["fov_fraction"] * half)


def intensifier_field(preset: Preset | str, width: int = 1024, height: int = 1024, **overrides: Any) -> IntensifierField:
    """The ``"mild"`` or ``"strong"`` intensifier (or ``"none"``: the identity with no round
    field) for a ``width x height`` image; ``overrides`` replace any field attribute.

    Raises:
        ValueError: an unknown preset.
    """
    if preset not in PRESETS:
        raise ValueError(f"distortion preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    field = scaled_field(PRESETS[preset], width, height)
    return replace(field, **overrides) if overrides else field

"""The scintillator of an energy-integrating flat panel: the fraction of photons it absorbs.

An energy-integrating panel deposits ``eps(E) = eta(E) E`` per incident photon, with the
scintillator's photoelectric absorption (xraylib)::

    eta(E) = (mu_pe / mu)(E) (1 - exp(-mu(E) rho d))        (K-fluorescence escape neglected)

(``eta = 1`` for the ideal detector).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

import numpy as np

from .attenuation import compound_density, mass_attenuation, mass_photoabsorption

__all__ = ["ScintillatorLayer", "LAYERS", "LayerName"]


@dataclass(frozen=True)
class ScintillatorLayer:
    """A scintillator of a flat panel: ``material`` (xraylib spec), ``thickness_mm``, ``density``
    (g/cm^3; default the NIST compound's)."""

    material: str = "Cesium Iodide"
    thickness_mm: float = 0.6
    density: float | None = None

    def __post_init__(self) -> None:
        if not (self.thickness_mm > 0 and math.isfinite(self.thickness_mm)):
            raise ValueError(f"layer thickness_mm: expected a positive thickness, got {self.thickness_mm}")
        if self.density is None:
            object.__setattr__(self, "density", compound_density(self.material))
        elif not self.density > 0:
            raise ValueError(f"layer density: expected a positive density (g/cm^3), got {self.density}")

    def absorption(self, energies_kev: np.ndarray) -> np.ndarray:
        """``eta(E) = (mu_pe / mu)(1 - exp(-mu rho d))``: the fraction of photons absorbed."""
        mu = mass_attenuation(self.material, energies_kev)
        pe = mass_photoabsorption(self.material, energies_kev)
        rho = self.density
        assert rho is not None  # filled in by __post_init__
        return pe / mu * (1.0 - np.exp(-mu * float(rho) * self.thickness_mm / 10.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScintillatorLayer:
        return cls(**dict(d))


LayerName = Literal["ideal", "csi", "gos"]
LAYERS: dict[str, ScintillatorLayer | None] = {
    "ideal": None,
    "csi": ScintillatorLayer("Cesium Iodide", 0.6),
    "gos": ScintillatorLayer("Gadolinium Oxysulfide", 0.2),
}
"""Named scintillators: ``ideal`` (eta = 1), ``csi`` (600 um CsI:Tl, the usual flat panel),
``gos`` (200 um Gd2O2S:Tb, a "fast" screen)."""

"""Phantom materials: density, label class and X-ray attenuation at any energy.

Mass attenuation coefficients ``mu/rho`` (cm^2/g, coherent scattering included) come from
xraylib (:mod:`stereodrr.physics.attenuation`) through the mixture rule over each material's
elemental mass fractions. Compositions: NIST compounds as xraylib ships them (water, dry air);
the ICRU Report 44 (1989) tissues as listed in NIST SRD 126 Table 2 (J. H. Hubbell and
S. M. Seltzer, NISTIR 5632, https://physics.nist.gov/PhysRefData/XrayMassCoef/tab2.html), which
xraylib's NIST list does not hold; ABS and stainless steel from their nominal formulations.
These reproduce the NIST SRD 126 tables (Table 3 elements, Table 4 compounds) that this module
used to carry by hand to within their four printed digits (tests/phantoms/test_materials.py).
Absorption edges are exact (tantalum K edge, 67.416 keV), no log-log interpolation.

Linear attenuation and Hounsfield units at energy ``E`` (keV)::

    mu(E)  = rho * (mu/rho)(E) / 10                 [1/mm]  (rho in g/cm^3)
    HU(E)  = 1000 * (mu(E) / mu_water(E) - 1)       (stereodrr.volume.mu_water, xraylib water)

Label classes (the voxelizer's label map): 0 air, 1 plastic / soft tissue, 2 bone, 3 metal
markers, 4 lung.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ..physics.attenuation import MaterialSpec, elemental_fractions, mass_attenuation
from ..volume import mu_to_hu

__all__ = [
    "Material",
    "MATERIALS",
    "LABELS",
    "get_material",
    "material_table",
]

# Label classes of the voxelized label map.
LABELS: dict[int, str] = {0: "air", 1: "plastic/soft tissue", 2: "bone", 3: "metal marker", 4: "lung"}
"""Label classes of the voxelized label map: label value -> class name."""

# ICRU-44 elemental mass fractions, NIST SRD 126 Table 2.
_ICRU44_SOFT = (("H", 0.102), ("C", 0.143), ("N", 0.034), ("O", 0.708), ("Na", 0.002), ("P", 0.003),
                ("S", 0.003), ("Cl", 0.002), ("K", 0.003))
_ICRU44_ADIPOSE = (("H", 0.114), ("C", 0.598), ("N", 0.007), ("O", 0.278), ("Na", 0.001), ("S", 0.001),
                   ("Cl", 0.001))
_ICRU44_LUNG = (("H", 0.103), ("C", 0.105), ("N", 0.031), ("O", 0.749), ("Na", 0.002), ("P", 0.002),
                ("S", 0.003), ("Cl", 0.003), ("K", 0.002))
_ICRU44_CORTICAL_BONE = (("H", 0.034), ("C", 0.155), ("N", 0.042), ("O", 0.435), ("Na", 0.001), ("Mg", 0.002),
                         ("P", 0.103), ("S", 0.003), ("Ca", 0.225))
# ABS (acrylonitrile-butadiene-styrene), the plastic of LEGO bricks: a nominal 20/20/60 % by
# mass of acrylonitrile C3H3N, butadiene C4H6 and styrene C8H8 gives these elemental mass
# fractions (atomic weights C 12.011, H 1.008, N 14.007).
_ABS = (("C", 0.8670), ("H", 0.0802), ("N", 0.0528))
# AISI 304 stainless steel (precision steel balls), nominal composition by mass (ASTM A240:
# Cr 18-20 %, Ni 8-10.5 %, Mn <= 2 %, balance Fe).
_STEEL_304 = (("Fe", 0.695), ("Cr", 0.190), ("Ni", 0.095), ("Mn", 0.020))


@dataclass(frozen=True)
class Material:
    """A homogeneous material.

    Attributes:
        name: registry key used in phantom files (e.g. ``"stainless_steel"``).
        density: mass density in g/cm^3.
        label: label class (see :data:`LABELS`).
        composition: a material spec of :mod:`stereodrr.physics.attenuation` (element, formula,
            NIST compound name, or ``((spec, mass fraction), ...)``).
        source: where the density and composition come from.
    """

    name: str
    density: float
    label: int
    composition: MaterialSpec
    source: str

    def __post_init__(self) -> None:
        if not (self.density > 0 and np.isfinite(self.density)):
            raise ValueError(f"material {self.name!r}: density must be a positive number (g/cm^3), got {self.density}")
        elemental_fractions(self.composition)  # unknown elements or compounds fail here

    def mass_attenuation(self, energy_kev: float | Sequence[float] | np.ndarray = 60.0) -> float | np.ndarray:
        """``mu/rho`` in cm^2/g at ``energy_kev`` (a number gives a float, an array ``(E,)``)."""
        out = mass_attenuation(self.composition, energy_kev)
        return float(out[0]) if np.ndim(energy_kev) == 0 else out

    def mu(self, energy_kev: float | Sequence[float] | np.ndarray = 60.0) -> float | np.ndarray:
        """Linear attenuation coefficient in 1/mm: ``rho (mu/rho) / 10``."""
        return self.density * self.mass_attenuation(energy_kev) / 10.0

    def hu(self, energy_kev: float = 60.0) -> float:
        """Hounsfield units ``1000 (mu / mu_water - 1)`` at ``energy_kev`` (unclipped)."""
        return float(mu_to_hu(self.mu(energy_kev), energy_kev))


_ICRU44 = "composition and density: ICRU Report 44 (1989), as listed in NIST SRD 126 Table 2"
MATERIALS: Mapping[str, Material] = {m.name: m for m in (
    Material("air", 1.205e-3, 0, "Air, Dry (near sea level)", "dry air near sea level, NIST SRD 126 Table 2"),
    Material("water", 1.0, 1, "Water, Liquid", "liquid water, NIST SRD 126 Table 2"),
    Material("soft_tissue", 1.06, 1, _ICRU44_SOFT, _ICRU44),
    Material("adipose", 0.95, 1, _ICRU44_ADIPOSE, _ICRU44),
    # Inflated lung: ICRU-44 lung tissue composition at the density of air-filled lung,
    # 0.26 g/cm^3 (ICRU Report 46, 1992); NIST's 1.05 g/cm^3 is compact lung tissue.
    Material("lung", 0.26, 4, _ICRU44_LUNG, "composition ICRU-44; inflated-lung density ICRU Report 46"),
    Material("cortical_bone", 1.92, 2, _ICRU44_CORTICAL_BONE, _ICRU44),
    # LEGO ABS: 1.04-1.06 g/cm^3 (typical ABS datasheet range); 1.05 used.
    Material("abs", 1.05, 1, _ABS, "ABS 20/20/60 acrylonitrile/butadiene/styrene by mass, 1.05 g/cm^3"),
    Material("stainless_steel", 8.00, 3, _STEEL_304, "AISI 304 (ASTM A240 nominal composition), 8.00 g/cm^3"),
    Material("tantalum", 16.654, 3, "Ta", "elemental Ta, density NIST SRD 126 Table 1"),
    # Ti-6Al-4V (ASTM F136), the usual orthopaedic implant alloy: 4.43 g/cm^3.
    Material("titanium", 4.43, 3, (("Ti", 0.90), ("Al", 0.06), ("V", 0.04)), "Ti-6Al-4V, ASTM F136 nominal, 4.43 g/cm^3"),
)}
"""The phantoms' materials by name (composition and density; attenuation from xraylib)."""


def get_material(name: str) -> Material:
    """Look up a material by name; unknown names raise ``ValueError`` listing the known ones."""
    try:
        return MATERIALS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown material {name!r}; expected one of {sorted(MATERIALS)}") from None


def material_table(energy_kev: float = 60.0) -> pd.DataFrame:
    """One row per material: density, label, ``mu/rho``, ``mu`` (1/mm) and unclipped HU at ``energy_kev``."""
    import pandas as pd

    return pd.DataFrame([{
        "material": m.name, "density_g_cm3": m.density, "label": m.label,
        "mu_rho_cm2_g": m.mass_attenuation(energy_kev), "mu_per_mm": m.mu(energy_kev), "hu": m.hu(energy_kev),
        "source": m.source,
    } for m in MATERIALS.values()])

"""Phantom materials: density, label class and X-ray attenuation at an effective energy.

Attenuation comes from tabulated mass attenuation coefficients ``mu/rho`` (cm^2/g, coherent
scattering included) of the NIST X-Ray Mass Attenuation Coefficients database (J. H. Hubbell
and S. M. Seltzer, NISTIR 5632, NIST Standard Reference Database 126,
https://physics.nist.gov/PhysRefData/XrayMassCoef/; Table 3 for the elements, Table 4 for
compounds and mixtures), the same data as NIST XCOM on its standard energy grid. Mixtures that
NIST does not tabulate (ABS plastic, stainless steel) use the mixture rule
``mu/rho = sum_i w_i (mu/rho)_i`` over the elemental mass fractions ``w_i`` (Hubbell & Seltzer,
section 2). Tables are interpolated log-log between grid energies, as NIST recommends; at an
absorption edge (tantalum K edge, 67.416 keV) the table holds both the value below and above.

Linear attenuation and Hounsfield units at energy ``E`` (keV)::

    mu(E)  = rho * (mu/rho)(E) / 10                 [1/mm]  (rho in g/cm^3)
    HU(E)  = 1000 * (mu(E) / mu_water(E) - 1)       (stereodrr.volume.mu_water, same NIST table)

Label classes (the voxelizer's label map): 0 air, 1 plastic / soft tissue, 2 bone, 3 metal
markers, 4 lung.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from ..volume import WATER_MASS_ATTENUATION, mu_to_hu

__all__ = [
    "Material",
    "MATERIALS",
    "LABELS",
    "get_material",
    "material_table",
]

# Label classes of the voxelized label map.
LABELS: dict[int, str] = {0: "air", 1: "plastic/soft tissue", 2: "bone", 3: "metal marker", 4: "lung"}

# ---- NIST mass attenuation tables mu/rho (cm^2/g) against photon energy (keV), 10-200 keV.
# Source: NIST SRD 126 (Hubbell & Seltzer), Table 3 (elements, ElemTab/zNN.html) and Table 4
# (compounds, ComTab/*.html). Rows repeated at one energy are the two sides of an absorption edge.
_E = (10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0, 200.0)
_TABLES: dict[str, np.ndarray] = {
    # Table 4, "Air, Dry (near sea level)".
    "air": np.array([_E, (5.120, 1.614, 0.7779, 0.3538, 0.2485, 0.2080, 0.1875, 0.1662, 0.1541, 0.1356, 0.1233)]).T,
    # Table 4, "Water, Liquid" (shared with stereodrr.volume so HU(water) = 0 exactly).
    "water": WATER_MASS_ATTENUATION,
    # Table 4, "Tissue, Soft (ICRU-44)".
    "soft_tissue": np.array([_E, (5.379, 1.699, 0.8230, 0.3790, 0.2688, 0.2264, 0.2048, 0.1823, 0.1693, 0.1492, 0.1358)]).T,
    # Table 4, "Adipose Tissue (ICRU-44)".
    "adipose": np.array([_E, (3.268, 1.083, 0.5677, 0.3063, 0.2396, 0.2123, 0.1974, 0.1800, 0.1688, 0.1500, 0.1368)]).T,
    # Table 4, "Lung Tissue (ICRU-44)".
    "lung": np.array([_E, (5.459, 1.721, 0.8316, 0.3815, 0.2699, 0.2270, 0.2053, 0.1826, 0.1695, 0.1493, 0.1359)]).T,
    # Table 4, "Bone, Cortical (ICRU-44)".
    "cortical_bone": np.array([_E, (28.51, 9.032, 4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480, 0.1309)]).T,
    # Table 3, Z = 1, 6, 7 (H, C graphite, N).
    "H": np.array([_E, (0.3854, 0.3764, 0.3695, 0.3570, 0.3458, 0.3355, 0.3260, 0.3091, 0.2944, 0.2651, 0.2429)]).T,
    "C": np.array([_E, (2.373, 0.8071, 0.4420, 0.2562, 0.2076, 0.1871, 0.1753, 0.1610, 0.1514, 0.1347, 0.1229)]).T,
    "N": np.array([_E, (3.879, 1.236, 0.6178, 0.3066, 0.2288, 0.1980, 0.1817, 0.1639, 0.1529, 0.1353, 0.1233)]).T,
    # Table 3, Z = 24, 25, 26, 28 (Cr, Mn, Fe, Ni); their K edges lie below 10 keV.
    "Cr": np.array([_E, (138.6, 45.71, 20.38, 6.434, 2.856, 1.550, 0.9639, 0.4905, 0.3166, 0.1788, 0.1378)]).T,
    "Mn": np.array([_E, (151.4, 50.27, 22.53, 7.141, 3.169, 1.714, 1.060, 0.5306, 0.3367, 0.1838, 0.1391)]).T,
    "Fe": np.array([_E, (170.6, 57.08, 25.68, 8.176, 3.629, 1.958, 1.205, 0.5952, 0.3717, 0.1964, 0.1460)]).T,
    "Ni": np.array([_E, (209.0, 70.81, 32.20, 10.34, 4.600, 2.474, 1.512, 0.7306, 0.4440, 0.2208, 0.1582)]).T,
    # Table 3, Z = 73 (Ta): L edges at 11.136 / 11.682 keV, K edge at 67.416 keV.
    "Ta": np.array([
        (10.0, 237.9), (11.136, 179.1), (11.136, 244.9), (11.41, 239.3), (11.682, 218.2), (11.682, 251.8),
        (15.0, 134.0), (20.0, 63.34), (30.0, 21.87), (40.0, 10.25), (50.0, 5.717), (60.0, 3.569),
        (67.416, 2.652), (67.416, 11.80), (80.0, 7.587), (100.0, 4.302), (150.0, 1.531), (200.0, 0.7598),
    ]),
}

# ABS (acrylonitrile-butadiene-styrene), the plastic of LEGO bricks: a nominal 20/20/60 % by
# mass of acrylonitrile C3H3N, butadiene C4H6 and styrene C8H8 gives these elemental mass
# fractions (atomic weights C 12.011, H 1.008, N 14.007).
_ABS = (("C", 0.8670), ("H", 0.0802), ("N", 0.0528))
# AISI 304 stainless steel (precision steel balls), nominal composition by mass (ASTM A240:
# Cr 18-20 %, Ni 8-10.5 %, Mn <= 2 %, balance Fe).
_STEEL_304 = (("Fe", 0.695), ("Cr", 0.190), ("Ni", 0.095), ("Mn", 0.020))


def _loglog(table: np.ndarray, energy_kev: float) -> float:
    """Log-log interpolation of ``(E, mu/rho)`` rows; edge rows (equal E) split the intervals."""
    e = table[:, 0]
    i = int(np.clip(np.searchsorted(e, energy_kev, side="right") - 1, 0, len(e) - 2))
    if e[i + 1] == e[i]:  # exactly at the upper edge row's energy: take the above-edge value
        return float(table[i + 1, 1])
    x0, x1 = np.log(e[i]), np.log(e[i + 1])
    y0, y1 = np.log(table[i, 1]), np.log(table[i + 1, 1])
    return float(np.exp(y0 + (np.log(energy_kev) - x0) * (y1 - y0) / (x1 - x0)))


@dataclass(frozen=True)
class Material:
    """A homogeneous material.

    Attributes:
        name: registry key used in phantom files (e.g. ``"stainless_steel"``).
        density: mass density in g/cm^3.
        label: label class (see :data:`LABELS`).
        components: ``((table, mass fraction), ...)`` over the NIST tables above.
        source: where the density and composition come from.
    """

    name: str
    density: float
    label: int
    components: tuple[tuple[str, float], ...]
    source: str

    def mass_attenuation(self, energy_kev: float = 60.0) -> float:
        """``mu/rho`` in cm^2/g at ``energy_kev`` (mixture rule over the components)."""
        e = float(energy_kev)
        if not 10.0 <= e <= 200.0:
            raise ValueError(f"energy_kev: expected 10-200 keV (tabulated range), got {energy_kev}")
        return sum(w * _loglog(_TABLES[t], e) for t, w in self.components)

    def mu(self, energy_kev: float = 60.0) -> float:
        """Linear attenuation coefficient in 1/mm: ``rho (mu/rho) / 10``."""
        return self.density * self.mass_attenuation(energy_kev) / 10.0

    def hu(self, energy_kev: float = 60.0) -> float:
        """Hounsfield units ``1000 (mu / mu_water - 1)`` at ``energy_kev`` (unclipped)."""
        return float(mu_to_hu(self.mu(energy_kev), energy_kev))


_ICRU44 = "density: ICRU Report 44 (1989), as listed in NIST SRD 126 Table 2"
MATERIALS: Mapping[str, Material] = {m.name: m for m in (
    Material("air", 1.205e-3, 0, (("air", 1.0),), "dry air near sea level, NIST SRD 126 Table 2"),
    Material("water", 1.0, 1, (("water", 1.0),), "liquid water, NIST SRD 126 Table 2"),
    Material("soft_tissue", 1.06, 1, (("soft_tissue", 1.0),), _ICRU44),
    Material("adipose", 0.95, 1, (("adipose", 1.0),), _ICRU44),
    # Inflated lung: ICRU-44 lung tissue composition at the density of air-filled lung,
    # 0.26 g/cm^3 (ICRU Report 46, 1992); NIST's 1.05 g/cm^3 is compact lung tissue.
    Material("lung", 0.26, 4, (("lung", 1.0),), "composition ICRU-44; inflated-lung density ICRU Report 46"),
    Material("cortical_bone", 1.92, 2, (("cortical_bone", 1.0),), _ICRU44),
    # LEGO ABS: 1.04-1.06 g/cm^3 (typical ABS datasheet range); 1.05 used.
    Material("abs", 1.05, 1, _ABS, "ABS 20/20/60 acrylonitrile/butadiene/styrene by mass, 1.05 g/cm^3"),
    Material("stainless_steel", 8.00, 3, _STEEL_304, "AISI 304 (ASTM A240 nominal composition), 8.00 g/cm^3"),
    Material("tantalum", 16.654, 3, (("Ta", 1.0),), "elemental Ta, density NIST SRD 126 Table 1"),
)}


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

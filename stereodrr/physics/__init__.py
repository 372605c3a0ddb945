"""X-ray physics from kept libraries: attenuation (xraylib), tube spectra (spekpy), and the
decomposition of a CT into materials so it can be rendered at any spectrum.

* :mod:`.attenuation` -- mass attenuation and energy-absorption coefficients of elements,
  chemical formulas, NIST compounds and mixtures (xraylib);
* :mod:`.spectrum` -- :class:`Spectrum` (energy bins and photon fluence) from spekpy or a table,
  with half-value layer and effective energy;
* :mod:`.decompose` -- HU -> partial density of soft tissue, bone and metal.
"""

from .attenuation import (
    ATTENUATION_RANGE_KEV,
    check_energies,
    compound_density,
    mass_attenuation,
    mass_photoabsorption,
)
from .spectrum import Spectrum, parse_filters

__all__ = [
    "ATTENUATION_RANGE_KEV", "check_energies", "compound_density", "mass_attenuation", "mass_photoabsorption",
    "Spectrum", "parse_filters",
]

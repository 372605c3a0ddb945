"""X-ray physics from kept libraries: attenuation (xraylib), tube spectra (spekpy), and the
decomposition of a CT into materials so it can be rendered at any spectrum.

* :mod:`.attenuation` -- mass attenuation and energy-absorption coefficients of elements,
  chemical formulas, NIST compounds and mixtures (xraylib);
* :mod:`.spectrum` -- :class:`Spectrum` (energy bins and photon fluence) from spekpy or a table,
  with half-value layer and effective energy;
* :mod:`.spectral` -- the spectrum sum of per-material line integrals (equation (1));
* :mod:`.scintillator` -- the panel's scintillator absorption ``eta(E)``;
* :mod:`.scatter` -- the convolution scatter model and the anti-scatter grid;
* :mod:`.blur` -- Gaussian detector blur and the focal spot's blur.

The decomposition of a CT's HU into materials needs the material table and lives with the
imaging chain (:mod:`stereodrr.imaging.materials`).
"""

from .attenuation import (
    ATTENUATION_RANGE_KEV,
    check_energies,
    compound_density,
    mass_attenuation,
    mass_photoabsorption,
)
from .blur import FWHM_PER_SIGMA, focal_spot_sigma_px, gaussian_blur
from .scatter import SCATTER_MODELS, AntiScatterGrid, ScatterModel, add_scatter
from .scintillator import LAYERS, ScintillatorLayer
from .spectral import spectral_sums
from .spectrum import Spectrum, parse_filters

__all__ = [
    "ATTENUATION_RANGE_KEV", "check_energies", "compound_density", "mass_attenuation", "mass_photoabsorption",
    "Spectrum", "parse_filters", "spectral_sums", "ScintillatorLayer", "LAYERS",
    "ScatterModel", "AntiScatterGrid", "SCATTER_MODELS", "add_scatter", "gaussian_blur", "focal_spot_sigma_px",
    "FWHM_PER_SIGMA",
]

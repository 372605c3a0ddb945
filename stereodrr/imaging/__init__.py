"""The imaging chain: a scene seen by cameras through a projector and a detector, as images.

::

    scene = Scene((Voxels(ct, "hu"),), Balls.of(centres, diameters, materials), energy_kev=60)
    images = simulate(scene, rig, Projector(mode="joseph"), detector_preset("fluoro80"), seed=0)

* :mod:`.scene` -- :class:`Scene`: voxel bodies (HU or mu) and analytic balls at a reference energy;
* :mod:`.materials` -- HU -> partial densities of materials (:func:`decompose_hu`);
* :mod:`.detector` -- :class:`DetectorModel` (spectrum, scintillator, scatter, aperture, blur,
  noise, gain, bits; ``to_dict``/``from_dict``), its ordered :data:`STAGES`, the presets;
* :mod:`.pipeline` -- :func:`simulate`, the one function from (scene, cameras, projector,
  detector) to images, and its two routes (mu, materials);
* :mod:`.functional` -- the one-energy detector as functions (:func:`detect`, ...);
* :mod:`.beam` -- beam hardening and scatter undone, for calibration.

The projector (:class:`~stereodrr.render.Projector`) and the line integrals live in
:mod:`stereodrr.render`; the physics (spectra, scatter, scintillators, blur) in
:mod:`stereodrr.physics`.
"""

from ..physics.blur import focal_spot_sigma_px, gaussian_blur
from ..physics.scatter import SCATTER_MODELS, AntiScatterGrid, ScatterModel
from ..physics.scintillator import LAYERS, ScintillatorLayer
from ..render.projector import Projector
from .beam import ball_transmission, metal_thickness, remove_scatter
from .detector import (
    PRESETS,
    STAGES,
    DetectorModel,
    Stage,
    detector_preset,
    quantise,
    spectrum_from_spec,
    warn_saturation,
)
from .functional import beer_lambert, detect, negative_log, to_uint16, zero_floor
from .materials import DECOMPOSITIONS, attenuation_table, decompose_hu
from .pipeline import (
    line_integrals,
    material_line_integrals,
    primary_signals,
    render_polychromatic,
    simulate,
    transmissions,
)
from .scene import Balls, Scene, Voxels

__all__ = [
    "simulate", "render_polychromatic", "Scene", "Voxels", "Balls", "Projector",
    "DetectorModel", "Stage", "STAGES", "PRESETS", "detector_preset", "spectrum_from_spec",
    "ScintillatorLayer", "LAYERS", "ScatterModel", "AntiScatterGrid", "SCATTER_MODELS",
    "beer_lambert", "detect", "negative_log", "zero_floor", "to_uint16", "quantise", "warn_saturation", "gaussian_blur", "focal_spot_sigma_px",
    "decompose_hu", "attenuation_table", "DECOMPOSITIONS",
    "line_integrals", "transmissions", "material_line_integrals", "primary_signals",
    "remove_scatter", "ball_transmission", "metal_thickness",
]

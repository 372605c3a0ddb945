"""Image-intensifier distortion: the field model, grid-plate simulation, measurement from a
perforated-plate image, and correction of points and images.

- :func:`field_of_view` (:class:`FieldOfView`): the round field an intensifier images, found in a
  frame or grid image (either polarity); :func:`falloff_margin`: the band inside its edge where
  the brightness falls off.
- :class:`IntensifierField`, :func:`intensifier_field` (presets ``"mild"``, ``"strong"``),
  :func:`scaled_field` (any image size, :data:`SCALED_PARAMETERS`): a known distortion
  (pincushion, S-rotation, decentring, round field of view), ideal -> recorded.
- :func:`grid_image`, :class:`GridPlate`, :func:`distort_image`, :func:`subpixel_points`,
  :func:`field_coverage`: what an intensifier records (the forward model the imaging chain calls).
- :func:`fit_distortion` (:class:`FitOptions`): a :class:`DistortionMap` measured from a grid
  image (holes, lattice, ideal lattice, LWM and global polynomial maps chosen on held-out holes).
- :class:`DistortionMap`: ``undistort_points``, ``distort_points``, ``undistort_image``;
  :func:`save_distortion`, :func:`load_distortion` (``distortion.json``).
"""

from .correction import (
    CORRECTIONS,
    DistortionMap,
    GridRecord,
    LWMCorrection,
    PolynomialCorrection,
    check_maps,
    get_correction,
)
from .fit import FitOptions, GridMeasurement, fit_distortion, fit_maps, measure_grid
from .fov import FieldOfView, falloff_margin, field_of_view
from .grid import Holes, Lattice, detect_holes, find_lattice
from .io import SCHEMA, load_distortion, save_distortion
from .model import PRESETS, SCALED_PARAMETERS, IntensifierField, intensifier_field, scaled_field
from .simulate import GridPlate, distort_image, field_coverage, grid_image, subpixel_points

__all__ = ["FieldOfView", "field_of_view", "falloff_margin", "IntensifierField", "intensifier_field", "PRESETS", "SCALED_PARAMETERS",
           "scaled_field", "GridPlate", "grid_image", "distort_image",
           "subpixel_points", "field_coverage", "FitOptions", "fit_distortion", "fit_maps", "measure_grid", "GridMeasurement",
           "detect_holes", "find_lattice", "Holes", "Lattice", "DistortionMap", "GridRecord", "CORRECTIONS",
           "get_correction", "check_maps", "PolynomialCorrection", "LWMCorrection", "SCHEMA", "save_distortion", "load_distortion"]

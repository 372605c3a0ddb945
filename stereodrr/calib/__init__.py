"""Stereo calibration from images of a marker phantom (all float64, OpenCV + scipy).

detect (balls, sub-pixel) -> identify (phantom marker ids, matched across views) -> fundamental
(every OpenCV method) -> validate (epipolar error) -> dlt (per view, joint refinement) ->
triangulate (linear, optimal, N-view) -> export (rig.json, DLT CSV, OpenCV YAML).
:func:`calibrate_stereo` runs them all on images; :mod:`.scene` simulates calibration shots.
"""

from .detect import attenuation_image, detect_markers
from .identify import Identification, identify_markers, match_views
from .pipeline import StereoCalibration, calibrate_stereo, check_images, held_out_points
from .scene import CalibrationShots, perturbed_rig, render_calibration_images

from .dlt import (
    MIN_DLT_POINTS,
    RigCalibration,
    ViewCalibration,
    calibrate_rig,
    check_noncoplanar,
    projection_from_points,
    opencv_crosscheck,
    reprojection_errors,
    rig_isocenter,
)
from .export import export_calibration, load_opencv_yaml, save_opencv_yaml
from .fundamental import METHODS as F_METHODS
from .fundamental import FundamentalEstimate, detect_degeneracy, estimate_fundamental
from .triangulate import (
    Triangulation,
    crossing_line_distance,
    error_table,
    predicted_error,
    split_error,
    triangulate,
    triangulate_linear,
    triangulate_nview,
    triangulate_optimal,
)
from .validate import (
    EpipolarReport,
    compare_fundamental,
    sampson_distance,
    symmetric_epipolar_distance,
    validate_epipolar,
)

__all__ = [
    "attenuation_image", "detect_markers", "Identification", "identify_markers", "match_views",
    "StereoCalibration", "calibrate_stereo", "check_images", "held_out_points",
    "CalibrationShots", "perturbed_rig", "render_calibration_images",
    "MIN_DLT_POINTS", "RigCalibration", "ViewCalibration", "calibrate_rig", "check_noncoplanar", "projection_from_points",
    "opencv_crosscheck", "reprojection_errors", "rig_isocenter",
    "export_calibration", "load_opencv_yaml", "save_opencv_yaml",
    "F_METHODS", "FundamentalEstimate", "detect_degeneracy", "estimate_fundamental",
    "Triangulation", "crossing_line_distance", "error_table", "predicted_error", "split_error", "triangulate",
    "triangulate_linear", "triangulate_nview", "triangulate_optimal",
    "EpipolarReport", "compare_fundamental", "sampson_distance", "symmetric_epipolar_distance", "validate_epipolar",
]

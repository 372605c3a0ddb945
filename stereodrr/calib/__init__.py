"""Stereo calibration from images of a marker phantom: fundamental matrix and epipolar
validation, DLT calibration, triangulation and export (all float64, OpenCV + scipy)."""

from .dlt import (
    MIN_DLT_POINTS,
    RigCalibration,
    ViewCalibration,
    calibrate_rig,
    check_noncoplanar,
    dlt_projection,
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
    "MIN_DLT_POINTS", "RigCalibration", "ViewCalibration", "calibrate_rig", "check_noncoplanar", "dlt_projection",
    "opencv_crosscheck", "reprojection_errors", "rig_isocenter",
    "export_calibration", "load_opencv_yaml", "save_opencv_yaml",
    "F_METHODS", "FundamentalEstimate", "detect_degeneracy", "estimate_fundamental",
    "Triangulation", "crossing_line_distance", "error_table", "predicted_error", "split_error", "triangulate",
    "triangulate_linear", "triangulate_nview", "triangulate_optimal",
    "EpipolarReport", "compare_fundamental", "sampson_distance", "symmetric_epipolar_distance", "validate_epipolar",
]

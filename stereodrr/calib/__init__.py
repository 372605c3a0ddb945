"""Stereo calibration from images of a marker phantom (all float64, OpenCV + scipy).

detect (balls, sub-pixel) -> identify (phantom marker ids, matched across views) -> fundamental
(every OpenCV method) -> validate (epipolar error) -> dlt (per view, joint refinement) ->
triangulate (linear, optimal, N-view) -> export (rig.json, DLT CSV, OpenCV YAML).
:func:`calibrate_stereo` runs them all on images, its knobs one :class:`CalibrationOptions`;
:mod:`.pipeline` has each stage as a function (``detect``, ``identify``, ``fundamental``,
``dlt``, ``triangulation``, ``judge``) and :func:`score_against_truth`; :mod:`.scene` simulates
calibration shots.

``__all__`` lists what a user calls; the stages' helpers (e.g. ``triangulate_nview``,
``sampson_distance``, ``held_out_points``) are public in their modules
(``stereodrr.calib.triangulate``, ``.validate``, ``.pipeline``, ...).
"""

from .detect import DetectOptions, detect_markers
from .dlt import RigCalibration, calibrate_rig, projection_from_points
from .export import export_calibration, load_opencv_yaml, save_opencv_yaml
from .fundamental import METHODS as F_METHODS
from .fundamental import FundamentalEstimate, estimate_fundamental
from .identify import Identification, IdentifyOptions, identify_markers
from .pipeline import CalibrationOptions, StereoCalibration, calibrate_stereo, check_images, score_against_truth
from .scene import CalibrationShots, flat_panel, perturbed_rig, render_calibration_images
from .triangulate import Triangulation, split_error, triangulate
from .validate import EpipolarReport, symmetric_epipolar_distance, validate_epipolar

__all__ = [
    "calibrate_stereo", "CalibrationOptions", "StereoCalibration", "check_images", "score_against_truth",
    "render_calibration_images", "CalibrationShots", "flat_panel", "perturbed_rig",
    "detect_markers", "DetectOptions", "identify_markers", "IdentifyOptions", "Identification",
    "estimate_fundamental", "FundamentalEstimate", "F_METHODS",
    "validate_epipolar", "EpipolarReport", "symmetric_epipolar_distance",
    "calibrate_rig", "RigCalibration", "projection_from_points",
    "triangulate", "Triangulation", "split_error",
    "export_calibration", "load_opencv_yaml", "save_opencv_yaml",
]

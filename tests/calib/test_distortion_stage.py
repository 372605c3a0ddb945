"""Calibration through image intensifiers: detected centres corrected through each view's map."""

import math

import numpy as np
import pandas as pd
import pytest

from stereodrr.calib import CalibrationOptions
from stereodrr.calib.pipeline import correct_detections, detect
from stereodrr.distortion import intensifier_field
from stereodrr.geometry import StereoRig
from tests.distortion.reference import map_of_field


def test_detected_centres_are_corrected_through_their_views_map():
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, 0.6, 256, 256)
    field = intensifier_field("strong", 256, 256, fov_radius=math.inf)
    rng = np.random.default_rng(2)
    ideal = rng.uniform(10, 246, (30, 2))
    recorded = np.asarray(field.distort(ideal))
    det = {n: pd.DataFrame({"u": recorded[:, 0], "v": recorded[:, 1], "diameter_px": 9.0}) for n in rig.names}
    out = correct_detections(det, {"left": map_of_field(field, step=8)}, rig)
    np.testing.assert_allclose(out["left"][["u", "v"]].to_numpy(), ideal, atol=2e-3)
    np.testing.assert_array_equal(out["left"][["u_recorded", "v_recorded"]].to_numpy(), recorded)
    assert out["right"] is det["right"]  # no map: as detected
    assert np.abs(recorded - ideal).max() > 2.0  # the field moves them by pixels


def test_maps_of_another_size_or_view_are_refused_before_any_detection():
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, 0.6, 256, 256)
    small = map_of_field(intensifier_field("mild", 128, 128, fov_radius=math.inf), step=8, degree=3)
    images = {n: np.zeros((256, 256), np.float32) for n in rig.names}
    markers = pd.DataFrame({"marker_id": [1], "x": [0.0], "y": [0.0], "z": [0.0], "diameter_mm": [2.0]})
    with pytest.raises(ValueError, match="the map of view 'left' is for 128x128 images, the view's detector is "
                                         "256x256"):
        detect(images, markers, rig, CalibrationOptions(distortion={"left": small}, progress=False))
    with pytest.raises(ValueError, match="a map for view 'centre'"):
        correct_detections({}, {"centre": small}, rig)

"""The report's pinhole advisory: the DLT's residuals against the detected centres' own precision."""

import math

import numpy as np
import pytest

from stereodrr.calib import CalibrationOptions, calibrate_stereo
from stereodrr.calib.scene import flat_panel, perturbed_rig, render_calibration_images
from stereodrr.calib.verdict import PINHOLE_MISFIT_ADVISORY
from stereodrr.distortion import intensifier_field
from stereodrr.geometry import StereoRig
from stereodrr.phantoms import load_phantom


@pytest.mark.slow  # 10-19 s: kept out of the default run's 10 minutes
def test_an_uncorrected_intensifier_is_advised_and_a_flat_panel_is_not():
    """The same 5 deg pair of the LEGO phantom through a flat panel and through a mild
    intensifier whose maps were not given: both pass the epipolar test, only the second leaves
    DLT residuals far above the ball fits' standard errors."""
    n = 512
    nominal = StereoRig.convergent(5.0, 750.0, 1200.0, 0.3, n, n)
    truth = perturbed_rig(nominal, seed=0)
    phantom = load_phantom("lego_stereo")
    ratios = {}
    for case, det in (("flat", flat_panel(1e4, 2.0, 0.5)),
                      ("mild", flat_panel(1e4, 2.0, 0.5).with_(
                          distortion=intensifier_field("mild", n, n, fov_radius=math.inf, k1=0.012)))):
        shots = render_calibration_images(phantom, truth, det, seed=0, progress=False)
        r = calibrate_stereo(shots.images, phantom.marker_table(), nominal,
                             CalibrationOptions(kind=shots.kind, progress=False))
        rep = r.report()
        ratios[case] = rep["pinhole_misfit"]
        assert rep["epipolar_error_px"] < 1.0, case
        d = r.detections[r.views[0]]
        assert np.all(np.isfinite(d[["sigma_u", "sigma_v"]].to_numpy())) and (d["sigma_u"] > 0).all()
        if case == "flat":
            assert rep["advisories"] == [] and "ADVISORY" not in r.summary()
        else:
            assert "give --distortion maps" in rep["advisories"][0] and "ADVISORY" in r.summary()
    assert max(ratios["flat"].values()) < PINHOLE_MISFIT_ADVISORY / 2 < PINHOLE_MISFIT_ADVISORY * 2 < min(
        ratios["mild"].values()), ratios

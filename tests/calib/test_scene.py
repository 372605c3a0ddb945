"""Calibration shots through a noise-free chain: its deterministic stages act on them."""

import numpy as np
from scipy.ndimage import gaussian_filter

from stereodrr.calib.scene import flat_panel, render_calibration_images
from stereodrr.geometry import StereoRig
from stereodrr.phantoms import load_phantom


def test_a_noise_free_chain_that_blurs_gives_blurred_shots():
    """Noise-free shots through a panel with a 1 px PSF (and a gain and offset, which cancel in
    -log) are -log of the sharp shots' transmission blurred by SciPy's own Gaussian filter
    (mirror edges, +-4 sigma: what the chain's blur is documented to do). Until 2026-12-06 a
    monochromatic chain's noise-free shots skipped every stage but an intensifier's."""
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, 0.6, 160, 144)
    phantom = load_phantom("lego_cube")
    sharp = render_calibration_images(phantom, rig, flat_panel(), voxel_mm=1.0, progress=False)
    blurred = render_calibration_images(phantom, rig, flat_panel(detector_blur_px=1.0).with_(gain=2.0, offset=50.0),
                                        voxel_mm=1.0, progress=False)
    assert sharp.kind == blurred.kind == "line_integral"
    for v in rig.names:
        expected = -np.log(gaussian_filter(np.exp(-sharp.images[v].astype(np.float64)), 1.0, mode="mirror",
                                           truncate=4.0))
        np.testing.assert_allclose(blurred.images[v], expected, rtol=0, atol=2e-5)
        assert np.abs(blurred.images[v] - sharp.images[v]).max() > 0.1  # the balls' edges moved
        np.testing.assert_array_equal(blurred.centres_px[v], sharp.centres_px[v])

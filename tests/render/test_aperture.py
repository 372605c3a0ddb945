"""The pixel aperture helpers: the sub-ray rule and the sub-pixel cameras."""

import numpy as np
import pytest

from stereodrr.geometry import Camera
from stereodrr.render.aperture import auto_subpixels, check_aperture, subpixel_cameras, subpixel_offsets


def _ramp_edge_error(w: float, s: int, x0: float) -> float:
    """|midpoint rule - exact| pixel average on [-1/2, 1/2] of a unit edge ramping over w px from x0."""
    f = lambda x: np.clip((x - x0) / w, 0.0, 1.0)  # noqa: E731
    xs = np.linspace(-0.5, 0.5, 200001)
    exact = np.trapezoid(f(xs), xs)
    return abs(f(subpixel_offsets(s)).mean() - exact)


@pytest.mark.parametrize("w", [1.0, 2.0, 4.0])
def test_auto_subpixels_keeps_edge_pixels_within_tolerance(w):
    s = auto_subpixels(w)
    # Worst case: a kink (the ramp's start) at a sub-pixel centre, anywhere in the pixel.
    kinks = list(subpixel_offsets(s)) + list(np.linspace(-0.5, 0.5, 41))
    assert max(_ramp_edge_error(w, s, x0) for x0 in kinks) <= 1e-3
    # The bound is tight enough that one sub-ray fewer breaks it somewhere.
    if s > 1:
        assert max(_ramp_edge_error(w, s - 1, x0) for x0 in subpixel_offsets(s - 1)) > 1e-3 * 0.5


def test_subpixel_cameras_cast_the_sub_rays():
    cam = Camera.from_detector(1000.0, (0.2, 0.2 / 1.002), 90, 70, (2.4, -1.4))
    subs = subpixel_cameras(cam, 3)
    assert len(subs) == 9
    o = subpixel_offsets(3)
    for k, sub in enumerate(subs):
        ou, ov = o[k % 3], o[k // 3]
        _, d_sub = sub.pixel_to_ray(np.array([[10.0, 20.0]]))
        _, d = cam.pixel_to_ray(np.array([[10.0 + ou, 20.0 + ov]]))
        np.testing.assert_allclose(d_sub, d, atol=1e-15)


def test_bad_aperture_options():
    with pytest.raises(ValueError, match="aperture"):
        check_aperture("box", None)
    with pytest.raises(ValueError, match="subpixels"):
        check_aperture("area", 0)
    with pytest.raises(ValueError, match="positive"):
        auto_subpixels(0.0)

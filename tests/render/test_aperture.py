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


def test_bad_aperture_options(unchecked):
    with pytest.raises(ValueError, match="aperture"):
        check_aperture("box", None)
    with pytest.raises(ValueError, match="subpixels"):
        check_aperture("area", 0)
    with pytest.raises(ValueError, match="positive"):
        auto_subpixels(0.0)


def _balls_camera():
    from stereodrr.geometry import Camera

    cam = Camera.look_at((0.0, -600.0, 0.0), (0.0, 0.0, 0.0), 1000.0, 0.4, 40, 30)
    centers = np.array([[1.3, 0.0, -0.7], [-3.1, 5.0, 1.9], [1.9, -2.0, -0.2]])  # the last two shadows overlap
    return cam, centers, np.array([2.0, 1.5, 1.0])


def test_sphere_transmission_area_equals_the_mean_over_subpixel_cameras():
    """The masked sub-ray average equals brute force: every pixel's ray through s^2 shifted cameras."""
    import torch

    from stereodrr.render import render_spheres
    from stereodrr.render.markers import sphere_transmission

    cam, centers, dia = _balls_camera()
    mu = np.array([0.9, 0.9, 0.5])
    area = sphere_transmission(centers, dia, mu, cam, "area", 5)
    subs = subpixel_cameras(cam, 5)
    brute = torch.exp(-render_spheres(centers, dia, mu, subs, dtype=torch.float64)[0]).mean(0)
    np.testing.assert_allclose(area.numpy(), brute.numpy(), atol=1e-12)
    point = sphere_transmission(centers, dia, mu, cam, "point")
    assert float((area - point).abs().max()) > 1e-3  # the rims differ: the aperture is really applied


def test_polychromatic_area_aperture_equals_brute_force_over_subpixel_cameras():
    import torch

    from stereodrr.imaging import Balls, DetectorModel, Scene, Voxels, material_line_integrals, primary_signals
    from stereodrr.physics.spectrum import Spectrum
    from stereodrr.volume import Volume

    cam, centers, dia = _balls_camera()
    hu = np.zeros((12, 12, 12), np.float32)
    hu[:, :6] = 900.0  # bone-like half
    vol = Volume.from_numpy(hu, spacing=(2.0, 2.0, 2.0), origin=(-11.0, -11.0, -11.0))
    spec = Spectrum.from_table([40.0, 60.0, 80.0], [1.0, 2.0, 0.5])
    det = DetectorModel(spectrum=spec, aperture="area", subpixels=4)
    balls = Balls.of(centers, dia, ["stainless_steel", "stainless_steel", "titanium"])
    t, q = primary_signals(Scene((Voxels(vol),), balls), [cam], det)["view0"]
    # Brute force: bodies at the pixel centre, balls through each shifted camera, primaries averaged.
    names_b, body = material_line_integrals(Scene((Voxels(vol),)), [cam])
    acc_t = acc_q = 0.0
    for sub in subpixel_cameras(cam, 4):
        names_s, ball_chans = material_line_integrals(Scene(balls=balls), [sub])
        ts, qs = det.primary(torch.cat([body["view0"], ball_chans["view0"]]), names_b + names_s)
        acc_t, acc_q = acc_t + ts, acc_q + qs
    np.testing.assert_allclose(t.numpy(), (acc_t / 16).numpy(), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(q.numpy(), (acc_q / 16).numpy(), rtol=2e-5, atol=1e-7)


def test_area_aperture_with_no_shadow_on_the_detector():
    """Balls whose shadows miss the detector leave it clear (the empty pixel list used to fail
    in a reshape)."""
    from stereodrr.render.markers import sphere_transmission

    cam = Camera.look_at(np.array([0.0, -750.0, 0.0]), np.zeros(3), sdd=1200, pixel_spacing=0.3, width=16, height=12)
    t = sphere_transmission(np.array([[200.0, 0.0, 0.0]]), np.array([2.0]), 0.5, cam)
    assert t.shape == (12, 16) and bool((t == 1).all())


@pytest.mark.parametrize(("off_axis_deg", "diameter_mm", "skew"), [(0, 6.0, 0.0), (40, 8.0, 0.0), (55, 4.0, 0.0),
                                                                  (40, 8.0, 300.0)])
def test_shadow_pixels_hold_every_pixel_a_ball_shadows_off_axis(off_axis_deg, diameter_mm, skew):
    """A ball seen well off the principal axis (uniplanar RSA: flat detector, source to the side)
    casts a silhouette longer than the on-axis bound r f / (z - r): every pixel whose sub-rays
    meet the ball is in ``shadow_pixels``. Truth: ray-sphere distances in numpy."""
    from stereodrr.render.markers import shadow_pixels

    W = H = 128
    f = 1500.0
    src = np.array([-400.0 * np.tan(np.radians(off_axis_deg)), 0.0, -400.0])
    cx = (W - 1) / 2 + f * src[0] / 400.0
    K = np.array([[f, skew, cx], [0.0, f, (H - 1) / 2], [0.0, 0.0, 1.0]])
    cam = Camera(K, np.eye(3), -src, W, H, (0.4, 0.4))
    ball, r = np.zeros(3), diameter_mm / 2
    # every sub-ray at 1/8 px offsets: its direction K^-1 (u, v, 1), distance of the ball's centre to it
    o = np.arange(-0.5, 0.5 + 1e-9, 1 / 8)
    uu, vv = np.meshgrid(np.arange(W), np.arange(H))
    hits = np.zeros((H, W), bool)
    for du in o:
        for dv in o:
            d = np.linalg.solve(K, np.stack([uu + du, vv + dv, np.ones_like(uu, float)]).reshape(3, -1))
            d /= np.linalg.norm(d, axis=0)
            c = ball - src
            dist = np.linalg.norm(c[:, None] - (c @ d) * d, axis=0)
            hits |= (dist < r).reshape(H, W)
    assert hits.sum() > 300
    listed = np.zeros(H * W, bool)
    listed[shadow_pixels(ball[None], np.array([diameter_mm]), cam)] = True
    assert not (hits & ~listed.reshape(H, W)).any()

"""Marker detection on analytic renders: exact projected centres from the renderer are the truth."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from stereodrr.calib.detect import DetectOptions, attenuation_image, detect_markers
from stereodrr.geometry import StereoRig
from stereodrr.imaging import detect as detector_counts
from stereodrr.imaging import to_uint16
from stereodrr.render import render_drr, render_spheres
from stereodrr.volume import Volume


@pytest.fixture(scope="module")
def scene():
    """Steel balls of 1, 1.5 and 2 mm in front of a tilted plastic slab, 320x320 detector."""
    rig = StereoRig.convergent(5.0, 750.0, 1200.0, 0.3, 320, 320)
    rng = np.random.default_rng(3)
    X = []
    while len(X) < 14:  # shadows >= 16 px apart in both views, so they do not touch
        p = rng.uniform(-16, 16, 3)
        if all(np.linalg.norm(cam.project(np.array([p]))[0] - cam.project(np.array([q]))[0]) > 16
               for q in X for cam in rig.cameras.values()):
            X.append(p)
    X = np.array(X)
    dia = np.resize([1.0, 1.5, 2.0], len(X))
    balls, centres = render_spheres(X, dia, 0.95, rig, dtype=torch.float32)
    # Plastic background (mu of ABS ~0.02/mm): a rotated slab, so the balls sit on edges and slopes.
    slab = np.zeros((30, 50, 50), np.float32)
    slab[5:25, 10:40, 5:45] = 0.02
    vol = Volume.from_numpy(slab, spacing=(1.0, 1.0, 1.0), origin=(-24.5, -24.5, -14.5),
                            direction=np.array([[0.96, -0.28, 0], [0.28, 0.96, 0], [0, 0, 1.0]]))
    body = render_drr(vol, rig)
    L = (balls + body).numpy().astype(np.float64)
    return rig, L, centres.numpy().astype(np.float64), dia


def _match_rms(det, truth):
    d = np.linalg.norm(det[["u", "v"]].to_numpy()[:, None] - truth[None], axis=2)
    assert len(det) == len(truth) and len(set(d.argmin(1))) == len(truth)
    return float(np.sqrt(np.mean(d.min(1) ** 2)))


def test_noise_free_subpixel_accuracy(scene):
    _, L, centres, _ = scene
    for v in range(2):
        det = detect_markers(L[v], kind="line_integral", diameter_px=(3, 14))
        assert _match_rms(det, centres[v]) <= 0.05
        cen = detect_markers(L[v], kind="line_integral", diameter_px=(3, 14), options=DetectOptions(subpixel="centroid"))
        assert _match_rms(cen, centres[v]) <= 0.15


def test_measured_diameters(scene):
    rig, L, centres, dia = scene
    det = detect_markers(L[0], diameter_px=(3, 14))
    _, depth = rig["left"].project(np.zeros((1, 3)))
    expected = np.sort(dia * rig["left"].K[0, 0] / depth[0])
    np.testing.assert_allclose(np.sort(det["diameter_px"].to_numpy()), expected, rtol=0.05)


def test_raw_16bit_intensity_and_auto_polarity(scene):
    _, L, centres, _ = scene
    counts = detector_counts(torch.as_tensor(L[0]), photons=None)
    img16, _ = to_uint16(counts)
    a, kind = attenuation_image(img16, "auto", 14)
    assert kind == "intensity"
    det = detect_markers(img16, diameter_px=(3, 14))
    assert _match_rms(det, centres[0]) <= 0.05
    _, kind = attenuation_image(L[0], "auto", 14)
    assert kind == "line_integral"


def test_auto_polarity_of_a_low_dose_raw_frame(scene):
    """A raw frame at 1e3 photons/px (numpy Poisson) of the balls behind a body (-log 2.2, ~110 mm of
    water) with air around it: the air's pixel noise tops the balls' dark contrast pixel by
    pixel, but not over a ball's area. Kind 'auto' once read such frames as line integrals and
    refused them ('markers stand 150-170 above their background')."""
    _, L, centres, _ = scene
    v, u = np.mgrid[0:320, 0:320]
    body = 2.2 * (np.hypot(u - 159.5, v - 159.5) < 130)
    counts = np.random.default_rng(0).poisson(1e3 * np.exp(-L[0] - body)).astype(np.uint16)
    assert attenuation_image(counts, "auto", 14)[1] == "intensity"
    det = detect_markers(counts, diameter_px=(3, 14))
    assert _match_rms(det, centres[0]) <= 0.2
    # Where 'auto' does read an image as a line integral, the blob-count refusal (what a raw frame's
    # noise read so meets first in a calibration) names the kind too, as the contrast refusal does.
    with pytest.raises(ValueError, match=r"ball-sized blobs.*kind 'auto' read it as a line integral"):
        detect_markers(L[0], diameter_px=(3, 14), options=DetectOptions(max_blobs=2))


def test_a_normalised_transmission_with_a_black_border(scene):
    """A flat-field-normalised float I/I0 (numpy exp(-L) of the balls behind a body, -log 2.2) with
    a collimated border of zeros: the zeros are clipped below the smallest value recorded, not at
    half a count (0.5 flattened every pixel under 0.5, so every ball behind the body vanished)."""
    _, L, centres, _ = scene
    v, u = np.mgrid[0:320, 0:320]
    body = 2.2 * (np.hypot(u - 159.5, v - 159.5) < 130)
    ratio = np.exp(-L[0] - body).astype(np.float32)
    ratio[:, :6] = 0.0
    a, kind = attenuation_image(ratio, "intensity", 14)
    inside = ratio > 0
    np.testing.assert_allclose(a[inside], L[0][inside] + body[inside], atol=1e-5)
    assert np.all(a[~inside] > a[inside].max())
    assert _match_rms(detect_markers(ratio, kind="intensity", diameter_px=(3, 14)), centres[0]) <= 0.05
    # Counts keep half a count (the zeros' floor is what a raw frame's always was).
    counts = np.rint(1e4 * ratio).astype(np.uint16)
    assert attenuation_image(counts, "intensity", 14)[0][0, 0] == pytest.approx(-np.log(0.5))


def test_poisson_noise_keeps_centres_within_a_tenth_of_a_pixel(scene):
    _, L, centres, _ = scene
    counts = detector_counts(torch.as_tensor(L[1]), photons=1e4, seed=5).numpy()
    det = detect_markers(counts, kind="intensity", diameter_px=(3, 14))
    assert _match_rms(det, centres[1]) <= 0.1


def test_bad_input(scene):
    _, L, _, _ = scene
    with pytest.raises(ValueError, match="2D"):
        detect_markers(L)
    nan = L[0].copy()
    nan[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detect_markers(nan)
    with pytest.raises(ValueError, match="constant"):
        detect_markers(np.ones((64, 64)))
    smooth = np.add.outer(np.linspace(0, 1, 64), np.linspace(0, 1, 64))
    with pytest.raises(ValueError, match="no markers found"):
        detect_markers(smooth, kind="line_integral", diameter_px=(3, 10))
    with pytest.raises(ValueError, match="kind"):
        detect_markers(L[0], kind="log")


def _ball_over_edges(centre, radius_px, mu_px, edges, size=64, sub=12):
    """``-log`` of an area-integrated image, computed here independently of stereodrr: a ball's
    chord ``mu 2 sqrt(r^2 - d^2)`` over a tilted plane plus straight steps, ``exp(-L)`` averaged on
    ``sub x sub`` points of each pixel. ``edges``: ``(u, v, angle, height)``, a step of ``height``
    on the side of the line through ``(u, v)`` that its normal ``(cos angle, sin angle)`` points to."""
    off = (np.arange(sub) + 0.5) / sub - 0.5
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    uu = u[..., None, None] + off[None, None, None, :]
    vv = v[..., None, None] + off[None, None, :, None]
    L = 0.1 + 0.001 * uu
    for pu, pv, ang, h in edges:
        L = L + h * ((uu - pu) * np.cos(ang) + (vv - pv) * np.sin(ang) > 0)
    d2 = ((uu - centre[0]) ** 2 + (vv - centre[1]) ** 2) / radius_px**2
    L = L + 2 * radius_px * mu_px * np.sqrt(np.clip(1 - d2, 0, None))
    return -np.log(np.exp(-L).mean(axis=(2, 3)))


def test_ball_on_brick_edges():
    """A ball crossed by sharp straight brick edges (one edge, a wall's two edges, a wall and a
    perpendicular edge), area-integrated: the background fitted with the ball follows them
    (interpolating it across the ball along one edge direction left 0.022 px RMS, 0.048 max)."""
    rng = np.random.default_rng(1)
    errors = []
    for k in range(8):
        c = np.array([31.5, 32.0]) + rng.uniform(-0.5, 0.5, 2)
        ang = rng.uniform(0, np.pi)
        n = np.array([np.cos(ang), np.sin(ang)])
        p = c + rng.uniform(-3, 3) * n
        edges = [(p[0], p[1], ang, 0.3)]
        if k % 2:
            edges.append((p[0] + 6 * n[0], p[1] + 6 * n[1], ang, -0.3))
        if k % 4 == 3:
            edges.append((c[0] + 2 * n[1], c[1] - 2 * n[0], ang + np.pi / 2, 0.2))
        det = detect_markers(_ball_over_edges(c, 4.0, 0.25, edges), kind="line_integral", diameter_px=(5, 12))
        errors.append(np.min(np.linalg.norm(det[["u", "v"]].to_numpy() - c, axis=1)))
    errors = np.array(errors)
    assert np.sqrt(np.mean(errors**2)) <= 0.016
    assert errors.max() <= 0.03


@pytest.mark.parametrize("dmax", [10.0, 12.0, 14.0, 16.0])
def test_centre_does_not_depend_on_the_size_range(dmax):
    """The coarse start (top-hat length and window from the largest expected diameter) must not
    move the fitted centre: a ball next to a brick corner."""
    c = np.array([30.3, 31.8])
    edges = [(c[0] - 6.0, 0.0, 0.0, -0.4), (0.0, c[1] + 6.0, np.pi / 2, 0.3)]
    img = _ball_over_edges(c, 4.0, 0.25, edges)
    ref = detect_markers(img, kind="line_integral", diameter_px=(5, 10.0))
    det = detect_markers(img, kind="line_integral", diameter_px=(5, dmax))
    pick = lambda d: d[["u", "v"]].to_numpy()[np.argmin(np.linalg.norm(d[["u", "v"]].to_numpy() - c, axis=1))]  # noqa: E731
    assert np.linalg.norm(pick(det) - pick(ref)) <= 5e-3
    assert np.linalg.norm(pick(det) - c) <= 0.03


def test_centres_do_not_depend_on_blas_threads():
    """The ball fits run OpenBLAS on one thread (``render.threads.single_threaded_blas``) whatever
    the process's setting, and put it back after: the same bytes with 1 and 2 threads outside
    (the old fits moved a demo ball by up to 0.005 px between them), the independent truth
    within 0.03 px."""
    from stereodrr.render import threads

    setters = threads._openblas_thread_setters()
    if not setters:
        pytest.skip("no OpenBLAS found in this process (another BLAS, or not Linux)")
    c = np.array([31.7, 32.2])
    img = _ball_over_edges(c, 4.0, 0.25, [(c[0] - 2.0, c[1], 0.3, 0.3), (c[0] + 4.0, c[1], 0.3, -0.3)])
    img = img + np.random.default_rng(2).normal(0.0, 0.003, img.shape)
    runs = []
    for n in (1, 2):
        before = [s(n) for s in setters]
        try:
            runs.append(detect_markers(img, kind="line_integral", diameter_px=(5, 12)))
            assert [s(n) for s in setters] == [n] * len(setters)  # restored after the fits
        finally:
            for s, b in zip(setters, before):
                s(b)
    pd.testing.assert_frame_equal(runs[0], runs[1], check_exact=True)
    assert np.min(np.linalg.norm(runs[0][["u", "v"]].to_numpy() - c, axis=1)) <= 0.03


@pytest.mark.parametrize("pitch", [(0.3, 0.39), (0.39, 0.3)])
def test_non_square_pixels(pitch):
    """du != dv: each shadow is an ellipse in pixels; the calibration's detection stage fits it
    (a circle fit left 0.03-0.05 px and 15x the triangulation error of square pixels)."""
    from stereodrr.calib.identify import shadow_diameters_px
    from stereodrr.calib.pipeline import CalibrationOptions, detect

    rig = StereoRig.convergent(5.0, 750.0, 1200.0, pitch, 150, 110)
    X = np.array([[x, 0.0, z] for x in (-8.0, 0.0, 8.0) for z in (-6.0, 6.0)]) + [0.37, 0.0, -0.21]
    balls, centres = render_spheres(X, np.full(len(X), 2.0), 0.95, rig, dtype=torch.float32)
    images = dict(zip(rig.names, balls.numpy().astype(np.float64)))
    markers = pd.DataFrame({"marker_id": np.arange(len(X)), "x": X[:, 0], "y": X[:, 1], "z": X[:, 2],
                            "diameter_mm": 2.0})
    det = detect(images, markers, rig, CalibrationOptions(kind="line_integral", aperture="point", progress=False))
    for v, name in enumerate(rig.names):
        assert _match_rms(det[name], centres[v].numpy().astype(np.float64)) <= 0.01
        # The long axis, as shadow_diameters_px predicts it.
        expected = shadow_diameters_px(rig[name], np.zeros((1, 3)), np.array([2.0]))
        np.testing.assert_allclose(det[name]["diameter_px"], expected[0], rtol=0.05)


def test_bright_bone_16bit_display_is_refused(tmp_path):
    """65535 - I (a viewer's inverted 16-bit export, written by OpenCV) shows the markers bright, as
    a line integral would, but thousands of grey levels above their background: the ball model
    cannot hold that, and the refusal says so instead of the fit's non-finite residuals."""
    import cv2

    from stereodrr.trial import read_image

    L = _ball_over_edges((32.3, 31.6), 5.0, 0.5, [])
    inverted = np.round(65535 * (1 - np.exp(-L))).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "inverted.png"), inverted)
    with pytest.raises(ValueError, match=r"inverted.png: markers stand .* not a display \(inverted"):
        detect_markers(read_image(tmp_path / "inverted.png"), diameter_px=(3, 14), name=str(tmp_path / "inverted.png"))


@pytest.mark.parametrize("scale", [10.0, 100.0])
def test_a_line_integral_in_other_units_is_refused_by_the_area_model(scene, scale):
    """-log(I/I0) times a constant (mu in other units, or a display's scale) is no line integral a
    detector records (balls 18-180 above their background): the area-averaged model, nonlinear in
    the intensity, would fit the wrong profile (a 100x scale moved centres by up to 0.9 px and
    passed a rig 2.7% off in SDD); the point model, which the error offers, still finds them."""
    _, L, centres, _ = scene
    with pytest.raises(ValueError, match=r"as a line integral, more than a detector records .*--aperture point"):
        detect_markers(L[0] * scale, kind="line_integral", diameter_px=(3, 14))
    # Read so by kind 'auto' (as a low-dose raw frame's bright air can make it): the error says so.
    with pytest.raises(ValueError, match=r"kind 'auto' read it as a line integral.*--kind intensity"):
        detect_markers(L[0] * scale, kind="auto", diameter_px=(3, 14))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its transmission underflowing to 0 took log(0) (numpy warnings)
        det = detect_markers(L[0] * scale, kind="line_integral", diameter_px=(3, 14), aperture="point")
    assert _match_rms(det, centres[0]) <= 0.1


def _ball_pair(pitch_mm, gap_px, diameter2_mm, blur_px=0.5):
    """A 1 mm ball beside a ``diameter2_mm`` one, their shadows' rims ``gap_px`` apart (the
    independent simulator of ``xray_sim``: area-integrated pixels, water behind)."""
    from stereodrr.calib.identify import shadow_diameters_px
    from stereodrr.geometry import Camera

    from .xray_sim import simulate

    cam = Camera.look_at(np.array([0.0, -750.0, 0.0]), np.zeros(3), 1200.0, (pitch_mm, pitch_mm), 160, 120,
                         up=np.array([0.0, 0.0, 1.0]))
    mag = 1200.0 / 750.0
    sep = (0.5 * mag / pitch_mm * (1.0 + diameter2_mm) + gap_px) * pitch_mm / mag
    table = pd.DataFrame({"marker_id": [1, 2], "x": [-sep / 2, sep / 2], "y": [0.0, 0.0], "z": [0.3, 0.3],
                          "diameter_mm": [1.0, diameter2_mm]})
    image, centres = simulate(cam, table, blur_px=blur_px, subpixels=6)
    d = shadow_diameters_px(cam, table[["x", "y", "z"]].to_numpy(), table["diameter_mm"].to_numpy())
    det = detect_markers(image, kind="line_integral", diameter_px=(0.6 * d.min(), 1.4 * d.max()))
    errors = np.linalg.norm(det[["u", "v"]].to_numpy()[:, None] - centres[None], axis=2).min(axis=0)
    return det, errors


def test_a_small_ball_beside_a_large_one_starts_from_its_own_core():
    """The coarse start's window is sized by the largest ball: a 1 mm ball 8 px from a 2 mm
    one (0.15 mm pixels) took the brighter inside of its neighbour's rim as its core, was lost,
    and a blob between the two was reported instead."""
    det, errors = _ball_pair(0.15, 8.0, 2.0)
    assert len(det) == 2
    assert errors.max() < 0.005


def test_a_neighbour_within_the_fits_reach_is_what_drop_overlapping_drops():
    """Centres are biased while another shadow lies within ``fit_reach_px`` of the rim (what the
    calibration drops as overlapping), and as good as alone beyond it."""
    from stereodrr.calib.detect import fit_reach_px

    det, near = _ball_pair(0.3, 4.0, 1.0)
    assert near.max() > 0.02  # 10x the error of a ball alone
    reach = fit_reach_px(float(np.median(det["blur_px"])))
    assert 4.0 < reach < 8.0
    _, far = _ball_pair(0.3, reach + 0.2, 1.0)
    assert far.max() < 0.005

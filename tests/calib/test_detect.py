"""Marker detection on analytic renders: exact projected centres from the renderer are the truth."""

import numpy as np
import pytest
import torch

from stereodrr.calib.detect import attenuation_image, detect_markers
from stereodrr.geometry import StereoRig
from stereodrr.render import render_drr, render_spheres
from stereodrr.render.detector import detect as detector_counts
from stereodrr.render.detector import to_uint16
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
        cen = detect_markers(L[v], kind="line_integral", diameter_px=(3, 14), subpixel="centroid")
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

"""Bead detection against images rendered here, independently of the detector's own model: each
bead is a metal sphere whose transmission ``exp(-mu * chord)`` is integrated over each pixel by
8 x 8 supersampling, on a sloped open field, blurred, with Poisson noise."""

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from stereodrr.track.bead_detect import DETECTION_COLUMNS, BeadDetectOptions, detect_beads

SUPERSAMPLE = 8


def _supersampled_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample coordinates (OpenCV convention: pixel centres at integers)."""
    off = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    v = (np.arange(shape[0])[:, None] + off[None]).ravel()
    u = (np.arange(shape[1])[:, None] + off[None]).ravel()
    return u[None, :], v[:, None]


def _pixel_mean(fine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return fine.reshape(shape[0], SUPERSAMPLE, shape[1], SUPERSAMPLE).mean(axis=(1, 3))


def render(shape: tuple[int, int], centres: np.ndarray, radius_px: float = 3.0, mu: float = 0.4,
           blur_px: float = 1.0, slope: tuple[float, float] = (0.004, -0.003), counts: float | None = 4000.0,
           rng: np.random.Generator | None = None, discs: tuple[tuple[float, float, float, float], ...] = (),
           bars: tuple[tuple[int, int, int, int], ...] = (), letter: float = 1.0) -> np.ndarray:
    """Intensity image (bright = open field) of sphere beads at sub-pixel ``centres`` ``(N, 2)`` (u, v).

    ``discs``: large skin-marker-like discs ``(u, v, radius, attenuation)`` with a denser rim;
    ``bars``: the strokes ``(row0, row1, col0, col1)`` of one lead letter of attenuation ``letter``.
    """
    u, v = _supersampled_grid(shape)
    L = np.zeros((len(v), u.shape[1]))
    for cu, cv in np.asarray(centres, float).reshape(-1, 2):
        L += mu * 2.0 * np.sqrt(np.maximum(radius_px**2 - (u - cu) ** 2 - (v - cv) ** 2, 0.0))
    for cu, cv, r, att in discs:
        rho = np.sqrt((u - cu) ** 2 + (v - cv) ** 2)
        L += att * (rho <= r) + 2.0 * att * ((rho <= r) & (rho > r - 2.0))
    fine_field = 1.0 + slope[0] * (u - shape[1] / 2) + slope[1] * (v - shape[0] / 2)
    image = _pixel_mean(fine_field * np.exp(-L), shape)
    strokes = np.zeros(shape, bool)
    for r0, r1, c0, c1 in bars:
        strokes[r0:r1, c0:c1] = True
    image[strokes] *= np.exp(-letter)
    image = gaussian_filter(image, blur_px)
    if counts is None:
        return image * 200.0
    rng = np.random.default_rng(0) if rng is None else rng
    return rng.poisson(image * counts).astype(np.float64) / counts * 200.0


def _nearest_errors(found: pd.DataFrame, truth: np.ndarray) -> np.ndarray:
    uv = found[["u", "v"]].to_numpy()
    return np.array([uv[np.argmin(np.linalg.norm(uv - t, axis=1))] - t for t in truth])


def _grid_centres(rng: np.random.Generator, n: int = 4, spacing: float = 30.0, start: float = 25.0) -> np.ndarray:
    g = start + spacing * np.arange(n)
    return np.array([(a, b) for a in g for b in g]) + rng.uniform(-0.5, 0.5, (n * n, 2))


def test_subpixel_centres_noise_free_on_sloped_background():
    rng = np.random.default_rng(1)
    truth = _grid_centres(rng)
    found = detect_beads(render((128, 128), truth, counts=None))
    assert len(found) == len(truth)
    err = _nearest_errors(found, truth)
    assert np.abs(err).max() < 0.03, err


def test_subpixel_centres_with_poisson_noise():
    rng = np.random.default_rng(2)
    errors = []
    for _ in range(3):
        truth = _grid_centres(rng)
        found = detect_beads(render((128, 128), truth, rng=rng))
        assert len(found) == len(truth)
        errors.append(_nearest_errors(found, truth))
    err = np.concatenate(errors)
    assert np.sqrt(np.mean(err**2)) < 0.05 and np.abs(err.mean(axis=0)).max() < 0.02, err


def test_columns_and_units():
    truth = np.array([[40.3, 50.7]])
    found = detect_beads(render((96, 96), truth, counts=None).astype(np.float32))
    assert tuple(found.columns) == DETECTION_COLUMNS and len(found) == 1
    row = found.iloc[0]
    # The fitted width lies between the blurred edge's core and the shadow's full diameter (6 px).
    assert 3.0 < row.diameter_px < 7.0 and row.contrast > 0 and row.explained > 0.95
    # uint8 video frames work the same.
    as_uint8 = detect_beads(np.clip(render((96, 96), truth, counts=None), 0, 255).astype(np.uint8))
    assert np.hypot(as_uint8.u[0] - 40.3, as_uint8.v[0] - 50.7) < 0.1


def test_touching_pair_resolved():
    # Ulna-like pairs: two 6 px beads 8 px apart (their blurred shadows touch).
    truth = np.array([[40.2, 48.6], [48.3, 49.1], [40.6, 80.2], [47.1, 86.3]])
    found = detect_beads(render((128, 128), truth, counts=None))
    assert len(found) == 4
    assert np.abs(_nearest_errors(found, truth)).max() < 0.05


def test_rejects_skin_markers_letters_and_keeps_bead_inside_marker():
    beads = np.array([[30.4, 30.6], [100.2, 99.7]])  # the second sits inside a skin marker
    image = render((160, 160), beads, counts=None, discs=((100.0, 100.0, 17.5, 0.15), (40.0, 110.0, 17.5, 0.15)),
                   bars=((20, 60, 120, 125), (20, 25, 120, 140), (38, 43, 120, 135)))
    found = detect_beads(image)
    assert len(found) == 2, found
    assert np.abs(_nearest_errors(found, beads)).max() < 0.05


def test_mask_limits_the_search():
    truth = np.array([[30.2, 30.7], [90.6, 90.1]])
    image = render((128, 128), truth, counts=None)
    mask = np.zeros(image.shape, bool)
    mask[:64, :64] = True
    found = detect_beads(image, mask)
    assert len(found) == 1 and abs(found.u[0] - 30.2) < 0.05
    # A bead whose fitting window leaves the mask is not reported.
    tight = np.zeros(image.shape, bool)
    tight[25:36, 25:36] = True
    assert len(detect_beads(image, tight)) == 0


def test_flat_and_noise_images_give_no_beads():
    assert len(detect_beads(np.full((64, 64), 200.0))) == 0
    noise = np.random.default_rng(3).poisson(4000.0, (128, 128)) / 20.0
    empty = detect_beads(noise)
    assert len(empty) == 0 and tuple(empty.columns) == DETECTION_COLUMNS


def test_attenuation_images_and_quadratic_background():
    truth = np.array([[40.4, 60.2], [80.7, 50.5]])
    intensity = render((128, 128), truth, counts=None)
    attenuation = -np.log(intensity)
    for options in (BeadDetectOptions(image="attenuation"), BeadDetectOptions(image="attenuation", background="quadratic")):
        found = detect_beads(attenuation, options=options)
        assert len(found) == 2 and np.abs(_nearest_errors(found, truth)).max() < 0.03
    # Bright-is-air frames read as attenuation find nothing dark to fit.
    assert len(detect_beads(attenuation, options=BeadDetectOptions(image="intensity"))) == 0


def test_bad_input_raises():
    with pytest.raises(ValueError, match="frame 3: expected a 2D"):
        detect_beads(np.zeros((4, 64, 64)), name="frame 3")
    image = np.full((64, 64), 100.0)
    image[5, 5] = np.nan
    with pytest.raises(ValueError, match="image: contains NaN"):
        detect_beads(image)
    with pytest.raises(ValueError, match="image mask: expected a boolean array"):
        detect_beads(np.ones((64, 64)), mask=np.ones((32, 32), bool))
    with pytest.raises(ValueError, match="image mask: expected a boolean array"):
        detect_beads(np.ones((64, 64)), mask=np.ones((64, 64)))


@pytest.mark.parametrize("kwargs, match", [
    ({"diameter_px": (6.0, 3.0)}, "diameter_px"),
    ({"image": "negative"}, "image"),
    ({"background": "cubic"}, "background"),
    ({"threshold_sigma": 0.0}, "threshold_sigma"),
    ({"min_explained": 1.0}, "min_explained"),
    ({"iterations": 0}, "iterations"),
])
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BeadDetectOptions(**kwargs)


@pytest.mark.parametrize("sigma", [8.0, 20.0, 40.0])
def test_wide_tissue_level_blur_on_binned_pixels_matches_the_exact_blur(sigma):
    """Large beads' tissue level is blurred on binned pixels (speed): against OpenCV's exact
    Gaussian on a frame of tissue-like texture, it differs by under 0.2 % of the level's range
    away from the borders (and is exact where the blur is narrow)."""
    import cv2

    from stereodrr.track.bead_detect import _smooth

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:600, 0:640].astype(np.float32)
    a = (np.sin(xx / 37.0) * np.cos(yy / 53.0) + 0.002 * xx + rng.normal(0, 0.05, xx.shape)).astype(np.float32)
    exact = cv2.GaussianBlur(a, (0, 0), sigma)
    inner = (slice(100, -100), slice(100, -100))
    err = np.abs(_smooth(a, sigma) - exact)[inner].max() / np.ptp(exact[inner])
    assert err == 0.0 if sigma <= 20.0 else err < 2e-3, err

"""Steel balls under beam hardening and scatter: detected centres within 0.02 px of the exact
projection (after the two-material correction, or with the beam's own transmission curve in
the ball fit), the ball's thickness recovered, the curve against a direct spectrum sum."""

from __future__ import annotations

import numpy as np
import pytest
import xraylib

from stereodrr.calib.detect import detect_markers
from stereodrr.geometry import Camera
from stereodrr.imaging import (
    DetectorModel,
    ball_transmission,
    detector_preset,
    metal_thickness,
    remove_scatter,
    render_polychromatic,
)
from stereodrr.physics import Spectrum
from stereodrr.volume import Volume


def _scene() -> tuple[Volume, Camera, np.ndarray]:
    """A 76 mm water cylinder along z, a camera 700 mm away, three ball centres (one on the
    background's slope)."""
    n = 80
    z, y, x = np.mgrid[0:n, 0:n, 0:n] - (n - 1) / 2
    hu = np.where(x**2 + y**2 <= 38**2, 0.0, -1000.0).astype(np.float32)
    vol = Volume.from_numpy(hu, spacing=(1, 1, 1), origin=(-(n - 1) / 2,) * 3)
    cam = Camera.look_at((0, -700.0, 0), (0, 0, 0), 1100.0, 0.3, 96, 96)
    return vol, cam, np.array([[5.3, 0.0, -4.1], [-4.2, 20.0, 3.7], [0.05, -10.0, 0.1]])


def _errors(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.array([np.linalg.norm(found - e, axis=1).min() for e in exact])


def test_steel_ball_centres_under_beam_hardening_and_scatter():
    vol, cam, balls = _scene()
    exact = cam.project(balls)[0]
    # 80 kVp Al:2.5 + Cu:0.1, CsI, scatter behind a grid; noise-free so only physics moves the centres.
    det = detector_preset("fluoro80").with_(photons=None, electronic_sigma=0.0, detector_blur_px=0.0)
    img = render_polychromatic(_with_balls(vol, balls), [cam], det)["view0"]
    thick = metal_thickness(img.numpy(), det, cam)
    assert thick.max() == pytest.approx(2.0, rel=0.03)  # the 2 mm ball's central chord
    found = detect_markers(thick, kind="line_integral", diameter_px=(4, 14))[["u", "v"]].to_numpy()
    err = _errors(found, exact)
    assert len(found) == 3 and err.max() < 0.02, err
    primary = remove_scatter(img.numpy(), det, cam)
    found = detect_markers(primary, kind="line_integral", diameter_px=(4, 14),
                           transmission=ball_transmission(det))[["u", "v"]].to_numpy()
    err = _errors(found, exact)
    assert len(found) == 3 and err.max() < 0.01, err


def test_fitted_transmission_curve_removes_the_beam_hardening_bias():
    # Pixel-centre sampling in both the render and the fit: no aperture sampling error, so what
    # is left of the centre error is the model's shape alone.
    vol, cam, balls = _scene()
    exact = cam.project(balls)[0]
    det = detector_preset("fluoro80").with_(photons=None, electronic_sigma=0.0, detector_blur_px=0.0,
                                            aperture="point")
    img = render_polychromatic(_with_balls(vol, balls), [cam], det)["view0"]
    primary = remove_scatter(img.numpy(), det, cam)
    kw = {"kind": "line_integral", "diameter_px": (4, 14), "aperture": "point"}
    raw = _errors(detect_markers(primary, **kw)[["u", "v"]].to_numpy(), exact)
    fitted = _errors(detect_markers(primary, transmission=ball_transmission(det), **kw)[["u", "v"]].to_numpy(), exact)
    assert raw.max() > 0.02  # exp(-a chord) bends away from the hardened profile: a real bias
    assert fitted.max() < 0.002, fitted


def _water_and_steel_per_mm(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xraylib's linear attenuation (1/mm) of water and AISI 304 (8.0 g/cm^3) at energies ``e`` keV."""
    mu_w = np.array([xraylib.CS_Total_CP("Water, Liquid", float(k)) for k in e]) / 10.0
    steel = (("Fe", 0.695), ("Cr", 0.190), ("Ni", 0.095), ("Mn", 0.020))
    mu_s = np.array([sum(f * xraylib.CS_Total(xraylib.SymbolToAtomicNumber(z), float(k)) for z, f in steel)
                     for k in e]) * 8.0 / 10.0
    return mu_w, mu_s


def test_ball_transmission_monochromatic_limit_and_direct_sum():
    a = np.linspace(0.0, 6.0, 25)
    mono = ball_transmission(DetectorModel(spectrum=Spectrum.monochromatic(60.0)))
    for bg in (0.0, 2.5):
        np.testing.assert_allclose(mono(a, bg), np.exp(-a), rtol=1e-6, atol=1e-9)
    # 80 kVp, ideal detector (weights S E), 50 mm water under the ball: the curve against a
    # direct sum over the spectrum with xraylib's water and AISI 304.
    spec = Spectrum.from_tube(80.0, "Al:2.5")
    curve = ball_transmission(DetectorModel(spectrum=spec))
    e, s = spec.energies_kev, spec.weights
    mu_w, mu_s = _water_and_steel_per_mm(e)
    w = s * e * np.exp(-mu_w * 50.0)
    bg = -np.log(w.sum() / (s * e).sum())
    mu0 = (w * mu_s).sum() / w.sum()
    thickness = np.array([0.0, 0.3, 1.0, 2.0])
    direct = np.array([(w * np.exp(-mu_s * t)).sum() / w.sum() for t in thickness])
    np.testing.assert_allclose(curve(mu0 * thickness, bg), direct, rtol=2e-3)
    assert direct[-1] > 1.2 * np.exp(-mu0 * 2.0)  # hardening: the centre transmits more than exp(-a)


def test_ball_transmission_per_pixel_background_against_direct_sums():
    # a on the scale of 50 mm of water, seen through 20, 50 and 120 mm: each against a direct sum
    # over the spectrum for the same steel thickness, and the scalar curve where bg == ref.
    spec = Spectrum.from_tube(80.0, "Al:2.5")
    curve = ball_transmission(DetectorModel(spectrum=spec))
    e, s = spec.energies_kev, spec.weights
    mu_w, mu_s = _water_and_steel_per_mm(e)

    def weights(water_mm: float) -> np.ndarray:
        return s * e * np.exp(-mu_w * water_mm)

    neglog = {mm: -np.log(weights(mm).sum() / (s * e).sum()) for mm in (20.0, 50.0, 120.0)}
    w_ref = weights(50.0)
    mu0_ref = (w_ref * mu_s).sum() / w_ref.sum()
    thickness = np.array([0.3, 1.0, 2.0])
    bgs = np.array([neglog[20.0], neglog[50.0], neglog[120.0]])
    got = curve(mu0_ref * thickness[:, None], bgs[None, :], neglog[50.0])
    for j, mm in enumerate((20.0, 50.0, 120.0)):
        w = weights(mm)
        direct = np.array([(w * np.exp(-mu_s * t)).sum() / w.sum() for t in thickness])
        np.testing.assert_allclose(got[:, j], direct, rtol=2e-3)
    np.testing.assert_allclose(got[:, 1], curve(mu0_ref * thickness, neglog[50.0]), rtol=1e-4)
    # a harder beam under more water: the same steel transmits more
    assert np.all(got[:, 2] > got[:, 0])
    with pytest.raises(ValueError, match="ref"):
        curve(thickness, bgs)


def _with_balls(vol, balls):
    """The CT ``vol`` (HU) and three 2 mm steel balls at ``balls``."""
    from stereodrr.imaging import Balls, Scene, Voxels

    return Scene((Voxels(vol),), Balls.of(balls, np.full(3, 2.0), ["stainless_steel"] * 3))

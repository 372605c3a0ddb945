"""DetectorModel: the monochromatic chain equals detect(), scintillator absorption against
Beer-Lambert by hand, polychromatic noise statistics, gain/offset/bits/saturation, scatter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera
from stereodrr.imaging import DetectorModel, detect, detector_preset
from stereodrr.physics import LAYERS, SCATTER_MODELS, ScintillatorLayer, Spectrum
from stereodrr.physics.attenuation import mass_attenuation, mass_photoabsorption
from stereodrr.physics.scatter import AntiScatterGrid, ScatterModel, add_scatter


def _water_channels(mm: float, shape=(64, 64)) -> torch.Tensor:
    return torch.full((1, *shape), float(mm), dtype=torch.float64)


def test_monochromatic_model_reproduces_detect_bit_for_bit():
    L = torch.rand(50, 60, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    mu_w = mass_attenuation("Water, Liquid", 60.0)[0] / 10
    det = DetectorModel(spectrum=Spectrum.monochromatic(60.0), photons=500.0, detector_blur_px=0.7,
                        focal_spot_blur_px=0.4)
    t, q = det.transmission((L / mu_w)[None], ["water"])
    assert torch.allclose(t, torch.exp(-L), rtol=1e-12) and torch.allclose(q, t / 500.0 * 500.0, rtol=1e-12)
    ref = detect(L, 500.0, detector_blur_px=0.7, focal_spot_blur_px=0.4, seed=5)
    assert torch.allclose(det.counts(t, q, seed=5), ref, rtol=1e-12)


def test_scintillator_absorption_by_hand_and_ideal_response():
    csi = LAYERS["csi"]
    e = np.array([20.0, 33.2, 36.0, 60.0, 100.0])
    mu = mass_attenuation("Cesium Iodide", e) * 4.51 / 10
    eta = mass_photoabsorption("Cesium Iodide", e) / mass_attenuation("Cesium Iodide", e) * (1 - np.exp(-mu * 0.6))
    assert csi.density == pytest.approx(4.51)
    assert np.allclose(csi.absorption(e), eta, rtol=1e-12)
    assert eta[0] > 0.9 and eta[-1] < 0.5 and eta[2] > eta[1]  # Cs/I K edges at 33-36 keV raise absorption
    assert np.allclose(DetectorModel().response(e), e)  # ideal: eta = 1
    with pytest.raises(ValueError, match="unknown material or compound 'Unobtainium'"):
        ScintillatorLayer("Unobtainium", 0.5)


def test_polychromatic_quantum_noise_mean_and_variance():
    det = DetectorModel(spectrum=Spectrum.from_tube(80.0, "Al:2.5"), layer=LAYERS["csi"], photons=2000.0)
    t, q = det.transmission(_water_channels(100.0, (256, 256)), ["water"])
    counts = det.counts(t, q, seed=3)
    # Independent expectation: the sums over the spectrum by numpy.
    s, e = det.spectrum.weights, det.spectrum.energies_kev
    eps = det.response(e)
    tr = np.exp(-mass_attenuation("Water, Liquid", e) * 100.0 / 10)
    mean = 2000.0 * (s * eps * tr).sum() / (s * eps).sum()
    var = 2000.0 * (s * eps * e * tr).sum() / (s * eps).sum() ** 2  # each photon absorbed (eta) or not
    assert float(counts.mean()) == pytest.approx(mean, rel=5e-3)
    assert float(counts.var()) == pytest.approx(var, rel=0.03)
    assert var > mean  # energy-weighted counting: variance above Poisson's (Swank)


def test_one_line_through_a_scintillator_counts_the_absorbed_quanta():
    """100 keV on 600 um CsI absorbs eta ~ 0.38 of the photons: the signal, scaled to N0 in the
    open field, is Poisson(eta N0) / eta, of variance N0 / eta (not N0: every incident photon
    detected). Checked against numpy's own draws of the absorbed quanta."""
    det = DetectorModel(spectrum=Spectrum.monochromatic(100.0), layer=LAYERS["csi"], photons=1e4)
    eta = float(LAYERS["csi"].absorption(np.array([100.0]))[0])
    assert 0.3 < eta < 0.45
    t, q = det.transmission(_water_channels(0.0, (256, 256)), ["water"])
    counts = det.counts(t, q, seed=1)
    ref = np.random.default_rng(1).poisson(eta * 1e4, size=256 * 256) / eta
    assert float(counts.mean()) == pytest.approx(1e4, rel=2e-3)
    assert float(counts.var()) == pytest.approx(float(ref.var()), rel=0.03)
    assert float(counts.var()) == pytest.approx(1e4 / eta, rel=0.03)


def test_a_mu_only_scene_behind_a_scintillator_counts_the_absorbed_quanta():
    """The mu route (a scene known by its mu, decomposition 'none') drew plain Poisson(N0 t)
    behind a scintillator: variance N0 t, 15 % low for 600 um CsI at 60 keV (eta 0.84). It must
    be Poisson(eta N0 t) / eta, as the materials route draws it for the same one-line detector."""
    from stereodrr.imaging import Scene, Voxels, simulate
    from stereodrr.render import Projector
    from stereodrr.volume import Volume

    cam = Camera(np.array([[2000.0, 0, 63.5], [0, 2000.0, 63.5], [0, 0, 1]]), np.eye(3), np.array([0, 0, 500.0]),
                 128, 128, (0.5, 0.5))
    slab = Volume.from_numpy(np.zeros((20, 100, 100), np.float32), origin=(-49.5, -49.5, -9.5))  # 20 mm water (HU 0)
    det = DetectorModel(spectrum=Spectrum.monochromatic(60.0), layer=LAYERS["csi"], photons=1000.0)
    eta = float(LAYERS["csi"].absorption(np.array([60.0]))[0])
    t = math.exp(-mass_attenuation("Water, Liquid", 60.0)[0] / 10 * 20.0)  # xraylib water, 20 mm
    counts = {}
    for route in ("none", "water"):
        scene = Scene((Voxels(slab, "hu"),), energy_kev=60.0, decomposition=route)
        counts[route] = simulate(scene, [cam], Projector("exact"), det, seed=2)["view0"].double()
    assert torch.allclose(counts["none"], counts["water"], rtol=1e-5)  # the same draws through either route
    c = counts["none"]
    assert float(c.mean()) == pytest.approx(1000.0 * t, rel=3e-3)
    assert float(c.var()) == pytest.approx(1000.0 * t / eta, rel=0.04)


def test_gain_offset_bits_and_saturation():
    det = DetectorModel(photons=1e4, gain=8.0, offset=100.0, bit_depth=16)
    t = torch.tensor([[1.0, 0.5, 1e-9]], dtype=torch.float64)
    c = det.counts(t, t / 1.0, seed=0)
    assert float(c[0, 0]) == 65535.0  # 8 x 1e4 + 100 saturates 16 bits
    assert torch.equal(c, c.round()) and float(c[0, 2]) == 100.0
    assert abs(float(c[0, 1]) - (8 * 5000 + 100)) < 8 * 5 * math.sqrt(5000)
    img = det.negative_log(c)
    assert float(img[0, 1]) == pytest.approx(math.log(2), abs=0.05)
    assert float(img[0, 2]) == pytest.approx(-math.log(0.5 / 1e4))  # starved pixel: floored, finite
    noiseless = DetectorModel()
    open_field = noiseless.image(_water_channels(0.0, (2, 2)), ["water"])
    assert torch.allclose(open_field, torch.zeros(2, 2, dtype=torch.float64))


def test_description_round_trips_into_json(unchecked):
    import json

    d = detector_preset("fluoro80").to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["layer"]["material"] == "Cesium Iodide" and d["scatter"]["grid"]["primary_transmission"] == 0.7
    assert d["spectrum"]["kvp"] == 80 and 3.5 < d["spectrum"]["hvl_al_mm"] < 5.5 and d["bit_depth"] == 16
    with pytest.raises(ValueError, match="unknown detector preset 'xray9000'"):
        detector_preset("xray9000")
    with pytest.raises(ValueError, match="aperture"):
        DetectorModel(aperture="round")
    with pytest.raises(ValueError, match="electronic_sigma: expected at most"):
        DetectorModel(photons=1e4, electronic_sigma=1e308)  # its float32 draws would be inf


@pytest.mark.parametrize("make", [
    *(lambda name=name: detector_preset(name) for name in ("mono60", "ideal80", "fluoro80", "radiography120")),
    lambda: DetectorModel(spectrum=Spectrum.from_table([40.0, 60.5, 80.0], [1.0, 2.0, 0.25]).filtered("Cu", 0.1),
                          layer=ScintillatorLayer("Gd2O2S", 0.3, 7.3), scatter=SCATTER_MODELS["kernel"]),
    lambda: DetectorModel(spectrum=Spectrum.from_tube(70.0, "Al:2.123456789", min_fraction=1e-3).filtered("Al", 1.0)
                          .filtered("Water, Liquid", 20.0), focal_spot_blur_px=0.7, detector_blur_px=1.1,
                          photons=500.0, electronic_sigma=3.0, gain=2.5, offset=10.0, bit_depth=12, aperture="point",
                          subpixels=3),
], ids=["mono60", "ideal80", "fluoro80", "radiography120", "table_filtered", "tube_filtered"])
def test_from_dict_of_to_dict_is_the_same_detector(make, unchecked):
    """``from_dict(to_dict(x)) == x`` through JSON, spectrum bins included: a filtered spectrum
    came back unfiltered (Spectrum.filtered's filter was not read back: 53.1 keV mean became
    42.9 keV for 80 kVp + 0.3 mm Cu), a table made in code could not be read back at all, a
    filter's thickness kept 6 digits, ``min_fraction`` was lost, and no model compared equal
    (the spectrum compared by identity)."""
    import json

    det = make()
    back = DetectorModel.from_dict(json.loads(json.dumps(det.to_dict())))
    assert back == det
    assert np.array_equal(back.spectrum.energies_kev, det.spectrum.energies_kev)
    assert np.array_equal(back.spectrum.fluence, det.spectrum.fluence)
    assert back.spectrum.mean_energy_kev == det.spectrum.mean_energy_kev


@pytest.mark.parametrize("spec", [{"kvp": 80, "filtre": "Cu:1"}, {"kv": 80}, {"energy_kev": 60, "kvp": 80}, "fluoro80"])
def test_a_spectrum_spec_with_a_key_of_no_form_is_refused(spec, unchecked):
    """{"kvp": 80, "filtre": "Cu:1"} made the default Al:2.5 beam without a word; {"kv": 80}
    failed as "detector: 'kvp'", a string as "string indices must be integers"."""
    with pytest.raises(ValueError, match=r'spectrum: expected null, \{"kvp": kV'):
        DetectorModel.from_dict({"spectrum": spec})


@pytest.mark.parametrize("d, match", [({"photons": "1e4"}, "photons: expected a number or null, got '1e4'"),
                                      ({"gain": "x"}, "gain: expected a number, got 'x'"),
                                      ({"detector_blur_px": None}, "detector_blur_px: expected a number, got None"),
                                      ({"subpixels": True}, "subpixels: expected a number, got True")])
def test_a_detector_field_of_the_wrong_type_is_named(d, match, unchecked):
    """A JSON string or null for a number failed as "'<' not supported between 'int' and 'str'"."""
    with pytest.raises(ValueError, match=f"detector: {match}"):
        DetectorModel.from_dict(d)
    assert DetectorModel.from_dict({"photons": np.float32(1e4), "bit_depth": np.int64(12)}).bit_depth == 12


def test_a_filtered_beam_reads_back_filtered(unchecked):
    import json

    beam = Spectrum.from_tube(80.0, "Al:2.5")
    hard = beam.filtered("Cu", 0.3)
    e = beam.energies_kev  # independent: Beer-Lambert per bin with xraylib Cu (8.96 g/cm^3)
    want = beam.fluence * np.exp(-8.96 * mass_attenuation("Cu", e) * 0.3 / 10)
    back = Spectrum.from_dict(json.loads(json.dumps(hard.to_dict())))
    assert np.allclose(back.fluence, want, rtol=1e-12) and back.mean_energy_kev > beam.mean_energy_kev + 5
    with pytest.raises(ValueError, match="filter: thickness of 'Cu' must be >= 0 mm, got -0.3"):
        beam.filtered("Cu", -0.3)  # was a beam amplified by exp(+mu x)
    with pytest.raises(ValueError, match="density of 'Cu'"):
        beam.filtered("Cu", 0.3, density=0.0)


def test_scatter_of_a_uniform_slab_is_its_spr():
    m = ScatterModel(spr_per_cm=0.2, field_area_cm2=100.0, kernel_sigma_mm=20.0)
    mu = 0.02  # 1/mm
    p = torch.full((200, 200), math.exp(-mu * 150.0), dtype=torch.float64)
    prim, sc = add_scatter(p, m, pixel_spacing_mm=1.0, field_area_cm2=400.0, mu_water_per_mm=mu)
    spr = 0.2 * 15.0 * (1 - math.exp(-4.0))
    assert float(sc[100, 100] / prim[100, 100]) == pytest.approx(spr, rel=1e-3)  # centre: full kernel support
    assert float(sc[0, 0]) < 0.4 * float(sc[100, 100])  # field corner: a quarter of the kernel
    gp, gs = add_scatter(p, ScatterModel(0.2, 100.0, 20.0, AntiScatterGrid()), pixel_spacing_mm=1.0,
                         field_area_cm2=400.0, mu_water_per_mm=mu)
    assert float(gs[100, 100] / gp[100, 100]) == pytest.approx(spr * 0.1 / 0.7, rel=1e-3)
    assert SCATTER_MODELS["none"] is None
    with pytest.raises(ValueError, match="fraction"):
        AntiScatterGrid(primary_transmission=1.5)


def test_scatter_in_the_chain_lowers_the_negative_log_image():
    cam = Camera.from_detector(1200.0, 0.5, 64, 64)
    chans = _water_channels(150.0)
    base = DetectorModel(spectrum=Spectrum.monochromatic(60.0))
    with_s = base.with_(scatter=SCATTER_MODELS["kernel"])
    a, b = base.image(chans, ["water"], cam), with_s.image(chans, ["water"], cam)
    assert float(a.mean()) == pytest.approx(150.0 * mass_attenuation("Water, Liquid", 60.0)[0] / 10, rel=1e-9)
    assert float(b.max()) < float(a.min())
    with pytest.raises(ValueError, match="needs the view's camera"):
        with_s.image(chans, ["water"])

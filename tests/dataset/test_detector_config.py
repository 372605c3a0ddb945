"""Dataset configs carry the whole DetectorModel: spectrum, layer, scatter, focal spot, gain,
bits; the manifest records it; the monochromatic default keeps its items."""

import json

import numpy as np
import pytest
import torch

from stereodrr.dataset import generate_dataset, item_detector, load_manifest, sample_item, validate_config
from stereodrr.dataset.generate import render_item
from stereodrr.physics import gaussian_blur


def test_default_detector_is_the_monochromatic_model(tiny_config):
    det = item_detector(tiny_config, sample_item(tiny_config, 0))
    assert det.spectrum.is_monochromatic and det.spectrum.energies_kev[0] == 60.0
    assert det.layer is None and det.scatter is None and det.focal_spot_blur_px == 0.0


def test_focal_spot_reaches_the_images_without_moving_other_draws(tiny_raw):
    base = validate_config(tiny_raw)
    tiny_raw["detector"] = {"focal_spot_blur_px": 1.5, "noise": "none", "photons_per_pixel": 1e4}
    tiny_raw["output"] = {"format": "tiff32"}
    blurred = validate_config(tiny_raw)
    a, b = sample_item(base, 2), sample_item(blurred, 2)
    assert b.focal_spot_blur_px == 1.5 and (a.stereo_angle_deg, a.noise_seed) == (b.stereo_angle_deg, b.noise_seed)
    tiny_raw["detector"]["focal_spot_blur_px"] = 0.0
    sharp = render_item(validate_config(tiny_raw), 2).views["left"].image
    soft = render_item(blurred, 2).views["left"].image
    assert np.abs(soft - sharp).max() > 10  # counts of 1e4 photons
    assert np.allclose(soft, gaussian_blur(torch.as_tensor(sharp, dtype=torch.float64), 1.5).numpy(), rtol=1e-5)


def test_polychromatic_dataset_records_its_detector(tmp_path, tiny_raw):
    tiny_raw["detector"] = {"spectrum": {"kvp": 80, "filter": "Al:2.5"}, "layer": "csi", "scatter": "grid",
                            "photons_per_pixel": 5e3, "gain": 2.0, "offset": 50, "bit_depth": 16}
    cfg = validate_config(tiny_raw)
    rep = generate_dataset(cfg, tmp_path / "ds", 2, workers=0, progress=False)
    assert rep.written == 2 and not rep.failed
    m = load_manifest(tmp_path / "ds")
    d = json.loads(m["detector"].iloc[0])
    assert d["spectrum"]["kvp"] == 80 and d["layer"]["material"] == "Cesium Iodide" and d["scatter"]["grid"]
    assert d["gain"] == 2.0 and d["offset"] == 50 and d["bit_depth"] == 16 and m["scale"].iloc[0] == 1.0
    img = render_item(cfg, 0).views["left"].image
    # Raw counts: an open-field pixel would read 2 x 5e3 + 50; through the torso less, never below the offset - noise.
    assert img.dtype == np.uint16 and 0 < img.min() and img.max() < 2 * 5e3 + 50 + 500


@pytest.mark.parametrize("detector, message", [
    ({"spectrum": {"kvp": 900}}, "detector.spectrum: kvp: 900 kV is outside"),
    ({"spectrum": {"kv": 80}}, "detector.spectrum: expected null"),
    ({"layer": "selenium"}, "detector.layer: expected one of"),
    ({"layer": {"material": "Xq", "thickness_mm": 0.5}}, "detector.layer: unknown material or compound 'Xq'"),
    ({"scatter": "lots"}, "detector.scatter: expected one of"),
    ({"bit_depth": 24}, "detector.bit_depth: expected 1-16 bits"),
    ({"gain": 0}, "detector.gain"),
    ({"focal_spot_blur_px": -1}, "detector.focal_spot_blur_px"),
])
def test_bad_detector_keys(tiny_raw, detector, message):
    tiny_raw["detector"] = detector
    with pytest.raises(ValueError, match=message):
        validate_config(tiny_raw)

"""Dataset configs with an image intensifier: validation, per-item draws, and markers where the
recorded image shows them."""

from pathlib import Path

import numpy as np
import pytest

from stereodrr.dataset import config_digest, item_detector, sample_item, validate_config
from stereodrr.dataset.generate import render_item
from stereodrr.distortion import PRESETS, intensifier_field, scaled_field


def test_null_leaves_a_flat_panel_config_and_its_digest_as_before(tiny_raw):
    plain = validate_config(tiny_raw)
    tiny_raw["detector"] = {"distortion": None}
    assert "distortion" not in plain["detector"]
    assert config_digest(validate_config(tiny_raw)) == config_digest(plain)


def test_preset_name_and_ranges_normalise(tiny_raw):
    tiny_raw["detector"] = {"distortion": "strong"}
    assert validate_config(tiny_raw)["detector"]["distortion"] == {"preset": "strong"}
    tiny_raw["detector"] = {"distortion": {"preset": "mild", "s_deg": [0.2, 1.0], "k1": 0.01}}
    d = validate_config(tiny_raw)["detector"]["distortion"]
    assert d == {"preset": "mild", "s_deg": [0.2, 1.0], "k1": [0.01, 0.01]}


@pytest.mark.parametrize("spec, where", [
    ("wild", "detector.distortion.preset"),
    ({"preset": "strong", "k3": 0.1}, "detector.distortion.k3"),
    ({"k1": 3.0}, "detector.distortion.k1"),
    ({"fov_fraction": [0.5, 0.0]}, "detector.distortion.fov_fraction"),
    (12, "detector.distortion"),
])
def test_bad_distortion_is_named(tiny_raw, spec, where):
    tiny_raw["detector"] = {"distortion": spec}
    with pytest.raises(ValueError, match=where.replace(".", r"\.")):
        validate_config(tiny_raw)


def test_a_detector_too_small_for_a_field_is_refused(tiny_raw):
    tiny_raw["rig"]["detector_px"] = [6, 24]
    tiny_raw["detector"] = {"distortion": "mild"}
    with pytest.raises(ValueError, match=r"detector\.distortion with rig\.detector_px \[6, 24\]"):
        validate_config(tiny_raw)


def test_draws_follow_every_other_draw_and_scale_to_the_detector(tiny_raw):
    plain = validate_config(tiny_raw)
    tiny_raw["detector"] = {"distortion": {"preset": "strong", "s_deg": [0.2, 1.0]}}
    cfg = validate_config(tiny_raw)
    a, b = sample_item(plain, 5), sample_item(cfg, 5)
    # Adding an intensifier changes no other parameter of any item.
    assert {k: v for k, v in vars(b).items() if k != "distortion"} == {k: v for k, v in vars(a).items() if k != "distortion"}
    assert a.distortion is None
    s = [sample_item(cfg, i).distortion["s_deg"] for i in range(8)]
    assert all(0.2 <= x <= 1.0 for x in s) and len(set(s)) == 8
    assert {k: v for k, v in b.distortion.items() if k != "s_deg"} == {k: v for k, v in PRESETS["strong"].items() if k != "s_deg"}
    field = item_detector(cfg, b).distortion
    assert field == scaled_field(b.distortion, b.width, b.height)
    # With the preset's own value the field is the preset's, at the item's size.
    tiny_raw["detector"] = {"distortion": "strong"}
    fixed = sample_item(validate_config(tiny_raw), 5)
    assert item_detector(validate_config(tiny_raw), fixed).distortion == intensifier_field("strong", fixed.width, fixed.height)


def _centroid(a: np.ndarray, u: float, v: float) -> np.ndarray:
    """Attenuation-weighted centroid of a 7x7 window above the local background (independent
    of the distortion code: what a user's blob finder would report)."""
    i, j = int(round(v)), int(round(u))
    w = np.clip(a[i - 3:i + 4, j - 3:j + 4] - np.median(a[i - 6:i + 7, j - 6:j + 7]), 0, None)
    yy, xx = np.mgrid[i - 3:i + 4, j - 3:j + 4]
    return np.array([(xx * w).sum(), (yy * w).sum()]) / w.sum()


def test_markers_uv_are_where_the_recorded_image_shows_them():
    phantom = Path(__file__).resolve().parents[2] / "phantoms" / "lego_cube.json"
    cfg = validate_config({
        "subject": {"kind": "phantom", "path": str(phantom), "voxel_mm": 1.0},
        "rig": {"detector_px": [128, 128], "pixel_spacing_mm": 1.2},
        "pose": {"rotation_deg": [0, 0, 0], "translation_mm": [0, 0, 0]},
        "detector": {"noise": "none", "distortion": {"k1": 0.2}}})
    item = render_item(cfg, 0)
    for view in item.views.values():
        pinhole = view.camera.project(item.markers_xyz)[0]
        a = -np.log(view.image.astype(float) / view.image.max())
        inside = view.markers_in_image & np.all((view.markers_uv > 7) & (view.markers_uv < 120), axis=1)
        assert inside.sum() > 20
        found = np.array([_centroid(a, u, v) for u, v in view.markers_uv[inside]])
        to_recorded = np.hypot(*(found - view.markers_uv[inside]).T)
        to_pinhole = np.hypot(*(found - pinhole[inside]).T)
        assert np.median(to_recorded) < 0.4 and np.median(to_pinhole) > 1.2, (np.median(to_recorded), np.median(to_pinhole))

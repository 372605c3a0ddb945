import json

import pytest

from stereodrr.dataset import DEFAULT_CONFIG, config_digest, load_config, validate_config


def test_defaults_validate_and_fill():
    cfg = validate_config({})
    assert cfg["rig"]["stereo_angle_deg"] == [3.0, 7.0]
    assert cfg["output"]["format"] == "png16"
    assert set(cfg) == set(DEFAULT_CONFIG)


def test_equivalent_configs_have_one_digest():
    a = validate_config({"rig": {"stereo_angle_deg": 5, "pixel_spacing_mm": [0.8, 0.8]}})
    b = validate_config({"rig": {"stereo_angle_deg": [5.0, 5.0], "pixel_spacing_mm": 0.8}})
    assert config_digest(a) == config_digest(b)
    assert config_digest(a) != config_digest(validate_config({"seed": 1}))


@pytest.mark.parametrize("raw, key", [
    ({"sede": 1}, "'sede'"),
    ({"rig": {"stereo_angel_deg": 5}}, "'rig.stereo_angel_deg'"),
    ({"detector": {"photons": 5}}, "'detector.photons'"),
    ({"subject": {"kind": "torso", "path": "x"}}, "'subject.path'"),
    ({"rig": {"stereo_angle_deg": [7, 3]}}, "rig.stereo_angle_deg"),
    ({"rig": {"stereo_angle_deg": 0}}, "rig.stereo_angle_deg"),
    ({"rig": {"stereo_angle_deg": [3, 200]}}, "rig.stereo_angle_deg"),
    ({"rig": {"sid_mm": [700, 1300], "sdd_mm": 1200}}, "rig.sid_mm"),
    ({"rig": {"pixel_spacing_mm": -0.1}}, "rig.pixel_spacing_mm"),
    ({"rig": {"detector_px": [[256, 0]]}}, "rig.detector_px"),
    ({"rig": {"kind": "triplanar"}}, "rig.kind"),
    ({"rig": {"kind": "convergent", "views": 3}}, "rig.views"),
    ({"pose": {"rotation_deg": [[-5, 5], [-5, 5]]}}, "pose.rotation_deg"),
    ({"pose": {"translation_mm": [[-5, 5], [5, -5], [0, 0]]}}, "pose.translation_mm[1]"),
    ({"detector": {"photons_per_pixel": [0, 10]}}, "detector.photons_per_pixel"),
    ({"detector": {"photons_per_pixel": 1e20}}, "detector.photons_per_pixel"),  # Poisson draws fail above 1e12
    ({"detector": {"noise": "none", "electronic_sigma": 2}}, "detector.electronic_sigma"),
    ({"detector": {"noise": "gaussian"}}, "detector.noise"),
    ({"energy_kev": 500}, "energy_kev"),
    ({"output": {"format": "jpeg"}}, "output.format"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"render": {"step_mm": float("nan")}}, "render.step_mm"),
])
def test_bad_config_names_the_key(raw, key):
    with pytest.raises(ValueError) as err:
        validate_config(raw)
    assert key in str(err.value)


def test_subject_file_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="subject.path"):
        validate_config({"subject": {"kind": "volume", "path": "missing.nii.gz"}}, base_dir=tmp_path)
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"subject": {"kind": "volume", "path": "ct.nii.gz"}}))
    cfg = load_config(cfg_file)  # relative to the config's folder
    assert cfg["subject"]["path"] == str((tmp_path / "ct.nii.gz").resolve())


def test_load_config_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: malformed JSON at line 1, column 2"):
        load_config(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_config(bad)

"""Phantom files and the model: loading, round trip, world placement, ground truth, bad input."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stereodrr.geometry import rotvec_to_matrix, transform_points
from stereodrr.phantoms import (
    MARKER_COLUMNS,
    Marker,
    Phantom,
    get_material,
    load_phantom,
    phantom_from_dict,
    phantom_to_dict,
    rigid_pose,
    save_phantom,
)

ROOT = Path(__file__).resolve().parents[2]
FILES = ["lego_stereo", "lego_cube", "torso"]


def _spec(**over):
    spec = {
        "schema": "stereodrr.phantom/1", "name": "tiny",
        "bodies": [{"type": "box", "material": "abs", "size": [10, 10, 10]},
                   {"type": "lego_brick", "studs": [2, 2], "material": "abs", "center": [0, 0, 20]}],
        "markers": [{"id": 1, "center": [0, 0, 5], "diameter": 1.5, "material": "stainless_steel"},
                    {"id": 2, "center": [3, 0, 5], "diameter": 2.0, "material": "tantalum"}],
    }
    spec.update(over)
    return spec


@pytest.mark.parametrize("name", FILES)
def test_definition_files_load_and_round_trip(name, tmp_path):
    ph = load_phantom(ROOT / "phantoms" / f"{name}.json")
    assert ph.name == name and ph.bodies
    again = load_phantom(save_phantom(ph, tmp_path / "again.json"))
    pd.testing.assert_frame_equal(again.marker_table(), ph.marker_table())
    assert len(again.bodies) == len(ph.bodies)
    for a, b in zip(ph.bodies, again.bodies):
        assert a.shape == b.shape and a.material is b.material
        assert np.allclose(a.pose, b.pose, atol=1e-12)
    assert np.allclose(again.pose, ph.pose, atol=1e-12)


def test_marker_table_and_arrays_are_in_world_mm():
    ph = phantom_from_dict(_spec())
    T = rigid_pose((10.0, -20.0, 30.0), (5.0, 6.0, -7.0))
    moved = ph.moved(T)
    table = moved.marker_table()
    assert list(table.columns) == MARKER_COLUMNS
    expected = transform_points(T, np.array([[0.0, 0, 5], [3, 0, 5]]))
    assert np.allclose(table[["x", "y", "z"]].to_numpy(), expected, atol=1e-12)
    assert table.marker_id.tolist() == [1, 2] and table.material.tolist() == ["stainless_steel", "tantalum"]
    arr = moved.marker_arrays(60.0)
    assert np.allclose(arr.centers, expected) and arr.diameters.tolist() == [1.5, 2.0]
    assert arr.mu.tolist() == [get_material("stainless_steel").mu(60.0), get_material("tantalum").mu(60.0)]
    # Moving twice composes; with_pose replaces.
    assert np.allclose(moved.moved(T).marker_centers, transform_points(T, expected))
    assert np.allclose(moved.with_pose(np.eye(4)).marker_centers, ph.marker_centers)


def test_rigid_pose_is_extrinsic_xyz_in_degrees():
    T = rigid_pose((90.0, 0.0, 90.0), (1.0, 2.0, 3.0))
    # Rotate about x by 90 (y -> z), then about z by 90 (x -> y): e_y -> e_z -> e_z.
    R_expected = rotvec_to_matrix(np.array([0, 0, np.pi / 2])) @ rotvec_to_matrix(np.array([np.pi / 2, 0, 0]))
    assert np.allclose(T[:3, :3], R_expected) and np.allclose(T[:3, 3], [1, 2, 3])


def test_file_pose_places_the_phantom():
    spec = _spec(pose={"rotation_deg": [0, 0, 90], "translation_mm": [100, 0, 0]})
    c = phantom_from_dict(spec).marker_centers
    assert np.allclose(c, [[100, 0, 5], [100, 3, 5]], atol=1e-12)


def _write(tmp_path, text) -> Path:
    p = tmp_path / "bad.json"
    p.write_text(text)
    return p


@pytest.mark.parametrize("mutate, pattern", [
    (lambda s: s["bodies"][0].update(type="pyramid"), r"bodies\[0\]\.type: unknown primitive 'pyramid'"),
    (lambda s: s["bodies"][1].update(material="lego"), r"bodies\[1\]\.material: unknown material 'lego'"),
    (lambda s: s["markers"][1].update(material="gold"), r"markers\[1\]\.material: unknown material 'gold'"),
    (lambda s: s["markers"][1].update(id=1), r"duplicate marker id\(s\) \[1\]"),
    (lambda s: s["bodies"][0].update(size=[10, -1, 10]), r"bodies\[0\]\.size: expected 3 positive"),
    (lambda s: s["markers"][0].update(diameter=-1.5), r"markers\[0\]\.diameter: expected a positive"),
    (lambda s: s["markers"][1].update(center=[1.0, 0, 5]), r"markers 1 and 2 overlap"),
    (lambda s: s["bodies"][0].update(sise=[1, 1, 1]), r"bodies\[0\]: unexpected field\(s\) \['sise'\]"),
    (lambda s: s["bodies"][0].pop("material"), r"bodies\[0\]: missing field\(s\) \['material'\]"),
    (lambda s: s["bodies"][1].update(rotation_deg=[0, 0]), r"bodies\[1\]\.rotation_deg: expected 3 finite angles"),
    (lambda s: s.update(schema="other/9"), r"schema: expected 'stereodrr.phantom/1'"),
    (lambda s: s["markers"][0].update(id="a"), r"markers\[0\]\.id: expected an integer"),
])
def test_bad_fields_are_named_with_the_file(tmp_path, mutate, pattern):
    spec = _spec()
    mutate(spec)
    path = _write(tmp_path, json.dumps(spec))
    with pytest.raises(ValueError, match=pattern) as info:
        load_phantom(path)
    assert str(path) in str(info.value)


def test_malformed_json_reports_line_and_column(tmp_path):
    text = json.dumps(_spec(), indent=1).splitlines()
    text[5] = text[5].rstrip(",") + " oops,"
    path = _write(tmp_path, "\n".join(text))
    with pytest.raises(ValueError, match=rf"{path}: malformed JSON at line 6, column \d+"):
        load_phantom(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_phantom("nope.json")


def test_model_rejects_overlap_and_duplicates_directly():
    steel = get_material("stainless_steel")
    with pytest.raises(ValueError, match="overlap"):
        Phantom("p", markers=(Marker(1, [0, 0, 0], 2.0, steel), Marker(2, [1.9, 0, 0], 2.0, steel)))
    with pytest.raises(ValueError, match="duplicate"):
        Phantom("p", markers=(Marker(3, [0, 0, 0], 1.0, steel), Marker(3, [5, 0, 0], 1.0, steel)))
    with pytest.raises(ValueError, match="at least one body or marker"):
        Phantom("p")
    # Touching balls are fine.
    Phantom("p", markers=(Marker(1, [0, 0, 0], 2.0, steel), Marker(2, [2.0, 0, 0], 2.0, steel)))


def test_to_dict_is_json_serialisable():
    json.dumps(phantom_to_dict(phantom_from_dict(_spec(pose={"rotation_deg": [1, 2, 3]}))))

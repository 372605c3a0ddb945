import json

import numpy as np
import pytest

from stereodrr.geometry import (
    Camera,
    StereoRig,
    dlt_from_projection,
    load_dlt_csv,
    load_rig,
    projection_from_dlt,
    save_dlt_csv,
    save_rig,
)
from tests.conftest import random_rotation


def _odd_rig(rng):
    cams = {}
    for name in ("a", "b", "c"):
        K = np.array([[rng.uniform(2000, 5000), rng.uniform(-1, 1), rng.uniform(100, 300)],
                      [0, rng.uniform(2000, 5000), rng.uniform(100, 300)], [0, 0, 1]])
        R = random_rotation(rng)
        iso_cam = np.array([rng.normal(), rng.normal(), rng.uniform(600, 900)])
        du = rng.uniform(0.1, 0.5)
        cams[name] = Camera(K, R, iso_cam - R @ np.array([1.0, 2.0, 3.0]), 400, 300,
                            (du, rng.uniform(0.1, 0.5)), K[0, 0] * du * rng.uniform(0.995, 1.005))
    return StereoRig(cams, np.array([1.0, 2.0, 3.0]))


def test_rig_round_trip_is_exact(tmp_path, rng):
    for rig in (StereoRig.convergent(5, 750, 1200, 0.3, 512, 512), _odd_rig(rng)):
        path = save_rig(rig, tmp_path / "rig.json")
        back = load_rig(path)
        assert back == rig
        assert back.names == rig.names
        save_rig(back, tmp_path / "again.json")
        assert (tmp_path / "again.json").read_text() == path.read_text()


def test_dlt_export_reproduces_dlt_pixels(tmp_path, rng):
    rig = _odd_rig(rng)
    table = save_dlt_csv(rig, tmp_path / "dlt.csv")
    assert table.shape == (11, 3)
    assert np.array_equal(load_dlt_csv(tmp_path / "dlt.csv"), table)
    X = rng.uniform(-30, 30, size=(50, 3))
    for j, cam in enumerate(rig.cameras.values()):
        L = table[:, j]
        den = X @ L[8:11] + 1
        x = (X @ L[0:3] + L[3]) / den
        y = (X @ L[4:7] + L[7]) / den
        uv, _ = cam.project(X)
        # DLTdv/XMALab pixels: 1-based, y up from the bottom row.
        assert np.allclose(x, uv[:, 0] + 1, atol=1e-8)
        assert np.allclose(y, cam.height - uv[:, 1], atol=1e-8)
        # and back to the OpenCV projection
        P = projection_from_dlt(L, cam.height)
        assert np.allclose(P / P[2, 3], cam.P / cam.P[2, 3], rtol=1e-9, atol=1e-9)


def test_dlt_top_left_pixel_maps_to_top_row():
    # World origin 100 mm in front of the source, so the DLT normalisation L12 = 1 exists.
    cam = Camera.from_detector(1000, 1.0, 10, 8, t=np.array([0, 0, 100.0]))
    o, d = cam.pixel_to_ray(np.array([[0.0, 0.0], [9.0, 7.0]]))
    X = o + 500 * d  # seen at OpenCV pixels (0, 0) (top-left) and (9, 7) (bottom-right)
    L = dlt_from_projection(cam.P, cam.height)
    den = X @ L[8:11] + 1
    xy = np.c_[(X @ L[0:3] + L[3]) / den, (X @ L[4:7] + L[7]) / den]
    # DLTdv: column 1 / top row = y 8 (y up, 1-based); bottom-right = (10, 1).
    assert np.allclose(xy, [[1.0, 8.0], [10.0, 1.0]])


def test_dlt_height_must_be_an_image_height():
    """The XMALab y flip ``y = H - v`` took a height of 0 or NaN and gave coefficients anyway
    (NaN ones for NaN); a singular DLT gave a NaN projection matrix."""
    cam = Camera.from_detector(1000, 1.0, 10, 8, t=np.array([0, 0, 100.0]))
    L = dlt_from_projection(cam.P, cam.height)
    for height in (0, -8, float("nan"), 7.5, True):
        with pytest.raises(ValueError, match="height: expected the image height"):
            dlt_from_projection(cam.P, height)
        with pytest.raises(ValueError, match="height: expected the image height"):
            projection_from_dlt(L, height)
    assert np.allclose(projection_from_dlt(L, 8.0), projection_from_dlt(L, 8))  # 8.0 from a JSON file is a height
    with pytest.raises(ValueError, match="singular matrix"):
        projection_from_dlt(np.zeros(11), 8)


def test_dlt_origin_in_principal_plane():
    cam = Camera.from_detector(1000, 1.0, 10, 8)  # world origin at the source
    with pytest.raises(ValueError, match="principal plane"):
        dlt_from_projection(cam.P, 8)


def _write(tmp_path, data):
    p = tmp_path / "rig.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


def test_bad_rig_files(tmp_path):
    good = json.loads((save_rig(StereoRig.convergent(5, 750, 1200, 0.3, 64, 64), tmp_path / "g.json")).read_text())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rig(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="line 1, column"):
        load_rig(_write(tmp_path, '{"schema": '))
    with pytest.raises(ValueError, match="expected schema"):
        load_rig(_write(tmp_path, {**good, "schema": "other/2"}))
    with pytest.raises(ValueError, match="missing key"):
        load_rig(_write(tmp_path, {k: v for k, v in good.items() if k != "isocenter"}))
    bad = json.loads(json.dumps(good))
    del bad["views"][1]["K"]
    with pytest.raises(ValueError, match=r"views\[1\]: missing key\(s\) \['K'\]"):
        load_rig(_write(tmp_path, bad))
    bad = json.loads(json.dumps(good))
    bad["views"][0]["R"][0][0] = 2.0
    with pytest.raises(ValueError, match=r"views\[0\] \('left'\): R: expected a proper rotation"):
        load_rig(_write(tmp_path, bad))
    bad = json.loads(json.dumps(good))
    bad["isocenter"] = [0, -2000, 0]
    with pytest.raises(ValueError, match="behind the source"):
        load_rig(_write(tmp_path, bad))
    bad = json.loads(json.dumps(good))
    bad["views"][1]["name"] = "left"
    with pytest.raises(ValueError, match="duplicate view name"):
        load_rig(_write(tmp_path, bad))


def test_a_rig_whose_sdd_disagrees_with_its_k_warns(tmp_path):
    """A rig file edited by hand (SDD changed, K not): it loads, images follow K, and the warning
    says the verdict's SDD checks would compare against the other number."""
    rig = StereoRig.convergent(5, 750, 1200, 0.3, 512, 512)
    data = json.loads(save_rig(rig, tmp_path / "rig.json").read_text())
    data["views"][1]["sdd"] = 1000.0
    (tmp_path / "edited.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=r"view 'right': sdd 1000 mm disagrees with K\[0,0\] x pixel pitch = 1200 mm"):
        edited = load_rig(tmp_path / "edited.json")
    assert np.array_equal(edited["right"].P, rig["right"].P)


@pytest.mark.parametrize("key, value, error", [
    ("pixel_spacing", 0.3, None),  # one number: square pixels
    ("sdd", None, None),  # JSON null: fx * du, Camera's default
    ("pixel_spacing", "0.3", r"pixel_spacing: expected one or two positive numbers \(mm\), got '0.3'"),
    ("pixel_spacing", [0.3, 0.3, 0.3], r"pixel_spacing: expected one or two positive numbers"),
    ("width", True, r"detector size: expected positive integers, got True x 512"),
    ("width", "512", r"detector size: expected positive integers, got '512' x 512"),
    ("sdd", "1200", r"sdd: expected a positive distance in mm, got '1200'"),
])
def test_rig_file_fields_as_people_type_them(tmp_path, key, value, error):
    """A rig file written by hand: a number where a pair is expected reads as the pair, null SDD
    as the default; text, booleans and wrong lengths are one-line errors naming the view and field."""
    rig = StereoRig.convergent(5, 750, 1200, 0.3, 512, 512)
    data = json.loads(save_rig(rig, tmp_path / "rig.json").read_text())
    data["views"][0][key] = value
    (tmp_path / "typed.json").write_text(json.dumps(data))
    if error is None:
        assert load_rig(tmp_path / "typed.json") == rig
    else:
        with pytest.raises(ValueError, match=r"typed.json: views\[0\] \('left'\): " + error):
            load_rig(tmp_path / "typed.json")

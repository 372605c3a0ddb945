import numpy as np
import pandas as pd
import pytest

from stereodrr.calib.identify import identify_markers, match_views
from stereodrr.geometry import Camera


@pytest.fixture(scope="module")
def phantom_table():
    rng = np.random.default_rng(0)
    X = rng.uniform(-30, 30, (24, 3))
    return pd.DataFrame({"marker_id": np.arange(101, 125), "x": X[:, 0], "y": X[:, 1], "z": X[:, 2],
                         "diameter_mm": np.resize([1.0, 1.5, 2.0], 24)})


def _true_camera(nominal: Camera, rng: np.random.Generator, tilt_deg: float) -> Camera:
    """The 'real' view: source moved by mm, aimed off the isocenter, detector rotated in-plane."""
    a = np.radians(tilt_deg)
    return Camera.look_at(nominal.center + rng.normal(0, 4, 3), rng.normal(0, 3, 3), nominal.sdd - 5,
                          nominal.pixel_spacing, nominal.width, nominal.height, up=(np.sin(a), 0, np.cos(a)),
                          principal_offset_mm=(2.0, -1.5))


def _detections(cam, table, rng, n_spurious=4, drop=()):
    X = table[["x", "y", "z"]].to_numpy()
    uv, depth = cam.project(X)
    keep = np.setdiff1d(np.arange(len(X)), drop)
    det = np.r_[uv[keep] + rng.normal(0, 0.05, (len(keep), 2)), rng.uniform(0, 512, (n_spurious, 2))]
    dia = np.r_[table["diameter_mm"].to_numpy()[keep] * cam.K[0, 0] / depth[keep], rng.uniform(3, 10, n_spurious)]
    perm = rng.permutation(len(det))
    truth = np.full(len(det), -1)
    truth[np.argsort(perm)[: len(keep)]] = table["marker_id"].to_numpy()[keep]
    return det[perm], dia[perm], truth


@pytest.mark.parametrize("tilt", [1.5, -6.0])
def test_identifies_every_marker_despite_a_wrong_nominal_rig(rig5, phantom_table, tilt):
    rng = np.random.default_rng(1)
    found = {}
    for name, nominal in rig5.cameras.items():
        cam = _true_camera(nominal, rng, tilt)
        assert np.abs(cam.project(phantom_table[["x", "y", "z"]].to_numpy())[0]
                      - nominal.project(phantom_table[["x", "y", "z"]].to_numpy())[0]).max() > 10
        det, dia, truth = _detections(cam, phantom_table, rng, drop=[3] if name == "left" else [])
        ident = identify_markers(det, phantom_table, nominal, dia, name=name)
        np.testing.assert_array_equal(ident.table["marker_id"].to_numpy(), truth[ident.table["detection"].to_numpy()])
        assert sorted(ident.unmatched) == sorted(np.flatnonzero(truth < 0).tolist())
        assert ident.missing == ([104] if name == "left" else [])
        assert ident.table["residual_px"].max() < 0.5
        found[name] = ident
    ids, uv = match_views(found)
    assert len(ids) == 23 and 104 not in ids and uv["left"].shape == (23, 2)


def test_failure_is_reported(rig5, phantom_table):
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="could not identify"):
        identify_markers(rng.uniform(0, 512, (20, 2)), phantom_table, rig5["left"], name="left")
    with pytest.raises(ValueError, match="missing column"):
        identify_markers(rng.uniform(0, 512, (20, 2)), phantom_table.drop(columns="z"), rig5["left"])


def test_balls_in_line_are_dropped_as_overlapping():
    """Two balls on one ray from the source (one shadow on the other) and a third with a
    neighbour just clear of it: the two in line leave, the clear ones stay."""
    from stereodrr.calib.identify import Identification, drop_overlapping

    cam = Camera.look_at(np.array([0.0, -700.0, 0.0]), np.zeros(3), 1000.0, (0.2, 0.2), 400, 300)
    src = cam.center
    behind = src + 1.1 * (np.array([5.0, 0.0, 3.0]) - src)  # on the ray through ball 1, 10 % farther
    # Ball 3 and 4: 2 mm balls (about 14 px shadows) 25 px apart on the detector at the isocentre plane.
    X = np.array([[5.0, 0.0, 3.0], behind, [-20.0, 0.0, -10.0], [-20.0 + 25 * 0.2 * 0.7, 0.0, -10.0]])
    markers = pd.DataFrame({"marker_id": [1, 2, 3, 4], "x": X[:, 0], "y": X[:, 1], "z": X[:, 2],
                            "diameter_mm": 2.0})
    uv, _ = cam.project(X)
    P = cam.K @ np.c_[cam.R, cam.t]
    table = pd.DataFrame({"marker_id": [1, 2, 3, 4], "u": uv[:, 0], "v": uv[:, 1], "detection": range(4),
                          "residual_px": 0.0})
    ident = drop_overlapping(Identification(table, P, [], []), markers, cam)
    assert ident.overlapping == [1, 2]
    assert ident.table["marker_id"].tolist() == [3, 4]


def test_shadows_within_the_ball_fits_reach_are_dropped():
    """Two 1 mm balls whose shadows' rims are 4 px apart: each lies in the other's fit window
    (biased by 0.02-0.1 px, test_detect), so both leave; the reach grows with the image's blur."""
    from stereodrr.calib.detect import fit_reach_px
    from stereodrr.calib.identify import Identification, drop_overlapping, shadow_diameters_px

    cam = Camera.look_at(np.array([0.0, -700.0, 0.0]), np.zeros(3), 1000.0, (0.2, 0.2), 400, 300)
    d = float(shadow_diameters_px(cam, np.zeros((1, 3)), np.array([1.0]))[0])
    step = (d + 4.0) * 0.2 * 0.7  # centres d + 4 px apart at the isocentre plane (magnification 1/0.7)
    X = np.array([[0.0, 0.0, 0.0], [step, 0.0, 0.0], [-20.0, 0.0, -10.0]])
    markers = pd.DataFrame({"marker_id": [1, 2, 3], "x": X[:, 0], "y": X[:, 1], "z": X[:, 2], "diameter_mm": 1.0})
    uv, _ = cam.project(X)
    P = cam.K @ np.c_[cam.R, cam.t]
    table = pd.DataFrame({"marker_id": [1, 2, 3], "u": uv[:, 0], "v": uv[:, 1], "detection": range(3),
                          "residual_px": 0.0})
    ident = drop_overlapping(Identification(table, P, [], []), markers, cam)
    assert ident.overlapping == [1, 2] and ident.table["marker_id"].tolist() == [3]
    assert fit_reach_px(0.0) > 4.0 and fit_reach_px(1.0) > fit_reach_px(0.5) > fit_reach_px(0.0)
    # 3 px of gap left beyond a sharp image's reach: kept.
    far = markers.assign(x=[0.0, step + (fit_reach_px() - 1.0) * 0.2 * 0.7, -20.0])
    uv, _ = cam.project(far[["x", "y", "z"]].to_numpy())
    kept = drop_overlapping(Identification(table.assign(u=uv[:, 0], v=uv[:, 1]), P, [], []), far, cam)
    assert kept.overlapping == []

import math

import numpy as np
import pytest
import torch

from stereodrr.dataset import item_pose, item_rig, item_rng, posed_volume, sample_item, validate_config
from stereodrr.geometry import Camera, StereoRig, transform_points
from stereodrr.render import Projector, render_drr
from stereodrr.volume import Volume


def test_item_depends_only_on_seed_and_index(tiny_config):
    forward = [sample_item(tiny_config, i) for i in range(6)]
    backward = [sample_item(tiny_config, i) for i in reversed(range(6))][::-1]
    assert forward == backward
    # The same stream SeedSequence(seed).spawn(n)[i] gives, without spawning the others.
    children = np.random.SeedSequence(tiny_config["seed"]).spawn(6)
    for i in range(6):
        assert item_rng(tiny_config["seed"], i).random() == np.random.default_rng(children[i]).random()
    other = validate_config({**tiny_config, "seed": tiny_config["seed"] + 1})
    assert sample_item(other, 2) != sample_item(tiny_config, 2)


def test_samples_respect_ranges_and_log_uniform_dose():
    cfg = validate_config({"rig": {"stereo_angle_deg": [2, 9], "sid_mm": [700, 800], "sdd_mm": [1100, 1300],
                                   "detector_px": [[64, 48], [32, 32]]},
                           "pose": {"rotation_deg": [[-3, 3], [0, 0], [10, 20]]},
                           "detector": {"photons_per_pixel": [1e2, 1e6]}})
    s = [sample_item(cfg, i) for i in range(2000)]
    angle = np.array([x.stereo_angle_deg for x in s])
    assert angle.min() >= 2 and angle.max() <= 9 and abs(angle.mean() - 5.5) < 0.15
    assert all(700 <= x.sid_mm <= 800 and 1100 <= x.sdd_mm <= 1300 for x in s)
    assert {(x.width, x.height) for x in s} == {(64, 48), (32, 32)}
    rot = np.array([x.rotation_deg for x in s])
    assert np.all(rot[:, 1] == 0) and rot[:, 2].min() >= 10 and rot[:, 2].max() <= 20
    log_dose = np.log10([x.photons_per_pixel for x in s])
    # log10 I0 ~ U(2, 6): mean 4, variance 16/12.
    assert abs(log_dose.mean() - 4) < 0.1 and abs(log_dose.var() - 16 / 12) < 0.1


@pytest.mark.parametrize("kind, views", [("convergent", 2), ("biplanar", 2), ("arc", 4)])
def test_item_rig_geometry(kind, views):
    cfg = validate_config({"rig": {"kind": kind, "views": views, "stereo_angle_deg": [1, 15]}})
    s = sample_item(cfg, 5)
    iso = np.array([10.0, -20.0, 30.0])
    rig = item_rig(s, iso)
    assert len(rig) == views
    expected = 90.0 if kind == "biplanar" else (s.stereo_angle_deg / (views - 1) if kind == "arc" else s.stereo_angle_deg)
    assert rig.stereo_angle_deg() == pytest.approx(expected, abs=1e-9)
    for cam in rig.cameras.values():
        assert np.linalg.norm(cam.center - iso) == pytest.approx(s.sid_mm, rel=1e-12)
        assert cam.sdd == pytest.approx(s.sdd_mm) and (cam.width, cam.height) == (s.width, s.height)
    if kind == "convergent":
        assert rig.baseline() == pytest.approx(2 * s.sid_mm * math.sin(math.radians(s.stereo_angle_deg) / 2))


def test_pose_pivots_about_the_centre(tiny_config):
    s = sample_item(tiny_config, 4)
    c = np.array([5.0, 6.0, -7.0])
    T = item_pose(s, c)
    assert np.allclose(transform_points(T, c[None])[0], c + np.array(s.translation_mm))
    # Extrinsic x-then-y-then-z rotation, built independently from elementary matrices.
    a, b, g = np.radians(s.rotation_deg)
    Rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    Ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    Rz = np.array([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]])
    assert np.allclose(T[:3, :3], Rz @ Ry @ Rx, atol=1e-12)


def test_posed_volume_moves_the_object_rigidly():
    rng = np.random.default_rng(0)
    vol = Volume.from_numpy(rng.random((6, 7, 8)).astype(np.float32), spacing=(2.0, 3.0, 4.0), origin=(-5, 3, 1))
    cfg = validate_config({"pose": {"rotation_deg": [[-30, 30]] * 3, "translation_mm": [[-20, 20]] * 3}})
    T = item_pose(sample_item(cfg, 1), vol.center)
    moved = posed_volume(vol, T)
    ijk = rng.uniform(0, 5, size=(10, 3))
    assert np.allclose(moved.index_to_world(ijk), transform_points(T, vol.index_to_world(ijk)), atol=1e-10)
    # Rendering the moved volume equals rendering the original through cameras moved by T^-1:
    # a camera (R, t) sees world x = T x_local as x_cam = (R R_T) x_local + (R t_T + t).
    rig = StereoRig.convergent(5.0, sid=200, sdd=300, pixel_spacing=1.5, width=24, height=20, isocenter=vol.center)
    local = [Camera(c.K, c.R @ T[:3, :3], c.R @ T[:3, 3] + c.t, c.width, c.height, c.pixel_spacing, c.sdd)
             for c in rig.cameras.values()]
    a = render_drr(moved, rig, projector=Projector(mode="exact"))
    b = render_drr(vol, local, projector=Projector(mode="exact"))
    assert torch.allclose(a, b, atol=1e-4) and float(a.max()) > 1.0

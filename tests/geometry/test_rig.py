import math
import warnings

import numpy as np
import pytest

from stereodrr.geometry import Camera, StereoAngleWarning, StereoRig, depth_inplane_ratio


@pytest.mark.parametrize("angle", [3.0, 5.0, 7.0])
def test_convergent_geometry(angle):
    iso = np.array([10.0, -20.0, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside 3-7 deg: no warning
        rig = StereoRig.convergent(angle, 750, 1200, 0.3, 512, 512, isocenter=iso)
    assert rig.names == ["left", "right"]
    assert math.isclose(rig.stereo_angle_deg(), angle, abs_tol=1e-9)
    assert math.isclose(rig.baseline(), 2 * 750 * math.sin(math.radians(angle) / 2), rel_tol=1e-12)
    for cam in rig.cameras.values():
        assert math.isclose(np.linalg.norm(cam.center - iso), 750, rel_tol=1e-12)
        uv, depth = cam.project(iso[None])
        assert np.allclose(uv, [[255.5, 255.5]], atol=1e-9)  # principal ray through the isocenter
        assert math.isclose(depth[0], 750, rel_tol=1e-12)
    # The left source is on the left camera's -u side (OpenCV stereo order).
    left, right = rig["left"], rig["right"]
    assert (left.R @ (right.center - left.center))[0] > 0


def test_depth_resolution_and_ratio():
    rig = StereoRig.convergent(5, 750, 1200, 0.3, 512, 512)
    B, f = rig.baseline(), 1200 / 0.3
    assert math.isclose(rig.depth_resolution(0.1), 750**2 * 0.1 / (B * f), rel_tol=1e-12)
    assert math.isclose(depth_inplane_ratio(5.0), 1 / (math.sqrt(2) * math.sin(math.radians(2.5))))
    assert math.isclose(depth_inplane_ratio(90.0), 1.0)


def test_angle_warning_outside_band():
    with pytest.warns(StereoAngleWarning, match="outside the recommended"):
        rig = StereoRig.convergent(15, 750, 1200, 0.3, 64, 64)
    assert math.isclose(rig.stereo_angle_deg(), 15, abs_tol=1e-9)
    with pytest.warns(StereoAngleWarning):
        StereoRig.convergent(1, 750, 1200, 0.3, 64, 64)


def test_biplanar_and_arc():
    rig = StereoRig.biplanar(800, 1300, 0.2, 256, 256)
    assert math.isclose(rig.stereo_angle_deg(), 90, abs_tol=1e-9)
    assert np.allclose(rig["frontal"].principal_ray, [0, 1, 0])
    arc = StereoRig.arc(5, 40, 750, 1200, 0.3, 128, 128)
    assert len(arc) == 5
    assert math.isclose(arc.stereo_angle_deg("view0", "view4"), 40, abs_tol=1e-9)
    assert math.isclose(arc.stereo_angle_deg("view1", "view2"), 10, abs_tol=1e-9)
    # Both ends of an arc are views: a full ring of n views spans 360 (n - 1) / n degrees; 360
    # put the last view on the first (two identical cameras, no baseline), as did 0 degrees.
    ring = StereoRig.arc(4, 270, 750, 1200, 0.3, 64, 64)
    sources = np.array([ring[n].center for n in ring.names])
    assert np.min([np.linalg.norm(a - b) for i, a in enumerate(sources) for b in sources[i + 1:]]) > 1000
    for n, degrees in [(3, 360), (2, 0), (3, 720), (2, 360)]:
        with pytest.raises(ValueError, match=rf"arc_deg: views 0 and \d of {n} coincide"):
            StereoRig.arc(n, degrees, 750, 1200, 0.3, 64, 64)
    assert len(StereoRig.arc(3, 300, 750, 1200, 0.3, 64, 64)) == 3  # 150 deg apart: distinct


@pytest.mark.parametrize("direction", [(0, 1, 1), (1, 1, 1), (0, 1, 3), (0.2, -1, 0.4)])
def test_factories_keep_their_angle_when_up_is_not_across_the_central_ray(direction):
    """The views turn about ``up``'s part across the central ray: a tilted ``central_direction``
    with the default ``up`` gave a 7 deg pair 4.95 deg apart and a "biplanar" rig 60 deg."""
    rig = StereoRig.convergent(7, 1500, 1800, 0.3, 512, 512, central_direction=direction)
    assert math.isclose(rig.stereo_angle_deg(), 7, abs_tol=1e-9)
    assert math.isclose(rig.baseline(), 2 * 1500 * math.sin(math.radians(3.5)), rel_tol=1e-12)
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    mean_ray = rig["left"].principal_ray + rig["right"].principal_ray
    assert np.allclose(mean_ray / np.linalg.norm(mean_ray), d, atol=1e-12)  # centred on the central ray
    assert math.isclose(StereoRig.biplanar(1000, 1500, 0.3, 512, 512, central_direction=direction)
                        .stereo_angle_deg(), 90, abs_tol=1e-9)
    arc = StereoRig.arc(4, 30, 750, 1200, 0.3, 64, 64, central_direction=direction)
    assert math.isclose(arc.stereo_angle_deg("view0", "view3"), 30, abs_tol=1e-9)


def test_bad_rigs():
    cam = Camera.look_at([0, -750, 0], [0, 0, 0], 1200, 0.3, 64, 64)
    with pytest.raises(ValueError, match="behind the source"):
        StereoRig({"a": cam}, np.array([0, -1000.0, 0]))
    with pytest.raises(ValueError, match="at least one"):
        StereoRig({}, np.zeros(3))
    with pytest.raises(ValueError, match="SID < SDD"):
        StereoRig.convergent(5, 1300, 1200, 0.3, 64, 64)
    with pytest.raises(ValueError, match="stereo_angle"):
        StereoRig.convergent(0, 750, 1200, 0.3, 64, 64)
    with pytest.raises(KeyError, match="no view"):
        StereoRig({"a": cam}, np.zeros(3))["b"]


def test_rig_to_torch_stacks_views_in_name_order():
    import torch

    rig = StereoRig.arc(3, 20, 750, 1200, 0.5, 32, 24)
    K, R, t = rig.to_torch("cpu", torch.float64)
    assert K.shape == (3, 3, 3) and R.shape == (3, 3, 3) and t.shape == (3, 3) and K.dtype == torch.float64
    for v, name in enumerate(rig.names):
        P = K[v].numpy() @ np.concatenate([R[v].numpy(), t[v].numpy()[:, None]], axis=1)
        assert np.allclose(P, rig[name].P, atol=1e-9)
    with pytest.raises(ValueError, match="cameras"):
        from stereodrr.geometry import stack_cameras

        stack_cameras([])

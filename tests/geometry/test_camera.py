import numpy as np
import pytest
import torch

from stereodrr.geometry import (
    Camera,
    crop_camera,
    decompose_projection,
    oversampled_camera,
    pixel_to_ray,
    project_points,
    rotvec_to_matrix,
)
from tests.conftest import random_rotation


def test_projection_matches_hand_computation():
    # Source at the origin looking along +z: u = cu + f X/Z, v = cv + f Y/Z, f = SDD / pitch.
    cam = Camera.from_detector(sdd=1000.0, pixel_spacing=0.5, width=101, height=81)
    assert np.allclose(cam.K, [[2000, 0, 50], [0, 2000, 40], [0, 0, 1]])
    uv, depth = cam.project(np.array([[0.0, 0.0, 500.0], [10.0, -5.0, 500.0], [1.0, 2.0, 1000.0]]))
    assert np.allclose(uv, [[50, 40], [50 + 2000 * 10 / 500, 40 - 2000 * 5 / 500], [52, 44]], atol=1e-12)
    assert np.allclose(depth, [500, 500, 1000])


def test_principal_offset_and_nonsquare_pixels():
    cam = Camera.from_detector(1200.0, (0.3, 0.4), 512, 256, principal_offset_mm=(3.0, -2.0))
    assert np.isclose(cam.K[0, 0], 4000) and np.isclose(cam.K[1, 1], 3000)
    assert np.allclose(cam.principal_point, [255.5 + 10.0, 127.5 - 5.0])
    assert cam.sdd == 1200.0


def test_centre_of_detector_is_pixel_centre_convention():
    cam = Camera.look_at([0, -750, 0], [0, 0, 0], 1200, 0.3, 512, 512)
    uv, _ = cam.project(np.zeros((1, 3)))
    assert np.allclose(uv, [[255.5, 255.5]], atol=1e-9)
    # +z (superior) is at the top of the image (smaller v); +x (L) to larger u for an AP view.
    uv, _ = cam.project(np.array([[0, 0, 10.0], [10.0, 0, 0]]))
    assert uv[0, 1] < 255.5 and uv[1, 0] > 255.5


def test_decomposition_round_trip(rng):
    for _ in range(20):
        K = np.array([[rng.uniform(1000, 5000), rng.uniform(-5, 5), rng.uniform(100, 400)],
                      [0, rng.uniform(1000, 5000), rng.uniform(100, 400)], [0, 0, 1]])
        R = random_rotation(rng)
        t = rng.normal(size=3) * 200 + [0, 0, 800]
        P = K @ np.c_[R, t]
        scale = rng.choice([-1, 1]) * rng.uniform(0.01, 100)
        K2, R2, t2 = decompose_projection(scale * P)
        assert np.allclose(K2, K, rtol=1e-10, atol=1e-10)
        assert np.allclose(R2, R, atol=1e-10)
        assert np.allclose(t2, t, rtol=1e-10, atol=1e-8)
        assert np.linalg.det(R2) > 0 and np.all(np.diag(K2) > 0)
        cam = Camera.from_projection(scale * P, 512, 512)
        assert np.allclose(cam.P, P, rtol=1e-10, atol=1e-8)


def test_pixel_to_ray_inverts_projection(rng):
    cam = Camera.look_at([100, -700, 50], [5, 10, -3], 1100, 0.25, 640, 480, principal_offset_mm=(2, 1))
    X = rng.uniform(-50, 50, size=(100, 3))
    uv, depth = cam.project(X)
    origin, d = cam.pixel_to_ray(uv)
    assert np.allclose(origin, cam.center)
    assert np.allclose(np.linalg.norm(d, axis=1), 1)
    # X lies on its pixel's ray, in front of the source.
    s = ((X - origin) * d).sum(1)
    assert np.all(s > 0)
    assert np.allclose(origin + s[:, None] * d, X, atol=1e-9)
    assert np.allclose(depth, (X - cam.center) @ cam.principal_ray)


def test_torch_and_numpy_forms_agree_and_differentiate(rng):
    cam = Camera.look_at([0, -750, 0], [0, 0, 0], 1200, 0.3, 512, 512)
    X = rng.normal(size=(5, 3)) * 20
    uv_np, _ = cam.project(X)
    P = torch.tensor(cam.P, dtype=torch.float64)
    Xt = torch.tensor(X, requires_grad=True)
    uv_t, depth_t = project_points(P[None].expand(3, 3, 4), Xt[None].expand(3, 5, 3))
    assert uv_t.shape == (3, 5, 2) and depth_t.shape == (3, 5)
    assert np.allclose(uv_t[1].detach().numpy(), uv_np, atol=1e-10)
    uv_t.sum().backward()
    assert Xt.grad is not None and torch.all(torch.isfinite(Xt.grad))
    # Gradient w.r.t. a rotation vector through pixel_to_ray, checked by finite differences.
    K = torch.tensor(cam.K)
    t = torch.tensor(cam.t)
    uv = torch.tensor([[10.0, 20.0], [300.0, 400.0]], dtype=torch.float64)

    def f(r):
        return pixel_to_ray(K, rotvec_to_matrix(r) @ torch.tensor(cam.R), t, uv)[1].sum()

    assert torch.autograd.gradcheck(f, (torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(R=np.diag([1.0, 1.0, -1.0])), "proper rotation"),
        (dict(R=np.eye(3) * 1.01), "proper rotation"),
        (dict(K=np.array([[1000, 0, 10], [0, -1000, 10], [0, 0, 1.0]])), "positive diagonal"),
        (dict(K=np.array([[1000, 0, 10], [5, 1000, 10], [0, 0, 1.0]])), "upper-triangular"),
        (dict(t=np.array([0, np.nan, 0])), "NaN"),
        (dict(width=0), "positive integers"),
        (dict(pixel_spacing=(0.3, -0.3)), "pixel_spacing"),
        (dict(K=np.eye(2)), "shape"),
    ],
)
def test_bad_camera_input(kwargs, match):
    base = dict(K=np.array([[1000, 0, 10], [0, 1000, 10], [0, 0, 1.0]]), R=np.eye(3), t=np.zeros(3),
                width=20, height=20, pixel_spacing=(0.3, 0.3))
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Camera(**base)


def test_bad_projection_matrix():
    with pytest.raises(ValueError, match="3x4"):
        decompose_projection(np.eye(3))
    with pytest.raises(ValueError, match="singular"):
        decompose_projection(np.c_[np.zeros((3, 3)), np.ones(3)])
    with pytest.raises(ValueError, match="parallel"):
        Camera.look_at([0, 0, -100], [0, 0, 0], 1000, 0.3, 10, 10, up=(0, 0, 1))


def test_bad_pixel_and_crop_input_names_it():
    """in_image took a (2,) array to an IndexError; NaN crops and factors failed in int()."""
    cam = Camera.from_detector(1000, 1.0, 10, 8)
    with pytest.raises(ValueError, match=r"uv: expected shape \(N, 2\)"):
        cam.in_image(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="crop u0: expected an integer"):
        crop_camera(cam, float("nan"), 0, 4, 4)
    with pytest.raises(ValueError, match="factor: expected a positive integer"):
        oversampled_camera(cam, float("nan"))

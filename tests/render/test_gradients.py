"""Gradients of the renderer against finite differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera, rotvec_to_matrix
from stereodrr.render import Projector, backends, drr, sphere_drr
from stereodrr.volume import Volume

from .conftest import device_for

H, W = 5, 6


def _setup(oblique_direction, backend: str = "numba"):
    """Volume, inverse affine and one view (float64) on the device ``backend`` runs on."""
    dev = device_for(backend)
    return tuple(x.to(dev) for x in _setup_cpu(oblique_direction))


def _setup_cpu(oblique_direction):
    g = torch.Generator().manual_seed(0)
    data = torch.rand(6, 5, 7, generator=g, dtype=torch.float64) * 0.05
    vol = Volume.from_numpy(data.numpy(), spacing=(2.0, 2.5, 3.0), origin=(-5.0, 2.0, 1.0), direction=oblique_direction)
    A = torch.linalg.inv(torch.tensor(vol.affine))
    cam = Camera.look_at(vol.center + np.array([60.0, -300.0, 40.0]), vol.center, sdd=600, pixel_spacing=4.0,
                         width=W, height=H)
    K, R, t = (x[None].clone() for x in cam.to_torch("cpu", torch.float64))
    return data, A, K, R, t


def test_gradient_wrt_volume(render_path, oblique_direction):
    data, A, K, R, t = _setup(oblique_direction, render_path["backend"])
    data = data[:4, :4, :5].contiguous()
    data.requires_grad_(True)
    # The interpreted Triton kernel is slow: check it along random directions (fast_mode)
    # instead of one finite difference per voxel.
    projector = Projector(**render_path)
    assert torch.autograd.gradcheck(lambda d: drr(d, A, K, R, t, H, W, projector=projector), (data,), eps=1e-6,
                                    atol=1e-7, fast_mode=render_path["backend"] == "triton" and data.device.type == "cpu")


def test_gradient_wrt_pose_and_intrinsics(render_path, oblique_direction):
    data, A, K, R, t = _setup(oblique_direction, render_path["backend"])
    # A smooth volume keeps finite differences away from the interpolant's kinks.
    zz, yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=torch.float64, device=data.device)
                                  for n in data.shape), indexing="ij")
    smooth = 0.03 * torch.exp(-(xx ** 2 + yy ** 2 + zz ** 2))
    rv0 = torch.zeros(3, dtype=torch.float64, device=data.device, requires_grad=True)
    dt = torch.zeros(3, dtype=torch.float64, device=data.device, requires_grad=True)
    f = torch.tensor([0.0], dtype=torch.float64, device=data.device, requires_grad=True)

    def fn(rv, dt, f):
        Rp = rotvec_to_matrix(rv) @ R[0]
        Kp = K.clone()
        Kp[0, 0, 0] = K[0, 0, 0] * (1 + f[0])
        return drr(smooth, A, Kp, Rp[None], (t[0] + dt)[None], H, W, projector=Projector(**render_path))

    assert torch.autograd.gradcheck(fn, (rv0, dt, f), eps=1e-6, atol=1e-6, rtol=1e-3,
                                    fast_mode=render_path["backend"] == "triton" and data.device.type == "cpu")


@pytest.mark.parametrize("mode", ["trilinear", "joseph"])
def test_fused_backends_match_the_torch_reference_with_gradients(backend, mode, oblique_direction):
    """Two views in one call; image and every gradient (volume, K, R, t) against the torch path."""
    if mode not in backends.BACKENDS[backend].modes:
        pytest.skip(f"{backend} does not render {mode} (auto runs torch there)")
    data, A, K, R, t = _setup(oblique_direction, backend)
    K, R, t = (torch.cat([x, x]) for x in (K, R, t))
    R = R.clone()
    R[1] = torch.as_tensor(rotvec_to_matrix(np.array([0.0, 0.0, 0.1])), device=R.device) @ R[1]
    results = []
    for be in (backend, "torch"):
        leaves = [x.clone().requires_grad_(True) for x in (data, K, R, t)]
        img = drr(*leaves[:1], A, *leaves[1:], H, W, projector=Projector(backend=be, mode=mode))
        (img * torch.linspace(-1, 2, img.numel(), dtype=img.dtype).reshape(img.shape)).sum().backward()
        results.append([img.detach()] + [x.grad for x in leaves])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("step_mm", [5.0, 9.0])
def test_joseph_slabs_of_several_slices(oblique_direction, step_mm):
    """``mode="joseph", step_mm``: slabs of k > 1 slices. The fused kernel's image and every
    gradient equal the torch reference's, and its pose/intrinsics gradient equals finite
    differences."""
    data, A, K, R, t = _setup(oblique_direction)
    results = []
    for be in ("numba", "torch"):
        leaves = [x.clone().requires_grad_(True) for x in (data, K, R, t)]
        img = drr(*leaves[:1], A, *leaves[1:], H, W, projector=Projector(backend=be, mode="joseph", step_mm=step_mm))
        (img * torch.linspace(-1, 2, img.numel(), dtype=img.dtype).reshape(img.shape)).sum().backward()
        results.append([img.detach()] + [x.grad for x in leaves])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    one = drr(data, A, K, R, t, H, W, projector=Projector(mode="joseph"))
    assert not torch.allclose(results[0][0], one)  # the slabs did change the samples
    zz, yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=torch.float64) for n in data.shape), indexing="ij")
    smooth = 0.03 * torch.exp(-(xx ** 2 + yy ** 2 + zz ** 2))  # away from the interpolant's kinks
    rv0 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    dt = torch.zeros(3, dtype=torch.float64, requires_grad=True)

    def fn(rv, dt):
        return drr(smooth, A, K, rotvec_to_matrix(rv) @ R[0][None], (t[0] + dt)[None], H, W,
                   projector=Projector(mode="joseph", step_mm=step_mm))

    assert torch.autograd.gradcheck(fn, (rv0, dt), eps=1e-6, atol=1e-6, rtol=1e-3)


def test_sphere_gradient_wrt_centres():
    cam = Camera.look_at((0.0, -500.0, 0.0), (0.0, 0.0, 0.0), sdd=1000, pixel_spacing=0.4, width=9, height=8)
    K, R, t = (x[None] for x in cam.to_torch("cpu", torch.float64))
    centers = torch.tensor([[0.1, 0.0, 0.2], [-0.9, 0.3, -0.5]], dtype=torch.float64, requires_grad=True)
    dia = torch.tensor([1.5, 1.0], dtype=torch.float64)
    mu = torch.tensor([0.5, 0.8], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c: sphere_drr(c, dia, mu, K, R, t, 8, 9), (centers,), eps=1e-7, atol=1e-5)


@pytest.mark.parametrize("kernel", ["trilinear", "joseph"])
def test_volume_gradient_independent_of_scatter_buffers(oblique_direction, kernel):
    from stereodrr.render import _fused, integrate, rays

    pytest.importorskip("numba")
    data, A, K, R, t = _setup(oblique_direction)
    uv = rays.pixel_grid_chunk(0, H * W, W, "cpu", torch.float64)
    o, e = (x.reshape(-1, 3) for x in rays.index_rays(A, K, R, t, uv))
    s0, s1 = rays.clip_to_box(o, e, tuple(data.shape[::-1]))
    g = torch.linspace(-1, 2, o.shape[0], dtype=torch.float64)
    if kernel == "trilinear":
        ds, n = integrate.segment_samples(e, s0, s1, 1.0)
        grads = [_fused.backward(g, data, o, e, s0, ds, n, True, budget)[0] for budget in (2**31, 1)]
    else:
        k = integrate.slab_slices(e, 5.0, tuple(data.shape))
        assert int(k.max()) > 1
        grads = [_fused.joseph_backward(g, data, o, e, s0, s1, k, True, budget)[0] for budget in (2**31, 1)]
    # One buffer per thread, then a single shared buffer.
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)

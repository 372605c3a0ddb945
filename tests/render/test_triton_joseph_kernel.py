"""Joseph's projector on Triton (in Triton's interpreter off a GPU): against the Numba kernel and
``joseph_torch`` on rays through every face, against the exact reference, and its gradients
against autograd of the reference and finite differences. Tiny volumes and few rays: the
interpreter runs each program as numpy operations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera, rotvec_to_matrix
from stereodrr.render import Projector, backends, drr, integrate, rays
from stereodrr.volume import Volume

from .conftest import HAS_TRITON, device_for

pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")


def _rays(n: int, shape_zyx: tuple[int, int, int], seed: int, inside: bool) -> tuple[torch.Tensor, ...]:
    """``n`` random rays (float64) through the box, a tenth on the edge-voxel plane ``p = 0``,
    a tenth on a face (``p = -1/2``, unless ``inside``), a tenth parallel to the i axis, a tenth in
    a plane of constant i: ``(o, e, s0, s1)`` clipped to the box. ``inside``: targets within the
    voxel centres' hull."""
    g = torch.Generator().manual_seed(seed)
    nz, ny, nx = shape_zyx
    size = torch.tensor([nx, ny, nz], dtype=torch.float64)
    target = torch.rand(n, 3, generator=g, dtype=torch.float64) * (size - 1.0 if inside else size) - (0 if inside else 0.5)
    tenth = n // 10
    target[:tenth, 0] = 0.0
    if not inside:
        target[tenth:2 * tenth, 2] = -0.5
    source = target + torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1) * 30.0
    source[2 * tenth:3 * tenth, 1:] = target[2 * tenth:3 * tenth, 1:]
    source[3 * tenth:4 * tenth, 0] = target[3 * tenth:4 * tenth, 0]
    e = torch.nn.functional.normalize(target - source, dim=-1) * 1.3
    s0, s1 = rays.clip_to_box(source, e, (nx, ny, nz))
    return source, e, s0, s1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_triton_joseph_matches_numba_and_torch_on_rays_through_every_face(dtype):
    """Slabs of 1-4 slices, rays entering through every face, on edge-voxel planes, on faces and
    parallel to axes: the Triton kernel equals ``joseph_torch`` and the Numba kernel."""
    dev = device_for("triton")
    shape = (6, 8, 10)
    n = 500
    data = torch.rand(*shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    o, e, s0, s1 = (x.to(dtype) for x in _rays(n, shape, seed=2, inside=False))
    assert int((s1 > s0).sum()) > 0.9 * n
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for k in range(1, 5):
        kk = torch.full((n,), k)
        tri = backends.joseph_triton(*(x.to(dev) for x in (data, o, e, s0, s1, kk))).cpu()
        ref = integrate.joseph_torch(data, o, e, s0, s1, kk)
        numba = backends.joseph_numba(data, o, e, s0, s1, kk)
        scale = float(ref.abs().max())
        assert tri.dtype == dtype
        assert float((tri - ref).abs().max()) <= tol * scale, k
        assert float((tri - numba).abs().max()) <= tol * scale, k


@pytest.mark.parametrize("want_data", [False, True])
def test_triton_joseph_gradients_match_autograd_of_the_reference(want_data):
    """Volume, origin, direction and both ends (float64, slabs of 1-3 slices) against autograd
    through ``joseph_torch``. Edge voxels are zero (in the clamped half voxel at a face the two
    derivative conventions differ: ours zero, grid_sample's border not) and the ends are moved
    off the faces (a face is a slab edge for odd k, a kink of dL/ds0)."""
    dev = device_for("triton")
    shape = (5, 6, 7)
    n = 300
    g = torch.Generator().manual_seed(3)
    data = torch.rand(*shape, generator=g, dtype=torch.float64)
    data[[0, -1]] = 0.0
    data[:, [0, -1]] = 0.0
    data[:, :, [0, -1]] = 0.0
    o, e, s0, s1 = _rays(n, shape, seed=4, inside=True)
    # ends a voxel or so inside, where the samples (and so dL/ds0, dL/ds1) are not zero
    s0 = s0 + 0.6 + 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    s1 = s1 - 0.6 - 0.4 * torch.rand(n, generator=g, dtype=torch.float64)
    keep = s1 > s0 + 0.1
    o, e, s0, s1 = (x[keep] for x in (o, e, s0, s1))
    assert len(s0) > 0.7 * n
    weights = torch.rand(len(s0), generator=g, dtype=torch.float64)
    for k in range(1, 4):
        kk = torch.full((len(s0),), k)
        grads = []
        for fn, device in ((backends.joseph_triton, dev), (integrate.joseph_torch, "cpu")):
            leaves = [x.clone().to(device).requires_grad_(True) for x in (data, o, e, s0, s1)]
            if not want_data:
                leaves[0].requires_grad_(False)
            (fn(*leaves, kk.to(device)) * weights.to(device)).sum().backward()
            grads.append([x.grad.cpu() for x in leaves[1:]] + ([leaves[0].grad.cpu()] if want_data else []))
        for a, b in zip(*grads):
            assert float(b.abs().max()) > 0
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max())), k


def _scene(oblique_direction: np.ndarray, data: torch.Tensor | None = None):
    dev = device_for("triton")
    g = torch.Generator().manual_seed(0)
    if data is None:
        data = torch.rand(6, 5, 7, generator=g, dtype=torch.float64) * 0.05
    vol = Volume.from_numpy(np.zeros(tuple(data.shape)), spacing=(2.0, 2.5, 3.0), origin=(-5.0, 2.0, 1.0),
                            direction=oblique_direction)
    A = torch.linalg.inv(torch.tensor(vol.affine))
    cam = Camera.look_at(vol.center + np.array([60.0, -300.0, 40.0]), vol.center, sdd=600, pixel_spacing=4.0,
                         width=6, height=5)
    K, R, t = (x[None].clone() for x in cam.to_torch("cpu", torch.float64))
    return tuple(x.to(dev) for x in (data, A, K, R, t))


def test_triton_joseph_against_the_exact_reference(oblique_direction):
    """Joseph's slab weights sum to the clipped chord, so a uniform volume renders as the exact
    reference does (to rounding); on a smooth volume the two differ by the interpolation error
    only (under 1 % here)."""
    uniform = torch.full((6, 5, 7), 0.02, dtype=torch.float64)
    data, A, K, R, t = _scene(oblique_direction, uniform)
    exact = drr(data.cpu(), A.cpu(), K.cpu(), R.cpu(), t.cpu(), 5, 6,
                projector=Projector(mode="exact", backend="torch"))
    for step in (None, 6.0):
        img = drr(data, A, K, R, t, 5, 6, projector=Projector(mode="joseph", step_mm=step, backend="triton")).cpu()
        assert float(exact.max()) > 0.1
        assert torch.allclose(img, exact, rtol=1e-12, atol=1e-14)
    zz, yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=torch.float64) for n in (12, 10, 14)), indexing="ij")
    smooth = 0.03 * torch.exp(-(xx ** 2 + yy ** 2 + zz ** 2))
    data, A, K, R, t = _scene(oblique_direction, smooth)
    exact = drr(data.cpu(), A.cpu(), K.cpu(), R.cpu(), t.cpu(), 5, 6,
                projector=Projector(mode="exact", backend="torch"))
    img = drr(data, A, K, R, t, 5, 6, projector=Projector(mode="joseph", backend="triton")).cpu()
    rel = float((img - exact).norm() / exact.norm())
    assert 0 < rel < 1e-2, rel


def test_triton_joseph_pose_and_intrinsics_gradients_match_finite_differences(oblique_direction):
    """``drr(mode="joseph", backend="triton")``: rotation, translation and focal-length
    gradients against finite differences (along random directions in the interpreter), with
    one-slice slabs (the default here) and with three-slice slabs; and the volume gradient."""
    data, A, K, R, t = _scene(oblique_direction)
    zz, yy, xx = torch.meshgrid(*(torch.linspace(-1, 1, n, dtype=torch.float64, device=data.device)
                                  for n in data.shape), indexing="ij")
    smooth = 0.03 * torch.exp(-(xx ** 2 + yy ** 2 + zz ** 2))  # away from the interpolant's kinks
    interpreted = data.device.type == "cpu"
    for step in (None, 7.0):
        rv0 = torch.zeros(3, dtype=torch.float64, device=data.device, requires_grad=True)
        dt = torch.zeros(3, dtype=torch.float64, device=data.device, requires_grad=True)
        f = torch.zeros(1, dtype=torch.float64, device=data.device, requires_grad=True)

        def fn(rv, dt, f, step=step):
            Kp = K.clone()
            Kp[0, 0, 0] = K[0, 0, 0] * (1 + f[0])
            return drr(smooth, A, Kp, rotvec_to_matrix(rv) @ R, t + dt, 5, 6,
                       projector=Projector(mode="joseph", step_mm=step, backend="triton"))

        assert torch.autograd.gradcheck(fn, (rv0, dt, f), eps=1e-6, atol=1e-6, rtol=1e-3, fast_mode=interpreted)
    d = data[:4, :4, :5].contiguous().requires_grad_(True)
    joseph = Projector(mode="joseph", backend="triton")
    assert torch.autograd.gradcheck(lambda x: drr(x, A, K, R, t, 5, 6, projector=joseph), (d,),
                                    eps=1e-6, atol=1e-7, fast_mode=interpreted)


def test_auto_is_joseph_on_every_fused_backend():
    assert {name: backends.BACKENDS[name].auto_mode for name in ("numba", "triton")} == {"numba": "joseph",
                                                                                       "triton": "joseph"}
    assert {m for name in ("numba", "triton") for m in backends.BACKENDS[name].modes} == {"trilinear", "joseph",
                                                                                       "exact"}


def test_joseph_op_passes_opcheck():
    dev = device_for("triton")
    g = torch.Generator().manual_seed(0)
    data = torch.rand(4, 5, 6, generator=g, dtype=torch.float64).to(dev).requires_grad_(True)
    o = torch.tensor([[-3.0, 2.0, 1.5], [2.5, -4.0, 2.0]], dtype=torch.float64, device=dev, requires_grad=True)
    e = torch.tensor([[0.5, 0.1, 0.05], [0.0, 0.4, 0.1]], dtype=torch.float64, device=dev, requires_grad=True)
    s0 = torch.tensor([5.0, 8.0], dtype=torch.float64, device=dev, requires_grad=True)
    s1 = torch.tensor([12.0, 20.0], dtype=torch.float64, device=dev, requires_grad=True)
    for k in (1, 3):
        torch.library.opcheck(backends.joseph_triton, (data, o, e, s0, s1, torch.full((2,), k, device=dev)))

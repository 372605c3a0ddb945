"""The fused CPU ray set-up against its definition, ``index_rays`` then ``clip_to_box``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera
from stereodrr.render import Projector, RaysMissWarning, backends, drr, rays
from stereodrr.volume import Volume

pytest.importorskip("numba")
from stereodrr.render import _fused_rays  # noqa: E402

NX, NY, NZ = 10, 8, 9
W, H = 23, 17


def _views(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Four views of a box of anisotropic voxels: two through it from different sides, one
    looking away (every ray misses) and one with a skewed, scaled K whose pixel (11, 8) looks
    straight down the k axis of an axis-aligned copy of the volume."""
    vol = Volume.from_numpy(np.zeros((NZ, NY, NX)), spacing=(2.0, 2.5, 3.0), origin=(-5.0, 2.0, 1.0))
    c = vol.center
    cams = [Camera.look_at(c + np.array([60.0, -300.0, 40.0]), c, sdd=600, pixel_spacing=1.5, width=W, height=H),
            Camera.look_at(c + np.array([-250.0, 80.0, -90.0]), c + np.array([3.0, -2.0, 1.0]), sdd=500,
                           pixel_spacing=1.0, width=W, height=H),
            Camera.look_at(c + np.array([0.0, 300.0, 0.0]), c + np.array([0.0, 600.0, 0.0]), sdd=600,
                           pixel_spacing=1.0, width=W, height=H)]
    K, R, t = (torch.stack(x).to(dtype) for x in zip(*(cam.to_torch("cpu", torch.float64) for cam in cams)))
    # down the k axis: R = I, source above the box's centre in i, j, pixel (11, 8) the principal point
    K4 = torch.tensor([[[900.0, 3.0, 11.0 * 2], [0.0, 800.0, 8.0 * 2], [0.0, 0.0, 2.0]]], dtype=dtype)
    t4 = -torch.tensor([[c[0], c[1], c[2] - 400.0]], dtype=dtype)
    K, R, t = torch.cat([K, K4]), torch.cat([R, torch.eye(3, dtype=dtype)[None]]), torch.cat([t, t4])
    A = torch.linalg.inv(torch.tensor(vol.affine)).to(dtype)
    return A, K, R, t


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("start, stop", [(0, W * H), (5, 300)])
def test_fused_ray_setup_matches_index_rays_and_clip_to_box(dtype, start, stop):
    A, K, R, t = _views(dtype)
    o, e, s0, s1 = _fused_rays.rays(A, K, R, t, start, stop, W, (NX, NY, NZ))
    uv = rays.pixel_grid_chunk(start, stop, W, "cpu", dtype)
    o_ref, e_ref = (x.reshape(-1, 3) for x in rays.index_rays(A, K, R, t, uv))
    s0_ref, s1_ref = rays.clip_to_box(o_ref, e_ref, (NX, NY, NZ))
    eps = float(torch.finfo(dtype).eps)
    assert o.dtype == e.dtype == s0.dtype == dtype and o.shape == (K.shape[0] * (stop - start), 3)
    assert torch.equal(o, o_ref)  # the origin is index_rays' own
    assert torch.allclose(e, e_ref, rtol=0, atol=8 * eps * float(e_ref.abs().max()))
    hit, hit_ref = s1 > s0, s1_ref > s0_ref
    scale = float(s1_ref[hit_ref].max())
    clear = (s1_ref - s0_ref).abs() > 1e-3 * scale  # a grazing ray may round either way
    assert torch.equal(hit[clear], hit_ref[clear])
    for a, b in ((s0, s0_ref), (s1, s1_ref)):
        assert torch.allclose(a[hit_ref & clear], b[hit_ref & clear], rtol=0, atol=64 * eps * scale)
    per_view = hit.reshape(K.shape[0], -1).sum(1)
    assert per_view[0] > 0 and per_view[1] > 0 and per_view[2] == 0
    if start == 0:  # the pixel down the k axis: parallel to the i and j faces, inside both slabs
        r = 3 * (stop - start) + 8 * W + 11
        assert float(e[r, 0]) == 0.0 == float(e[r, 1]) and float(s1[r]) > float(s0[r])
        assert float(s1[r] - s0[r]) == pytest.approx(NZ * 3.0, rel=1e-6)


def test_parallel_ray_outside_a_slab_misses():
    """A ray parallel to a pair of faces and outside their slab misses, whatever its other axes
    say (clip_to_box's rule), in the fused set-up too, with its empty segment at 0."""
    dtype = torch.float64
    A = torch.eye(4, dtype=dtype)
    K = torch.tensor([[[100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [0.0, 0.0, 1.0]]], dtype=dtype)
    R = torch.eye(3, dtype=dtype)[None]
    for i, expect_hit in ((4.0, True), (NX - 0.5, True), (NX - 0.49, False), (-0.6, False)):
        t = -torch.tensor([[i, 3.0, -50.0]], dtype=dtype)  # source at (i, 3, -50), pixel (0, 0) along +k
        o, e, s0, s1 = _fused_rays.rays(A, K, R, t, 0, 1, 1, (NX, NY, NZ))
        o_ref, e_ref = rays.index_rays(A, K, R, t, torch.zeros(1, 2, dtype=dtype))
        s0_ref, s1_ref = rays.clip_to_box(o_ref.reshape(-1, 3), e_ref.reshape(-1, 3), (NX, NY, NZ))
        assert bool(s1 > s0) is expect_hit is bool(s1_ref > s0_ref), i
        if expect_hit:
            assert float(s0) == pytest.approx(49.5) and float(s1) == pytest.approx(49.5 + NZ)
        else:  # an empty segment at 0, not at infinity
            assert float(s0) == float(s1) == float(s0_ref) == float(s1_ref) == 0.0


def test_drr_renders_the_same_bits_with_and_without_a_pose_gradient(monkeypatch):
    """The fused set-up's rays, with or without a pose gradient: a pose renders to the same bits
    either way (an optimiser compares losses of both kinds), within float rounding of the torch
    set-up's image, and the gradient is the torch set-up's chain rule."""
    A, K, R, t = _views(torch.float64)
    data = torch.rand(NZ, NY, NX, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = Projector(backend="numba")
    calls: list[int] = []
    fused = backends.BACKENDS["numba"].rays
    assert fused is not None

    def counting(*args):
        calls.append(1)
        return fused(*args)

    def render(rays, t_):
        monkeypatch.setitem(backends.BACKENDS, "numba", dataclasses.replace(backends.BACKENDS["numba"], rays=rays))
        with pytest.warns(RaysMissWarning):
            return drr(data, A, K, R, t_, H, W, projector=p)

    plain = render(counting, t)
    assert calls
    tg = t.clone().requires_grad_(True)
    img = render(counting, tg)
    assert torch.equal(img.detach(), plain)
    (grad,) = torch.autograd.grad((img * torch.linspace(0.5, 1.5, img.numel()).reshape(img.shape)).sum(), tg)
    tr = t.clone().requires_grad_(True)
    ref = render(None, tr)
    (grad_ref,) = torch.autograd.grad((ref * torch.linspace(0.5, 1.5, ref.numel()).reshape(ref.shape)).sum(), tr)
    assert torch.allclose(ref.detach(), plain, rtol=1e-12, atol=1e-12 * float(plain.abs().max()))
    assert float(grad[:2].abs().max()) > 0
    assert torch.allclose(grad, grad_ref, rtol=1e-9, atol=1e-9 * float(grad_ref.abs().max()))

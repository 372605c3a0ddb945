"""The fused exact (Siddon/Jacobs) kernels, Numba and Triton (in Triton's interpreter off a GPU):
against the torch reference ``exact_integral`` on rays through every face, against analytic
line integrals through voxel-aligned boxes, and their gradients against autograd of the
reference and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera, rotvec_to_matrix
from stereodrr.render import Projector, backends, drr, integrate, rays
from stereodrr.volume import Volume

from .conftest import HAS_TRITON, device_for

FUSED = ["numba", pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="triton not installed"))]


def _exact_op(backend: str):
    return backends.BACKENDS[backend].exact


def _rays_through_every_face(n: int, shape_zyx: tuple[int, int, int], seed: int) -> tuple[torch.Tensor, ...]:
    """``n`` random rays (float64) that enter through every face of the box, a tenth of them on
    voxel planes (``p = 1/2``), a tenth on faces (``p = -1/2``), a tenth parallel to the i axis
    and a tenth in a plane of constant i: ``(o, e, s0, s1)`` clipped to the box."""
    g = torch.Generator().manual_seed(seed)
    nz, ny, nx = shape_zyx
    size = torch.tensor([nx, ny, nz], dtype=torch.float64)
    target = torch.rand(n, 3, generator=g, dtype=torch.float64) * size - 0.5
    tenth = n // 10
    target[:tenth, 0] = 0.5
    target[tenth:2 * tenth, 1] = -0.5
    source = target + torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1) * 40.0
    source[2 * tenth:3 * tenth, 1:] = target[2 * tenth:3 * tenth, 1:]
    source[3 * tenth:4 * tenth, 0] = target[3 * tenth:4 * tenth, 0]
    e = torch.nn.functional.normalize(target - source, dim=-1) * 1.4  # index units per mm
    s0, s1 = rays.clip_to_box(source, e, (nx, ny, nz))
    return source, e, s0, s1


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_exact_matches_the_reference_on_rays_through_every_face(backend, dtype):
    """Every segment of every ray, whichever face it enters and leaves by, on voxel planes and
    parallel to axes: the fused walk's sum equals the sorted-crossings reference (float64:
    to rounding; float32: the reference in float64 on the same float32 rays, to 1e-6 of the
    largest integral, the float32 target)."""
    dev = device_for(backend)
    shape = (7, 9, 11)
    n = 3000 if backend == "numba" else 600
    data = torch.rand(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    o, e, s0, s1 = _rays_through_every_face(n, shape, seed=3)
    assert int((s1 > s0).sum()) > 0.9 * n
    args = [x.to(dtype) for x in (data, o, e, s0, s1)]
    ref = integrate.exact_integral(*(x.double() for x in args))
    fused = _exact_op(backend)(*(x.to(dev) for x in args)).cpu()
    assert fused.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert float((fused.double() - ref).abs().max()) <= tol * float(ref.abs().max())


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("want_data", [False, True])
def test_fused_exact_gradients_match_autograd_of_the_reference(backend, want_data):
    """Volume, origin, direction and both ends (float64) against autograd through
    ``exact_integral``; the ends are moved off the faces (there a crossing coincides with an end
    and the derivative has a kink, each implementation taking one side)."""
    dev = device_for(backend)
    shape = (6, 8, 10)
    n = 600
    g = torch.Generator().manual_seed(4)
    data = torch.rand(*shape, generator=g, dtype=torch.float64)
    o, e, s0, s1 = _rays_through_every_face(n, shape, seed=5)
    s0 = s0 + 0.05 + 0.2 * torch.rand(n, generator=g, dtype=torch.float64)
    s1 = s1 - 0.05 - 0.2 * torch.rand(n, generator=g, dtype=torch.float64)
    keep = s1 > s0 + 0.1  # a ray that the shift emptied has a kink at s0 = s1 too
    o, e, s0, s1 = (x[keep] for x in (o, e, s0, s1))
    assert len(s0) > 0.8 * n
    weights = torch.rand(len(s0), generator=g, dtype=torch.float64)
    grads = []
    for fn, device in ((_exact_op(backend), dev), (integrate.exact_integral, "cpu")):
        leaves = [x.clone().to(device).requires_grad_(True) for x in (data, o, e, s0, s1)]
        if not want_data:
            leaves[0].requires_grad_(False)
        (fn(*leaves) * weights.to(device)).sum().backward()
        grads.append([x.grad.cpu() for x in leaves[1:]] + ([leaves[0].grad.cpu()] if want_data else []))
    for a, b in zip(*grads):
        assert float(b.abs().max()) > 0
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()))


def _box_chords(src: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Length of the rays ``src + s d`` (``s >= 0``) inside the axis-aligned box ``[lo, hi]``
    (numpy slab method in the box's own frame)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (lo - src) / d
        b = (hi - src) / d
    enter = np.maximum(np.nanmax(np.minimum(a, b), -1), 0.0)
    leave = np.nanmin(np.maximum(a, b), -1)
    return np.maximum(leave - enter, 0.0)


@pytest.mark.parametrize("backend", FUSED)
def test_exact_mode_integrates_voxel_aligned_boxes_exactly(backend, oblique_direction):
    """A volume of three nested voxel-aligned boxes (mu 0.01, 0.03, 0.07) in an oblique,
    anisotropic grid: each pixel's exact line integral is ``sum mu_box x chord`` with the chords
    of the boxes computed analytically in the volume's frame; the fused kernels render it to
    float64 rounding."""
    shape = (10, 12, 14)
    spacing = np.array([1.5, 1.2, 2.0])
    vol = Volume.from_numpy(np.zeros(shape), spacing=spacing, origin=(-7.0, 3.0, 11.0), direction=oblique_direction)
    boxes = [((0, 0, 0), (13, 11, 9), 0.01), ((3, 2, 1), (10, 9, 7), 0.03), ((5, 4, 3), (8, 6, 5), 0.07)]  # (i, j, k)
    data = np.zeros(shape)
    for lo_i, hi_i, mu in boxes:
        data[lo_i[2]:hi_i[2] + 1, lo_i[1]:hi_i[1] + 1, lo_i[0]:hi_i[0] + 1] = mu
    cam = Camera.look_at(vol.center + oblique_direction @ np.array([150.0, -260.0, 90.0]), vol.center, sdd=700,
                         pixel_spacing=5.0, width=13, height=11)
    img = _render(vol, data, cam, backend)
    # rays in the volume's frame, in mm from its index origin: x_local = D^T (x - origin)
    v, u = np.mgrid[0:cam.height, 0:cam.width]
    src, d = cam.pixel_to_ray(np.stack([u.ravel(), v.ravel()], 1).astype(float))
    src_l = (src - vol.origin) @ vol.direction
    d_l = d @ vol.direction
    truth = np.zeros(len(d))
    previous = 0.0
    for lo_i, hi_i, mu in boxes:  # nested: each box adds its excess over the one around it
        chord = _box_chords(src_l, d_l, (np.array(lo_i) - 0.5) * spacing, (np.array(hi_i) + 0.5) * spacing)
        truth += (mu - previous) * chord
        previous = mu
    assert truth.max() > 0.5 and (truth == 0).sum() > 0  # hits and misses
    assert np.abs(img.ravel() - truth).max() <= 1e-12 * truth.max()


def _render(vol: Volume, data: np.ndarray, cam: Camera, backend: str) -> np.ndarray:
    dev = device_for(backend)
    A = torch.linalg.inv(torch.tensor(vol.affine, dtype=torch.float64)).to(dev)
    K, R, t = (x[None] for x in cam.to_torch(dev, torch.float64))
    return drr(torch.as_tensor(data, device=dev), A, K, R, t, cam.height, cam.width,
               projector=Projector(mode="exact", backend=backend))[0].cpu().numpy()


def _small_scene(backend: str, oblique_direction: np.ndarray):
    dev = device_for(backend)
    g = torch.Generator().manual_seed(0)
    data = torch.rand(5, 4, 6, generator=g, dtype=torch.float64) * 0.05
    vol = Volume.from_numpy(data.numpy(), spacing=(2.0, 2.5, 3.0), origin=(-5.0, 2.0, 1.0), direction=oblique_direction)
    A = torch.linalg.inv(torch.tensor(vol.affine))
    cam = Camera.look_at(vol.center + np.array([60.0, -300.0, 40.0]), vol.center, sdd=600, pixel_spacing=4.0,
                         width=5, height=4)
    K, R, t = (x[None].clone() for x in cam.to_torch("cpu", torch.float64))
    return tuple(x.to(dev) for x in (data, A, K, R, t))


@pytest.mark.parametrize("backend", FUSED)
def test_exact_gradients_match_finite_differences(backend, oblique_direction):
    """``drr(mode="exact")`` through the fused kernel: pose / focal-length gradient (and on
    Numba the volume gradient) against finite differences (the exact integral is linear in the
    voxel values and smooth in the pose between voxel-edge events). The interpreted Triton
    kernel's volume gradient is checked against autograd of the reference above: the
    interpreter takes a third of a second per call here."""
    data, A, K, R, t = _small_scene(backend, oblique_direction)
    h, w = 4, 5
    interpreted = backend == "triton" and data.device.type == "cpu"
    if not interpreted:
        d = data.clone().requires_grad_(True)
        exact = Projector(mode="exact", backend=backend)
        assert torch.autograd.gradcheck(lambda x: drr(x, A, K, R, t, h, w, projector=exact), (d,),
                                        eps=1e-6, atol=1e-7)
    rv0 = torch.zeros(3, dtype=torch.float64, device=data.device, requires_grad=True)
    dt = torch.zeros(3, dtype=torch.float64, device=data.device, requires_grad=True)
    f = torch.zeros(1, dtype=torch.float64, device=data.device, requires_grad=True)

    def fn(rv, dt, f):
        Kp = K.clone()
        Kp[0, 0, 0] = K[0, 0, 0] * (1 + f[0])
        return drr(data, A, Kp, rotvec_to_matrix(rv) @ R, t + dt, h, w,
                   projector=Projector(mode="exact", backend=backend))

    assert torch.autograd.gradcheck(fn, (rv0, dt, f), eps=1e-7, atol=1e-6, rtol=1e-3, fast_mode=interpreted)


@pytest.mark.parametrize("backend", FUSED)
def test_fused_exact_matches_the_torch_path_with_gradients(backend, oblique_direction):
    """Two views in one call; image and every gradient (volume, K, R, t) against the torch path."""
    data, A, K, R, t = _small_scene(backend, oblique_direction)
    K, R, t = (torch.cat([x, x]) for x in (K, R, t))
    R = R.clone()
    R[1] = torch.as_tensor(rotvec_to_matrix(np.array([0.0, 0.0, 0.1])), device=R.device) @ R[1]
    results = []
    for be in (backend, "torch"):
        leaves = [x.clone().requires_grad_(True) for x in (data, K, R, t)]
        img = drr(leaves[0], A, *leaves[1:], 4, 5, projector=Projector(backend=be, mode="exact"))
        (img * torch.linspace(-1, 2, img.numel(), dtype=img.dtype, device=img.device).reshape(img.shape)).sum().backward()
        results.append([img.detach()] + [x.grad for x in leaves])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_fused_exact_volume_gradient_independent_of_scatter_buffers(oblique_direction):
    from stereodrr.render import _fused_exact

    data, A, K, R, t = _small_scene("numba", oblique_direction)
    uv = rays.pixel_grid_chunk(0, 20, 5, "cpu", torch.float64)
    o, e = (x.reshape(-1, 3) for x in rays.index_rays(A, K, R, t, uv))
    s0, s1 = rays.clip_to_box(o, e, tuple(data.shape[::-1]))
    g = torch.linspace(-1, 2, o.shape[0], dtype=torch.float64)
    grads = [_fused_exact.backward(g, data, o, e, s0, s1, True, budget)[0] for budget in (2**31, 1)]
    assert grads[0].abs().max() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", FUSED)
def test_exact_op_passes_opcheck(backend):
    """torch.library's checks of schema, fake kernel and autograd registration of the exact op."""
    dev = device_for(backend)
    g = torch.Generator().manual_seed(0)
    data = torch.rand(4, 5, 6, generator=g, dtype=torch.float64).to(dev).requires_grad_(True)
    o = torch.tensor([[-3.0, 2.0, 1.5], [2.5, -4.0, 2.0]], dtype=torch.float64, device=dev, requires_grad=True)
    e = torch.tensor([[0.5, 0.1, 0.05], [0.0, 0.4, 0.1]], dtype=torch.float64, device=dev, requires_grad=True)
    s0 = torch.tensor([5.0, 8.0], dtype=torch.float64, device=dev, requires_grad=True)
    s1 = torch.tensor([12.0, 20.0], dtype=torch.float64, device=dev, requires_grad=True)
    torch.library.opcheck(_exact_op(backend), (data, o, e, s0, s1))

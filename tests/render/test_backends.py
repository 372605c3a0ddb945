"""The backend seam: selection, clear errors, custom ops under torch.compile, Triton precision
options (deterministic volume gradient, bfloat16 volumes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stereodrr.geometry import Camera
from stereodrr.render import Projector, backends, drr
from stereodrr.volume import Volume

from .conftest import HAS_TRITON, device_for

H, W = 6, 7


def _scene(device: str = "cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    data = (torch.rand(9, 8, 10, generator=g, dtype=torch.float64) * 0.05).to(device, dtype)
    vol = Volume.from_numpy(np.zeros((9, 8, 10)), spacing=(2.0, 2.5, 3.0), origin=(-5.0, 2.0, 1.0))
    pose_dtype = torch.float32 if dtype in backends.LOW_PRECISION else dtype
    A = torch.linalg.inv(torch.tensor(vol.affine)).to(device, pose_dtype)
    cams = [Camera.look_at(vol.center + np.array([60.0 * s, -300.0, 40.0]), vol.center, sdd=600, pixel_spacing=4.0,
                           width=W, height=H) for s in (1.0, -0.5)]
    K, R, t = (torch.stack(x).to(device, pose_dtype) for x in zip(*(c.to_torch("cpu", torch.float64) for c in cams)))
    return data, A, K, R, t


def test_auto_picks_a_backend_that_runs():
    cpu = torch.device("cpu")
    assert backends.select_backend("auto", cpu, torch.float32, "trilinear").name == "numba"
    assert backends.select_backend("auto", cpu, torch.bfloat16, "trilinear").name == "numba"
    assert backends.select_backend("auto", cpu, torch.float32, "exact").name == "numba"
    # auto never picks the interpreter on CPU, even when it is switched on
    assert backends.select_backend("auto", cpu, torch.float64, "trilinear").name != "triton"
    if torch.cuda.is_available():  # pragma: no cover - needs a GPU
        want = "triton" if HAS_TRITON else "torch"
        assert backends.select_backend("auto", torch.device("cuda"), torch.float32, "trilinear").name == want


def test_backend_errors_name_the_backend_and_the_fix(monkeypatch):
    data, A, K, R, t = _scene()
    with pytest.raises(ValueError, match="backend: expected 'auto' or one of"):
        drr(data, A, K, R, t, H, W, projector=Projector(backend="opencl"))
    # a backend that renders some modes only (every built-in one renders all three)
    monkeypatch.setitem(backends.BACKENDS, "partial", backends.Backend(
        "partial", backends.march_numba, ("trilinear",), lambda device, dtype: None, auto_devices=(), chunk_rays=64))
    with pytest.raises(ValueError, match="'partial' renders modes"):
        drr(data, A, K, R, t, H, W, projector=Projector(backend="partial", mode="exact"))
    with pytest.raises(ValueError, match=r"'triton' cannot render .* on meta: .*CUDA"):
        backends.select_backend("triton", torch.device("meta"), torch.float32, "trilinear")
    monkeypatch.setattr(backends, "_HAS_TRITON", False)  # as on a machine without triton
    with pytest.raises(ValueError, match=r"triton is not installed; pip install 'stereodrr\[gpu\]'"):
        drr(data, A, K, R, t, H, W, projector=Projector(backend="triton"))


class _OnSecondGPU(torch.Tensor):
    """A CPU tensor that says it lies on ``cuda:1`` (what the launch guard reads of it)."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 1)


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")
@pytest.mark.parametrize("kernel, wrapper", [
    ("_triton", "_triton_forward"), ("_triton", "_triton_backward"),
    ("_triton_joseph", "_triton_joseph_forward"), ("_triton_joseph", "_triton_joseph_backward"),
    ("_triton_exact", "_triton_exact_forward"), ("_triton_exact", "_triton_exact_backward")])
def test_triton_kernels_launch_on_the_tensors_gpu(monkeypatch, kernel, wrapper):
    import contextlib
    import importlib
    import inspect

    # Triton launches on torch's current CUDA device: the wrappers make it the tensors'.
    entered: list[torch.device] = []
    current: list[torch.device | None] = [None]

    @contextlib.contextmanager
    def device(d):
        entered.append(d)
        current[0] = d
        yield
        current[0] = None

    module = importlib.import_module(f"stereodrr.render.{kernel}")
    name = wrapper.rsplit("_", 1)[1]
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(module, name, lambda *args: current[0])
    fn = getattr(backends, wrapper)
    rest = [False if p.annotation == "bool" else torch.zeros(1) for p in list(inspect.signature(fn).parameters.values())[1:]]
    assert fn(torch.Tensor._make_subclass(_OnSecondGPU, torch.zeros(1)), *rest) == torch.device("cuda", 1)
    assert entered == [torch.device("cuda", 1)]


def test_low_precision_volume_needs_float32_poses():
    data, A, K, R, t = _scene(dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="float32 poses for a bfloat16"):
        drr(data, A.double(), K, R, t, H, W)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_volume_on_every_backend(backend, dtype):
    """A bfloat16/float16 volume renders like its float32 copy (float32 rays and sums): the
    only error is the volume's own rounding (< 2^-8 relative)."""
    dev = device_for(backend)
    data, A, K, R, t = _scene(dev, dtype)
    img = drr(data, A, K, R, t, H, W, projector=Projector(backend=backend))
    ref = drr(data.float(), A, K, R, t, H, W,
              projector=Projector(mode=backends.BACKENDS[backend].auto_mode, backend="torch"))
    assert img.dtype == torch.float32
    assert torch.allclose(img, ref, rtol=1e-5, atol=1e-6)
    d = data.clone().requires_grad_(True)
    drr(d, A, K, R, t, H, W, projector=Projector(backend=backend)).sum().backward()
    assert d.grad.dtype == dtype and float(d.grad.float().abs().sum()) > 0


@pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")
@pytest.mark.parametrize("mode", ["trilinear", "joseph", "exact"])
def test_triton_deterministic_volume_gradient(mode):
    """Fixed-point integer atomics: the same bits on every run, equal to the torch reference's
    gradient to float32 rounding, in each of the Triton kernels."""
    dev = device_for("triton")
    data, A, K, R, t = _scene(dev)
    ref_data = data.clone().requires_grad_(True)
    drr(ref_data, A, K, R, t, H, W, projector=Projector(backend="torch", mode=mode)).sum().backward()
    grads = []
    torch.use_deterministic_algorithms(True)
    try:
        for _ in range(2):
            d = data.clone().requires_grad_(True)
            drr(d, A, K, R, t, H, W, projector=Projector(backend="triton", mode=mode)).sum().backward()
            grads.append(d.grad)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(grads[0], grads[1])
    err = float((grads[0] - ref_data.grad).abs().max())
    assert float(ref_data.grad.abs().max()) > 1 and err <= 1e-5 * float(ref_data.grad.abs().max()), err
    d = data.clone().requires_grad_(True)
    # float atomics: same to rounding
    drr(d, A, K, R, t, H, W, projector=Projector(backend="triton", mode=mode)).sum().backward()
    assert float((d.grad - grads[0]).abs().max()) <= 1e-5 * float(grads[0].abs().max())


@pytest.mark.parametrize("name, mode", [("numba", "trilinear"), ("numba", "joseph"), ("numba", "exact"),
                                        ("triton", "trilinear"), ("triton", "joseph"), ("triton", "exact")])
def test_fused_ops_survive_torch_compile_fullgraph(name, mode, unchecked):
    """The custom ops stay in one graph (fullgraph=True raises on any break) and give eager's
    image and pose gradient (the run-time annotation checks, which dynamo cannot trace, off)."""
    if name == "triton" and not HAS_TRITON:
        pytest.skip("triton not installed")
    if name == "triton" and not torch.cuda.is_available():
        pytest.skip("torch.compile of the interpreted kernel: checked on CUDA only")
    dev = device_for(name)
    data, A, K, R, t = _scene(dev)
    t = t.clone().requires_grad_(True)

    projector = Projector(mode, backend=name)

    def f(data, A, K, R, t):
        return drr(data, A, K, R, t, H, W, projector)

    eager = f(data, A, K, R, t)
    (g_eager,) = torch.autograd.grad(eager.sum(), t)
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(data, A, K, R, t)
    (g_compiled,) = torch.autograd.grad(out.sum(), t)
    assert torch.allclose(out, eager, rtol=1e-5, atol=1e-6)
    assert torch.allclose(g_compiled, g_eager, rtol=1e-4, atol=1e-6)


def test_custom_ops_pass_opcheck():
    """torch.library's own consistency checks of schema, fake kernel and autograd registration."""
    g = torch.Generator().manual_seed(0)
    data = torch.rand(4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    o = torch.tensor([[-3.0, 2.0, 1.5], [2.5, -4.0, 2.0]], dtype=torch.float64, requires_grad=True)
    e = torch.tensor([[0.5, 0.1, 0.05], [0.0, 0.4, 0.1]], dtype=torch.float64, requires_grad=True)
    s0 = torch.tensor([5.0, 8.0], dtype=torch.float64, requires_grad=True)
    ds = torch.tensor([0.6, 0.5], dtype=torch.float64, requires_grad=True)
    n = torch.tensor([12, 10])
    torch.library.opcheck(backends.march_numba, (data, o, e, s0, ds, n))
    s1 = (s0 + ds * n).detach().requires_grad_(True)
    for k in (1, 3):
        torch.library.opcheck(backends.joseph_numba, (data, o, e, s0, s1, torch.full((2,), k)))
    data_, A, K, R, t = _scene(dtype=torch.float64)
    torch.library.opcheck(torch.ops.stereodrr.rays_numba, (A, K, R, t, 3, 20, W, 10, 8, 9))


@pytest.mark.parametrize("preset", [None, "ACTIVE"])
def test_import_makes_idle_openmp_workers_sleep_unless_the_user_chose(preset):
    """``import stereodrr`` sets OMP_WAIT_POLICY=PASSIVE before torch loads libgomp (read at
    load), and leaves a user's own choice alone."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = "import sys, os, stereodrr; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [preset or "PASSIVE", "False"]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_joseph_matches_the_torch_reference_on_rays_through_every_face(dtype):
    """The fused Joseph forward runs its interior slabs in an unclamped loop and only the end
    slabs and those near a face through the clamped term: random rays entering through every face,
    rays on the edge-voxel planes (``p = 0``, ``p = n - 1``), on the box's faces (``p = -1/2``) and
    parallel to axes, slabs of 1-5 slices, against ``joseph_torch``."""
    from stereodrr.render import _fused, integrate, rays

    g = torch.Generator().manual_seed(3)
    nz, ny, nx = 7, 9, 11
    data = torch.rand(nz, ny, nx, generator=g, dtype=torch.float64).to(dtype)
    size = torch.tensor([nx, ny, nz], dtype=torch.float64)
    n = 3000
    target = torch.rand(n, 3, generator=g, dtype=torch.float64) * size - 0.5
    # snap some targets onto edge-voxel planes and faces, and some directions onto axes
    for i, value in enumerate((0.0, -0.5)):
        rows = slice(i * 300, (i + 1) * 300)
        target[rows, i] = value
    target[600:800, 2] = size[2] - 1.0
    source = target + torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1) * 40.0
    source[800:900, 1:] = target[800:900, 1:]  # parallel to the i axis
    source[900:1000, 0] = target[900:1000, 0]  # in a plane of constant i
    e = torch.nn.functional.normalize(target - source, dim=-1) * 1.4  # index units per mm
    o = source.to(dtype)
    e = e.to(dtype)
    s0, s1 = rays.clip_to_box(o, e, (nx, ny, nz))
    assert int((s1 > s0).sum()) > 0.9 * n
    for k in range(1, 6):
        kk = torch.full((n,), k)
        fused = _fused.joseph_forward(data, o, e, s0, s1, kk)
        ref = integrate.joseph_torch(data, o, e, s0, s1, kk)
        tol = 1e-10 if dtype == torch.float64 else 2e-5
        assert torch.allclose(fused, ref, rtol=tol, atol=tol * float(ref.abs().max())), k


@pytest.mark.parametrize("want_data", [False, True])
def test_fused_joseph_ray_gradients_match_the_torch_reference_on_rays_through_every_face(want_data):
    """The fused Joseph backward (its unclamped interior run is taken for ray gradients alone,
    without the volume's) against autograd through ``joseph_torch``, float64, slabs of 1-4 slices,
    random rays entering through every face."""
    from stereodrr.render import integrate, rays

    g = torch.Generator().manual_seed(5)
    nz, ny, nx = 6, 8, 10
    data = torch.rand(nz, ny, nx, generator=g, dtype=torch.float64)
    # zero edge voxels: in the clamped half voxel at a face the two references' derivative
    # conventions differ (ours zero, grid_sample's border not), and with zeros both are zero
    data[[0, -1]] = 0.0
    data[:, [0, -1]] = 0.0
    data[:, :, [0, -1]] = 0.0
    size = torch.tensor([nx, ny, nz], dtype=torch.float64)
    n = 400
    target = torch.rand(n, 3, generator=g, dtype=torch.float64) * (size - 1.0)
    source = target + torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1) * 30.0
    e = torch.nn.functional.normalize(target - source, dim=-1) * 1.3
    s0, s1 = rays.clip_to_box(source, e, (nx, ny, nz))
    # Ends moved off the box's faces: a face is a slab edge for odd k, where dL/ds0 has a kink
    # (each kernel takes one of its one-sided derivatives, decided by rounding).
    s0 = s0 + 0.05 + 0.2 * torch.rand(n, generator=g, dtype=torch.float64)
    s1 = torch.maximum(s0, s1 - 0.05 - 0.2 * torch.rand(n, generator=g, dtype=torch.float64))
    weights = torch.rand(n, generator=g, dtype=torch.float64)
    for k in range(1, 5):
        kk = torch.full((n,), k)
        grads = []
        for fn in (backends.joseph_numba, integrate.joseph_torch):
            leaves = [x.clone().requires_grad_(True) for x in (data, source, e, s0, s1)]
            if not want_data:
                leaves[0].requires_grad_(False)
            (fn(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], kk) * weights).sum().backward()
            grads.append([x.grad for x in leaves[1:]] + ([leaves[0].grad] if want_data else []))
        for a, b in zip(*grads):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max())), k


@pytest.mark.slow  # 12-26 s on a fresh clone: kept out of the default run's 10 minutes
def test_fused_cpu_kernels_give_the_same_bits_compiled_fresh_and_loaded_from_cache(tmp_path):
    """The first run after install compiles the Numba kernels, later runs load them from Numba's
    cache: both must give the same bits (with fast-math reassociation they did not, and a
    dataset's Poisson draw changed between the two)."""
    import hashlib
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, numpy as np, torch\n"
        "from stereodrr.render import Projector, drr\n"
        "import tests.render.test_backends as t\n"
        "data, A, K, R, t_ = t._scene()\n"
        "h = hashlib.sha256()\n"
        "for mode in ('joseph', 'exact', 'trilinear'):\n"
        "    p = Projector(mode=mode, backend='numba')\n"
        "    h.update(drr(data, A, K, R, t_, t.H, t.W, projector=p).numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    assert any((tmp_path / "numba-cache").rglob("*.nbc")), "the first run cached no kernel"
    assert runs[0].stdout == runs[1].stdout, hashlib.sha256(runs[0].stdout.encode()).hexdigest()


@pytest.mark.parametrize("mode", ["trilinear", "joseph", "exact"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_self_check_passes_the_fused_kernels(mode, dtype):
    """The check itself: the fused CPU kernels and Triton's (on CUDA, or in its interpreter)
    render and differentiate as the torch reference does, to the check's tolerance."""
    assert backends.self_check(backends.BACKENDS["numba"], torch.device("cpu"), dtype, mode) is None
    if HAS_TRITON:  # on CUDA where there is a GPU: the check auto runs there
        assert backends.self_check(backends.BACKENDS["triton"], torch.device(device_for("triton")), dtype, mode) is None


def _scaled(kernel, factor):
    return lambda data, *rest: kernel(data, *rest) * factor


def _failing(*args):
    raise RuntimeError("PTX assembly failed: ptxas fatal (as a GPU driver might say)")


@pytest.mark.parametrize(("march", "reason"), [
    (_failing, "RuntimeError: PTX assembly failed"),
    (_scaled(backends.march_numba, 1.001), "line integrals differ from the torch reference by 1.0e-03"),
])
def test_auto_passes_over_a_backend_that_fails_its_check(monkeypatch, march, reason):
    """A kernel that cannot compile on the device, or renders otherwise, is not auto's choice:
    one warning says why, and the render comes from the next backend, right."""
    flaky = backends.Backend("flaky", march, ("trilinear",), lambda device, dtype: None, auto_devices=("cpu",),
                             chunk_rays=2**16, self_check=True)
    monkeypatch.setattr(backends, "BACKENDS", {"flaky": flaky, **backends.BACKENDS})
    monkeypatch.setattr(backends, "_SELF_CHECKED", {})
    cpu = torch.device("cpu")
    with pytest.warns(RuntimeWarning, match=f"the flaky backend failed its check on cpu .*{reason}"):
        assert backends.select_backend("auto", cpu, torch.float32, "trilinear").name == "numba"
    assert backends.select_backend("auto", cpu, torch.float32, "trilinear").name == "numba"  # checked once
    data, A, K, R, t = _scene()
    ref = drr(data, A, K, R, t, H, W, projector=Projector(backend="numba", mode="trilinear"))
    assert torch.equal(drr(data, A, K, R, t, H, W, projector=Projector(mode="trilinear")), ref)
    # asked for by name it is used as it is: the user chose it
    assert backends.select_backend("flaky", cpu, torch.float32, "trilinear").name == "flaky"
    # a backend that passes is taken
    monkeypatch.setattr(backends, "BACKENDS", {"fine": backends.Backend(
        "fine", backends.march_numba, ("trilinear",), lambda device, dtype: None, auto_devices=("cpu",),
        chunk_rays=2**16, self_check=True), **backends.BACKENDS})
    assert backends.select_backend("auto", cpu, torch.float32, "trilinear").name == "fine"


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_a_backend_first_checked_without_autograd_passes(monkeypatch, mode):
    """``stereodrr render`` and a registration's first renders run under ``torch.no_grad()``:
    the check, which differentiates, must still pass there (it used to fail on the backward
    call, and auto fell back to the torch path for the rest of the process)."""
    import warnings

    fine = backends.Backend("fine", backends.march_numba, ("trilinear",), lambda device, dtype: None,
                            auto_devices=("cpu",), chunk_rays=2**16, self_check=True)
    monkeypatch.setattr(backends, "BACKENDS", {"fine": fine, **backends.BACKENDS})
    monkeypatch.setattr(backends, "_SELF_CHECKED", {})
    data, A, K, R, t = _scene()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with getattr(torch, mode)():
            assert backends.select_backend("auto", torch.device("cpu"), torch.float32, "trilinear").name == "fine"
            img = drr(data, A, K, R, t, H, W, projector=Projector(mode="trilinear"))
    assert torch.equal(img, drr(data, A, K, R, t, H, W, projector=Projector(backend="fine", mode="trilinear")))


def test_auto_takes_a_registered_backend_before_the_torch_fallback(monkeypatch):
    """A backend registered after the built-in ones (a plugin) is auto's choice where no fused
    built-in one renders, not the torch path that renders everywhere."""
    monkeypatch.setattr(backends, "BACKENDS", {k: b for k, b in backends.BACKENDS.items() if k != "numba"})
    cpu = torch.device("cpu")
    assert backends.select_backend("auto", cpu, torch.float32, "trilinear").name == "torch"
    backends.register_backend(backends.Backend(
        "mine", backends.march_numba, ("trilinear",), lambda device, dtype: None, auto_devices=("cpu",),
        chunk_rays=2**16))
    assert list(backends.BACKENDS)[-1] == "mine"
    assert backends.select_backend("auto", cpu, torch.float32, "trilinear").name == "mine"
    # a mode it does not render, or a device it does not claim, still falls back to torch
    assert backends.select_backend("auto", cpu, torch.float32, "exact").name == "torch"


def test_a_self_checked_backend_compiles_in_one_graph(monkeypatch, unchecked):
    """auto's check reads its memo under torch.compile (nothing runs eagerly there): the graph
    stays whole, checked or not."""
    fine = backends.Backend("fine", backends.march_numba, ("trilinear",), lambda device, dtype: None,
                            auto_devices=("cpu",), chunk_rays=2**16, self_check=True)
    monkeypatch.setattr(backends, "BACKENDS", {"fine": fine, **backends.BACKENDS})
    monkeypatch.setattr(backends, "_SELF_CHECKED", {})
    data, A, K, R, t = _scene()
    projector = Projector("trilinear")

    def f(data, A, K, R, t):
        return drr(data, A, K, R, t, H, W, projector)

    for _ in range(2):  # unchecked, then checked by the eager call in between
        torch._dynamo.reset()
        out = torch.compile(f, fullgraph=True, backend="aot_eager")(data, A, K, R, t)
        assert torch.allclose(out, f(data, A, K, R, t), rtol=1e-6, atol=1e-7)
    assert backends._SELF_CHECKED == {("fine", "cpu", torch.float32, "trilinear"): None}


@pytest.mark.parametrize("mode", ["trilinear", "joseph", "exact"])
def test_fused_kernels_read_a_strided_volume_view_as_its_contiguous_copy(mode):
    """A crop of a larger volume (rows and slices apart in memory) renders, and its volume and
    pose gradients come out, bit for bit as from a contiguous copy of it, read in place (no copy
    per call); a layout the kernels cannot index in place (x not contiguous) is copied first."""
    from stereodrr.render import _fused

    _data, A, K, R, t = _scene()
    big = torch.rand(13, 11, 17, generator=torch.Generator().manual_seed(3)) * 0.05
    view = big[2:11, 1:9, 3:13]  # (9, 8, 10) like the scene's volume, strides (187, 17, 1)
    flat, dims = _fused._flat(view)
    assert flat.ctypes.data == view.data_ptr() and dims == (10, 8, 9, 17, 187)
    swapped = big.permute(2, 1, 0).contiguous().permute(2, 1, 0)[2:11, 1:9, 3:13]  # the same voxels, x strided
    assert _fused._volume_strides(swapped) is None and torch.equal(swapped, view)
    results = []
    for vol in (view, view.contiguous(), swapped):
        leaf = vol.detach().requires_grad_(True)  # detach keeps the strides
        Rg = R.clone().requires_grad_(True)
        img = drr(leaf, A, K, Rg, t, H, W, Projector(mode, backend="numba"))
        (img * torch.linspace(0.5, 1.5, img.numel()).reshape(img.shape)).sum().backward()
        results.append((img.detach(), leaf.grad, Rg.grad))
    for got in (results[0], results[2]):
        for a, b in zip(got, results[1]):
            assert torch.equal(a, b)


def _mixed_tiles(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Rays for the lanes tests: tiles of parallel rays of different lengths, of rays along every
    axis mixed (a tile takes one axis's runs, the others run alone), rays that miss (640-699), in
    a strided volume view: ``(data, o, e, s0, s1, generator)``."""
    from stereodrr.render import rays

    g = torch.Generator().manual_seed(5)
    big = torch.rand(23, 29, 37, generator=g, dtype=torch.float64).to(dtype)
    data = big[1:20, 2:27, 3:34]  # (19, 25, 31), read in place
    nz, ny, nx = data.shape
    size = torch.tensor([nx, ny, nz], dtype=torch.float64)
    n = 64 * 40
    target = torch.rand(n, 3, generator=g, dtype=torch.float64) * size - 0.5
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    # tiles 0-9: one near-parallel bundle each (one dominant axis), targets spread across the box
    for tile in range(10):
        rows = slice(tile * 64, (tile + 1) * 64)
        axis = torch.zeros(3, dtype=torch.float64)
        axis[tile % 3] = 1.0 if tile % 2 else -1.0
        direction[rows] = torch.nn.functional.normalize(axis + 0.05 * direction[rows], dim=-1)
    source = target - direction * 60.0
    source[640:700] += 200.0  # a run of rays that miss the box
    e = (direction * 1.3).to(dtype)
    o = source.to(dtype)
    s0, s1 = rays.clip_to_box(o, e, (nx, ny, nz))
    return data, o, e, s0, s1, g


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_joseph_forward_steps_a_tile_of_rays_together_with_each_rays_own_sum(dtype):
    """The Joseph forward kernel sums the unclamped runs of a tile's rays side by side (lanes of
    one loop); each ray must come out bit for bit as summed alone (one ray at a time, the loop
    older versions ran): :func:`_mixed_tiles`' rays, slabs of 1-4 slices."""
    from numba import njit

    from stereodrr.render import _fused

    @njit(fastmath=_fused.FASTMATH)  # the kernels' flags: inlined code compiles with its caller's
    def one_at_a_time(flat, dims, o, e, s0, s1, kk, out):
        for r in range(o.shape[0]):
            out[r] = _fused._joseph_finish(flat, o[r], e[r], s0[r], s1[r], kk[r], dims, 0, 0.0)

    data, o, e, s0, s1, g = _mixed_tiles(dtype)
    n = o.shape[0]
    flat, dims = _fused._flat(data)
    for k in range(1, 5):
        kk = torch.randint(k, k + 2, (n,), generator=g)
        tiled = _fused.joseph_forward(data, o, e, s0, s1, kk)
        alone = np.zeros(n, dtype=flat.dtype)
        one_at_a_time(flat, dims, o.numpy(), e.numpy(), s0.numpy(), s1.numpy(), kk.numpy(), alone)
        assert torch.equal(tiled, torch.from_numpy(alone)), k
        assert bool((tiled[640:700] == 0).all()) and float(tiled[:640].abs().min()) > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_joseph_pose_gradients_step_a_tile_of_rays_together_with_each_rays_own_sums(dtype):
    """The Joseph backward kernel's pose gradients (no volume gradient) sum the unclamped runs of
    a tile's rays side by side too: every ray's ``dL/do, dL/de, dL/ds0, dL/ds1`` must come out
    bit for bit as that ray's walk alone gives them."""
    from numba import njit

    from stereodrr.render import _fused

    @njit(fastmath=_fused.FASTMATH)
    def one_at_a_time(flat, dims, o, e, s0, s1, kk, g, go, ge, gs0, gs1):
        buf = np.zeros(1, flat.dtype)
        zero = flat[0] * 0
        for r in range(o.shape[0]):
            terms = _fused._joseph_grad_ray(flat, dims, o[r], e[r], s0[r], s1[r], kk[r], g[r], False, buf, 0,
                                            (zero, zero, zero, zero, zero))
            _fused._store_grad(r, g[r], terms, go, ge, gs0, gs1)

    data, o, e, s0, s1, g = _mixed_tiles(dtype)
    n = o.shape[0]
    flat, dims = _fused._flat(data)
    grad = torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    for k in (1, 3):
        kk = torch.randint(k, k + 2, (n,), generator=g)
        _, *tiled = _fused.joseph_backward(grad, data, o, e, s0, s1, kk, want_data=False)
        alone = [np.zeros((n, 3), flat.dtype), np.zeros((n, 3), flat.dtype), np.zeros(n, flat.dtype),
                 np.zeros(n, flat.dtype)]
        one_at_a_time(flat, dims, o.numpy(), e.numpy(), s0.numpy(), s1.numpy(), kk.numpy(), grad.numpy(), *alone)
        for name, a, b in zip(("o", "e", "s0", "s1"), tiled, alone):
            assert torch.equal(a, torch.from_numpy(b)), (k, name)
        assert float(tiled[0][:640].abs().amax(-1).min()) > 0  # every hitting ray has a gradient


@pytest.mark.parametrize("segment", ["march", "joseph", "exact"])
@pytest.mark.parametrize("name", ["numba", "triton"])
def test_fused_ops_take_rays_in_any_dense_layout(name, segment):
    """Rays held as a transposed view (``(3, N)`` storage, as a caller's own ray set-up may keep
    them): the same integrals and gradients as from contiguous rays. (The Triton backward wrote
    its gradients in row order into buffers laid out as the input's strides: scrambled.)"""
    if name == "triton" and not HAS_TRITON:
        pytest.skip("triton not installed")
    from stereodrr.render.rays import clip_to_box

    op = getattr(backends, f"{segment}_{name}")
    dev = device_for(name)
    g = torch.Generator().manual_seed(5)
    data = torch.rand(5, 6, 7, generator=g, dtype=torch.float64)
    n = 40
    target = torch.rand(n, 3, generator=g, dtype=torch.float64) * torch.tensor([6.0, 5.0, 4.0])
    away = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=1)
    o_rows, e_rows = target + 15.0 * away, -away
    s0, s1 = clip_to_box(o_rows, e_rows, (7, 6, 5))
    rest = {"march": (s0, (s1 - s0) / 8, torch.full((n,), 8)), "joseph": (s0, s1, torch.full((n,), 2)),
            "exact": (s0, s1)}[segment]
    weights = torch.linspace(0.5, 1.5, n, dtype=torch.float64, device=dev)
    results = []
    for transposed in (False, True):
        o, e = (x.t().contiguous().t() if transposed else x.clone() for x in (o_rows, e_rows))
        assert o.is_contiguous() != transposed
        leaves = [x.to(dev).requires_grad_(True) for x in (data, o, e)]
        L = op(*leaves, *(x.to(dev) for x in rest))
        (L * weights).sum().backward()
        results.append([L.detach().cpu()] + [x.grad.cpu() for x in leaves])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12), segment


def test_a_triton_launch_refuses_more_rays_than_int32_indexes():
    """The kernels index ray ``r``'s coordinates at ``3 r`` in int32: a launch of more rays is
    refused by name (drr's chunks of 2**24 rays stay far below)."""
    if not HAS_TRITON:
        pytest.skip("triton not installed")
    from stereodrr.render import _triton

    assert _triton._block(2**31 // 3) > 0
    with pytest.raises(ValueError, match=r"o: 715827883 rays in one launch; the Triton kernels take at most 715827882"):
        _triton._block(2**31 // 3 + 1)

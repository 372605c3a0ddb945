"""The one-line notice before a Numba kernel compiles (a new install's first render), and its
silence when the kernel is already compiled in this process or held by Numba's cache."""

from __future__ import annotations

import importlib.util
import io
import sys
import threading

import pytest

numba = pytest.importorskip("numba")
from stereodrr.render import threads  # noqa: E402


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fresh_kernel(path):
    """A cached njit function of a module of its own in ``path`` (its cache beside it)."""
    (path / "kern.py").write_text("def add_one(x):\n    return x + 1\n")
    spec = importlib.util.spec_from_file_location("stereodrr_test_kern", path / "kern.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.add_one


def _notice(monkeypatch, kernel, args, stream) -> str:
    monkeypatch.setattr(threads, "_ANNOUNCED", threading.Event())
    monkeypatch.setattr(sys, "stderr", stream)
    threads.announce_compile(kernel, args)
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    return stream.getvalue()


def test_a_kernel_about_to_compile_is_announced_once_to_a_terminal(monkeypatch, tmp_path):
    py = _fresh_kernel(tmp_path)
    kernel = numba.njit(cache=True)(py)
    assert "compiling the CPU renderer's kernels" in _notice(monkeypatch, kernel, (1.0,), _Terminal())
    assert _notice(monkeypatch, kernel, (1.0,), io.StringIO()) == ""  # not a terminal: nothing
    # once per process: a second cold kernel after the first notice says nothing more
    monkeypatch.setattr(sys, "stderr", stream := _Terminal())
    monkeypatch.setattr(threads, "_ANNOUNCED", threading.Event())
    threads.announce_compile(kernel, (1.0,))
    threads.announce_compile(kernel, (1,))
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)
    assert stream.getvalue().count("\n") == 1


def test_no_notice_for_a_kernel_compiled_here_or_in_the_cache(monkeypatch, tmp_path):
    py = _fresh_kernel(tmp_path)
    kernel = numba.njit(cache=True)(py)
    assert kernel(1.0) == 2.0  # compiles for float64 and writes the cache
    assert _notice(monkeypatch, kernel, (1.0,), _Terminal()) == ""
    again = numba.njit(cache=True)(py)  # a new process's dispatcher: nothing compiled yet
    assert _notice(monkeypatch, again, (1.0,), _Terminal()) == ""  # float64 is in the cache
    assert "compiling" in _notice(monkeypatch, again, (1,), _Terminal())  # int64 is not
    uncached = numba.njit(cache=False)(py)
    assert _notice(monkeypatch, uncached, (1,), _Terminal()) == ""  # no cache: nothing to say about it

"""Optional extras: a feature that needs a missing one names the extra; the rest keeps working."""

import pytest
import torch

import stereodrr.extras as extras
from stereodrr.render import backends


def test_require_names_the_extra_and_the_alternative(monkeypatch):
    assert extras.available("numpy") and not extras.available("stereodrr_no_such_module")
    with pytest.raises(extras.MissingExtraError, match=r"needs stereodrr_no_such_module, which is not installed"):
        extras.require("stereodrr_no_such_module", "x", "a feature")
    monkeypatch.setattr(extras, "available", lambda module: module != "distributed")
    with pytest.raises(extras.MissingExtraError, match=r"pip install 'stereodrr\[dask\]'; or use workers=0"):
        extras.require("distributed", "dask", "Dask workers", "use workers=0")
    extras.require("numpy", "none", "anything")  # present: no error


def test_without_numba_auto_renders_with_torch_and_says_why(monkeypatch):
    monkeypatch.setattr(backends, "_HAS_NUMBA", False)
    monkeypatch.setattr(backends, "_WARNED", set())
    cpu = torch.device("cpu")
    with pytest.warns(RuntimeWarning, match=r"fused CPU renderer cannot run \(numba is not installed.*torch backend"):
        assert backends.select_backend("auto", cpu, torch.float32, "trilinear").name == "torch"
    with pytest.raises(ValueError, match=r"numba is not installed \(it is a dependency of stereodrr: pip install numba"):
        backends.select_backend("numba", cpu, torch.float32, "trilinear")


def test_numba_that_cannot_load_is_named_with_its_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "numba":
            raise ImportError("Numba needs NumPy 2.9 or less")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(backends, "_NUMBA_IMPORT", [])  # forget the first import's outcome
    monkeypatch.setattr(builtins, "__import__", failing_import)
    reason = backends.numba_load_error()
    monkeypatch.undo()
    assert reason is not None and "installed but cannot load (ImportError: Numba needs NumPy 2.9 or less)" in reason


def test_numba_is_a_dependency_not_an_extra():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("numba") for d in project["dependencies"])
    assert backends.numba_load_error() is None  # the test environment has the fast path
    assert backends.select_backend("auto", torch.device("cpu"), torch.float32, "auto").name == "numba"


def test_dataset_workers_without_dask_say_which_extra(monkeypatch, tmp_path):
    import copy

    from stereodrr.dataset import generate_dataset, validate_config
    from tests.dataset.conftest import TINY

    monkeypatch.setattr(extras, "available", lambda module: module != "distributed")
    config = validate_config(copy.deepcopy(TINY))
    with pytest.raises(extras.MissingExtraError, match=r"stereodrr\[dask\].*--workers 0"):
        generate_dataset(config, tmp_path / "ds", 1, workers=1, progress=False)
    assert not (tmp_path / "ds").exists()  # refused before anything was written

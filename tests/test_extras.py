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


def test_without_numba_auto_renders_with_torch_and_numba_names_its_extra(monkeypatch):
    monkeypatch.setattr(backends, "_HAS_NUMBA", False)
    cpu = torch.device("cpu")
    assert backends.select_backend("auto", cpu, torch.float32, "trilinear").name == "torch"
    with pytest.raises(ValueError, match=r"numba is not installed \(pip install 'stereodrr\[numba\]'\)"):
        backends.select_backend("numba", cpu, torch.float32, "trilinear")


def test_dataset_workers_without_dask_say_which_extra(monkeypatch, tmp_path):
    import copy

    from stereodrr.dataset import generate_dataset, validate_config
    from tests.dataset.conftest import TINY

    monkeypatch.setattr(extras, "available", lambda module: module != "distributed")
    config = validate_config(copy.deepcopy(TINY))
    with pytest.raises(extras.MissingExtraError, match=r"stereodrr\[dask\].*--workers 0"):
        generate_dataset(config, tmp_path / "ds", 1, workers=1, progress=False)
    assert not (tmp_path / "ds").exists()  # refused before anything was written

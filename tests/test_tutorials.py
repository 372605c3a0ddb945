"""The tutorials (``docs/tutorials/*.py``) run, in their quick setting, and do what their pages say.

Each tutorial is a script with ``main(argv)``; it is loaded from its file and run in this
process (no second torch import) with ``--quick`` into a temporary folder.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"tutorial_{name}", TUTORIALS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def _run(name: str, tmp_path: Path):
    return _load(name).main(["--quick", "--out", str(tmp_path / name)])


def test_every_tutorial_script_has_a_page_and_a_test():
    scripts = sorted(p.stem for p in TUTORIALS.glob("*.py"))
    tested = {n.removeprefix("test_tutorial_") for n in globals() if n.startswith("test_tutorial_")}
    assert scripts and set(scripts) == tested, (scripts, tested)
    pages = "".join(p.read_text() for p in TUTORIALS.glob("*.md"))
    for name in scripts:
        assert f'--8<-- "docs/tutorials/{name}.py"' in pages, f"no page includes docs/tutorials/{name}.py"


def test_tutorial_calibrate_rig(tmp_path):
    report = _run("calibrate_rig", tmp_path)
    assert report["verdict"] == "PASS"
    assert report["epipolar_error_px"] < 0.1 < report["nominal_rig_epipolar_error_px"]
    assert report["triangulation_rms_mm"] < 0.3
    assert (tmp_path / "calibrate_rig" / "rig.json").is_file()


def test_tutorial_register_ct(tmp_path):
    errors = _run("register_ct", tmp_path)
    assert errors["mtre_mm"] < 1.5, errors  # from 12.5 mm
    assert (tmp_path / "register_ct" / "pose.json").is_file()


def test_tutorial_track_trial(tmp_path):
    result = _run("track_trial", tmp_path)
    beads, track = result["beads"], result["track"]
    assert sorted(beads.bodies[beads.bodies["body"] >= 0].groupby("body")["bead"].count()) == [5, 6, 6]
    assert track.status[0] == "converged" and np.all(np.isfinite(track.poses[0]))
    assert {p.name for p in (tmp_path / "track_trial").iterdir()} >= {"points3d.csv", "radius.tra"}


def test_tutorial_polychromatic_images(tmp_path):
    result = _run("polychromatic_images", tmp_path)
    assert 40 < result["mean_kev"] < 60
    assert result["poly"].shape == result["mono"].shape and np.isfinite(result["noisy"]).all()
    assert (tmp_path / "polychromatic_images" / "polychromatic.png").is_file()


def test_tutorial_dataset_training(tmp_path):
    result = _run("dataset_training", tmp_path)
    assert math.isfinite(result["after_deg"]) and result["after_deg"] < result["before_deg"]
    assert (tmp_path / "dataset_training" / "data" / "manifest.parquet").is_file()


def test_tutorial_rig_design(tmp_path):
    table = _run("rig_design", tmp_path)
    assert table.loc["single view", "views"] == 1
    # a biplanar pair sees depth in-plane: its depth bound is far below one view's
    assert table.loc["biplanar", "depth_mm"] < table.loc["convergent 5°", "depth_mm"] < table.loc["single view", "depth_mm"]


@pytest.fixture(autouse=True)
def _agg_backend():
    import matplotlib

    matplotlib.use("Agg")

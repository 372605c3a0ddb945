"""Smoke tests of the registration studies on a tiny detector (the full runs are on docs/results/registration.md)."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


@pytest.fixture(autouse=True)
def _restore_threads():
    """The scripts pin torch and Numba to one thread; give the other tests theirs back."""
    import numba
    import torch

    n, m = torch.get_num_threads(), numba.get_num_threads()
    yield
    torch.set_num_threads(n)
    numba.set_num_threads(m)


def test_registration_study_bounds(tmp_path):
    import registration_mono_vs_stereo as study

    assert study.main(["--bounds-only", "--size", "32", "--spacing", "5", "--ct", "builtin",
                       "--setups", "single", "stereo5", "biplanar", "--out", str(tmp_path)]) == 0
    b = pd.read_csv(tmp_path / "bounds.csv").set_index("setup")
    # Two views carry at least about twice one view's information; a lateral view sees depth in-plane.
    assert b.loc["stereo5", "depth_gain_bound"] > 1.3
    assert b.loc["biplanar", "depth_mm"] < b.loc["stereo5", "depth_mm"]


def test_depth_information_sweep(tmp_path):
    import depth_information

    assert depth_information.main(["--size", "32", "--spacing", "5", "--ct", "builtin", "--detectors-mm", "512", "128",
                                   "--angles-deg", "5", "45", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "depth_information.csv")
    assert len(df) == 4 and (tmp_path / "depth_information.png").stat().st_size > 0
    gain = df.set_index(["detector_mm", "stereo_deg"])["depth_gain"]
    # Wider stereo angles and narrower fields both favour the pair.
    assert gain[(512, 45)] > gain[(512, 5)] and gain[(128, 5)] > gain[(512, 5)]


def test_real_ct_study_smoke(tmp_path):
    import registration_real_ct as study

    assert study.main(["--ct", "builtin", "--builtin-size", "60", "44", "16", "--size", "32", "--detector-mm", "96",
                       "--trials", "1", "--setups", "single", "stereo5", "--targets", "model", "--max-deg", "2",
                       "--max-mm", "3", "--levels", "2:30,1:10:gncc:lbfgs", "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert list(df["setup"]) == ["single", "stereo5"]
    assert {"mtre_mm", "depth_bound_mm", "rotation_bound_deg", "seconds", "status"} <= set(df.columns)
    assert (df["depth_bound_mm"] > 0).all() and df["mtre_mm"].notna().all()
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("setup")
    assert {"rms_depth_mm", "depth_vs_bound", "rotation_vs_bound", "success_pct"} <= set(summary.columns)
    assert (tmp_path / "results.png").stat().st_size > 0 and (tmp_path / "bounds.csv").is_file()

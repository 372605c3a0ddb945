"""Smoke tests of the registration studies on a tiny detector (the full runs are in the README)."""

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

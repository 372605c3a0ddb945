"""Smoke runs of the distortion studies at a small size (the full runs: issue 23's numbers)."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))


@pytest.fixture(autouse=True)
def _restore_threads():
    """The scripts pin torch to one thread; give the other tests theirs back."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_distortion_accuracy_study(tmp_path, capsys):
    import distortion_accuracy

    assert distortion_accuracy.main(["--size", "256", "--fields", "strong", "--lattices", "hex",
                                     "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "distortion_accuracy.csv")
    assert len(df) == 4 and set(df["model"]) == {"polynomial", "lwm"} and df["chosen"].sum() == 2
    assert (df["rms_px"] < 0.01).all() and (tmp_path / "distortion_accuracy.png").stat().st_size > 0
    assert "strong hex noise-free" in capsys.readouterr().out


@pytest.mark.slow
def test_distortion_benchmark(tmp_path):
    import benchmark_distortion

    assert benchmark_distortion.main(["--size", "256", "--repeats", "1", "--frames", "1", "--points", "1000",
                                      "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "benchmark_distortion.csv")
    assert len(df) == 12 and (df["wall_s"] > 0).all()


def test_distortion_registration_study(tmp_path, capsys):
    """The four routes run and are written (a smoke run: this tiny CT and pyramid measure nothing)."""
    import distortion_registration as study

    assert study.main(["--ct", "builtin", "--builtin-size", "60", "44", "16", "--size", "128", "--detector-mm", "200",
                       "--trials", "1", "--max-deg", "1", "--max-mm", "2", "--levels", "2:20,1:10:gncc:lbfgs",
                       "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert list(df["route"]) == list(study.ROUTES) and df["mtre_mm"].notna().all()
    assert (tmp_path / "results.png").stat().st_size > 0 and "| render |" in capsys.readouterr().out


@pytest.mark.slow
def test_distortion_detection_study(capsys):
    """Ball centres through an intensifier against the field's truth (a smoke run at 256^2)."""
    import distortion_detection as study

    assert study.main(["--size", "256", "--photons", "0"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("left:", "right:"))]
    assert len(lines) == 2 and all("over the rim" in ln and "(24 balls)" in ln for ln in lines)

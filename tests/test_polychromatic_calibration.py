"""Calibration on polychromatic images (issue 15): experiments/polychromatic_calibration.py on a
small detector. The absolute calibration goals are not met on stereodrr's LEGO renders even at
one energy (the bricks' edges near the balls bias detection, docs/results/polychromatic.md); what is checked here is
that the physics does not make calibration worse: 80 kVp with CsI and grid scatter against the
same chain at 60 keV, noise-free (measured 2026-12-06: detection 0.0102 against 0.0110 px,
triangulation 0.028 against 0.029 mm). Between commit 4c81795 and 2026-12-06 the 60 keV chain's
noise-free shots skipped its 0.5 px PSF (0.0065 px, 0.017 mm) and this test was loosened to 2x."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


@pytest.mark.slow
def test_polychromatic_calibration_is_no_worse_than_monochromatic(tmp_path):
    import polychromatic_calibration as study

    assert study.main(["-o", str(tmp_path), "--size", "320", "320", "--pixel", "0.45", "--phantoms", "lego_cube",
                       "--chains", "poly80|0", "mono60|0"]) == 0
    t = pd.read_csv(tmp_path / "polychromatic_calibration.csv").set_index("chain")
    assert set(t.verdict) == {"PASS"}
    poly, mono = t.loc["poly80"], t.loc["mono60"]
    assert poly.detection_rms_px <= 1.2 * mono.detection_rms_px + 0.002
    assert poly.triangulation_rms_mm <= 1.2 * mono.triangulation_rms_mm + 0.003
    assert poly.triangulation_rms_mm < 0.1  # a working calibration, not a degenerate one

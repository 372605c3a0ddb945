"""Calibration on polychromatic images (issue 15): experiments/polychromatic_calibration.py on a
small detector. The absolute calibration goals are not met on stereodrr's LEGO renders even at
one energy (the bricks' edges near the balls bias detection, docs/results/polychromatic.md); what is checked here is
what the physics costs on these coarse pixels: 80 kVp with CsI and grid scatter against the same
chain at 60 keV, noise-free (measured 2026-12-06: detection 0.0100 against 0.0065 px,
triangulation 0.027 against 0.017 mm, about 1.55x). Before commit 4c81795 (the one imaging
pipeline) the 60 keV chain's noise-free images came out differently (up to 0.26 in -log) and
read 0.0108 px, the 80 kVp chain's the same as now; this test had compared against those."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


@pytest.mark.slow
def test_polychromatic_calibration_costs_less_than_twice_monochromatic(tmp_path):
    import polychromatic_calibration as study

    assert study.main(["-o", str(tmp_path), "--size", "320", "320", "--pixel", "0.45", "--phantoms", "lego_cube",
                       "--chains", "poly80|0", "mono60|0"]) == 0
    t = pd.read_csv(tmp_path / "polychromatic_calibration.csv").set_index("chain")
    assert set(t.verdict) == {"PASS"}
    poly, mono = t.loc["poly80"], t.loc["mono60"]
    assert poly.detection_rms_px <= 2 * mono.detection_rms_px and poly.detection_rms_px < 0.012
    assert poly.triangulation_rms_mm <= 2 * mono.triangulation_rms_mm
    assert poly.triangulation_rms_mm < 0.1  # a working calibration, not a degenerate one

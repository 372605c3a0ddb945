"""``stereodrr beads`` on synthetic Autoscoper trials rendered by ``synthetic_trial`` (spheres
through real MayaCam calibrations, area-integrated shadows on tissue with Poisson noise, TIFF
frames), measured against the beads, bodies and motions that were rendered."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stereodrr.cli import main

from .synthetic_trial import SyntheticTrial, make_trial

CAL = Path(__file__).resolve().parents[1] / "data" / "autoscoper_wrist" / "Calibration"
KNEE = [CAL / "xr_calib_left_knee_cam01.txt", CAL / "xr_calib_left_knee_cam02.txt"]
ANKLE = [CAL / "xr_calib_right_ankle_cam01.txt", CAL / "xr_calib_right_ankle_cam02.txt"]


def _run(truth: SyntheticTrial, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    assert main(["beads", "--trial", str(truth.cfg), "-o", str(out), "--no-figures"]) == 0
    return (pd.read_csv(out / "beads.csv").dropna(subset=["x"]), pd.read_csv(out / "bodies.csv"),
            json.loads((out / "summary.json").read_text()))


def _bodies_match_truth(truth: SyntheticTrial, beads: pd.DataFrame, bodies: pd.DataFrame) -> None:
    """Every true body found, no bead in a wrong body (a bead may be missing: hidden behind another
    in one view), beads triangulated within 0.1 mm (median) and 0.5 mm (each: one bead partly
    behind another is pulled by it)."""
    true_of: dict[int, int] = {}
    errors = []
    for _, row in beads.iterrows():
        d = np.linalg.norm(truth.positions[int(row["frame"])] - row[["x", "y", "z"]].to_numpy(float), axis=1)
        assert d.min() < 0.5, (row, d.min())
        errors.append(d.min())
        true_of[int(row["bead"])] = int(np.argmin(d))
    assert np.median(errors) < 0.1
    got = bodies[bodies["body"] >= 0]
    assert got["body"].nunique() == truth.body.max() + 1
    for _, g in got.groupby("body"):
        members = {truth.body[true_of[int(b)]] for b in g["bead"]}
        assert len(members) == 1
        assert len(g) >= np.sum(truth.body == members.pop()) - 1


def test_inverted_export_is_tracked(tmp_path):
    # Dark-air frames (an inverted export: beads bright, the field's outside white).
    truth = make_trial(tmp_path / "trial", KNEE, np.random.default_rng(3), n_frames=3, beads=(4, 6), inverted=True,
                       counts=3000.0)
    beads, bodies, _ = _run(truth, tmp_path / "out")
    _bodies_match_truth(truth, beads, bodies)


@pytest.mark.slow
def test_large_beads_at_high_magnification(tmp_path):
    # 2 mm beads through the ankle sample's 2048^2 cameras (8.9 and 7.2 px per mm at the
    # isocenter): shadows of 14-18 px, beyond the wrist-sized 2.5-8 px the detector once searched.
    truth = make_trial(tmp_path / "trial", ANKLE, np.random.default_rng(4), n_frames=3, beads=(4, 6), bead_mm=2.0,
                       counts=3000.0)
    beads, bodies, _ = _run(truth, tmp_path / "out")
    _bodies_match_truth(truth, beads, bodies)


def test_bead_widths_follow_the_calibration():
    from stereodrr.interop.mayacam import load_mayacam
    from stereodrr.track.beads import bead_diameter_px

    ankle, knee = load_mayacam(ANKLE[0]), load_mayacam(KNEE[0])
    iso_a, iso_k = np.array([-47.6, -25.5, 315.7]), np.array([102.0, 76.4, 66.7])
    lo_a, hi_a = bead_diameter_px(ankle, iso_a, (0.5, 2.0))
    lo_k, hi_k = bead_diameter_px(knee, iso_k, (0.5, 2.0))
    # A 2 mm bead at the ankle's isocenter shadows 17.7 px; at the knee's 12.4 px.
    assert hi_a > 17.7 > hi_k > 12.4 and lo_a >= 2.0 and lo_k >= 2.0
    assert bead_diameter_px(knee, iso_k, (1.0, 1.0))[1] < 8.5

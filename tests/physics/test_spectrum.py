"""Spectra: spekpy tube spectra, half-value layer against spekpy's own, effective energy, bad input."""

import json
import math
import warnings

import numpy as np
import pytest

from stereodrr.physics import Spectrum, parse_filters
from stereodrr.physics.attenuation import mass_attenuation


@pytest.mark.parametrize("kvp, filters", [(60.0, "Al:2.5"), (80.0, "Al:2.5"), (120.0, "Al:3,Cu:0.2")])
def test_hvl_within_one_percent_of_spekpy(kvp, filters):
    s = Spectrum.from_tube(kvp, filters)
    assert s.energies_kev.max() < kvp and s.params["anode_angle_deg"] == 12.0
    assert s.hvl_mm("Al") == pytest.approx(s.params["spekpy_hvl_al_mm"], rel=0.01)


def test_hvl_and_effective_energy_of_a_line_are_its_own():
    # A monochromatic beam: HVL = ln2 / mu_Al(E) (xraylib, rho 2.699) and E_eff = E.
    s = Spectrum.monochromatic(50.0)
    mu = 2.699 * mass_attenuation("Al", 50.0)[0] / 10
    assert s.hvl_mm() == pytest.approx(math.log(2) / mu, rel=1e-3)
    assert s.effective_energy_kev() == pytest.approx(50.0, rel=1e-4)


def test_filtration_hardens_the_beam():
    soft, hard = Spectrum.from_tube(80, "Al:1"), Spectrum.from_tube(80, "Al:1,Cu:0.3")
    assert hard.hvl_mm() > soft.hvl_mm() and hard.mean_energy_kev > soft.mean_energy_kev
    assert soft.mean_energy_kev < soft.effective_energy_kev() + 15 < 80
    d = hard.to_dict()
    assert d["kvp"] == 80 and d["filters"] == "Al:1,Cu:0.3" and d["hvl_al_mm"] == pytest.approx(hard.hvl_mm())


def test_table_spectrum_and_csv(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("energy_kev,fluence\n30,1\n50,2\n70,1\n")
    s = Spectrum.from_csv(p)
    assert np.allclose(s.weights, [0.25, 0.5, 0.25]) and s.mean_energy_kev == pytest.approx(50.0)
    # Its description reads back the same beam after the file is gone (a relative path read
    # from another folder, an output folder moved): the bins travel with it, the file as a name.
    d = json.loads(json.dumps(s.filtered("Al", 1.0).to_dict()))
    p.unlink()
    back = Spectrum.from_dict(d)
    assert back == s.filtered("Al", 1.0) and back.to_dict()["file"] == str(p)


@pytest.mark.parametrize("text", [
    "fluence,energy_kev\n1,30\n2,50\n3,70\n",          # columns in the other order, said by the header
    "Fluence (photons), E [keV]\n1,30\n2,50\n3,70\n",
    "energy_kev,fluence\n0,0\n0.5,0\n30,1\n50,2\n70,3\n",  # a table from 0 keV: empty bins below 1 keV
    "30,1\n50,2\n70,3\n"])
def test_csv_spectrum_columns_by_header_and_empty_rows(tmp_path, text):
    """A header naming the energy column second was read as energies = fluence (silently, when
    the fluence rose: these bins became 1, 2, 3 keV); a table's zero-fluence rows below the
    attenuation tables (0 keV) were refused as 'outside 1-800 keV'."""
    p = tmp_path / "s.csv"
    p.write_text(text)
    s = Spectrum.from_csv(p)
    assert s.energies_kev.tolist() == [30.0, 50.0, 70.0] and s.fluence.tolist() == [1.0, 2.0, 3.0]
    assert s.mean_energy_kev == pytest.approx((30 + 100 + 210) / 6)


@pytest.mark.parametrize("text, match", [
    ("energy_kev,fluence\n30,1\n50,nan\n", r"s\.csv: spectrum: fluence must be finite and >= 0, got nan at 50 keV"),
    ("energy_kev,fluence\n50,1\n30,1\n", r"s\.csv: spectrum: energies must increase strictly"),
    ("energy_kev,fluence\n30,1\n50,1\n50,2\n", r"energies must increase strictly, got 50 keV after 50 keV"),
    ("energy_kev,fluence\n", r"s\.csv: the spectrum file holds no row of numbers"),
    ("", r"s\.csv: the spectrum file holds no row of numbers")])
def test_bad_csv_spectrum_names_the_file(tmp_path, text, match):
    """A table's bad values were said without the file ('spectrum: fluence must be finite'); an
    empty table as 'got shape (0, 1)' after numpy's 'input contained no data' warning."""
    p = tmp_path / "s.csv"
    p.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=match):
            Spectrum.from_csv(p)


def test_bad_spectra():
    with pytest.raises(ValueError, match="fluence must be finite and >= 0, got -1 at 50 keV"):
        Spectrum.from_table([30, 50], [1, -1])
    with pytest.raises(ValueError, match="spectrum energy: 0.5 keV lies outside .* 1-800 keV"):
        Spectrum.from_table([0.5, 50], [1, 1])
    with pytest.raises(ValueError, match="spectrum energy: 1000 keV"):
        Spectrum.from_table([50, 1000], [1, 1])
    with pytest.raises(ValueError, match="kvp: 600 kV is outside spekpy's range .* 10-500 kV"):
        Spectrum.from_tube(600)
    with pytest.raises(ValueError, match="filter: unknown material 'Alu'"):
        Spectrum.from_tube(80, "Alu:2")
    with pytest.raises(ValueError, match="filter: expected MATERIAL:MM"):
        parse_filters("Al2.5")
    with pytest.raises(ValueError, match="thickness of 'Al' must be >= 0"):
        parse_filters("Al:-1")
    assert parse_filters("Al:2.5, Cu:0.1") == (("Al", 2.5), ("Cu", 0.1))

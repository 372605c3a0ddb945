"""Materials: xraylib reproduces the NIST tables, HU consistent with stereodrr.volume.mu_water,
metal far above 12 bits, unknown names fail clearly."""

import numpy as np
import pytest

from stereodrr.phantoms import MATERIALS, get_material, material_table
from stereodrr.physics.attenuation import (
    compound_density,
    mass_attenuation,
    mass_photoabsorption,
)
from stereodrr.volume import mu_water

# NIST SRD 126 (Hubbell & Seltzer), mu/rho in cm^2/g, typed from Table 3 (elements) and Table 4
# (compounds): the independent truth the xraylib-based materials must reproduce.
_E = (10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0, 150.0, 200.0)
NIST = {
    "water": (5.329, 1.673, 0.8096, 0.3756, 0.2683, 0.2269, 0.2059, 0.1837, 0.1707, 0.1505, 0.1370),
    "air": (5.120, 1.614, 0.7779, 0.3538, 0.2485, 0.2080, 0.1875, 0.1662, 0.1541, 0.1356, 0.1233),
    "soft_tissue": (5.379, 1.699, 0.8230, 0.3790, 0.2688, 0.2264, 0.2048, 0.1823, 0.1693, 0.1492, 0.1358),
    "adipose": (3.268, 1.083, 0.5677, 0.3063, 0.2396, 0.2123, 0.1974, 0.1800, 0.1688, 0.1500, 0.1368),
    "lung": (5.459, 1.721, 0.8316, 0.3815, 0.2699, 0.2270, 0.2053, 0.1826, 0.1695, 0.1493, 0.1359),
    "cortical_bone": (28.51, 9.032, 4.001, 1.331, 0.6655, 0.4242, 0.3148, 0.2229, 0.1855, 0.1480, 0.1309),
}
NIST_ELEMENTS = {
    "H": (0.3854, 0.3764, 0.3695, 0.3570, 0.3458, 0.3355, 0.3260, 0.3091, 0.2944, 0.2651, 0.2429),
    "C": (2.373, 0.8071, 0.4420, 0.2562, 0.2076, 0.1871, 0.1753, 0.1610, 0.1514, 0.1347, 0.1229),
    "Fe": (170.6, 57.08, 25.68, 8.176, 3.629, 1.958, 1.205, 0.5952, 0.3717, 0.1964, 0.1460),
    "Cr": (138.6, 45.71, 20.38, 6.434, 2.856, 1.550, 0.9639, 0.4905, 0.3166, 0.1788, 0.1378),
    "Ni": (209.0, 70.81, 32.20, 10.34, 4.600, 2.474, 1.512, 0.7306, 0.4440, 0.2208, 0.1582),
    "Mn": (151.4, 50.27, 22.53, 7.141, 3.169, 1.714, 1.060, 0.5306, 0.3367, 0.1838, 0.1391),
}
# Four printed digits: half a unit in the last place is up to 1e-3 relative at the smallest values.
TABLE_PRECISION = 1.5e-3


@pytest.mark.parametrize("name", sorted(NIST))
def test_materials_reproduce_nist_table4(name):
    assert np.allclose(get_material(name).mass_attenuation(np.array(_E)), NIST[name], rtol=TABLE_PRECISION, atol=0)


@pytest.mark.parametrize("symbol", sorted(NIST_ELEMENTS))
def test_elements_reproduce_nist_table3(symbol):
    assert np.allclose(mass_attenuation(symbol, _E), NIST_ELEMENTS[symbol], rtol=TABLE_PRECISION, atol=0)


@pytest.mark.parametrize("energy", [10.0, 33.0, 60.0, 80.0, 123.0, 200.0])
def test_water_is_zero_hu_and_matches_volume_mu_water(energy):
    water = get_material("water")
    assert water.mu(energy) == pytest.approx(mu_water(energy), rel=1e-12)
    assert abs(water.hu(energy)) < 1e-9


def test_steel_is_the_mixture_of_its_elements_and_about_45000_hu_at_60kev():
    # Mixture rule by hand over the NIST Table 3 values at 60 keV: AISI 304 = 69.5 % Fe, 19 % Cr, 9.5 % Ni, 2 % Mn.
    mu_rho = 0.695 * 1.205 + 0.190 * 0.9639 + 0.095 * 1.512 + 0.020 * 1.060
    steel = get_material("stainless_steel")
    assert steel.mu(60.0) == pytest.approx(8.00 * mu_rho / 10, rel=TABLE_PRECISION)
    assert 44000 < steel.hu(60.0) < 46000
    assert steel.hu(60.0) > 3071 * 10  # far beyond a 12-bit CT


def test_tantalum_k_edge_jump():
    # NIST Table 3, Z = 73: 2.652 just below and 11.80 just above the K edge at 67.416 keV.
    ta = get_material("tantalum")
    below, above = ta.mass_attenuation(67.40), ta.mass_attenuation(67.43)
    assert below == pytest.approx(2.652, rel=0.01) and above == pytest.approx(11.80, rel=0.01)


def test_compounds_formulas_and_nist_names():
    # A formula by the mixture rule over its elements' mass fractions (CsI: Cs 132.905, I 126.904).
    w_cs = 132.905 / (132.905 + 126.904)
    e = np.array([30.0, 60.0])
    assert np.allclose(mass_attenuation("CsI", e), w_cs * mass_attenuation("Cs", e) + (1 - w_cs) * mass_attenuation("I", e),
                       rtol=1e-4)
    assert np.allclose(mass_attenuation("H2O", e), mass_attenuation("Water, Liquid", e), rtol=2e-3)
    assert compound_density("Water, Liquid") == pytest.approx(1.0)
    assert compound_density("Al") == pytest.approx(2.699, rel=1e-3)
    # The photoelectric part is below the total, and dominates in CsI at 60 keV (NIST XCOM: 5.85 of 6.28 cm^2/g... roughly 90 %).
    pe, tot = mass_photoabsorption("CsI", e), mass_attenuation("CsI", e)
    assert np.all(pe < tot) and 0.85 < pe[1] / tot[1] < 0.97


def test_every_material_has_a_label_density_and_source():
    table = material_table(60.0)
    assert set(table.material) >= {"air", "water", "soft_tissue", "cortical_bone", "abs", "stainless_steel", "tantalum", "lung"}
    assert (table.density_g_cm3 > 0).all() and (table.mu_per_mm > 0).all()
    assert all(isinstance(m.source, str) and m.source for m in MATERIALS.values())
    # Order of attenuation at 60 keV: air < lung < fat < ABS < water < tissue < bone < steel < tantalum.
    order = ["air", "lung", "adipose", "abs", "water", "soft_tissue", "cortical_bone", "stainless_steel", "tantalum"]
    mus = [get_material(n).mu(60.0) for n in order]
    assert mus == sorted(mus)


def test_bad_material_compound_and_energy():
    with pytest.raises(ValueError, match="unknown material 'steel'.*stainless_steel"):
        get_material("steel")
    with pytest.raises(ValueError, match="unknown material or compound 'Xq2O'"):
        mass_attenuation("Xq2O", 60.0)
    with pytest.raises(ValueError, match="mass fractions sum to 0.9000"):
        mass_attenuation((("Fe", 0.5), ("Ni", 0.4)), 60.0)
    with pytest.raises(ValueError, match=r"energy_kev: 0.5 keV .* 1-800 keV"):
        get_material("water").mu(0.5)
    with pytest.raises(ValueError, match="energy_kev: 900 keV"):
        mass_attenuation("Fe", [60.0, 900.0])

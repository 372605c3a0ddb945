"""Materials: NIST values reproduced, HU consistent with stereodrr.volume.mu_water, metal far above 12 bits."""

import numpy as np
import pytest

from stereodrr.phantoms import MATERIALS, get_material, material_table
from stereodrr.volume import mu_water


@pytest.mark.parametrize("energy", [10.0, 33.0, 60.0, 80.0, 123.0, 200.0])
def test_water_is_zero_hu_and_matches_volume_mu_water(energy):
    water = get_material("water")
    assert water.mu(energy) == pytest.approx(mu_water(energy), rel=1e-12)
    assert abs(water.hu(energy)) < 1e-9


def test_tabulated_points_are_reproduced():
    # NIST SRD 126 Table 4 values at 60 keV (cm^2/g) times the stated densities.
    assert get_material("cortical_bone").mass_attenuation(60.0) == pytest.approx(0.3148, rel=1e-12)
    assert get_material("soft_tissue").mu(60.0) == pytest.approx(1.06 * 0.2048 / 10, rel=1e-12)
    assert get_material("air").hu(60.0) == pytest.approx(1000 * (1.205e-3 * 0.1875 / 0.2059 - 1), rel=1e-12)


def test_steel_is_about_45000_hu_at_60kev():
    # Mixture rule by hand: AISI 304 = 69.5 % Fe, 19 % Cr, 9.5 % Ni, 2 % Mn (NIST mu/rho at 60 keV).
    mu_rho = 0.695 * 1.205 + 0.190 * 0.9639 + 0.095 * 1.512 + 0.020 * 1.060
    steel = get_material("stainless_steel")
    assert steel.mu(60.0) == pytest.approx(8.00 * mu_rho / 10, rel=1e-12)
    assert 44000 < steel.hu(60.0) < 46000
    assert steel.hu(60.0) > 3071 * 10  # far beyond a 12-bit CT


def test_tantalum_k_edge_jump():
    ta = get_material("tantalum")
    below, above = ta.mass_attenuation(67.4), ta.mass_attenuation(67.43)
    assert above / below == pytest.approx(11.80 / 2.652, rel=0.01)
    assert ta.mass_attenuation(67.416) == pytest.approx(11.80)


def test_log_log_interpolation_between_grid_points():
    # Halfway in log E between 50 and 60 keV the log of mu/rho is halfway too.
    e = np.sqrt(50.0 * 60.0)
    assert get_material("water").mass_attenuation(e) == pytest.approx(np.sqrt(0.2269 * 0.2059), rel=1e-12)


def test_every_material_has_a_label_density_and_source():
    table = material_table(60.0)
    assert set(table.material) >= {"air", "water", "soft_tissue", "cortical_bone", "abs", "stainless_steel", "tantalum", "lung"}
    assert (table.density_g_cm3 > 0).all() and (table.mu_per_mm > 0).all()
    assert all(isinstance(m.source, str) and m.source for m in MATERIALS.values())
    # Order of attenuation at 60 keV: air < lung < fat < ABS < water < tissue < bone < steel < tantalum.
    order = ["air", "lung", "adipose", "abs", "water", "soft_tissue", "cortical_bone", "stainless_steel", "tantalum"]
    mus = [get_material(n).mu(60.0) for n in order]
    assert mus == sorted(mus)


def test_bad_material_and_energy():
    with pytest.raises(ValueError, match="unknown material 'steel'.*stainless_steel"):
        get_material("steel")
    with pytest.raises(ValueError, match="energy_kev"):
        get_material("water").mu(5.0)

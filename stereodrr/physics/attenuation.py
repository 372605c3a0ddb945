"""Photon cross sections from xraylib (T. Schoonjans et al., Spectrochim. Acta B 66 (2011)
776-784; https://github.com/tschoonj/xraylib), which ships its data, so no network is needed.

A *material spec* is one of

* an element symbol (``"Fe"``, ``"Al"``),
* a chemical formula (``"CsI"``, ``"H2O"``, ``"Gd2O2S"``),
* a NIST compound name as xraylib lists it (``xraylib.GetCompoundDataNISTList()``, e.g.
  ``"Water, Liquid"``, ``"Air, Dry (near sea level)"``),
* a mixture: a sequence of ``(spec, mass fraction)`` pairs (fractions summing to 1).

Mass attenuation ``mu/rho`` (cm^2/g, coherent scattering included, as NIST XCOM "total with
coherent") and its photoelectric part follow the mixture rule over the elemental
mass fractions ``w_i`` (Hubbell & Seltzer, NISTIR 5632, section 2)::

    mu/rho = sum_i w_i (mu/rho)_i(E)

xraylib's cross sections are defined for 1-800 keV here (:data:`ATTENUATION_RANGE_KEV`); energies
outside raise ``ValueError``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import xraylib
import xraylib_np

__all__ = ["ATTENUATION_RANGE_KEV", "MaterialSpec", "check_energies", "elemental_fractions",
           "mass_attenuation", "mass_photoabsorption", "compound_density"]

#: Energies (keV) where xraylib's splines are defined (it refuses to extrapolate above ~800 keV).
ATTENUATION_RANGE_KEV = (1.0, 800.0)
"""Energies (keV) where xraylib's splines are defined (it refuses to extrapolate above ~800 keV)."""

MaterialSpec = str | Sequence[tuple[str, float]]


def check_energies(energies_kev: np.ndarray | Sequence[float] | float, name: str = "energy_kev") -> np.ndarray:
    """Energies as a float64 array, or ``ValueError`` naming ``name``, the value and the range."""
    e = np.atleast_1d(np.asarray(energies_kev, dtype=np.float64))
    lo, hi = ATTENUATION_RANGE_KEV
    bad = ~np.isfinite(e) | (e < lo) | (e > hi)
    if bad.any():
        raise ValueError(f"{name}: {float(e[bad][0]):g} keV lies outside the attenuation tables' range "
                         f"{lo:g}-{hi:g} keV (xraylib)")
    return e


@functools.lru_cache(maxsize=256)
def _parse(spec: str) -> tuple[tuple[int, float], ...]:
    """``((Z, mass fraction), ...)`` of an element symbol, formula or NIST compound name."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"material: expected a non-empty name, got {spec!r}")
    if spec in _nist_names():
        d = xraylib.GetCompoundDataNISTByName(spec)
    else:
        try:
            d = xraylib.CompoundParser(spec)
        except ValueError:
            raise ValueError(
                f"unknown material or compound {spec!r}: expected an element symbol (e.g. 'Fe'), a chemical "
                "formula (e.g. 'CsI', 'H2O') or a NIST compound name from xraylib.GetCompoundDataNISTList() "
                "(e.g. 'Water, Liquid')") from None
    return tuple((int(z), float(w)) for z, w in zip(d["Elements"], d["massFractions"]))


@functools.lru_cache(maxsize=1)
def _nist_names() -> frozenset[str]:
    return frozenset(xraylib.GetCompoundDataNISTList())


def elemental_fractions(spec: MaterialSpec) -> dict[int, float]:
    """``{Z: mass fraction}`` of a material spec (module docstring); mixtures are flattened.

    Raises:
        ValueError: unknown element, formula or compound name; mixture fractions that are
            negative or do not sum to 1 (within 1e-3).
    """
    if isinstance(spec, str):
        return dict(_parse(spec))
    parts = list(spec)
    if not parts:
        raise ValueError("material mixture: expected (spec, mass fraction) pairs, got none")
    total = 0.0
    out: dict[int, float] = {}
    for sub, w in parts:
        w = float(w)
        if not (w >= 0 and np.isfinite(w)):
            raise ValueError(f"material mixture: mass fraction of {sub!r} must be >= 0, got {w}")
        total += w
        for z, wz in _parse(sub):
            out[z] = out.get(z, 0.0) + w * wz
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"material mixture: mass fractions sum to {total:.4f}, expected 1")
    return {z: w / total for z, w in out.items()}


def _mixture(fn, spec: MaterialSpec, energies_kev) -> np.ndarray:
    e = check_energies(energies_kev)
    frac = elemental_fractions(spec)
    z = np.array(sorted(frac), dtype=np.int64)
    w = np.array([frac[int(k)] for k in z])
    table = fn(z, e)  # (Z, E)
    return (w[:, None] * table).sum(0)


def mass_attenuation(spec: MaterialSpec, energies_kev: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """Total mass attenuation ``mu/rho`` (cm^2/g) at each energy: ``(E,)`` float64."""
    return _mixture(xraylib_np.CS_Total, spec, energies_kev)


def mass_photoabsorption(spec: MaterialSpec, energies_kev: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """Photoelectric part of ``mu/rho`` (cm^2/g) at each energy: ``(E,)``.

    (xraylib's ``CS_Energy`` energy-absorption table is not used: for air it is 35 % below
    NIST's ``mu_en/rho`` at 20-30 keV; kerma uses NIST's table as spekpy ships it.)
    """
    return _mixture(xraylib_np.CS_Photo, spec, energies_kev)


def compound_density(spec: str) -> float:
    """Density (g/cm^3) of a NIST compound or a pure element (xraylib's tables).

    Raises:
        ValueError: a formula or mixture (its density is not defined by its composition).
    """
    if spec in _nist_names():
        return float(xraylib.GetCompoundDataNISTByName(spec)["density"])
    try:
        z = xraylib.SymbolToAtomicNumber(spec)
    except ValueError:
        z = 0
    if z > 0:
        return float(xraylib.ElementDensity(z))
    _parse(spec)  # unknown names get the parser's message
    raise ValueError(f"material {spec!r}: a formula has no tabulated density; give the density in g/cm^3")

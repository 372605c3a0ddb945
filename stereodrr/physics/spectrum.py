"""X-ray tube spectra: photon fluence per energy bin, from spekpy or from a user's table, with
the half-value layer and effective energy that characterise a beam.

Tube spectra come from SpekPy (G. Poludniowski et al., "SpekPy v2.0 -- a software toolkit for
modeling x-ray tube spectra", Med. Phys. 48 (2021) 3630-3637), which models the bremsstrahlung
and characteristic emission of a tungsten anode for a tube potential (kVp), an anode angle and
added filtration, and ships its data. The filtration is written ``"Al:2.5"`` (mm of a material),
several layers joined by commas (``"Al:2.5,Cu:0.1"``).

Beam quality, as dosimetry defines it (ICRU Report 74): the first half-value layer ``HVL`` is the
thickness of a material (aluminium by default) that halves the air kerma,

    K(x) = sum_E phi(E) E (mu_en/rho)_air(E) exp(-mu_Al(E) x),     K(HVL) = K(0) / 2,

and the effective energy is the energy of the monochromatic beam with the same HVL,
``mu_Al(E_eff) = ln 2 / HVL``. Attenuation data: xraylib (:mod:`.attenuation`); the air
energy-absorption coefficients ``mu_en/rho``: NIST SRD 126 Table 4 as spekpy ships it
(``nist_muen_air.dat``, log-log interpolated by spekpy).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import brentq

from ..fileio import read_numeric_csv_with_header
from .attenuation import ATTENUATION_RANGE_KEV, check_energies, compound_density, mass_attenuation

__all__ = ["Spectrum", "parse_filters", "KVP_RANGE", "DEFAULT_ANODE_ANGLE_DEG"]

#: spekpy's tube-potential range for a tungsten anode (its "casim" physics model).
KVP_RANGE = (10.0, 500.0)
DEFAULT_ANODE_ANGLE_DEG = 12.0
DEFAULT_MIN_FRACTION = 1e-6


def _mm_text(mm: float) -> str:
    """A thickness as text: ``:g`` (``"2.5"``, ``"3"``) where that is exact, else every digit, so a
    description read back (:meth:`Spectrum.from_dict`) makes the same beam."""
    short = f"{mm:g}"
    return short if float(short) == mm else repr(float(mm))


def parse_filters(text: str | Sequence[tuple[str, float]] | None) -> tuple[tuple[str, float], ...]:
    """``"Al:2.5,Cu:0.1"`` -> ``(("Al", 2.5), ("Cu", 0.1))`` (mm); ``None``/``""`` -> ``()``.

    Raises:
        ValueError: malformed text or a negative / non-finite thickness (naming ``--filter``'s form).
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return ()
    if isinstance(text, str):
        out = []
        for part in text.split(","):
            name, sep, mm = part.strip().rpartition(":")
            try:
                thickness = float(mm)
            except ValueError:
                thickness = math.nan
            if not sep or not name or not math.isfinite(thickness):
                raise ValueError(f"filter: expected MATERIAL:MM[,MATERIAL:MM...] such as 'Al:2.5', got {text!r}")
            out.append((name.strip(), thickness))
    else:
        out = [(str(m), float(t)) for m, t in text]
    for name, t in out:
        if not (t >= 0 and math.isfinite(t)):
            raise ValueError(f"filter: thickness of {name!r} must be >= 0 mm, got {t}")
    return tuple(out)


def _is_energy(column: str) -> bool:
    """Whether a header's column name says energy (``energy_kev``, ``E [keV]``)."""
    name = column.lower()
    return "energy" in name or "kev" in name or name in ("e", "e_kev")


def _spekpy_material(name: str) -> str:
    """Check that spekpy knows a filter material (an element symbol or one of its material files)."""
    import spekpy

    folder = Path(spekpy.__file__).parent / "data"
    known = {p.stem for sub in ("matl_def", "matl_usr") for p in (folder / sub).glob("*.comp")}
    if name in known:
        return name
    hint = sorted(k for k in known if k.lower().startswith(name[:2].lower()))[:6]
    raise ValueError(f"filter: unknown material {name!r} for spekpy; expected an element symbol (e.g. 'Al', 'Cu') "
                     f"or a spekpy material name{' such as ' + ', '.join(map(repr, hint)) if hint else ''}")


def _muen_air(energies_kev: np.ndarray) -> np.ndarray:
    """NIST ``mu_en/rho`` of dry air (cm^2/g), from spekpy's copy of the table."""
    return np.asarray(_muen_table().get_muen_over_rho_air(np.asarray(energies_kev, dtype=np.float64)), dtype=np.float64)


@functools.lru_cache(maxsize=1)
def _muen_table():
    from spekpy.DataTables import MuEnAirData

    return MuEnAirData("nist_muen_air.dat")


@functools.lru_cache(maxsize=32)
def _tube(kvp: float, filters: tuple[tuple[str, float], ...], anode_angle_deg: float, dk: float
          ) -> tuple[np.ndarray, np.ndarray, float]:
    import spekpy

    # spekpy's HVL search calls warnings.filterwarnings("ignore"): without this guard every warning
    # of the process (stereodrr's own: saturation, a CT in the wrong units) went silent after it.
    with warnings.catch_warnings():
        s = spekpy.Spek(kvp=kvp, th=anode_angle_deg, dk=dk)
        for name, mm in filters:
            if mm > 0:
                s.filter(name, mm)
        k, f = s.get_spectrum()
        return np.asarray(k, dtype=np.float64), np.asarray(f, dtype=np.float64), float(s.get_hvl1())


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Photon fluence per energy bin (any overall scale: only its shape matters downstream).

    Attributes:
        energies_kev: ``(K,)`` bin energies, increasing.
        fluence: ``(K,)`` photons per bin, >= 0, not all zero.
        description: what it is (``"80 kVp W, 12 deg, Al:2.5"``, ``"60 keV"``, ``"table"``).
        params: how it was made (for manifests): kind, kVp, filters, anode angle, ...
    """

    energies_kev: np.ndarray
    fluence: np.ndarray
    description: str = "table"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = np.atleast_1d(np.asarray(self.energies_kev, dtype=np.float64))
        f = np.atleast_1d(np.asarray(self.fluence, dtype=np.float64))
        if e.ndim != 1 or e.shape != f.shape or e.size == 0:
            raise ValueError(f"spectrum: expected equal-length 1D energy and fluence columns, got shapes "
                             f"{e.shape} and {f.shape}")
        # Empty bins outside the attenuation tables (a table's 0 keV first row) hold no photon.
        lo, hi = ATTENUATION_RANGE_KEV
        empty = (f == 0) & np.isfinite(e) & ((e < lo) | (e > hi))
        if empty.any() and not empty.all():
            e, f = e[~empty], f[~empty]
        check_energies(e, "spectrum energy")
        if np.any(np.diff(e) <= 0):
            i = int(np.flatnonzero(np.diff(e) <= 0)[0])
            raise ValueError(f"spectrum: energies must increase strictly, got {e[i + 1]:g} keV after {e[i]:g} keV")
        if not np.all(np.isfinite(f)) or np.any(f < 0):
            bad = f[~np.isfinite(f) | (f < 0)][0]
            raise ValueError(f"spectrum: fluence must be finite and >= 0, got {bad:g} at "
                             f"{float(e[np.flatnonzero(~np.isfinite(f) | (f < 0))[0]]):g} keV")
        if f.sum() <= 0:
            raise ValueError("spectrum: fluence is zero everywhere")
        object.__setattr__(self, "energies_kev", e)
        object.__setattr__(self, "fluence", f)

    # ---- construction
    @classmethod
    def monochromatic(cls, energy_kev: float) -> Spectrum:
        """A one-line spectrum: the monochromatic model is its limit."""
        return cls(np.array([float(energy_kev)]), np.array([1.0]), f"{float(energy_kev):g} keV",
                   {"kind": "monochromatic", "energy_kev": float(energy_kev)})

    @classmethod
    def from_tube(cls, kvp: float, filters: str | Sequence[tuple[str, float]] | None = "Al:2.5",
                  anode_angle_deg: float = DEFAULT_ANODE_ANGLE_DEG, bin_kev: float = 1.0,
                  min_fraction: float = DEFAULT_MIN_FRACTION) -> Spectrum:
        """A tungsten-anode tube spectrum from spekpy.

        Args:
            kvp: tube potential in kV (:data:`KVP_RANGE`).
            filters: added filtration, ``"Al:2.5"`` style or ``((material, mm), ...)``.
            anode_angle_deg: anode (take-off) angle, 12 deg unless the tube says otherwise.
            bin_kev: energy bin width.
            min_fraction: bins holding less than this fraction of the photons are dropped (the
                heavily filtered low-energy tail), which keeps the polychromatic sum short.
        """
        kvp = float(kvp)
        lo, hi = KVP_RANGE
        if not (lo <= kvp <= hi):
            raise ValueError(f"kvp: {kvp:g} kV is outside spekpy's range for a tungsten anode, {lo:g}-{hi:g} kV")
        if not (0 < anode_angle_deg < 90):
            raise ValueError(f"anode_angle_deg: expected 0-90 deg, got {anode_angle_deg}")
        if not (0 < bin_kev <= 10):
            raise ValueError(f"bin_kev: expected 0-10 keV, got {bin_kev}")
        filt = parse_filters(filters)
        for name, _ in filt:
            _spekpy_material(name)
        k, f, hvl = _tube(kvp, filt, float(anode_angle_deg), float(bin_kev))
        keep = f >= min_fraction * f.sum()
        ftxt = ",".join(f"{n}:{_mm_text(t)}" for n, t in filt) or "none"
        params = {"kind": "spekpy", "kvp": kvp, "filters": ftxt, "anode_angle_deg": float(anode_angle_deg),
                  "bin_kev": float(bin_kev), "spekpy_hvl_al_mm": hvl}
        if min_fraction != DEFAULT_MIN_FRACTION:  # which bins were kept: from_dict needs it
            params["min_fraction"] = float(min_fraction)
        return cls(k[keep], f[keep], f"{kvp:g} kVp W, {anode_angle_deg:g} deg, {ftxt}", params)

    @classmethod
    def from_table(cls, energies_kev: Sequence[float] | np.ndarray, fluence: Sequence[float] | np.ndarray,
                   description: str = "table") -> Spectrum:
        """A user's spectrum (e.g. measured): columns energy (keV) and fluence (photons per bin)."""
        return cls(np.asarray(energies_kev), np.asarray(fluence), description, {"kind": "table"})

    @classmethod
    def from_csv(cls, path: str | Path) -> Spectrum:
        """Two columns ``energy_kev, fluence`` (header line optional; a header naming the energy
        column second, ``fluence, energy_kev``, says the columns come in that order)."""
        p = Path(path)
        try:
            a, header = read_numeric_csv_with_header(p, "spectrum file")
        except ValueError as exc:
            raise ValueError(f"{exc} (expected two numeric columns energy_kev, fluence)") from None
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"{p}: expected two columns energy_kev, fluence, got shape {a.shape}")
        if header is not None and len(header) == 2 and not _is_energy(header[0]) and _is_energy(header[1]):
            a = a[:, ::-1]
        try:
            return cls(a[:, 0], a[:, 1], f"table {p.name}", {"kind": "table", "file": str(p)})
        except ValueError as exc:  # the table's values (a NaN fluence, energies out of order): said with the file
            raise ValueError(f"{p}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        """Same bins, fluence and description (what :meth:`from_dict` of :meth:`to_dict` gives back)."""
        if not isinstance(other, Spectrum):
            return NotImplemented
        return (self.description == other.description and np.array_equal(self.energies_kev, other.energies_kev)
                and np.array_equal(self.fluence, other.fluence))

    def __hash__(self) -> int:
        return hash((self.description, self.energies_kev.tobytes(), self.fluence.tobytes()))

    # ---- derived quantities
    @property
    def weights(self) -> np.ndarray:
        """``(K,)`` fluence normalised to sum 1."""
        return self.fluence / self.fluence.sum()

    @property
    def mean_energy_kev(self) -> float:
        """Fluence-weighted mean photon energy."""
        return float((self.weights * self.energies_kev).sum())

    @property
    def is_monochromatic(self) -> bool:
        return self.energies_kev.size == 1

    def filtered(self, material: str, mm: float, density: float | None = None) -> Spectrum:
        """The beam after ``mm`` of a material (Beer-Lambert per bin, xraylib attenuation).

        Raises:
            ValueError: a negative or non-finite thickness, a density that is not positive, an
                unknown material.
        """
        mm = float(mm)
        if not (mm >= 0 and math.isfinite(mm)):
            raise ValueError(f"filter: thickness of {material!r} must be >= 0 mm, got {mm}")
        rho = compound_density(material) if density is None else float(density)
        if not (rho > 0 and math.isfinite(rho)):
            raise ValueError(f"filter: density of {material!r} must be a positive number of g/cm^3, got {density}")
        t = np.exp(-rho * mass_attenuation(material, self.energies_kev) * mm / 10.0)
        # Each filter recorded with its density, in order, so from_dict makes the same beam.
        extra = [*self.params.get("extra_filters", []), [material, mm, rho]]
        return Spectrum(self.energies_kev, self.fluence * t, f"{self.description} + {material}:{_mm_text(mm)}",
                        {**self.params, "extra_filters": extra})

    def air_kerma(self, material: str = "Al", mm: float | np.ndarray = 0.0) -> np.ndarray:
        """Relative air kerma behind ``mm`` of ``material``: ``sum_E phi E (mu_en/rho)_air e^{-mu x}``."""
        e = self.energies_kev
        w = self.fluence * e * _muen_air(e)
        mu = compound_density(material) * mass_attenuation(material, e) / 10.0  # 1/mm
        x = np.atleast_1d(np.asarray(mm, dtype=np.float64))
        return (w[None, :] * np.exp(-mu[None, :] * x[:, None])).sum(1)

    def hvl_mm(self, material: str = "Al") -> float:
        """First half-value layer in mm of ``material`` (air kerma; module docstring)."""
        k0 = float(self.air_kerma(material, 0.0)[0])
        def f(x: float) -> float:
            return float(self.air_kerma(material, x)[0]) - 0.5 * k0

        hi = 1.0
        while f(hi) > 0:
            hi *= 2.0
        return float(brentq(f, 0.0, hi, xtol=1e-9, rtol=1e-10))

    def effective_energy_kev(self, material: str = "Al") -> float:
        """Energy of the monochromatic beam with the same HVL: ``mu(E_eff) = ln 2 / HVL``."""
        target = math.log(2.0) / self.hvl_mm(material)
        rho = compound_density(material)
        def g(e: float) -> float:
            return rho * float(mass_attenuation(material, e)[0]) / 10.0 - target

        # mu falls with energy between absorption edges; search over the spectrum's span.
        lo, hi = max(1.0, float(self.energies_kev.min())), float(self.energies_kev.max())
        if g(lo) * g(hi) > 0:
            return self.mean_energy_kev if self.is_monochromatic else float(lo if abs(g(lo)) < abs(g(hi)) else hi)
        return float(brentq(g, lo, hi, xtol=1e-6))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Spectrum:
        """The spectrum :meth:`to_dict` describes, made again the same way (a table from its bins,
        or its ``file`` where they are not given).

        Raises:
            ValueError: a description that does not say how to make the spectrum.
        """
        kind = d.get("kind", "table")
        if kind == "table" and "energies_kev" in d and "fluence" in d:  # the bins themselves, filters included
            params = {k: v for k, v in d.items() if k in ("kind", "file", "extra_filters")}
            return cls(np.asarray(d["energies_kev"], np.float64), np.asarray(d["fluence"], np.float64),
                       str(d.get("description", "table")), params)
        if kind == "monochromatic":
            base = cls.monochromatic(float(d["energy_kev"]))
        elif kind == "spekpy":
            filters = None if d.get("filters", "none") == "none" else d["filters"]
            base = cls.from_tube(float(d["kvp"]), filters, float(d.get("anode_angle_deg", DEFAULT_ANODE_ANGLE_DEG)),
                                 float(d.get("bin_kev", 1.0)), float(d.get("min_fraction", DEFAULT_MIN_FRACTION)))
        elif kind == "table" and "file" in d:
            base = cls.from_csv(d["file"])
        else:
            raise ValueError(f"spectrum: cannot make a spectrum from {dict(d)!r} (expected kind monochromatic, "
                             "spekpy, or table with its file or its energies_kev and fluence)")
        for material, mm, rho in d.get("extra_filters", []):
            base = base.filtered(material, mm, rho)
        if "extra_filter" in d:  # written before extra_filters (one filter, the material's own density)
            material, _, mm = str(d["extra_filter"]).rpartition(":")
            base = base.filtered(material, float(mm))
        return base

    def to_dict(self) -> dict[str, Any]:
        """Description for manifests: how it was made, mean and effective energy, Al HVL
        (:meth:`from_dict` reads it back)."""
        out: dict[str, Any] = {"description": self.description, **self.params,
                               "mean_energy_kev": self.mean_energy_kev}
        if self.params.get("kind", "table") == "table":
            # the bins themselves (a table made in code has nothing else; a CSV's file, kept as
            # information, may be relative or gone where the description is read back)
            out.update(kind="table", energies_kev=self.energies_kev.tolist(), fluence=self.fluence.tolist())
        if not self.is_monochromatic:
            out.update(hvl_al_mm=self.hvl_mm("Al"), effective_energy_kev=self.effective_energy_kev("Al"))
        return out

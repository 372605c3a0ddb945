"""Measure a distortion from a perforated-plate image: :func:`fit_distortion`.

1. **Holes and lattice** (:mod:`stereodrr.distortion.grid`): sub-pixel centres, integer indices.
2. **The ideal lattice** from the central holes, where the field is nearly a similarity: a
   perfect hex or square lattice ``origin + i a1 + j a2`` (``a2`` is ``a1`` turned by 60 or 90
   degrees), fitted by linear least squares. Its position, rotation and scale are a gauge (the
   plate's placement and the pixel size are unknown): a map is defined up to that similarity,
   and accuracy is measured after removing it.
3. **Curvature bias.** A round hole seen through a curved field is no ellipse; the centre the fit
   finds is, to first order, the centroid of the distorted disc, which lies off the distorted
   centre by about ``r^2 / 4 * J grad log|J| + r^2 / 8 * Laplacian`` (a few 1e-3 px for the strong
   preset's 8 px holes). It is computed with a preliminary forward polynomial (ideal -> recorded):
   the centroid of the disc's 64-gon mapped through it, minus the centre's image; and removed.
4. **Maps** of every kind in :data:`~stereodrr.distortion.correction.CORRECTIONS`, each
   scored on held-out holes (``folds``-fold cross-validation: each hole predicted by a map fitted
   without it); the polynomial's degree is chosen the same way. The map with the lower held-out
   RMS is chosen (or the one requested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from .correction import CORRECTIONS, DistortionMap, GridRecord, LWMCorrection, PolynomialCorrection
from .grid import LATTICE_ANGLE_DEG, Holes, Lattice, detect_holes, find_lattice

__all__ = ["FitOptions", "GridMeasurement", "measure_grid", "fit_correction", "heldout_residuals", "fit_maps", "fit_distortion"]

# Holes off the preliminary map by more than this many robust sigmas (and 0.02 px) are dropped.
OUTLIER_SIGMAS = 8.0
# The polygon that stands for a hole's edge in the curvature bias.
BIAS_VERTICES = 64


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit_distortion` reads a grid image.

    Attributes:
        lattice: ``"auto"``, ``"hex"`` or ``"square"``.
        holes: the holes' polarity: ``"auto"``, ``"bright"`` (X-ray frames) or ``"dark"``.
        model: ``"auto"`` (the lower held-out RMS), ``"polynomial"`` or ``"lwm"``.
        central_fraction: the ideal lattice is fitted to the holes within this fraction of the
            field's radius of its centre (at least the 7 nearest).
        degrees: the polynomial degrees tried.
        lwm_neighbours: neighbours of each LWM quadratic (12: a hex hole's two nearest rings).
        folds: cross-validation folds of the held-out residuals.
        curvature_correction: remove the curvature bias of the hole centres.
        min_holes: fewer holes on the lattice is an error.
        seed: of the fold assignment.
    """

    lattice: Literal["auto", "hex", "square"] = "auto"
    holes: Literal["auto", "bright", "dark"] = "auto"
    model: Literal["auto", "polynomial", "lwm"] = "auto"
    central_fraction: float = 0.3
    degrees: tuple[int, ...] = (3, 4, 5, 6, 7, 8, 9)
    lwm_neighbours: int = 12
    folds: int = 10
    curvature_correction: bool = True
    min_holes: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lattice not in ("auto", "hex", "square"):
            raise ValueError(f"lattice: expected 'auto', 'hex' or 'square', got {self.lattice!r}")
        if self.holes not in ("auto", "bright", "dark"):
            raise ValueError(f"holes: expected 'auto', 'bright' or 'dark', got {self.holes!r}")
        if self.model != "auto" and self.model not in CORRECTIONS:
            raise ValueError(f"model: expected 'auto' or one of {sorted(CORRECTIONS)}, got {self.model!r}")
        if not 0 < self.central_fraction <= 1:
            raise ValueError(f"central_fraction: expected a fraction in (0, 1], got {self.central_fraction}")
        if not self.degrees or any(int(d) != d or d < 1 or d > 15 for d in self.degrees):
            raise ValueError(f"degrees: expected polynomial degrees in 1..15, got {self.degrees}")
        if self.folds < 2:
            raise ValueError(f"folds: expected at least 2, got {self.folds}")
        if self.min_holes < 10:
            raise ValueError(f"min_holes: expected at least 10, got {self.min_holes}")


@dataclass(frozen=True, eq=False)
class GridMeasurement:
    """What a grid image says: for every hole on the lattice its recorded and ideal position.

    Attributes:
        width, height: the image size.
        holes: every hole fitted; lattice: the lattice of those used (``lattice.index``).
        measured: ``(N, 2)`` fitted centres; recorded: the same with the curvature bias removed.
        ideal: ``(N, 2)`` the ideal lattice positions; central: ``(N,)`` the holes it was fitted to.
        origin, basis: the ideal lattice; hole_radius: the holes' radius, ideal px.
        center, scale: the normalisation of the polynomials (field centre, half the larger side).
        outliers: holes dropped off the preliminary map.
    """

    width: int
    height: int
    holes: Holes
    lattice: Lattice
    measured: np.ndarray
    recorded: np.ndarray
    ideal: np.ndarray
    central: np.ndarray
    origin: np.ndarray
    basis: np.ndarray
    hole_radius: float
    center: tuple[float, float]
    scale: float
    outliers: int

    @property
    def displacement(self) -> np.ndarray:
        """``(N, 2)`` ideal minus recorded: what a correction must add at each hole."""
        return self.ideal - self.recorded


def _ideal_lattice(index: np.ndarray, q: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of a perfect lattice ``o + B index`` (``B = [a1, Rot(angle) a1]``) to ``q``."""
    th = math.radians(LATTICE_ANGLE_DEG[kind])
    c, s = math.cos(th), math.sin(th)
    i, j = index[:, 0].astype(np.float64), index[:, 1].astype(np.float64)
    one, zero = np.ones_like(i), np.zeros_like(i)
    # Unknowns (o_u, o_v, a, b) with a1 = (a, b).
    A = np.concatenate([np.c_[one, zero, i + c * j, -s * j], np.c_[zero, one, s * j, i + c * j]])
    sol = np.linalg.lstsq(A, np.r_[q[:, 0], q[:, 1]], rcond=None)[0]
    a1 = sol[2:]
    a2 = np.array([c * a1[0] - s * a1[1], s * a1[0] + c * a1[1]])
    return sol[:2], np.c_[a1, a2]


def _polygon_centroid(pts: np.ndarray) -> np.ndarray:
    """``(..., M, 2)`` closed polygons -> ``(..., 2)`` area centroids (shoelace)."""
    x, y = pts[..., 0], pts[..., 1]
    x1, y1 = np.roll(x, -1, -1), np.roll(y, -1, -1)
    cross = x * y1 - x1 * y
    area3 = 3.0 * cross.sum(-1)
    return np.stack([((x + x1) * cross).sum(-1) / area3, ((y + y1) * cross).sum(-1) / area3], -1)


def _feasible_degree(n: int, degrees: tuple[int, ...], per_term: float = 3.0) -> list[int]:
    """Degrees whose term count leaves ``per_term`` holes per coefficient."""
    return [d for d in sorted(set(degrees)) if (d + 1) * (d + 2) / 2 * per_term <= n]


def _curvature_bias(p: np.ndarray, q: np.ndarray, radii: np.ndarray, center: tuple[float, float], scale: float,
                    degree: int) -> tuple[np.ndarray, float]:
    """The centroid bias of each hole (recorded px) and the holes' ideal radius (module docstring)."""
    fwd = PolynomialCorrection.fit(p, q - p, degree, center, scale)  # ideal -> recorded

    def D(x: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(x)
        return (t + fwd.displacement(t)).numpy()

    h = 1e-3
    Dp = D(p)
    ju, jv = (D(p + [h, 0.0]) - Dp) / h, (D(p + [0.0, h]) - Dp) / h
    det = ju[:, 0] * jv[:, 1] - ju[:, 1] * jv[:, 0]
    r = float(np.median(radii / np.sqrt(det)))
    ang = 2 * np.pi * np.arange(BIAS_VERTICES) / BIAS_VERTICES
    ring = p[:, None, :] + r * np.stack([np.cos(ang), np.sin(ang)], -1)[None]
    return _polygon_centroid(D(ring)) - Dp, r


def _predict(corr: Any, q: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return corr.displacement(torch.as_tensor(q, dtype=torch.float64)).numpy()


def measure_grid(image: np.ndarray, options: FitOptions = FitOptions(), name: str = "image") -> GridMeasurement:
    """Holes, lattice, ideal lattice and bias-corrected centres of a grid image (module docstring).

    Raises:
        ValueError: too few holes, no lattice, or not a grid image (the message names ``name``).
    """
    img = np.asarray(image)
    holes = detect_holes(img, options.holes, name, options.min_holes)
    round_field = math.isfinite(holes.field_radius)
    lattice, which = find_lattice(holes.centers, options.lattice, holes.field_center if round_field else None,
                                  name, options.min_holes)
    q0 = holes.centers[which]
    H, W = img.shape
    center = holes.field_center if round_field else (0.5 * (W - 1), 0.5 * (H - 1))
    scale = 0.5 * max(W, H)
    rad = np.hypot(q0[:, 0] - center[0], q0[:, 1] - center[1])
    reach = holes.field_radius if round_field else float(rad.max())
    central = rad <= options.central_fraction * reach
    if central.sum() < 7:
        central = rad <= np.sort(rad)[min(6, len(rad) - 1)]
    degrees = _feasible_degree(len(q0), options.degrees)
    if not degrees:
        raise ValueError(f"{name}: {len(q0)} holes on the lattice are too few for a polynomial of degree "
                         f"{min(options.degrees)} (expected at least {3 * (min(options.degrees) + 1) * (min(options.degrees) + 2) // 2})")
    prelim = min(max(degrees), 7)
    index = lattice.index
    q = q0.copy()
    radius = float(np.median(holes.radii[which]))
    keep = np.ones(len(q), dtype=bool)
    for _ in range(2):  # the bias needs the map, the map the unbiased centres: once more suffices
        origin, basis = _ideal_lattice(index[keep & central], q[keep & central], lattice.kind)
        p = origin + index @ basis.T
        if options.curvature_correction:
            bias, radius = _curvature_bias(p[keep], q0[keep], holes.radii[which][keep], center, scale, prelim)
            q = q0.copy()
            q[keep] -= bias
        corr = PolynomialCorrection.fit(q[keep], (p - q)[keep], prelim, center, scale)
        resid = np.linalg.norm(_predict(corr, q) - (p - q), axis=1)
        sigma = 1.4826 * float(np.median(resid[keep]))
        keep = resid <= max(OUTLIER_SIGMAS * sigma, 0.02)
    origin, basis = _ideal_lattice(index[keep & central], q[keep & central], lattice.kind)
    p = origin + index @ basis.T
    kept = Lattice(lattice.kind, index[keep], lattice.basis, lattice.spacing)
    return GridMeasurement(W, H, holes, kept, q0[keep], q[keep], p[keep], central[keep], origin, basis, radius,
                           (float(center[0]), float(center[1])), float(scale), int((~keep).sum()))


def fit_correction(meas: GridMeasurement, model: str, options: FitOptions = FitOptions(), degree: int | None = None
                   ) -> Any:
    """The correction ``model`` fitted to every hole of ``meas`` (the polynomial of ``degree``,
    default the largest feasible of ``options.degrees``)."""
    q, disp = meas.recorded, meas.displacement
    if model == "polynomial":
        deg = degree if degree is not None else max(_feasible_degree(len(q), options.degrees))
        return PolynomialCorrection.fit(q, disp, deg, meas.center, meas.scale)
    if model == "lwm":
        return LWMCorrection.fit(q, disp, options.lwm_neighbours)
    raise ValueError(f"model: expected one of {sorted(CORRECTIONS)}, got {model!r}")


def heldout_residuals(meas: GridMeasurement, model: str, options: FitOptions = FitOptions(),
                      degree: int | None = None) -> np.ndarray:
    """``(N, 2)`` each hole's residual (corrected minus ideal, px) under a map fitted without it
    (``options.folds``-fold cross-validation, folds drawn with ``options.seed``)."""
    n = len(meas.recorded)
    fold = np.random.default_rng(options.seed).permutation(n) % options.folds
    out = np.full((n, 2), np.nan)
    for k in range(options.folds):
        test, train = fold == k, fold != k
        sub = replace(meas, measured=meas.measured[train], recorded=meas.recorded[train], ideal=meas.ideal[train],
                      central=meas.central[train])
        corr = fit_correction(sub, model, options, degree)
        out[test] = meas.recorded[test] + _predict(corr, meas.recorded[test]) - meas.ideal[test]
    return out


def _rms(r: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.sum(r * r, axis=1))))


def _score(meas: GridMeasurement, model: str, options: FitOptions) -> tuple[Any, dict[str, Any]]:
    """The model fitted to all holes and its residuals (in-sample and held-out)."""
    extra: dict[str, Any] = {}
    degree = None
    if model == "polynomial":
        # Train folds hold (folds - 1) / folds of the holes: the degree must fit there too.
        n_train = len(meas.recorded) * (options.folds - 1) // options.folds
        by_degree = {d: heldout_residuals(meas, model, options, d) for d in _feasible_degree(n_train, options.degrees)}
        if not by_degree:
            raise ValueError(f"{len(meas.recorded)} holes are too few for a polynomial of degree {min(options.degrees)}")
        rms = {d: _rms(r) for d, r in by_degree.items()}
        degree = min(rms, key=lambda d: rms[d])
        held = by_degree[degree]
        extra = {"degree": degree, "heldout_rms_px_by_degree": {str(d): v for d, v in rms.items()}}
    else:
        held = heldout_residuals(meas, model, options)
        extra = {"neighbours": options.lwm_neighbours}
    corr = fit_correction(meas, model, options, degree)
    fitted = meas.recorded + _predict(corr, meas.recorded) - meas.ideal
    return corr, {"rms_px": _rms(fitted), "max_px": float(np.linalg.norm(fitted, axis=1).max()),
                  "heldout_rms_px": _rms(held), "heldout_max_px": float(np.linalg.norm(held, axis=1).max()), **extra}


def fit_maps(meas: GridMeasurement, options: FitOptions = FitOptions()) -> tuple[dict[str, DistortionMap], str]:
    """A map of every model for a grid measurement, and the name of the one ``options.model``
    chooses (``"auto"``: the lower held-out RMS). Every map carries every fitted model's residuals;
    a model the grid has too few holes for is left out unless it is the one asked for (the LWM
    needs fewer holes than a polynomial of the lowest degree)."""
    fits, failed = {}, {}
    for m in CORRECTIONS:
        try:
            fits[m] = _score(meas, m, options)
        except ValueError as exc:
            failed[m] = exc
    if options.model in failed or not fits:
        raise failed.get(options.model, next(iter(failed.values())))
    residuals = {m: r for m, (_, r) in fits.items()}
    if options.model == "auto":
        chosen, why = min(residuals, key=lambda m: residuals[m]["heldout_rms_px"]), "held-out"
    else:
        chosen, why = options.model, "requested"
    grid = GridRecord(meas.lattice.kind, meas.lattice.spacing, meas.origin, meas.basis, meas.lattice.index,
                      meas.recorded, meas.ideal, meas.central, meas.hole_radius)
    h = meas.holes
    maps = {m: DistortionMap(meas.width, meas.height, corr, h.field_center, h.field_radius, grid, residuals,
                             why if m == chosen else "alternative") for m, (corr, _) in fits.items()}
    return maps, chosen


def fit_distortion(image: np.ndarray, options: FitOptions = FitOptions(), name: str = "image") -> DistortionMap:
    """Measure the distortion of a perforated-plate image (module docstring).

    Args:
        image: ``(H, W)`` grid image, any dtype, bright or dark holes.
        options: see :class:`FitOptions`.
        name: the input's name in error messages (a file name).

    Returns:
        the map of the chosen model, with every model's residuals (``map.residuals``).

    Raises:
        ValueError: too few holes, no lattice, or not a grid image.
    """
    maps, chosen = fit_maps(measure_grid(image, options, name), options)
    return maps[chosen]

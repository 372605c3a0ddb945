"""A perforated-plate image: its round field, its holes (sub-pixel centres), and their lattice.

**Holes.** Inside the field the image has two levels, plate and holes; a threshold between them
(Otsu's) splits the pixels, and the holes are the class that forms many compact blobs of one
size (bright holes in an X-ray frame, dark ones in an inverted export). Each blob's centre is
then fitted to the pixels around it: the model is an ellipse ``(q - c)^T M (q - c) = 1`` whose
edge crosses each pixel as an arc (each pixel reports its inside fraction: that of the tangent
line, exact, :func:`~stereodrr.distortion.coverage.edge_coverage`, less the arc's deficit,
:func:`~stereodrr.distortion.coverage.arc_deficit`), a plate level with a linear slope, and the
hole's contrast: 9 parameters by Levenberg-Marquardt, all holes at once. Without the arc the
fitted radius is short by ``~1 / (8 r)`` px and the centres scatter twice as much. Holes that come within
1.5 px of the field's edge, fit badly, or differ in area from their neighbours are rejected.

**Lattice.** The holes nearest the field centre give the spacing and the number of equidistant
neighbours (6: hex, 4: square) and the lattice direction (the mean of the neighbour directions
modulo 60 or 90 degrees). Indices then grow outward from the central hole: each indexed hole
predicts its neighbours with its own local basis (fitted to its indexed neighbours, so the
distortion never accumulates), and a hole within 0.3 spacing of a prediction takes its index.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Callable, Literal

import cv2
import numpy as np
from scipy.spatial import cKDTree

from .coverage import arc_deficit, edge_coverage_and_slope
from .fov import FieldOfView, fit_field_of_view

__all__ = ["LatticeKind", "LATTICE_ANGLE_DEG", "lattice_basis", "Holes", "Lattice", "detect_holes",
           "find_lattice"]

LatticeKind = Literal["hex", "square"]
# The angle between a lattice's two basis vectors.
LATTICE_ANGLE_DEG: dict[str, float] = {"hex": 60.0, "square": 90.0}
# Holes whose ellipse comes this close (px) to the field's edge are rejected: cut, or in its blur.
EDGE_MARGIN_PX = 1.5
# A hole is rejected when its area differs from its neighbours' median by more than this fraction.
AREA_TOLERANCE = 0.06
# A hole's fit stops when its centre moves less than this (px).
STEP_TOLERANCE_PX = 1e-6
# Prediction tolerance of the lattice growth, in hole spacings.
MATCH_TOLERANCE = 0.3
# The index of a hole the lattice growth has not reached.
_UNINDEXED = np.iinfo(np.int64).min
_GRID_EDGE_LEVELS = (0.25, 0.08, 0.03)  # fractions of the spread: field_of_view's, then plates down to 0.06 of the holes
# The share of the rays' edge points a grid image's round field must be fitted to (a plate at the
# level reaches the edge on every ray: 1.00; one below it, 0.3-0.7).
_GRID_EDGE_CONSENSUS = 0.9


def lattice_basis(kind: str, pitch: float, angle_deg: float) -> np.ndarray:
    """``(2, 2)`` basis vectors as columns: ``a1`` at ``angle_deg`` from the ``u`` axis, ``a2``
    turned from it by the lattice angle, both ``pitch`` long."""
    if kind not in LATTICE_ANGLE_DEG:
        raise ValueError(f"lattice: expected one of {sorted(LATTICE_ANGLE_DEG)}, got {kind!r}")
    a, b = math.radians(angle_deg), math.radians(angle_deg + LATTICE_ANGLE_DEG[kind])
    return pitch * np.array([[math.cos(a), math.cos(b)], [math.sin(a), math.sin(b)]])


@dataclass(frozen=True)
class Holes:
    """Fitted holes of a grid image (recorded pixels).

    Attributes:
        centers: ``(N, 2)`` ellipse centres ``(u, v)``.
        shapes: ``(N, 2, 2)`` the ellipse matrices ``M`` (``(q - c)^T M (q - c) = 1``).
        contrast: ``(N,)`` hole level minus plate level (negative for dark holes).
        rms: ``(N,)`` the fit's residual RMS in image units.
        field_center, field_radius: the round field of view (``inf``: none found).
        rejected: counts of the blobs rejected, by reason.
    """

    centers: np.ndarray
    shapes: np.ndarray
    contrast: np.ndarray
    rms: np.ndarray
    field_center: tuple[float, float]
    field_radius: float
    rejected: dict[str, int]

    @property
    def radii(self) -> np.ndarray:
        """``(N,)`` the radius of the circle of the same area, ``det(M)^(-1/4)``."""
        return np.linalg.det(self.shapes) ** -0.25

    def __len__(self) -> int:
        return len(self.centers)


def _otsu(values: np.ndarray, bins: int = 512) -> float:
    """Otsu's threshold of ``values`` (the split maximising the between-class variance)."""
    hist, edges = np.histogram(values, bins=bins)
    mids = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(mids[int(np.argmax(between[:-1]))])


def _blobs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connected blobs of a mask: ``(areas, centroids (N, 2), boxes (N, 4) x y w h)``."""
    n, _, stats, cent = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return stats[1:, cv2.CC_STAT_AREA].astype(np.float64), cent[1:], stats[1:, :4]


def _regular(areas: np.ndarray) -> np.ndarray:
    """Blobs of the typical size: within a factor 2 of the median of those of at least 5 px."""
    big = areas[areas >= 5]
    if len(big) == 0:
        return np.zeros(len(areas), dtype=bool)
    med = float(np.median(big))
    return (areas >= 0.5 * med) & (areas <= 2.0 * med) & (areas >= 5)


def detect_holes(image: np.ndarray, holes: Literal["auto", "bright", "dark"] = "auto", name: str = "image",
                 min_holes: int = 25) -> Holes:
    """Find and fit the holes of a perforated-plate image (module docstring).

    Args:
        image: ``(H, W)`` any dtype.
        holes: the holes' polarity, or ``"auto"``.
        name: the input's name in error messages.
        min_holes: fewer usable holes than this is an error.

    Raises:
        ValueError: not a 2D image, NaN pixels, no contrast, or too few holes.
    """
    a = _grid_image(image, name)
    if holes not in ("auto", "bright", "dark"):
        raise ValueError(f"holes: expected 'auto', 'bright' or 'dark', got {holes!r}")
    fov = _grid_field(a)
    areas, cents, rejected = _hole_blobs(a, fov, holes, name)
    if len(cents) < max(min_holes, 3):
        raise ValueError(f"{name}: found {len(cents)} holes, expected at least {min_holes} round holes of one size "
                         f"on a plate (a perforated-plate grid image)")
    r0 = float(np.sqrt(np.median(areas) / np.pi))
    nn = float(np.median(cKDTree(cents).query(cents, 2)[0][:, 1]))
    window = min(r0 + 3.0, nn - r0 - 1.0)
    if window < r0 + 1.5:
        raise ValueError(f"{name}: the holes (radius {r0:.1f} px) are {nn - 2 * r0:.1f} px apart; at least 2.5 px "
                         f"of plate between holes is needed to fit them")
    fit = _fit_ellipses(a, cents, r0, window)
    ok = _accepted_fits(fit, fov, rejected)
    if ok.sum() < min_holes:
        raise ValueError(f"{name}: {int(ok.sum())} holes could be fitted ({len(cents)} found), expected at least "
                         f"{min_holes} (a perforated-plate grid image)")
    return Holes(fit["center"][ok], fit["shape"][ok], fit["contrast"][ok], fit["rms"][ok], fov.center, fov.radius,
                 rejected)


def _grid_field(a: np.ndarray) -> FieldOfView:
    """The grid image's round field: at the frames' edge level, else (bright holes on a plate as
    dark as a quarter of the holes' level, which reads as outside) at lower levels. A plate hides
    no part of the edge: a level is taken when its circle is fitted to nearly every ray's edge
    point. At a level the plate does not reach, the rays end at the outermost holes instead, and
    a circle through the few of those at the rim passes the frames' consensus test (anatomy may
    hide half an edge) while missing the field by pixels; the first round field found stands in
    only when no level explains nearly all rays."""
    first = None
    for level in _GRID_EDGE_LEVELS:
        fov, share = fit_field_of_view(a, margin=3.0, edge_level=level)
        if share >= _GRID_EDGE_CONSENSUS:
            return fov
        if first is None and fov.round:
            first = fov
    return fov if first is None else first


def _grid_image(image: np.ndarray, name: str) -> np.ndarray:
    """``image`` as float64, checked to be a finite 2D image of at least 32 x 32 pixels."""
    a = np.asarray(image)
    if a.ndim != 2 or min(a.shape) < 32:
        raise ValueError(f"{name}: expected a 2D grid image of at least 32 x 32 pixels, got shape {a.shape}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: contains NaN or inf pixels")
    return a


def _hole_blobs(a: np.ndarray, fov: FieldOfView, holes: str, name: str
                ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The holes' blobs inside the field: ``(areas, centroids (N, 2), rejected)``, those of the
    typical size wholly inside the image, of the polarity ``holes`` (``"auto"``: the one with more)."""
    # The field inside, a few pixels in from its edge (the edge's blur is neither level).
    field = fov.mask(a.shape)
    values = a[field]
    if values.size == 0 or np.ptp(values) <= 0:
        raise ValueError(f"{name}: a grid image needs contrast between holes and plate; the image is uniform")
    # The threshold is set on a lightly smoothed copy: noise does not split or merge blobs.
    smooth = cv2.GaussianBlur(a, (0, 0), 1.0)
    t = _otsu(smooth[field])
    bright, dark = (smooth > t) & field, (smooth <= t) & field
    if holes == "auto":
        scores = {}
        for pol, mask in (("bright", bright), ("dark", dark)):
            areas, _, _ = _blobs(mask)
            scores[pol] = int(_regular(areas).sum())
        holes = "bright" if scores["bright"] >= scores["dark"] else "dark"
    mask = bright if holes == "bright" else dark
    areas, cents, boxes = _blobs(mask)
    h, w = a.shape
    keep = _regular(areas) & (boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 0] + boxes[:, 2] < w) \
        & (boxes[:, 1] + boxes[:, 3] < h)
    return areas[keep], cents[keep], {"blob_size_or_border": int((~keep).sum())}


def _accepted_fits(fit: dict[str, np.ndarray], fov: FieldOfView, rejected: dict[str, int]) -> np.ndarray:
    """Which fitted holes to keep: fitted, clear of the field's edge, of a usual residual and of
    their neighbours' area; counts each reason's rejections into ``rejected``."""
    ok = fit["ok"]
    rejected["fit"] = int((~ok).sum())
    c, M = fit["center"], fit["shape"]
    rad = np.linalg.det(M) ** -0.25
    fc, fr = fov.center, fov.radius
    if math.isfinite(fr):
        # The farthest point of each ellipse from the field centre: its largest semi-axis is a bound.
        reach = np.hypot(c[:, 0] - fc[0], c[:, 1] - fc[1]) + np.linalg.eigvalsh(M)[:, 0] ** -0.5
        cut = ok & (reach > fr - EDGE_MARGIN_PX)
        rejected["field_edge"] = int(cut.sum())
        ok &= ~cut
    if ok.sum() >= 3:
        rms_med = float(np.median(fit["rms"][ok]))
        bad = ok & (fit["rms"] > 5.0 * rms_med)
        rejected["residual"] = int(bad.sum())
        ok &= ~bad
    if ok.sum() >= 7:
        # Area against the neighbours' median: a hole cut by a defect or merged with dirt differs.
        idx = np.flatnonzero(ok)
        tree = cKDTree(c[idx])
        _, nb = tree.query(c[idx], min(7, len(idx)))
        area = rad[idx] ** 2
        med = np.median(area[nb[:, 1:]], axis=1)
        odd = np.abs(area / med - 1.0) > AREA_TOLERANCE
        rejected["area"] = int(odd.sum())
        ok[idx[odd]] = False
    return ok


def _ellipse_distance(ex: np.ndarray, ey: np.ndarray, rho: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
                      jacobian: bool = False) -> tuple[np.ndarray, ...]:
    """Signed distance (positive inside) of offsets ``e = (ex, ey)`` from the ellipse
    ``M = [[1 + alpha, beta], [beta, 1 - alpha]] / rho^2``, the edge normal ``(nu, nv)``, and
    with ``jacobian`` the derivatives of the distance by ``(cu, cv, rho, alpha, beta)`` (5 arrays).

    First order in the distance from the edge, ``d = (1 - s) s / |M e|`` with ``s^2 = e^T M e``:
    exact for a circle (``rho - |e|``), within ``|alpha, beta| d^2 / rho`` of the distance for an
    ellipse.
    """
    r2 = rho * rho
    mu = ((1 + alpha) * ex + beta * ey) / r2
    mv = (beta * ex + (1 - alpha) * ey) / r2
    s2 = np.maximum(ex * mu + ey * mv, 1e-18)
    s = np.sqrt(s2)
    g2 = np.maximum(mu * mu + mv * mv, 1e-36)
    g = np.sqrt(g2)
    R = s / g  # rho for a circle; finite at the centre, where the pixel is wholly inside anyway
    d = (1.0 - s) * R
    if not jacobian:
        return d, mu / g, mv / g
    # d(e^T M e) and d(e^T M^2 e) by each parameter, then ds = d(s^2) / 2s, dg = d(g^2) / 2g.
    mmu = ((1 + alpha) * mu + beta * mv) / r2  # M^2 e
    mmv = (beta * mu + (1 - alpha) * mv) / r2
    ds2 = (-2 * mu, -2 * mv, -2 * s2 / rho, (ex * ex - ey * ey) / r2, 2 * ex * ey / r2)
    dg2 = (-2 * mmu, -2 * mmv, -4 * g2 / rho, 2 * (ex * mu - ey * mv) / r2, 2 * (ey * mu + ex * mv) / r2)
    jac = []
    for a2, b2 in zip(ds2, dg2):
        dsk = a2 / (2 * s)
        dR = dsk / g - s * (b2 / (2 * g)) / g2
        jac.append(-dsk * R + (1.0 - s) * dR)
    return (d, mu / g, mv / g, *jac)


def _fit_ellipses(a: np.ndarray, cents: np.ndarray, r0: float, window: float, iterations: int = 30
                  ) -> dict[str, np.ndarray]:
    """Fit every hole's ellipse, levels and plate slope by Levenberg-Marquardt (all holes at once,
    each until its centre's step is below ``STEP_TOLERANCE_PX``)."""
    ox, oy, base, inside, pix = _hole_windows(a, cents, window)
    th = _initial_parameters(pix, cents - base, r0, ox, oy)
    su, sv = ox / window, oy / window  # the plate slope's regressors
    model = partial(_hole_model, ox=ox, oy=oy, su=su, sv=sv)
    cost = _levenberg_marquardt(th, pix, np.flatnonzero(inside), model, iterations)
    center = base + th[:, 0:2]
    rho, al, be = th[:, 2], th[:, 3], th[:, 4]
    shape = np.stack([np.stack([1 + al, be], -1), np.stack([be, 1 - al], -1)], -2) / rho[:, None, None] ** 2
    moved = np.hypot(*(center - cents).T)
    ok = inside & np.all(np.isfinite(th), axis=1) & (moved < 0.5 * r0 + 1.0) & (np.abs(th[:, 2] / r0 - 1) < 0.5) \
        & (al ** 2 + be ** 2 < 0.25)
    rms = np.sqrt(cost / len(ox))
    return {"center": center, "shape": shape, "contrast": th[:, 8], "rms": rms, "ok": ok}


def _hole_windows(a: np.ndarray, cents: np.ndarray, window: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each hole's pixels within ``window`` of its rounded centre: ``(ox, oy, base, inside, pix)``,
    the ``(P,)`` offsets of the disc's pixels, the ``(N, 2)`` integer centres, whether the disc
    lies in the image (else a patch at the corner stands in), and the ``(N, P)`` pixel values."""
    h, w = a.shape
    half = int(math.ceil(window))
    off = np.arange(-half, half + 1, dtype=np.float64)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    disc = np.hypot(ox, oy) <= window
    ox, oy = ox[disc], oy[disc]
    base = np.round(cents).astype(np.int64)
    inside = (base[:, 0] - half >= 0) & (base[:, 0] + half < w) & (base[:, 1] - half >= 0) & (base[:, 1] + half < h)
    base = np.where(inside[:, None], base, half)
    pix = a[base[:, 1, None] + oy.astype(np.int64)[None], base[:, 0, None] + ox.astype(np.int64)[None]]  # (N, P)
    return ox, oy, base, inside, pix


def _initial_parameters(pix: np.ndarray, offset: np.ndarray, r0: float, ox: np.ndarray, oy: np.ndarray
                        ) -> np.ndarray:
    """``(N, 9)`` the fit's start: a circle of radius ``r0`` at ``offset`` from the window centre,
    the plate level from the ring outside it, the contrast from the core inside it."""
    # Parameters: cu, cv (from the patch centre), rho, alpha, beta, b0, bu, bv, contrast.
    th = np.zeros((len(offset), 9))
    th[:, 0:2] = offset
    th[:, 2] = r0
    ring = np.hypot(ox, oy) > r0 + 1.5
    core = np.hypot(ox, oy) < max(r0 - 1.5, 0.5)
    th[:, 5] = np.median(pix[:, ring], axis=1) if ring.any() else np.median(pix, axis=1)
    th[:, 8] = np.median(pix[:, core], axis=1) - th[:, 5]
    return th


def _hole_model(t: np.ndarray, ox: np.ndarray, oy: np.ndarray, su: np.ndarray, sv: np.ndarray,
                jacobian: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The ``(N, P)`` pixel values of the holes ``t`` (``(N, 9)`` parameters) at the window offsets
    ``(ox, oy)`` with the slope regressors ``(su, sv)``, and with ``jacobian`` their ``(N, 9, P)``
    derivatives (else an empty array)."""
    ex, ey = ox[None] - t[:, 0, None], oy[None] - t[:, 1, None]
    geo = _ellipse_distance(ex, ey, t[:, 2, None], t[:, 3, None], t[:, 4, None], jacobian)
    d = geo[0]
    # Only pixels the edge crosses (|d| < 1/sqrt(2)) are partly covered: work on those alone.
    band = np.abs(d) < 0.75
    rad = np.broadcast_to(t[:, 2, None], d.shape)[band]
    cov = (d > 0).astype(np.float64)
    dcov = np.zeros_like(d)
    deficit = np.zeros_like(d)
    c_b, s_b = edge_coverage_and_slope(d[band], np.abs(geo[1][band]), np.abs(geo[2][band]))
    f_b, fs_b = arc_deficit(d[band], geo[1][band], geo[2][band], rad)
    cov[band], dcov[band], deficit[band] = np.clip(c_b - f_b, 0.0, 1.0), s_b - fs_b, f_b
    m = t[:, 5, None] + t[:, 6, None] * su + t[:, 7, None] * sv + t[:, 8, None] * cov
    if not jacobian:
        return m, np.empty(0)
    J = np.empty((len(t), 9, len(ox)))
    for k in range(5):
        J[:, k] = t[:, 8, None] * dcov * geo[3 + k]
    J[:, 2] += t[:, 8, None] * deficit / t[:, 2, None]  # the arc's deficit goes as 1 / radius
    J[:, 5], J[:, 6], J[:, 7], J[:, 8] = 1.0, su, sv, cov
    return m, J


def _levenberg_marquardt(th: np.ndarray, pix: np.ndarray, active: np.ndarray,
                         model: Callable[..., tuple[np.ndarray, np.ndarray]], iterations: int) -> np.ndarray:
    """Fit the parameters ``th`` (``(N, 9)``, in place) of the holes ``active`` to their pixels
    ``pix``, each hole until its centre's step is below ``STEP_TOLERANCE_PX``; returns the ``(N,)``
    squared residuals (the other holes' at the start)."""
    cost = ((pix - model(th)[0]) ** 2).sum(1)
    lam = np.full(len(th), 1e-3)
    for _ in range(iterations):
        if len(active) == 0:
            break
        t = th[active]
        m, J = model(t, jacobian=True)
        r = pix[active] - m
        A = J @ J.transpose(0, 2, 1)
        g = (J @ r[..., None])[..., 0]
        diag = np.einsum("nii->ni", A)
        A = A + (lam[active, None] * diag + 1e-12)[:, :, None] * np.eye(9)[None]
        delta = np.linalg.solve(A, g[..., None])[..., 0]
        trial = t + delta
        trial[:, 2] = np.maximum(trial[:, 2], 0.5)
        trial[:, 3:5] = np.clip(trial[:, 3:5], -0.5, 0.5)
        cost_t = ((pix[active] - model(trial)[0]) ** 2).sum(1)
        better = cost_t <= cost[active]
        th[active] = np.where(better[:, None], trial, t)
        cost[active] = np.where(better, cost_t, cost[active])
        lam[active] = np.where(better, lam[active] * 0.3, lam[active] * 10.0)
        # A step this small is done with, taken or not: at the minimum, rounding rejects it.
        done = (np.abs(delta[:, :2]).max(1) < STEP_TOLERANCE_PX) | (lam[active] > 1e8)
        active = active[~done]
    return cost


@dataclass(frozen=True)
class Lattice:
    """The lattice the holes lie on.

    Attributes:
        kind: ``"hex"`` or ``"square"``.
        index: ``(N, 2)`` integer lattice index of every hole (``(0, 0)`` the central one).
        basis: ``(2, 2)`` the basis vectors (columns) measured at the centre, recorded pixels.
        spacing: the hole spacing near the centre, px.
    """

    kind: LatticeKind
    index: np.ndarray
    basis: np.ndarray
    spacing: float


def _steps(kind: str) -> np.ndarray:
    """Index steps to a hole's nearest neighbours."""
    if kind == "hex":
        return np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [1, -1], [-1, 1]])
    return np.array([[1, 0], [-1, 0], [0, 1], [0, -1]])


def find_lattice(centers: np.ndarray, kind: Literal["auto", "hex", "square"] = "auto",
                 center: tuple[float, float] | None = None, name: str = "image", min_holes: int = 25
                 ) -> tuple[Lattice, np.ndarray]:
    """Index the holes on their lattice (module docstring).

    Args:
        centers: ``(N, 2)`` hole centres.
        kind: the lattice, or ``"auto"``.
        center: where to start (default: the holes' centroid); the hole nearest it is ``(0, 0)``.
        name, min_holes: for errors: fewer holes on the lattice is an error.

    Returns:
        ``(lattice, which)``: the lattice of the holes ``centers[which]``.

    Raises:
        ValueError: no hex or square lattice, or too few holes on it.
    """
    pts = np.asarray(centers, dtype=np.float64)
    if kind not in ("auto", "hex", "square"):
        raise ValueError(f"lattice: expected 'auto', 'hex' or 'square', got {kind!r}")
    if len(pts) < 7:
        raise ValueError(f"{name}: {len(pts)} holes are too few to find a lattice (expected at least {min_holes})")
    tree = cKDTree(pts)
    c = pts.mean(0) if center is None else np.asarray(center, dtype=np.float64)
    vecs, mode = _central_neighbours(pts, tree, c)
    if kind == "auto":
        if mode == 6:
            kind = "hex"
        elif mode == 4:
            kind = "square"
        else:
            raise ValueError(f"{name}: the holes form no hex or square lattice (central holes have {mode} "
                             f"equidistant neighbours, expected 6 or 4)")
    fold = 6 if kind == "hex" else 4
    ang = np.arctan2(vecs[:, 1], vecs[:, 0])
    phi = float(np.angle(np.exp(1j * fold * ang).mean())) / fold
    spacing = float(np.median(np.hypot(vecs[:, 0], vecs[:, 1])))
    basis0 = lattice_basis(kind, spacing, math.degrees(phi))
    start = int(tree.query(c)[1])
    index = _grow_lattice(pts, tree, start, basis0, _steps(kind), spacing)
    which = np.flatnonzero(index[:, 0] != _UNINDEXED)
    _check_central_basis(pts, index, which, start, kind, spacing, name)
    if len(which) < max(min_holes, 0.5 * len(pts)):
        raise ValueError(f"{name}: only {len(which)} of {len(pts)} holes lie on a {kind} lattice, expected most of "
                         f"them and at least {min_holes}")
    return Lattice(kind, index[which], basis0, spacing), which



def _central_neighbours(pts: np.ndarray, tree: cKDTree, c: np.ndarray) -> tuple[np.ndarray, int]:
    """The holes near ``c``: the vectors to their neighbours (``(K, 2)``, within 1.2 hole
    spacings) and the most common number of them."""
    dist_nn = tree.query(pts, 2)[0][:, 1]
    spacing0 = float(np.median(dist_nn))
    near = tree.query_ball_point(c, 4.0 * spacing0)
    if len(near) < 7:
        near = list(tree.query(c, min(len(pts), 19))[1])
    vecs: list[np.ndarray] = []
    counts: list[int] = []
    for i in near:
        nb = tree.query_ball_point(pts[i], 1.2 * spacing0)
        counts.append(len(nb) - 1)
        vecs.extend(pts[j] - pts[i] for j in nb if j != i)
    mode = int(np.bincount(counts).argmax()) if counts else 0
    return np.asarray(vecs), mode


def _grow_lattice(pts: np.ndarray, tree: cKDTree, start: int, basis0: np.ndarray, steps: np.ndarray,
                  spacing: float) -> np.ndarray:
    """``(N, 2)`` lattice indices grown outward from hole ``start`` (``(0, 0)``, basis ``basis0``),
    ``_UNINDEXED`` for the holes never reached (module docstring)."""
    index = np.full((len(pts), 2), _UNINDEXED, dtype=np.int64)
    taken: dict[tuple[int, int], int] = {(0, 0): start}
    index[start] = (0, 0)
    bases = {start: basis0}
    queue = deque([start])
    while queue:
        k = queue.popleft()
        i, j = index[k]
        B = bases[k]
        for di, dj in steps:
            key = (int(i + di), int(j + dj))
            if key in taken:
                continue
            pred = pts[k] + B @ np.array([di, dj], dtype=np.float64)
            dist, m = tree.query(pred)
            if dist > MATCH_TOLERANCE * spacing or index[m, 0] != _UNINDEXED:
                continue
            taken[key] = int(m)
            index[m] = key
            bases[int(m)] = _local_basis(pts, index, taken, int(m), steps, B)
            queue.append(int(m))
    return index


def _check_central_basis(pts: np.ndarray, index: np.ndarray, which: np.ndarray, start: int, kind: str,
                         spacing: float, name: str) -> None:
    """Raise unless the basis the indices imply near the start is the lattice's: equal lengths at
    its angle (a square lattice can be indexed with hex steps if the local bases adapt to it)."""
    near_idx = which[np.hypot(*(pts[which] - pts[start]).T) <= 4.0 * spacing]
    if len(near_idx) < 4:
        return
    A = np.c_[index[near_idx].astype(np.float64), np.ones(len(near_idx))]
    sol, _, rank, _ = np.linalg.lstsq(A, pts[near_idx], rcond=None)
    B = sol[:2].T
    n1, n2 = np.linalg.norm(B, axis=0)
    if rank < 3 or min(n1, n2) < 0.5 * spacing:
        raise ValueError(f"{name}: the holes do not lie on a {kind} lattice (its steps index only one row of them)")
    angle = math.degrees(math.acos(np.clip(B[:, 0] @ B[:, 1] / (n1 * n2), -1.0, 1.0)))
    if abs(angle - LATTICE_ANGLE_DEG[kind]) > 5.0 or abs(n1 / n2 - 1.0) > 0.05:
        raise ValueError(f"{name}: the holes do not lie on a {kind} lattice (basis vectors {n1:.1f} and "
                         f"{n2:.1f} px at {angle:.1f} deg, expected equal at {LATTICE_ANGLE_DEG[kind]:g})")


def _local_basis(pts: np.ndarray, index: np.ndarray, taken: dict[tuple[int, int], int], k: int,
                 steps: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """The basis at hole ``k`` from its indexed neighbours (least squares), else ``fallback``."""
    i, j = index[k]
    d_idx, d_pos = [], []
    for di, dj in steps:
        m = taken.get((int(i + di), int(j + dj)))
        if m is not None:
            d_idx.append((di, dj))
            d_pos.append(pts[m] - pts[k])
    if len(d_idx) < 2:
        return fallback
    D = np.asarray(d_idx, dtype=np.float64)
    if abs(np.linalg.det(D.T @ D)) < 1e-9:
        return fallback
    return np.linalg.lstsq(D, np.asarray(d_pos), rcond=None)[0].T

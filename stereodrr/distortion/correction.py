"""Correction maps (recorded pixel -> ideal pixel) and :class:`DistortionMap`, which applies one to
points and images.

A correction is a displacement field ``U(q) = q + disp(q)``; two kinds (the registry
:data:`CORRECTIONS`):

- ``"polynomial"``: one global polynomial per axis, total degree ``n``, in Legendre polynomials of
  ``(q - center) / scale`` (well conditioned on the unit square). An intensifier field is smooth
  across the whole screen (pincushion ~ rho^3, S-rotation ~ rho^3, decentring ~ rho^2), so a
  polynomial of modest degree holds it to the noise, and it extrapolates smoothly past the last
  complete holes at the field's edge.
- ``"lwm"``: the local weighted mean (Goshtasby 1988) that XMALab uses: at every control point
  (hole) a quadratic fitted to it and its ``n`` nearest neighbours, blended with the weight
  ``W(t) = 1 - 3 t^2 + 2 t^3`` (``t`` the distance over that hole's radius of influence, the
  distance to its farthest neighbour). Beyond every radius of influence (at the field's rim) the
  quadratic of the hole nearest in those units extrapolates: piecewise, so the map jumps by up
  to ~0.1 px where the nearest hole changes out there, and ``distort_points`` of
  ``undistort_points`` comes back only that close (inside the field: to 1e-9 px). Points that
  are NaN, inf or beyond 1e9 px map to NaN. (XMALab's default fits 12 points
  counting the hole itself; ``n = 12`` others here is a hex hole's two full rings, a symmetric
  neighbourhood. XMALab also fits a second LWM for the inverse; here the inverse is Newton's.)

Both are evaluated in torch: differentiable in the points (and the coefficients when they are
tensors); numpy input runs in float64 and returns numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol

import numpy as np
import torch
from scipy.interpolate import RectBivariateSpline
from scipy.spatial import cKDTree
from torch import Tensor

from ._tensor import Images, Points, as_points, back, newton_inverse
from .fov import FieldOfView
from .resample import AreaOperator, area_operator, pixel_corners

if TYPE_CHECKING:
    from ..geometry import StereoRig

__all__ = ["Correction", "PolynomialCorrection", "LWMCorrection", "CORRECTIONS", "get_correction", "legendre_terms",
           "DistortionMap", "GridRecord"]


class Correction(Protocol):
    """A displacement field recorded -> ideal (``U(q) = q + displacement(q)``)."""

    name: ClassVar[str]

    def displacement(self, q: Tensor) -> Tensor:
        """``(..., 2)`` torch points -> ``(..., 2)`` displacements (differentiable)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        ...


# ---------------------------------------------------------------------- polynomial
def legendre_terms(x: Tensor, y: Tensor, degree: int) -> Tensor:
    """``(..., T)`` the products ``P_i(x) P_j(y)``, ``i + j <= degree``, ordered by total degree
    then by decreasing ``i`` (``T = (degree + 1)(degree + 2) / 2``)."""
    px, py = [torch.ones_like(x), x], [torch.ones_like(y), y]
    for k in range(1, degree):
        px.append(((2 * k + 1) * x * px[k] - k * px[k - 1]) / (k + 1))
        py.append(((2 * k + 1) * y * py[k] - k * py[k - 1]) / (k + 1))
    return torch.stack([px[i] * py[n - i] for n in range(degree + 1) for i in range(n, -1, -1)], -1)


@dataclass(frozen=True, eq=False)
class PolynomialCorrection:
    """A global polynomial displacement (module docstring).

    Attributes:
        center: ``(u, v)`` of the normalisation; scale: px to the unit square.
        degree: total degree; coefficients: ``(T, 2)`` per term, displacement in px.
    """

    name: ClassVar[str] = "polynomial"
    center: tuple[float, float]
    scale: float
    degree: int
    coefficients: np.ndarray

    def displacement(self, q: Tensor) -> Tensor:
        c = torch.as_tensor(self.center, dtype=q.dtype, device=q.device)
        z = (q - c) / self.scale
        coef = torch.as_tensor(self.coefficients, dtype=q.dtype, device=q.device)
        return legendre_terms(z[..., 0], z[..., 1], self.degree) @ coef

    @classmethod
    def fit(cls, q: np.ndarray, disp: np.ndarray, degree: int, center: tuple[float, float], scale: float
            ) -> PolynomialCorrection:
        """Least squares of ``disp (N, 2)`` at ``q (N, 2)``.

        Raises:
            ValueError: fewer points than terms.
        """
        terms = (degree + 1) * (degree + 2) // 2
        if len(q) < terms:
            raise ValueError(f"polynomial of degree {degree}: needs at least {terms} holes, got {len(q)}")
        z = (torch.as_tensor(q, dtype=torch.float64) - torch.as_tensor(center, dtype=torch.float64)) / scale
        V = legendre_terms(z[:, 0], z[:, 1], degree).numpy()
        coef = np.linalg.lstsq(V, disp, rcond=None)[0]
        return cls((float(center[0]), float(center[1])), float(scale), int(degree), coef)

    def to_dict(self) -> dict[str, Any]:
        return {"center": list(self.center), "scale": self.scale, "degree": self.degree,
                "terms": "Legendre P_i(x) P_j(y), x = (u - center_u) / scale, y = (v - center_v) / scale, i + j <= degree, "
                         "by total degree then decreasing i",
                "coefficients_u": self.coefficients[:, 0].tolist(), "coefficients_v": self.coefficients[:, 1].tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PolynomialCorrection:
        coef = np.stack([np.asarray(d["coefficients_u"], dtype=np.float64),
                         np.asarray(d["coefficients_v"], dtype=np.float64)], -1)
        degree = int(d["degree"])
        if len(coef) != (degree + 1) * (degree + 2) // 2:
            raise ValueError(f"map.coefficients_u: expected {(degree + 1) * (degree + 2) // 2} terms for degree "
                             f"{degree}, got {len(coef)}")
        center, scale = np.asarray(d["center"], dtype=np.float64), float(d["scale"])
        _check_finite({"coefficients": coef, "center": center})
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale: expected a positive number, got {scale}")
        return cls((float(center[0]), float(center[1])), scale, degree, coef)


# ---------------------------------------------------------------------- local weighted mean
def _check_finite(arrays: dict[str, np.ndarray]) -> None:
    """Raise naming the first array with a null (read as NaN), NaN or inf value."""
    for name, a in arrays.items():
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} value(s) are null, NaN or inf (expected "
                             "finite numbers)")


def _quadratic(z: Tensor) -> Tensor:
    """``(..., 6)``: ``1, x, y, x^2, x y, y^2`` of ``z (..., 2)``."""
    x, y = z[..., 0], z[..., 1]
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], -1)


# Query points per block of the LWM evaluation (bounds the memory of the point-control pairs).
_BLOCK = 1 << 17
_FAR_PX = 1e9  # px: a map's own domain ends far inside this; beyond it a point is NaN


@dataclass(frozen=True, eq=False)
class LWMCorrection:
    """XMALab's local weighted mean of local quadratics (module docstring).

    Attributes:
        controls: ``(N, 2)`` recorded hole centres; radii: ``(N,)`` radii of influence (px).
        coefficients: ``(N, 6, 2)`` each hole's quadratic in ``(q - control) / radius``.
        neighbours: how many neighbours each quadratic was fitted to.
    """

    name: ClassVar[str] = "lwm"
    controls: np.ndarray
    radii: np.ndarray
    coefficients: np.ndarray
    neighbours: int
    _tree: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tree", cKDTree(self.controls))

    def displacement(self, q: Tensor) -> Tensor:
        shape = q.shape
        flat = q.reshape(-1, 2)
        out = [self._block(flat[i:i + _BLOCK]) for i in range(0, len(flat), _BLOCK)]
        return torch.cat(out, 0).reshape(shape) if out else flat.reshape(shape)

    def _block(self, q: Tensor) -> Tensor:
        qn = q.detach().cpu().numpy().astype(np.float64)
        ctrl = torch.as_tensor(self.controls, dtype=q.dtype, device=q.device)
        rad = torch.as_tensor(self.radii, dtype=q.dtype, device=q.device)
        coef = torch.as_tensor(self.coefficients, dtype=q.dtype, device=q.device)
        # NaN/inf, and points too far out for the tree's arithmetic (a diverging inverse), are NaN.
        finite = np.all(np.isfinite(qn), axis=1) & (np.abs(np.where(np.isfinite(qn), qn, 0.0)).max(axis=1) < _FAR_PX)
        idx = np.flatnonzero(finite)
        lists = (cKDTree(qn[idx]).query_ball_point(self.controls, self.radii) if len(idx)
                 else [[] for _ in range(len(self.controls))])
        ck = np.repeat(np.arange(len(self.controls)), [len(x) for x in lists])
        qi = idx[np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])] if len(ck) else np.zeros(0, np.int64)
        qi_t, ck_t = torch.as_tensor(qi, device=q.device), torch.as_tensor(ck, device=q.device)
        z = (q[qi_t] - ctrl[ck_t]) / rad[ck_t, None]
        t = torch.linalg.vector_norm(z, dim=-1).clamp(max=1.0)
        w = 1.0 - 3.0 * t * t + 2.0 * t * t * t
        val = (_quadratic(z)[..., None] * coef[ck_t]).sum(-2)
        num = torch.zeros_like(q).index_add(0, qi_t, w[:, None] * val)
        den = torch.zeros(len(q), dtype=q.dtype, device=q.device).index_add(0, qi_t, w)
        covered = torch.as_tensor(np.bincount(qi, minlength=len(q)) > 0, device=q.device) & (den > 0)
        out = num / torch.where(covered, den, torch.ones_like(den))[:, None]
        far = np.flatnonzero(~covered.cpu().numpy() & finite)
        if len(far):
            # Beyond every radius of influence: the quadratic of the hole nearest in its own units.
            k = min(len(self.controls), 16)
            _, cand = self._tree.query(qn[far], k)
            cand = cand.reshape(len(far), k)
            tn = np.linalg.norm(qn[far, None, :] - self.controls[cand], axis=-1) / self.radii[cand]
            best = torch.as_tensor(cand[np.arange(len(far)), np.argmin(tn, axis=1)], device=q.device)
            far_t = torch.as_tensor(far, device=q.device)
            zf = (q[far_t] - ctrl[best]) / rad[best, None]
            out = out.index_copy(0, far_t, (_quadratic(zf)[..., None] * coef[best]).sum(-2))
        nan = torch.as_tensor(~finite, device=q.device)
        return torch.where(nan[:, None], torch.full_like(out, float("nan")), out)

    @classmethod
    def fit(cls, q: np.ndarray, disp: np.ndarray, neighbours: int = 12) -> LWMCorrection:
        """Each hole's quadratic by least squares over it and its ``neighbours`` nearest holes.

        Raises:
            ValueError: fewer than ``neighbours + 1`` holes, or ``neighbours < 5``.
        """
        if neighbours < 5:
            raise ValueError(f"lwm neighbours: a quadratic needs at least 5 neighbours, got {neighbours}")
        if len(q) < neighbours + 1:
            raise ValueError(f"lwm: needs at least {neighbours + 1} holes, got {len(q)}")
        dist, idx = cKDTree(q).query(q, neighbours + 1)
        radii = dist[:, -1] * (1 + 1e-9)  # the farthest neighbour sits on the edge of the support
        z = (q[idx] - q[:, None, :]) / radii[:, None, None]
        A = _quadratic(torch.as_tensor(z)).numpy()  # (N, n + 1, 6)
        b = disp[idx]  # (N, n + 1, 2)
        AtA = A.transpose(0, 2, 1) @ A
        coef = np.linalg.solve(AtA + 1e-12 * np.eye(6), A.transpose(0, 2, 1) @ b)
        return cls(np.asarray(q, dtype=np.float64).copy(), radii, coef, int(neighbours))

    def to_dict(self) -> dict[str, Any]:
        return {"neighbours": self.neighbours, "weight": "1 - 3 t^2 + 2 t^3, t = |q - control| / radius",
                "terms": "1, x, y, x^2, x y, y^2 of (q - control) / radius",
                "controls": self.controls.tolist(), "radii": self.radii.tolist(),
                "coefficients_u": self.coefficients[:, :, 0].tolist(), "coefficients_v": self.coefficients[:, :, 1].tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LWMCorrection:
        ctrl = np.asarray(d["controls"], dtype=np.float64).reshape(-1, 2)
        coef = np.stack([np.asarray(d["coefficients_u"], dtype=np.float64),
                         np.asarray(d["coefficients_v"], dtype=np.float64)], -1)
        radii = np.asarray(d["radii"], dtype=np.float64)
        if coef.shape != (len(ctrl), 6, 2) or radii.shape != (len(ctrl),):
            raise ValueError(f"map: expected {len(ctrl)} radii and {len(ctrl)} x 6 coefficients per axis, got "
                             f"{radii.shape} and {coef.shape[:2]}")
        _check_finite({"coefficients": coef, "controls": ctrl, "radii": radii})
        if not np.all(radii > 0):
            raise ValueError("radii: expected positive radii of influence")
        return cls(ctrl, radii, coef, int(d["neighbours"]))


CORRECTIONS: dict[str, Any] = {"polynomial": PolynomialCorrection, "lwm": LWMCorrection}
"""Distortion correction models by name: ``polynomial`` and ``lwm`` (local weighted mean)."""


def get_correction(name: str) -> Any:
    """The correction class called ``name`` (``"polynomial"`` or ``"lwm"``)."""
    if name not in CORRECTIONS:
        raise ValueError(f"model: expected one of {sorted(CORRECTIONS)}, got {name!r}")
    return CORRECTIONS[name]


# ---------------------------------------------------------------------- the map
@dataclass(frozen=True, eq=False)
class GridRecord:
    """The grid the map was measured from.

    Attributes:
        kind: ``"hex"`` or ``"square"``; spacing_px: hole spacing at the centre (recorded px).
        origin, basis: the ideal lattice (``ideal = origin + basis @ index``), ideal px.
        index: ``(N, 2)`` lattice index of each hole used; recorded: ``(N, 2)`` their measured
            centres (curvature bias removed); ideal: ``(N, 2)`` their ideal positions.
        central: ``(N,)`` the holes the ideal lattice was fitted to.
        hole_radius_px: the holes' radius in ideal px.
    """

    kind: str
    spacing_px: float
    origin: np.ndarray
    basis: np.ndarray
    index: np.ndarray
    recorded: np.ndarray
    ideal: np.ndarray
    central: np.ndarray
    hole_radius_px: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "spacing_px": self.spacing_px, "hole_radius_px": self.hole_radius_px,
                "origin": self.origin.tolist(), "basis": self.basis.tolist(),
                "holes": {"i": self.index[:, 0].tolist(), "j": self.index[:, 1].tolist(),
                          "u": self.recorded[:, 0].tolist(), "v": self.recorded[:, 1].tolist(),
                          "u_ideal": self.ideal[:, 0].tolist(), "v_ideal": self.ideal[:, 1].tolist(),
                          "central": self.central.astype(bool).tolist()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridRecord:
        h = d["holes"]
        return cls(str(d["kind"]), float(d["spacing_px"]), np.asarray(d["origin"], dtype=np.float64),
                   np.asarray(d["basis"], dtype=np.float64), np.c_[h["i"], h["j"]].astype(np.int64),
                   np.c_[h["u"], h["v"]].astype(np.float64), np.c_[h["u_ideal"], h["v_ideal"]].astype(np.float64),
                   np.asarray(h["central"], dtype=bool), float(d["hole_radius_px"]))


# Corner grid step (px) of the exact inverse behind undistort_image; a bicubic spline fills in.
_CORNER_STEP = 8


@dataclass(eq=False)
class DistortionMap:
    """A measured distortion of ``width x height`` images: the correction (recorded -> ideal), the
    round field of view it holds in, and what it was measured from.

    Attributes:
        width, height: the image size the map belongs to.
        correction: the chosen correction (``correction.name`` is the model).
        field_center, field_radius: the round field in recorded px (``inf``: none).
        grid: the grid measurement (None for a map made otherwise).
        residuals: per model fitted: ``rms_px``, ``max_px`` (at the holes), ``heldout_rms_px``,
            ``heldout_max_px`` (each hole predicted by a map fitted without it), and its settings.
        choice: why the model was chosen (``"held-out"`` or ``"requested"``).
    """

    width: int
    height: int
    correction: Any
    field_center: tuple[float, float] = (math.nan, math.nan)
    field_radius: float = math.inf
    grid: GridRecord | None = None
    residuals: dict[str, dict[str, Any]] = field(default_factory=dict)
    choice: str = "requested"
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model(self) -> str:
        return str(self.correction.name)

    def undistort_points(self, points: Points) -> Any:
        """Recorded pixels ``(..., 2)`` -> ideal (corrected) pixels; numpy or torch (differentiable)."""
        q, is_tensor = as_points(points)
        with torch.set_grad_enabled(is_tensor and torch.is_grad_enabled()):
            return back(q + self.correction.displacement(q), is_tensor)

    def distort_points(self, points: Points) -> Any:
        """Ideal pixels ``(..., 2)`` -> recorded pixels: the inverse of :meth:`undistort_points` by
        Newton's method (differentiable; NaN where it does not converge)."""
        p, is_tensor = as_points(points)
        with torch.set_grad_enabled(is_tensor and torch.is_grad_enabled()):
            return back(self._distort(p), is_tensor)

    def _distort(self, p: Tensor) -> Tensor:
        def fwd(q: Tensor) -> Tensor:
            return q + self.correction.displacement(q)

        with torch.no_grad():
            guess = p.detach() - self.correction.displacement(p.detach())
        return newton_inverse(fwd, p, guess)

    def undistort_image(self, image: Images) -> Any:
        """The corrected image: each ideal pixel the average of the recorded image over the
        pre-image of its area (:mod:`stereodrr.distortion.resample`); 0 where the pre-image lies
        more than 2 px outside the round field of view (nearer, the field's own rim is averaged
        in). Numpy ``(..., H, W)`` gives float64, a floating tensor its own dtype (an integer one
        float32; differentiable in the image). The first call builds the operator (seconds for
        1024^2), later calls reuse it.

        Raises:
            ValueError: the image is not ``height x width``.
        """
        shape = tuple(image.shape[-2:])
        if image.ndim < 2 or shape != (self.height, self.width):
            raise ValueError(f"image: the distortion map is for {self.width} x {self.height} images, got one of "
                             f"shape {tuple(image.shape)} (H, W); measure a map at this size")
        return self.operator().apply(image)

    def correct_frame(self, frame: np.ndarray) -> np.ndarray:
        """A recorded frame ``(H, W)`` corrected (:meth:`undistort_image`) in its own dtype:
        integer frames rounded and clipped back to their type, as a frame file would hold them.
        Where a corrected pixel has no recorded data (outside the round field) it takes the
        frame's own level outside the field (the median there: black for a raw frame, white for
        an inverted export), not 0.

        Raises:
            ValueError: the frame is not ``height x width``.
        """
        raw = np.asarray(frame)
        out = self.undistort_image(raw.astype(np.float64))
        fill = self._outside_level(raw)
        if fill != 0.0:
            if "support" not in self._cache:  # the share of each corrected pixel's pre-image that holds data
                self._cache["support"] = self.undistort_image(np.ones((self.height, self.width)))
            out = out + (1.0 - self._cache["support"]) * fill
        if np.issubdtype(raw.dtype, np.integer):
            info = np.iinfo(raw.dtype)
            return np.clip(np.rint(out), info.min, info.max).astype(raw.dtype)
        return out.astype(raw.dtype)

    def _outside_level(self, frame: np.ndarray) -> float:
        """The median of ``frame`` more than 2 px outside the round field (0 without a field, or
        when under 1 % of the pixels lie there)."""
        if not math.isfinite(self.field_radius):
            return 0.0
        outside = ~self.field_of_view(-2.0).mask((self.height, self.width))
        if frame.shape != outside.shape or outside.sum() < 0.01 * outside.size:
            return 0.0
        return float(np.median(frame[outside]))

    def coverage(self) -> np.ndarray:
        """``(H, W)`` the fraction of each corrected pixel's pre-image that lies in the recorded
        image (and its round field of view): 1 inside, 0 where the correction has no data (a
        pincushion's corrected corners, outside the field), between at the edge. What a
        similarity should weight a corrected image by."""
        if "coverage" not in self._cache:
            # Recorded pixels wholly inside the field hold data: centres half a diagonal inside.
            recorded = self.field_of_view(0.5 * math.sqrt(2.0)).mask((self.height, self.width)).astype(np.float64)
            self._cache["coverage"] = self.undistort_image(recorded)
        return self._cache["coverage"]

    def field_of_view(self, margin: float) -> FieldOfView:
        """The map's round field, its usable mask ``margin`` px inside the edge."""
        return FieldOfView(self.field_center, self.field_radius, margin)

    def distort_image(self, image: Images, scale: int = 1) -> Any:
        """What the intensifier records of an ideal image (the inverse direction of
        :meth:`undistort_image`): each recorded pixel the average of the ideal image over the
        ideal region its area maps to, 0 for the part of it outside the ideal image. ``scale``:
        both images binned by that factor (``height // scale x width // scale``, a pyramid level).
        Numpy gives float64, a tensor its own dtype (differentiable in the image).

        Raises:
            ValueError: the image is not of the binned size.
        """
        return self.recording_operator(scale).apply(image)

    def recording_operator(self, scale: int = 1) -> AreaOperator:
        """The (cached) sparse operator behind :meth:`distort_image`."""
        key = ("recording", int(scale))
        if key not in self._cache:
            if scale < 1 or self.height // scale < 1 or self.width // scale < 1:
                raise ValueError(f"scale: expected a binning of 1 to {min(self.height, self.width)} for "
                                 f"{self.width} x {self.height} images, got {scale}")
            h, w = self.height // scale, self.width // scale
            # The binned recorded corners in full-resolution px, corrected, then back in binned px.
            ideal = self.undistort_points(pixel_corners(h, w) * scale + (scale - 1) / 2)
            self._cache[key] = area_operator((ideal + 0.5) / scale - 0.5, (h, w))
        op: AreaOperator = self._cache[key]
        return op

    def recorded_support(self, scale: int = 1, margin: float = 2.0) -> np.ndarray:
        """``(H // scale, W // scale)`` bool: the recorded pixels a DRR recorded through the map
        (:meth:`distort_image`) models, those wholly inside the round field of view (by
        ``margin`` full-resolution px) whose ideal region lies wholly inside the ideal image.
        What a similarity between a raw frame and such a DRR should weight by."""
        key = ("support", int(scale), float(margin))
        if key not in self._cache:
            h, w = self.height // scale, self.width // scale
            inside = self.field_of_view(margin).mask((self.height, self.width))
            binned = inside[:h * scale, :w * scale].reshape(h, scale, w, scale).all(axis=(1, 3))
            full = self.distort_image(np.ones((h, w)), scale) > 1 - 1e-9
            self._cache[key] = binned & full
        support: np.ndarray = self._cache[key]
        return support

    def operator(self) -> AreaOperator:
        """The (cached) sparse operator behind :meth:`undistort_image`."""
        if "operator" not in self._cache:
            corners = self.corner_positions()
            active = None
            if math.isfinite(self.field_radius):
                # Pixels whose pre-image lies wholly outside the round field see only black: no data.
                r = np.hypot(corners[..., 0] - self.field_center[0], corners[..., 1] - self.field_center[1])
                near = r <= self.field_radius + 2.0
                active = near[:-1, :-1] | near[:-1, 1:] | near[1:, :-1] | near[1:, 1:]
            self._cache["operator"] = area_operator(corners, (self.height, self.width), active=active)
        op: AreaOperator = self._cache["operator"]
        return op

    def corner_positions(self) -> np.ndarray:
        """``(H + 1, W + 1, 2)`` the recorded positions of the ideal pixel corners: the exact inverse
        on a grid every 8 px, bicubic in between (inside the field of view within 1e-7 px of the
        exact inverse for the polynomial, 3e-4 px for the LWM, whose blend is only once
        differentiable; beyond the field the maps extrapolate and the recorded image is black,
        and where the inverse does not converge the first-order inverse stands in)."""
        H, W = self.height, self.width
        us = np.unique(np.r_[np.arange(-0.5, W - 0.5, _CORNER_STEP), W - 0.5])
        vs = np.unique(np.r_[np.arange(-0.5, H - 0.5, _CORNER_STEP), H - 0.5])
        node = np.stack(np.meshgrid(us, vs, indexing="ij"), -1)  # (nu, nv, 2)
        with torch.no_grad():
            p = torch.as_tensor(node)
            exact = self._distort(p).numpy()
            first = (p - self.correction.displacement(p)).numpy()
        exact = np.where(np.isfinite(exact), exact, first)
        corners = pixel_corners(H, W)
        out = np.empty_like(corners)
        for k in range(2):
            spline = RectBivariateSpline(us, vs, exact[..., k], kx=min(3, len(us) - 1), ky=min(3, len(vs) - 1))
            out[..., k] = spline(corners[0, :, 0], corners[:, 0, 1]).T
        return out

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        return {"image": {"width": self.width, "height": self.height},
                "field_of_view": None if not math.isfinite(self.field_radius) else
                {"center": list(self.field_center), "radius": self.field_radius},
                "model": self.model, "choice": self.choice, "map": self.correction.to_dict(),
                "residuals": self.residuals, "grid": None if self.grid is None else self.grid.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistortionMap:
        """The map :meth:`to_dict` describes.

        Raises:
            ValueError: the ``map`` or ``grid`` section is missing a key or malformed (the message
                starts with the section).
        """
        fov = d.get("field_of_view")
        correction = _section("map", lambda: get_correction(d["model"]).from_dict(d["map"]))
        grid = None if d.get("grid") is None else _section("grid", lambda: GridRecord.from_dict(d["grid"]))
        residuals = d.get("residuals", {})
        if not isinstance(residuals, dict):
            raise ValueError(f"residuals: expected an object of the fitted models' residuals, got {residuals!r:.60}")
        return cls(int(d["image"]["width"]), int(d["image"]["height"]), correction,
                   (math.nan, math.nan) if fov is None else (float(fov["center"][0]), float(fov["center"][1])),
                   math.inf if fov is None else float(fov["radius"]), grid, dict(residuals),
                   str(d.get("choice", "requested")))


def _section(name: str, parse: Callable[[], Any]) -> Any:
    """``parse()``, its failures as one ValueError naming the section of the map's dict."""
    try:
        return parse()
    except KeyError as exc:
        raise ValueError(f"{name}: missing key {exc}") from None
    except (TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{name}: {' '.join(str(exc).split())}") from None


def check_maps(maps: Mapping[str, DistortionMap] | None, rig: StereoRig) -> None:
    """Raise unless every map (by view name) belongs to a view of ``rig`` and has its image size.

    Raises:
        ValueError: a map for a view the rig does not have, or for images of another size.
    """
    for n, m in (maps or {}).items():
        if n not in rig.names:
            raise ValueError(f"distortion: a map for view {n!r}, the rig has {rig.names}")
        cam = rig[n]
        if (m.width, m.height) != (cam.width, cam.height):
            raise ValueError(f"distortion: the map of view {n!r} is for {m.width}x{m.height} images, the view's "
                             f"detector is {cam.width}x{cam.height}")

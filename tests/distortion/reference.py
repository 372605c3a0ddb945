"""Independent truth for the distortion tests: a known intensifier field written out in numpy, its
inverse by fixed-point iteration, and perforated-plate images area-integrated by supersampling.
None of it calls :mod:`stereodrr.distortion`; the tests (and experiments/distortion_accuracy.py)
check the package against it.

Field (ideal pixel p -> recorded pixel q), ``x = (p - c) / R``, ``r2 = |x|^2``::

    x_r = (1 + k1 r2 + k2 r2^2) x,   x_s = Rot(s r2) x_r,
    q   = c + R (x_s + (2 p1 x y + p2 (r2 + 2 x^2), p1 (r2 + 2 y^2) + 2 p2 x y))

Images: a pixel's value is the mean over its area of the plate transmission at the ideal point
each part of it sees, black outside the round field. Pixels more than a pixel from any hole edge
take the value at their centre; the others are split into ``s x s`` sub-squares, each taking the
transmission at its centre softened by a linear ramp across the sub-square's width along the
edge normal (the box filter of a straight edge, up to the ramp's corners).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class Field:
    size: int
    c: tuple[float, float]
    R: float
    k1: float = 0.0
    k2: float = 0.0
    s_deg: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    fov_c: tuple[float, float] = (0.0, 0.0)
    fov_r: float = math.inf

    def forward(self, p: np.ndarray) -> np.ndarray:
        x = (p[..., 0] - self.c[0]) / self.R
        y = (p[..., 1] - self.c[1]) / self.R
        r2 = x ** 2 + y ** 2
        radial = 1 + self.k1 * r2 + self.k2 * r2 ** 2
        ang = np.deg2rad(self.s_deg) * r2
        xs = radial * (x * np.cos(ang) - y * np.sin(ang))
        ys = radial * (x * np.sin(ang) + y * np.cos(ang))
        xd = xs + 2 * self.p1 * x * y + self.p2 * (r2 + 2 * x ** 2)
        yd = ys + self.p1 * (r2 + 2 * y ** 2) + 2 * self.p2 * x * y
        return np.stack([self.c[0] + self.R * xd, self.c[1] + self.R * yd], -1)

    def inverse(self, q: np.ndarray, iterations: int = 60) -> np.ndarray:
        """Fixed point ``p <- p - (forward(p) - q)`` (a contraction: the field is near the identity)."""
        p = np.array(q, dtype=np.float64)
        for _ in range(iterations):
            r = self.forward(p) - q
            p -= r
            if np.abs(r).max() < 1e-11:
                break
        return p

    def inside(self, q: np.ndarray) -> np.ndarray:
        return (q[..., 0] - self.fov_c[0]) ** 2 + (q[..., 1] - self.fov_c[1]) ** 2 < self.fov_r ** 2


def strong(size: int = 1024) -> Field:
    """About 13 px at the edge of a 1024^2 field: pincushion, S-rotation, decentring."""
    h = size / 2
    return Field(size, (0.5 * (size - 1) + 0.015 * h, 0.5 * (size - 1) - 0.010 * h), h, k1=0.018, k2=0.004,
                 s_deg=0.7, p1=0.0012, p2=-0.0008, fov_c=(0.5 * (size - 1) + 0.004 * h, 0.5 * (size - 1) - 0.003 * h),
                 fov_r=0.98 * h)


def mild(size: int = 1024) -> Field:
    h = size / 2
    return Field(size, (0.5 * (size - 1) + 0.004 * h, 0.5 * (size - 1) - 0.002 * h), h, k1=0.006, k2=0.001,
                 s_deg=0.25, fov_c=(0.5 * (size - 1) + 0.002 * h, 0.5 * (size - 1)), fov_r=0.98 * h)


def other(size: int = 1024) -> Field:
    """A field off the presets' proportions: barrel-ish k2, stronger S, opposite decentring."""
    h = size / 2
    return Field(size, (0.5 * (size - 1) - 0.02 * h, 0.5 * (size - 1) + 0.012 * h), h, k1=0.012, k2=-0.003,
                 s_deg=-1.0, p1=-0.0015, p2=0.001, fov_c=(0.5 * (size - 1), 0.5 * (size - 1)), fov_r=0.97 * h)


@dataclass(frozen=True)
class Plate:
    lattice: str = "hex"
    pitch: float = 32.0
    diameter: float = 16.0
    angle_deg: float = 3.0
    offset: tuple[float, float] = (0.0, 0.0)
    t_hole: float = 1.0
    t_plate: float = 0.2

    def centres(self, size: int) -> np.ndarray:
        a = np.deg2rad(self.angle_deg)
        b = a + np.deg2rad(60.0 if self.lattice == "hex" else 90.0)
        a1 = self.pitch * np.array([np.cos(a), np.sin(a)])
        a2 = self.pitch * np.array([np.cos(b), np.sin(b)])
        n = int(2 * size / self.pitch) + 4
        i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1))
        o = np.array([0.5 * (size - 1) + self.offset[0], 0.5 * (size - 1) + self.offset[1]])
        pts = o + i.ravel()[:, None] * a1 + j.ravel()[:, None] * a2
        m = 2 * self.pitch
        return pts[(pts.min(1) > -m) & (pts.max(1) < size + m)]


def plate_image(field: Field, plate: Plate, subpixels: int = 8, photons: float | None = None, seed: int = 0,
                dark: bool = False) -> np.ndarray:
    """The recorded plate (float64, transmission units; ``dark``: inverted, ``1 - value``)."""
    n = field.size
    v, u = np.mgrid[0:n, 0:n].astype(np.float64)
    q = np.stack([u, v], -1).reshape(-1, 2)
    p = field.inverse(q)
    tree = cKDTree(plate.centres(n))
    r = plate.diameter / 2
    dist, _ = tree.query(p)
    img = np.where(dist < r, plate.t_hole, plate.t_plate)
    near = np.abs(dist - r) < 1.5
    fov_near = np.abs(np.hypot(q[:, 0] - field.fov_c[0], q[:, 1] - field.fov_c[1]) - field.fov_r) < 1.5
    work = np.flatnonzero(near | fov_near)
    # Local Jacobian of the inverse at each worked pixel (central differences of the inverse itself).
    e = 0.5
    ju = np.zeros_like(q)
    jv = np.zeros_like(q)
    ju[work] = (field.inverse(q[work] + [e, 0.0]) - field.inverse(q[work] - [e, 0.0])) / (2 * e)
    jv[work] = (field.inverse(q[work] + [0.0, e]) - field.inverse(q[work] - [0.0, e])) / (2 * e)
    s = subpixels
    off = (np.arange(s) + 0.5) / s - 0.5
    ou, ov = [a.ravel() for a in np.meshgrid(off, off)]
    vals = np.empty(len(work))
    h = 1.0 / s
    for chunk in np.array_split(work, max(1, len(work) // 20000)):
        qs = q[chunk, None, :] + np.stack([ou, ov], -1)[None]
        ps = p[chunk, None, :] + ou[None, :, None] * ju[chunk, None, :] + ov[None, :, None] * jv[chunk, None, :]
        d, k = tree.query(ps)
        nrm = (ps - tree.data[k]) / np.maximum(d, 1e-12)[..., None]
        # edge normal in recorded pixels: gradient of |p - c| with respect to q
        gu = (nrm * ju[chunk, None, :]).sum(-1)
        gv = (nrm * jv[chunk, None, :]).sum(-1)
        width = h * (np.abs(gu) + np.abs(gv))
        hole = np.clip(0.5 + (r - d) / width, 0.0, 1.0)
        t = plate.t_plate + (plate.t_hole - plate.t_plate) * hole
        ef = qs - np.asarray(field.fov_c)
        fr = np.hypot(ef[..., 0], ef[..., 1])
        fwidth = h * (np.abs(ef[..., 0]) + np.abs(ef[..., 1])) / fr
        t = t * np.clip(0.5 + (field.fov_r - fr) / fwidth, 0.0, 1.0)
        vals[np.searchsorted(work, chunk)] = t.mean(1)
    img = img * field.inside(q)
    img[work] = vals
    img = img.reshape(n, n)
    if photons is not None:
        img = np.random.default_rng(seed).poisson(img * photons) / photons
    return 1.0 - img if dark else img


def true_centres(field: Field, plate: Plate) -> np.ndarray:
    """Recorded positions of the hole centres."""
    return field.forward(plate.centres(field.size))


def query_points(field: Field, step: float = 16.0) -> np.ndarray:
    """Recorded points every ``step`` px inside the round field."""
    g = np.arange(0.0, field.size, step)
    u, v = np.meshgrid(g, g)
    q = np.c_[u.ravel(), v.ravel()]
    return q[field.inside(q)]


def similarity_residuals(fitted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(N, 2)`` residuals of ``truth ~ s Rot fitted + t`` after the least-squares similarity."""
    za, zb = fitted[:, 0] + 1j * fitted[:, 1], truth[:, 0] + 1j * truth[:, 1]
    A = np.c_[za, np.ones_like(za)]
    sol = np.linalg.lstsq(A, zb, rcond=None)[0]
    r = A @ sol - zb
    return np.c_[r.real, r.imag]


def map_of_field(field, step: int = 4, degree: int = 7):
    """A known field's correction (recorded -> ideal) as a ``DistortionMap`` of a polynomial fitted
    to its exact displacement on a grid every ``step`` px: made from the field, not measured by
    the grid pipeline (for tests of the code that applies maps)."""
    from stereodrr.distortion import DistortionMap, PolynomialCorrection

    v, u = np.mgrid[0:field.height:step, 0:field.width:step].astype(np.float64)
    q = np.stack([u.ravel(), v.ravel()], -1)
    corr = PolynomialCorrection.fit(q, np.asarray(field.undistort(q)) - q, degree,
                                    (0.5 * (field.width - 1), 0.5 * (field.height - 1)),
                                    0.5 * max(field.width, field.height))
    return DistortionMap(field.width, field.height, corr)

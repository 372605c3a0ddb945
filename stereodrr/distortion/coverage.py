"""The fraction of a pixel on the inside of a straight edge: the area integral both the grid-plate
simulator and the hole fit use.

A pixel (or sub-pixel) square, an edge ``d(q) = d0 - g . (q - q0)`` linear over it (``d0`` the
signed distance at the square's centre, positive inside, ``g`` its gradient times the side).
The inside fraction is ``P(g_u U1 + g_v U2 < d0)`` with ``U1, U2`` uniform on ``(-1/2, 1/2)``:
the distribution function of a trapezoid of widths ``a = |g_u|``, ``b = |g_v|``, piecewise
quadratic and continuously differentiable in ``d0``. Exact for a straight edge; a circular edge
of radius ``r`` differs by at most ``1 / (8 r)`` of the square's side, the same all round.
"""

from __future__ import annotations

import numpy as np

__all__ = ["edge_coverage", "edge_coverage_and_slope", "arc_deficit"]

# Widths below this are an axis-aligned edge (the quadratic pieces vanish).
_TINY = 1e-12


def edge_coverage(d: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Inside fraction of a square whose centre lies at signed distance ``d`` from a straight edge
    that the square spans ``a`` and ``b`` along its two axes (``a = |g_u|``, ``b = |g_v|``, in the
    units of ``d``; a unit pixel and a unit-gradient edge: the normal's absolute components).
    Broadcastable arrays in, coverage in ``[0, 1]`` out."""
    return edge_coverage_and_slope(d, a, b)[0]


def edge_coverage_and_slope(d: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`edge_coverage` and its derivative by ``d``."""
    big = np.maximum(np.maximum(a, b), _TINY)
    small = np.maximum(np.minimum(a, b), _TINY)
    t = np.clip(d + 0.5 * (big + small), 0.0, big + small)  # distance from the fully-outside point
    u = big + small - t
    cov = np.where(t <= small, t * t / (2 * big * small),
                   np.where(t <= big, (t - 0.5 * small) / big, 1.0 - u * u / (2 * big * small)))
    slope = np.where(t <= small, t / (big * small), np.where(t <= big, 1.0 / big, u / (big * small)))
    return cov, slope


def arc_deficit(d: np.ndarray, nu: np.ndarray, nv: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How much less of a unit pixel a disc of ``radius`` covers than the straight edge tangent to
    it, and the derivative of that by ``d``: the edge at signed distance ``d`` (positive: the pixel
    centre inside) with outward normal ``(nu, nv)`` crosses the pixel along a chord ``t1 .. t2``
    (``t`` along the edge from the foot of the pixel centre, which is the tangent point), and the
    arc lies ``t^2 / 2r`` inside it: ``(t2^3 - t1^3) / 6r``."""
    shape = np.broadcast(d, nu).shape
    lo, hi = np.full(shape, -np.inf), np.full(shape, np.inf)
    dlo, dhi = np.zeros(shape), np.zeros(shape)  # d t / d d of the bound that is active
    for nk, tk in ((nu, -nv), (nv, nu)):  # the tangent is (-nv, nu)
        c = d * nk
        small = np.abs(tk) < 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = (-0.5 - c) / tk, (0.5 - c) / tk
            slope = -nk / tk
        lo_k, hi_k = np.minimum(a, b), np.maximum(a, b)
        # an edge parallel to this axis: the chord exists only while the line is in the pixel
        lo_k = np.where(small, np.where(np.abs(c) <= 0.5, -np.inf, np.inf), lo_k)
        hi_k = np.where(small, np.inf, hi_k)
        take_lo, take_hi = lo_k > lo, hi_k < hi
        lo, dlo = np.where(take_lo, lo_k, lo), np.where(take_lo & ~small, slope, dlo)
        hi, dhi = np.where(take_hi, hi_k, hi), np.where(take_hi & ~small, slope, dhi)
    t1, t2 = np.clip(lo, -1.0, 1.0), np.clip(hi, -1.0, 1.0)
    chord = t2 > t1
    dlo, dhi = np.where(np.abs(lo) < 1.0, dlo, 0.0), np.where(np.abs(hi) < 1.0, dhi, 0.0)
    deficit = np.where(chord, (t2 ** 3 - t1 ** 3) / (6.0 * radius), 0.0)
    return deficit, np.where(chord, (t2 * t2 * dhi - t1 * t1 * dlo) / (2.0 * radius), 0.0)

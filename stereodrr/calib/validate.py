"""Epipolar validation: per-point errors of a fundamental matrix and a pass/fail report.

For a correspondence ``x1 <-> x2`` and ``F`` with ``x2^T F x1 = 0``:

- symmetric point-to-line distance ``d_sym = (d(x2, F x1) + d(x1, F^T x2)) / 2`` in pixels, the
  mean of the distances of each point from the epipolar line of its partner;
- Sampson distance ``d_S = |x2^T F x1| / sqrt((F x1)_1^2 + (F x1)_2^2 + (F^T x2)_1^2 + (F^T x2)_2^2)``,
  the first-order approximation of the distance of ``(x1, x2)`` from the nearest exact
  correspondence (HZ eq. 11.9), also in pixels.

A rig counts as calibrated when the mean symmetric distance over the markers is below a
threshold (1 px by default, as XMALab's rule of thumb); more means recalibrate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..geometry import epipolar_lines, epipoles
from ._checks import as_points, same_count

__all__ = [
    "point_line_distances",
    "symmetric_epipolar_distance",
    "sampson_distance",
    "EpipolarReport",
    "validate_epipolar",
    "compare_fundamental",
]


def _check_F(F: np.ndarray, name: str = "F") -> np.ndarray:
    F = np.asarray(F, dtype=np.float64)
    if F.shape != (3, 3) or not np.all(np.isfinite(F)):
        raise ValueError(f"{name}: expected a finite 3x3 fundamental matrix, got shape {F.shape}")
    return F


def _pair(F: np.ndarray, pts1: np.ndarray, pts2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    F = _check_F(F)
    p1 = as_points("pts1", pts1, 2)
    p2 = as_points("pts2", pts2, 2)
    same_count(pts1=p1, pts2=p2)
    return F, p1, p2


def point_line_distances(F: np.ndarray, pts1: np.ndarray, pts2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances (pixels) of each point from its partner's epipolar line.

    Args:
        F: ``(3, 3)``; pts1, pts2: ``(N, 2)``.

    Returns:
        d1 ``(N,)``: distance of ``x1`` from ``F^T x2`` in view 1; d2 ``(N,)``: of ``x2`` from ``F x1``.
    """
    F, p1, p2 = _pair(F, pts1, pts2)
    l1 = epipolar_lines(F, p2, which=2)
    l2 = epipolar_lines(F, p1, which=1)
    d1 = np.abs(np.sum(l1[:, :2] * p1, axis=1) + l1[:, 2])
    d2 = np.abs(np.sum(l2[:, :2] * p2, axis=1) + l2[:, 2])
    return d1, d2


def symmetric_epipolar_distance(F: np.ndarray, pts1: np.ndarray, pts2: np.ndarray) -> np.ndarray:
    """``(N,)`` mean of the two point-to-epipolar-line distances, pixels."""
    d1, d2 = point_line_distances(F, pts1, pts2)
    return 0.5 * (d1 + d2)


def sampson_distance(F: np.ndarray, pts1: np.ndarray, pts2: np.ndarray) -> np.ndarray:
    """``(N,)`` Sampson distance in pixels (HZ eq. 11.9, square-rooted)."""
    F, p1, p2 = _pair(F, pts1, pts2)
    h1 = np.c_[p1, np.ones(len(p1))]
    h2 = np.c_[p2, np.ones(len(p2))]
    Fx1 = h1 @ F.T
    Ftx2 = h2 @ F
    num = np.abs(np.sum(h2 * Fx1, axis=1))
    den = np.sqrt(Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2)
    return num / den


@dataclass(frozen=True)
class EpipolarReport:
    """Per-point epipolar errors and the verdict.

    Attributes:
        ids: ``(N,)`` point labels (marker ids, or 0..N-1).
        symmetric_px, sampson_px: ``(N,)`` errors in pixels.
        threshold_px: the mean symmetric distance below which the rig passes.
        point_threshold_px: a point fails when its symmetric distance exceeds this.
        passed: ``mean_symmetric_px < threshold_px``.
        failing: ids of the failing points.
    """

    ids: np.ndarray
    symmetric_px: np.ndarray
    sampson_px: np.ndarray
    threshold_px: float
    point_threshold_px: float
    passed: bool = field(init=False)
    failing: list = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", bool(self.mean_symmetric_px < self.threshold_px))
        object.__setattr__(self, "failing", self.ids[self.symmetric_px > self.point_threshold_px].tolist())

    @property
    def mean_symmetric_px(self) -> float:
        return float(np.mean(self.symmetric_px))

    @property
    def max_symmetric_px(self) -> float:
        return float(np.max(self.symmetric_px))

    @property
    def rms_sampson_px(self) -> float:
        return float(np.sqrt(np.mean(self.sampson_px**2)))

    def table(self) -> pd.DataFrame:
        """One row per point: id, symmetric and Sampson distance, pass/fail."""
        return pd.DataFrame({
            "id": self.ids,
            "symmetric_px": self.symmetric_px,
            "sampson_px": self.sampson_px,
            "ok": self.symmetric_px <= self.point_threshold_px,
        })

    def summary(self) -> str:
        verdict = ("consistent (necessary, not sufficient)" if self.passed else "FAIL (recalibrate)")
        text = (f"epipolar error: mean symmetric {self.mean_symmetric_px:.4f} px, max {self.max_symmetric_px:.4f} px, "
                f"Sampson RMS {self.rms_sampson_px:.4f} px over {len(self.ids)} points -> {verdict} "
                f"(threshold {self.threshold_px:g} px)")
        if self.failing:
            text += f"; points above {self.point_threshold_px:g} px: {self.failing}"
        return text

    def to_dict(self) -> dict:
        return {
            "mean_symmetric_px": self.mean_symmetric_px,
            "max_symmetric_px": self.max_symmetric_px,
            "rms_sampson_px": self.rms_sampson_px,
            "threshold_px": self.threshold_px,
            "passed": self.passed,
            "failing": self.failing,
            "n_points": int(len(self.ids)),
        }


def validate_epipolar(
    F: np.ndarray,
    pts1: np.ndarray,
    pts2: np.ndarray,
    threshold_px: float = 1.0,
    point_threshold_px: float | None = None,
    ids: Sequence | np.ndarray | None = None,
) -> EpipolarReport:
    """Epipolar validation report of ``F`` on correspondences.

    Args:
        F: ``(3, 3)``; pts1, pts2: ``(N, 2)`` pixels.
        threshold_px: pass when the mean symmetric distance is below this (default 1 px).
        point_threshold_px: a point fails above this (default ``threshold_px``).
        ids: ``(N,)`` labels for the report (default ``0..N-1``).
    """
    if not threshold_px > 0:
        raise ValueError(f"threshold_px: expected a positive number of pixels, got {threshold_px}")
    sym = symmetric_epipolar_distance(F, pts1, pts2)
    samp = sampson_distance(F, pts1, pts2)
    labels = np.arange(len(sym)) if ids is None else np.asarray(ids)
    if len(labels) != len(sym):
        raise ValueError(f"ids: expected {len(sym)} labels, got {len(labels)}")
    return EpipolarReport(labels, sym, samp, float(threshold_px),
                          float(threshold_px if point_threshold_px is None else point_threshold_px))


def compare_fundamental(F_est: np.ndarray, F_ref: np.ndarray, pts1: np.ndarray, pts2: np.ndarray) -> dict:
    """Compare an estimated F with a reference (e.g. the rig's analytic F) on held-out points.

    Args:
        F_est, F_ref: ``(3, 3)``.
        pts1, pts2: ``(N, 2)`` held-out correspondences not used to estimate ``F_est``.

    Returns:
        ``mean_symmetric_px`` / ``mean_sampson_px`` of each matrix on the points
        (``*_est``, ``*_ref``); ``line_discrepancy_px``: mean distance, over the points and both
        views, between the two matrices' epipolar lines, measured at the foot of each point on
        the reference line; ``epipole_shift_px``: distance between the epipoles in each view
        (``inf`` when one is at infinity).
    """
    F_est = _check_F(F_est, "F_est")
    F_ref = _check_F(F_ref, "F_ref")
    _, p1, p2 = _pair(F_ref, pts1, pts2)
    gaps = []
    for which, p_from, p_at in ((1, p1, p2), (2, p2, p1)):
        l_ref = epipolar_lines(F_ref, p_from, which)
        l_est = epipolar_lines(F_est, p_from, which)
        foot = p_at - (np.sum(l_ref[:, :2] * p_at, axis=1) + l_ref[:, 2])[:, None] * l_ref[:, :2]
        gaps.append(np.abs(np.sum(l_est[:, :2] * foot, axis=1) + l_est[:, 2]))
    shifts = []
    for e_est, e_ref in zip(epipoles(F_est), epipoles(F_ref)):
        finite = abs(e_est[2]) > 0 and abs(e_ref[2]) > 0
        shifts.append(float(np.linalg.norm(e_est[:2] - e_ref[:2])) if finite else float("inf"))
    return {
        "n_points": int(len(p1)),
        "mean_symmetric_px_est": float(symmetric_epipolar_distance(F_est, p1, p2).mean()),
        "mean_symmetric_px_ref": float(symmetric_epipolar_distance(F_ref, p1, p2).mean()),
        "mean_sampson_px_est": float(sampson_distance(F_est, p1, p2).mean()),
        "mean_sampson_px_ref": float(sampson_distance(F_ref, p1, p2).mean()),
        "line_discrepancy_px": float(np.mean(np.concatenate(gaps))),
        "epipole_shift_px": shifts,
    }

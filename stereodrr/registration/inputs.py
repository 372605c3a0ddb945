"""X-ray images as the registration expects them: line integrals ``p = -log(I / I0)``.

Kinds (as ``calibrate --kind``):

* ``line_integral``: a float image of ``-log(I / I0)`` (what ``stereodrr render`` writes); used
  as it is. Refused when it cannot be one: an integer image with values beyond 100 (a raw
  16-bit frame), or values far below 0.
* ``intensity``: raw counts or a raw 16-bit flat-panel frame, air bright; converted to
  ``-log(max(I, f) / I0)`` with ``f`` :func:`~stereodrr.imaging.zero_floor` (half a count, or
  half the smallest value recorded below a count) and ``I0`` the median of the pixels above 0.8
  times the 99.9th percentile (the unattenuated air, when the field shows some), so the
  result is the line integral up to the error of that estimate (NCC ignores a constant, and the
  count weights of ``wncc`` a common factor). Refused when it holds negative values.
* ``auto``: integer images are intensities; float images are taken as line integrals unless
  their negative logarithm correlates better with the DRR at the initial pose (``drr`` given).
  An integer image that clearly fails that test (bone bright: an inverted or ``-log`` display) is
  refused.
"""

from __future__ import annotations

import numpy as np

from ..imaging.functional import zero_floor

__all__ = ["IMAGE_KINDS", "to_line_integral", "guess_kind"]

IMAGE_KINDS = ("auto", "line_integral", "intensity")


def _intensity_to_line(image: np.ndarray, name: str) -> np.ndarray:
    a = image.astype(np.float64)
    if a.min() < 0:
        raise ValueError(f"{name}: raw intensities cannot be negative (minimum {a.min():.4g}); expected counts, "
                         "or give --kind line_integral for a -log(I/I0) image")
    top = float(np.percentile(a, 99.9))
    if top <= 0:
        raise ValueError(f"{name}: no pixel recorded photons (99.9th percentile {top:g}); expected raw counts")
    # The unattenuated air: the median of the pixels near the brightest (a high percentile alone
    # sits a few noise sigmas above I0).
    i0 = float(np.median(a[a >= 0.8 * top]))
    return -np.log(np.maximum(a, zero_floor(a)) / i0)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


# How much better (NCC) an integer image must match the initial pose's DRR than its -log does,
# and how well at least, to be refused as bone-bright: an inverted display against a raw frame
# differs by about 2 (ncc and -ncc); a start that misses the anatomy gives two values near 0.
_INVERTED_MARGIN = 0.2


def guess_kind(image: np.ndarray, drr: np.ndarray | None = None) -> str:
    """``"intensity"`` for integer images, or a float image whose ``-log`` matches ``drr`` (the
    DRR at the initial pose, ``(H, W)``) better than the image itself; else ``"line_integral"``."""
    if np.issubdtype(image.dtype, np.integer):
        return "intensity"
    if (drr is not None and image.min() >= 0 and image.max() > 0
            and _ncc(_intensity_to_line(image, "image"), drr) > _ncc(image.astype(np.float64), drr)):
        return "intensity"
    return "line_integral"


def to_line_integral(image: np.ndarray, kind: str = "auto", name: str = "image",
                     drr: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The image as a float32 line integral ``(H, W)`` and the kind it was read as.

    Args:
        image: ``(H, W)`` float or integer X-ray.
        kind: one of :data:`IMAGE_KINDS`.
        name: the image, for messages (e.g. its file).
        drr: the DRR at the initial pose, to decide ``"auto"`` for float images.

    Raises:
        ValueError: an unknown kind, or an image that cannot be of the kind given.
    """
    if kind not in IMAGE_KINDS:
        raise ValueError(f"kind: expected one of {IMAGE_KINDS}, got {kind!r}")
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2D (H, W) image, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: {int(np.sum(~np.isfinite(a)))} pixel(s) are NaN or inf; expected a finite image")
    if kind == "auto":
        kind = guess_kind(a, drr)
        if kind == "intensity" and drr is not None and np.issubdtype(a.dtype, np.integer):
            line = _intensity_to_line(a, name)
            # guess_kind's test for float images, which an integer image cannot pass as a line
            # integral: bone bright, so its -log would register the CT inverted. Only clear
            # evidence counts: from a rough start both correlations are near zero.
            direct, logged = _ncc(a.astype(np.float64), drr), _ncc(line, drr)
            if direct > _INVERTED_MARGIN and direct > logged + _INVERTED_MARGIN:
                raise ValueError(f"{name}: bone shows bright (the image matches the DRR at the initial pose better "
                                 "than its -log): an inverted or -log display, not raw counts; expected a raw "
                                 "frame (bone dark), or --kind intensity if the initial pose is far off")
            return line.astype(np.float32), kind
    if kind == "intensity":
        return _intensity_to_line(a, name).astype(np.float32), kind
    if np.issubdtype(a.dtype, np.integer) and a.max() > 100:
        raise ValueError(f"{name}: an integer image with values up to {a.max()} is a raw frame, not a line integral "
                         "-log(I/I0) (typically 0-10); give --kind intensity to convert it")
    if a.min() < -1.0:
        raise ValueError(f"{name}: values down to {a.min():.3g}; a line integral -log(I/I0) is >= 0 (up to noise); "
                         "expected a -log image, or --kind intensity for raw counts")
    return a.astype(np.float32), kind

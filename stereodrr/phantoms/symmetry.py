"""Near-symmetries of a marker layout, and whether a phantom's markers can be identified.

A labelling of the balls seen in an image is only as good as the layout's asymmetry: any
rigid map (rotation or mirror, plus translation) that takes most marker centres onto other
marker centres gives a second labelling that a DLT fits as well as the true one (a lattice
shifted by one row, a cube rotated by 90 deg, a mirror image). :func:`marker_symmetries` finds
these maps; the identification (:mod:`stereodrr.calib.identify`) scores every labelling they
allow, and :func:`identification_ambiguities` says, when a phantom is loaded, which of them its
marker classes (diameter, material) cannot tell apart.

Search: base triangles of three markers near the layout's centre (a few, so that a shift
towards one triangle's outer side is found from another) are mapped onto every
congruent triangle of markers (side lengths equal within ``tol_mm``); each correspondence fixes
one proper and one improper isometry (Kabsch on the three points), kept when it takes at least
``min_overlap`` of the markers onto markers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.spatial import cKDTree

from ..geometry.errors import rotation_angle_deg

__all__ = ["MarkerSymmetry", "marker_symmetries", "identification_ambiguities", "MAX_PRIOR_ROTATION_DEG",
           "MIN_CLASS_CONTRADICTIONS", "AMBIGUOUS_OVERLAP"]

# Labellings related by a rotation larger than this are told apart by the nominal rig alone
# (the identification accepts nominal rigs up to ~20 deg off and rejects poses this far away).
MAX_PRIOR_ROTATION_DEG = 45.0
# A near-symmetry is broken by the marker classes when at least this many markers land on a
# marker of another class (diameter or material); with fewer, one mis-sized shadow flips it.
MIN_CLASS_CONTRADICTIONS = 2
# ... for maps that keep at least this fraction of the markers on markers; below it the labellings
# differ by so many balls (which would all have to be hidden or off the detector) that the
# image's coverage tells them apart.
AMBIGUOUS_OVERLAP = 0.7


@dataclass(frozen=True)
class MarkerSymmetry:
    """An isometry ``x -> R x + t`` that maps markers onto markers.

    Attributes:
        R: ``(3, 3)`` orthogonal (``det = +1`` proper, ``-1`` a mirror).
        t: ``(3,)`` mm.
        perm: ``(M,)`` index of the marker each marker lands on, ``-1`` where none.
        overlap: fraction of markers that land on a marker.
        angle_deg: rotation angle of ``R`` (of ``-R`` composed with a point reflection for mirrors).
        class_contradictions: markers landing on a marker of another class.
    """

    R: np.ndarray
    t: np.ndarray
    perm: np.ndarray
    overlap: float
    angle_deg: float
    class_contradictions: int

    @property
    def proper(self) -> bool:
        return bool(np.linalg.det(self.R) > 0)

    @property
    def identity(self) -> bool:
        return bool(np.all(self.perm == np.arange(len(self.perm))))


def _kabsch(A: np.ndarray, B: np.ndarray, proper: bool) -> tuple[np.ndarray, np.ndarray]:
    """``R, t`` minimising ``|R A + t - B|`` over rotations (``proper``) or mirrors."""
    ca, cb = A.mean(axis=0), B.mean(axis=0)
    U, _, Vt = np.linalg.svd((A - ca).T @ (B - cb))
    d = np.sign(np.linalg.det(Vt.T @ U.T)) * (1.0 if proper else -1.0)
    R = Vt.T @ np.diag([1.0, 1.0, d]) @ U.T
    return R, cb - R @ ca


def _angle_deg(R: np.ndarray) -> float:
    Rp = R if np.linalg.det(R) > 0 else -R
    return rotation_angle_deg(Rp, np.eye(3))


# Base triangles tried by the search.
_N_BASES = 3


def _maps_of_triangle(X: np.ndarray, D: np.ndarray, cls: np.ndarray, tri: tuple[int, int, int], tol_mm: float,
                      min_overlap: float, found: dict, tree: cKDTree) -> None:
    """Add to ``found`` every isometry taking the triangle ``tri`` onto a congruent marker triangle
    (all candidate triangles at once: batched Kabsch, one k-d tree query)."""
    n = len(X)
    a, b, c = tri
    ok_ab = np.abs(D - D[a, b]) < tol_mm  # (a2, b2)
    ok_ac = np.abs(D - D[a, c]) < tol_mm  # (a2, c2)
    ok_bc = np.abs(D - D[b, c]) < tol_mm  # (b2, c2)
    a2, b2, c2 = np.nonzero(ok_ab[:, :, None] & ok_ac[:, None, :] & ok_bc[None, :, :])
    if len(a2) == 0:
        return
    base = X[[a, b, c]] - X[[a, b, c]].mean(axis=0)
    tgt = np.stack([X[a2], X[b2], X[c2]], axis=1)  # (T, 3, 3)
    ct = tgt.mean(axis=1)
    U, _, Vt = np.linalg.svd(np.einsum("ki,tkj->tij", base, tgt - ct[:, None]))
    V, Ut = np.transpose(Vt, (0, 2, 1)), np.transpose(U, (0, 2, 1))
    d0 = np.sign(np.linalg.det(V @ Ut))
    cb = X[[a, b, c]].mean(axis=0)
    for sign in (1.0, -1.0):  # proper, then mirror
        Dg = np.zeros((len(a2), 3, 3))
        Dg[:, 0, 0] = Dg[:, 1, 1] = 1.0
        Dg[:, 2, 2] = d0 * sign
        R = V @ Dg @ Ut
        t = ct - R @ cb
        Y = np.einsum("tij,nj->tni", R, X) + t[:, None, :]
        dist, nearest = tree.query(Y.reshape(-1, 3), distance_upper_bound=tol_mm)
        hit = (dist < tol_mm).reshape(len(a2), n)
        nearest = nearest.reshape(len(a2), n)
        for k in np.nonzero(hit.mean(axis=1) >= min_overlap)[0]:
            _record(found, cls, R[k], t[k], hit[k], nearest[k])


def _record(found: dict, cls: np.ndarray, R: np.ndarray, t: np.ndarray, hit: np.ndarray, nearest: np.ndarray) -> None:
    """Add the map ``x -> R x + t`` (markers ``hit`` landing on markers ``nearest``) to ``found``."""
    perm = np.where(hit, nearest, -1)
    key = perm.tobytes()
    if key not in found:
        contra = int(np.sum(hit & (cls[np.maximum(perm, 0)] != cls)))
        found[key] = MarkerSymmetry(R, t, perm, float(hit.mean()), _angle_deg(R), contra)


def _add_map(X: np.ndarray, cls: np.ndarray, R: np.ndarray, t: np.ndarray, tol_mm: float, min_overlap: float,
             found: dict, tree: cKDTree) -> None:
    """Add ``x -> R x + t`` to ``found`` when it keeps ``min_overlap`` of the markers on markers."""
    dist, nearest = tree.query(X @ R.T + t, distance_upper_bound=tol_mm)
    hit = dist < tol_mm
    if hit.mean() >= min_overlap:
        _record(found, cls, R, t, hit, nearest)


@lru_cache(maxsize=16)
def _symmetries_cached(key: bytes, n: int, classes: tuple, tol_mm: float, min_overlap: float) -> tuple[MarkerSymmetry, ...]:
    X = np.frombuffer(key, dtype=np.float64).reshape(n, 3)
    cls = np.array([hash(c) for c in classes])
    if n < 4:
        return ()
    D = np.linalg.norm(X[:, None] - X[None], axis=-1)
    tree = cKDTree(X)
    found: dict[bytes, MarkerSymmetry] = {}
    # Several base triangles (around the most central markers): a map is found when one of them
    # lands entirely on markers, which a shift towards a triangle's outer side may not allow.
    for a in np.argsort(np.linalg.norm(X - X.mean(axis=0), axis=1), kind="stable")[:_N_BASES]:
        order = np.argsort(D[a], kind="stable")
        for b in order[1:3]:
            c = None
            for k in order[1:]:
                e1, e2 = X[b] - X[a], X[k] - X[a]
                if k != b and np.linalg.norm(np.cross(e1, e2)) > 0.3 * np.linalg.norm(e1) * np.linalg.norm(e2):
                    c = int(k)
                    break
            if c is not None:
                _maps_of_triangle(X, D, cls, (int(a), int(b), c), tol_mm, min_overlap, found, tree)
    # The inverse of a near-symmetry is one too, but its base triangle may land off the markers
    # (which of the tied central markers the bases use depends on the sort): add every inverse.
    for s in list(found.values()):
        _add_map(X, cls, s.R.T, -s.R.T @ s.t, tol_mm, min_overlap, found, tree)
    return tuple(sorted(found.values(), key=lambda s: (not s.identity, -s.overlap, s.angle_deg)))


def marker_symmetries(centers: np.ndarray, classes: list | tuple | None = None, tol_mm: float | None = None,
                      min_overlap: float = 0.5) -> tuple[MarkerSymmetry, ...]:
    """Every isometry taking at least ``min_overlap`` of the ``(M, 3)`` marker ``centers`` onto
    marker centres (within ``tol_mm``, default 5 % of the smallest marker spacing), the
    identity first. ``classes``: one hashable per marker (e.g. ``(diameter, material)``) to
    count the class contradictions of each map."""
    X = np.ascontiguousarray(np.asarray(centers, dtype=np.float64))
    if X.ndim != 2 or X.shape[1] != 3:
        raise ValueError(f"centers: expected shape (M, 3), got {X.shape}")
    n = len(X)
    classes = tuple(classes) if classes is not None else (0,) * n
    if len(classes) != n:
        raise ValueError(f"classes: expected {n} (one per marker), got {len(classes)}")
    if tol_mm is None:
        D = np.linalg.norm(X[:, None] - X[None], axis=-1) + np.diag(np.full(n, np.inf))
        tol_mm = 0.05 * float(D.min()) if n > 1 else 1.0
    return _symmetries_cached(X.tobytes(), n, classes, float(tol_mm), float(min_overlap))


def identification_ambiguities(centers: np.ndarray, classes: list | tuple, ids: list | np.ndarray) -> list[str]:
    """Near-symmetries the marker classes do not break within the nominal-rig band, as messages
    (empty: identifiable). A map counts when it is proper, rotates by at most
    :data:`MAX_PRIOR_ROTATION_DEG`, and fewer than :data:`MIN_CLASS_CONTRADICTIONS` markers
    land on a marker of another class: such labellings differ only by which balls fall outside
    the detector, which occlusion or a clipped field of view can fake. Only maps keeping at
    least :data:`AMBIGUOUS_OVERLAP` of the markers on markers count."""
    ids = list(ids)
    out = []
    for s in marker_symmetries(centers, classes):
        if s.identity or not s.proper or s.angle_deg > MAX_PRIOR_ROTATION_DEG or s.overlap < AMBIGUOUS_OVERLAP:
            continue
        if s.class_contradictions < MIN_CLASS_CONTRADICTIONS:
            pairs = [(ids[i], ids[j]) for i, j in enumerate(s.perm) if j >= 0 and j != i][:4]
            what = (f"a shift by {np.linalg.norm(s.t):.1f} mm" if s.angle_deg < 0.5 else
                    f"a {s.angle_deg:.0f} deg rotation")
            out.append(f"{what} maps {100 * s.overlap:.0f} % of the markers onto markers of the same size and "
                       f"material (e.g. {', '.join(f'{i}->{j}' for i, j in pairs)}; only "
                       f"{s.class_contradictions} contradicted by marker size/material): reference markers "
                       "are indistinguishable")
    return out

"""The designs behind the definition files in the top-level ``phantoms/`` folder.

``python -m stereodrr.phantoms.designs phantoms/`` rewrites ``lego_stereo.json``,
``lego_cube.json`` and ``torso.json`` from the functions below (deterministic: fixed seed).

* ``lego_stereo``: twelve LEGO 2x4 bricks in five layers (a stepped, asymmetric tower about
  64 x 32 x 50 mm centred on the origin) carrying 24 steel balls of 1.0, 1.5 and 2.0 mm, half
  pressed into the outer faces and stud tops of the bricks. Marker sites are drawn at random
  (seed 7) and kept only when, in both views of the default convergent rig (5 deg, SID 750,
  SDD 1200, 0.3 mm pixels, 512 x 512), every ball's shadow stays inside the detector with
  a margin and clear of every other shadow.
* ``lego_cube``: an XMALab-style calibration cube. The cube the project brief describes for
  XMALab is a 4 x 4 x 4 lattice of 5 mm balls at 64 mm spacing (192 mm across); it does not fit
  the ~92 mm field of the default rig, so this one is scaled by 1/4 to 16 mm spacing
  (2 studs horizontally, 5 plates vertically) with 2.0 mm steel balls, held in four LEGO 7x7
  plates joined by 2x2 corner pillars; four reference balls (3.0 mm) mark the origin and the
  three axes. Its world pose (rotated 20 deg about z and 12 deg about x) spreads the lattice
  rows so that no shadows coincide in the default rig.
* ``torso``: a CT-like chest for registration: fat and soft-tissue elliptic cylinders, two
  unequal lungs, a heart-like ellipsoid (left), a sternum and a spine of vertebral bodies
  (cortical shells) with spinous processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..fileio import atomic_write_text
from ..geometry import StereoRig
from ..volume import Volume
from .io import PHANTOM_SCHEMA, phantom_from_dict
from .lego import BRICK_HEIGHT, PLATE_HEIGHT, STUD_HEIGHT, STUD_PITCH, brick_size
from .model import Phantom, rigid_pose
from .voxelize import VoxelGrid, VoxelizeOptions, voxelize

__all__ = ["lego_stereo_spec", "lego_cube_spec", "torso_spec", "torso_phantom", "default_rig", "marker_shadow_gaps",
           "write_all"]


def default_rig() -> StereoRig:
    """The rig the marker layouts are checked against: 5 deg convergent, SID 750, SDD 1200, 0.3 mm, 512 x 512."""
    return StereoRig.convergent(5.0, sid=750.0, sdd=1200.0, pixel_spacing=0.3, width=512, height=512)


def marker_shadow_gaps(phantom: Phantom, rig: StereoRig) -> dict[str, tuple[float, float]]:
    """Per view: the smallest gap between two ball shadows and the smallest shadow-to-edge margin, in pixels.

    A ball of radius ``r`` at distance ``Z`` from the source casts a shadow of radius
    ``f r / Z`` pixels (``f = K[0, 0]``); the gap of two shadows is the distance of their
    centres minus both radii (negative: they overlap).
    """
    arr = phantom.marker_arrays()
    out = {}
    for name, cam in rig.cameras.items():
        uv, depth = cam.project(arr.centers)
        rad = cam.K[0, 0] * arr.diameters / 2 / depth
        d = np.linalg.norm(uv[:, None] - uv[None], axis=-1) - (rad[:, None] + rad[None])
        np.fill_diagonal(d, np.inf)
        edge = np.min(np.stack([uv[:, 0] + 0.5, cam.width - 0.5 - uv[:, 0], uv[:, 1] + 0.5, cam.height - 0.5 - uv[:, 1]]), 0) - rad
        out[name] = (float(d.min()), float(edge.min()))
    return out


def _brick(layer: int, cx: float, cy: float, along_y: bool, name: str, z0: float) -> dict:
    return {"type": "lego_brick", "name": name, "studs": [4, 2], "material": "abs",
            "center": [cx, cy, z0 + (layer + 0.5) * BRICK_HEIGHT], "rotation_deg": [0.0, 0.0, 90.0 if along_y else 0.0]}


# The tower: (layer, centre x, centre y, long side along y). Centres lie on the 8 mm stud lattice.
_TOWER = [
    (0, -16, -8, False), (0, 16, -8, False), (0, -16, 8, False), (0, 16, 8, False),
    (1, -24, 0, True), (1, 0, -8, False), (1, 8, 8, False),
    (2, -8, -8, False), (2, 16, 0, True),
    (3, 8, -8, False), (3, -16, 0, True),
    (4, 8, 0, True),
]
_Z0 = -2.5 * BRICK_HEIGHT  # bottom of layer 0; five layers centre the tower on z = 0


def _boxes() -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Axis-aligned (lo, hi, layer) of every brick body (studs excluded)."""
    out = []
    for layer, cx, cy, along_y in _TOWER:
        sx, sy, sz = brick_size((4, 2))
        half = np.array([sy, sx, sz]) / 2 if along_y else np.array([sx, sy, sz]) / 2
        c = np.array([cx, cy, _Z0 + (layer + 0.5) * BRICK_HEIGHT])
        out.append((c - half, c + half, layer))
    return out


def _inside_any(p: np.ndarray, boxes: list) -> bool:
    return any(np.all(p > lo) and np.all(p < hi) for lo, hi, _ in boxes)


def _candidate_sites() -> list[tuple[np.ndarray, int]]:
    """Exposed points on brick faces and stud tops: (centre of a half-embedded ball, layer)."""
    boxes = _boxes()
    sites = []
    for lo, hi, layer in boxes:
        c = (lo + hi) / 2
        zs = lo[2] + np.array([2.4, 4.8, 7.2])
        for axis in (0, 1):  # side faces normal to x and y
            other = 1 - axis
            ts = np.arange(lo[other] + 2.5, hi[other] - 2.0, 3.0)
            for side, face in ((-1, lo[axis]), (1, hi[axis])):
                for t in ts:
                    for z in zs:
                        p = c.copy()
                        p[axis], p[other], p[2] = face, t, z
                        out = p.copy()
                        out[axis] += side * 1.2
                        if not _inside_any(out, boxes):
                            sites.append((p, layer))
        # Stud tops (ball resting on the stud, centre at the stud's top face) when nothing covers them.
        for sx in np.arange(lo[0] + STUD_PITCH / 2 - 0.1, hi[0], STUD_PITCH):
            for sy in np.arange(lo[1] + STUD_PITCH / 2 - 0.1, hi[1], STUD_PITCH):
                p = np.array([sx, sy, hi[2] + STUD_HEIGHT])
                if not _inside_any(p + [0, 0, 1.0], boxes):
                    sites.append((p, layer))
    return sites


def lego_stereo_spec(n_markers: int = 24, seed: int = 7, min_gap_px: float = 6.0, min_edge_px: float = 40.0) -> dict:
    """The LEGO stereo phantom (see the module docstring) as a phantom-file dictionary."""
    rng = np.random.default_rng(seed)
    sites = _candidate_sites()
    rig = default_rig()
    diameters = (1.0, 1.5, 2.0)
    bricks = [_brick(layer, cx, cy, ay, f"brick{i}", _Z0) for i, (layer, cx, cy, ay) in enumerate(_TOWER)]
    n_layers = max(t[0] for t in _TOWER) + 1
    chosen: list[dict] = []
    # Round-robin over the layers so every height carries markers.
    order = {layer: [s for s in rng.permutation(len(sites)) if sites[s][1] == layer] for layer in range(n_layers)}
    layer = 0
    while len(chosen) < n_markers and any(order.values()):
        if order[layer]:
            p, _ = sites[order[layer].pop()]
            d = float(diameters[rng.integers(len(diameters))])
            trial = chosen + [{"id": len(chosen) + 1, "center": [round(float(v), 3) for v in p], "diameter": d,
                               "material": "stainless_steel"}]
            try:
                ph = phantom_from_dict({"schema": PHANTOM_SCHEMA, "name": "trial", "markers": trial})
            except ValueError:  # balls intersect
                ph = None
            if ph is not None and all(g >= min_gap_px and e >= min_edge_px for g, e in marker_shadow_gaps(ph, rig).values()):
                chosen = trial
        layer = (layer + 1) % n_layers
    if len(chosen) < n_markers:
        raise RuntimeError(f"only {len(chosen)} of {n_markers} marker sites satisfy the constraints")
    return {
        "schema": PHANTOM_SCHEMA,
        "name": "lego_stereo",
        "description": (
            "Stereo calibration phantom: 12 LEGO 2x4 bricks (ABS) in 5 layers, a stepped asymmetric tower "
            "centred on the origin, with 24 steel balls (AISI 304, 1.0/1.5/2.0 mm) half pressed into exposed "
            "faces and stud tops. Generated by stereodrr.phantoms.designs (seed 7); every ball's shadow is "
            f">= {min_gap_px:g} px from every other and >= {min_edge_px:g} px inside the detector in both views of "
            "the 5 deg convergent rig (SID 750, SDD 1200, 0.3 mm, 512x512)."
        ),
        "bodies": bricks,
        "markers": chosen,
    }


def lego_cube_spec(spacing: float = 16.0, ball: float = 2.0, reference_ball: float = 3.0,
                   rotation_deg: tuple[float, float, float] = (12.0, 0.0, 20.0)) -> dict:
    """The XMALab-style cube (see the module docstring) as a phantom-file dictionary."""
    n = 4
    coords = (np.arange(n) - (n - 1) / 2) * spacing  # lattice positions, centred
    plate_studs = 7
    bodies = []
    for k, z in enumerate(coords):
        bodies.append({"type": "lego_brick", "name": f"plate{k}", "studs": [plate_studs, plate_studs], "plates": 1,
                       "material": "abs", "center": [0.0, 0.0, float(z)]})
        if k < n - 1:
            # 2x2 corner pillars between this plate and the next (a 2x2 brick plus a 2x2 plate).
            h_plates = round((spacing - PLATE_HEIGHT) / PLATE_HEIGHT)
            zc = float(z) + PLATE_HEIGHT / 2 + h_plates * PLATE_HEIGHT / 2
            c = (plate_studs / 2 - 1) * STUD_PITCH
            for sx in (-1, 1):
                for sy in (-1, 1):
                    bodies.append({"type": "lego_brick", "name": f"pillar{k}{'mp'[sx > 0]}{'mp'[sy > 0]}", "studs": [2, 2],
                                   "plates": h_plates, "material": "abs", "center": [sx * c, sy * c, zc + 0.0]})
    # Reference balls: the origin corner and one step along each axis (an asymmetric frame).
    refs = {(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)}
    markers: list[dict] = []
    for k in range(n):
        for j in range(n):
            for i in range(n):
                markers.append({"id": len(markers) + 1, "center": [float(coords[i]), float(coords[j]), float(coords[k])],
                                "diameter": reference_ball if (i, j, k) in refs else ball, "material": "stainless_steel"})
    return {
        "schema": PHANTOM_SCHEMA,
        "name": "lego_cube",
        "description": (
            f"XMALab-style calibration cube: 4x4x4 steel balls ({ball:g} mm) at {spacing:g} mm spacing (the XMALab "
            f"cube's 5 mm balls at 64 mm scaled by 1/4 in spacing to fit a ~92 mm field) in four LEGO 7x7 plates joined by 2x2 corner pillars; "
            f"reference balls ({reference_ball:g} mm): ids 1 (origin corner), 2 (+x), 5 (+y), 17 (+z). "
            f"Pose: rotated {list(rotation_deg)} deg (extrinsic x, y, z) so no shadows coincide in the default rig."
        ),
        "pose": {"rotation_deg": list(rotation_deg), "translation_mm": [0.0, 0.0, 0.0]},
        "bodies": bodies,
        "markers": markers,
    }


def torso_spec(scale: Sequence[float] = (1.0, 1.0, 1.0)) -> dict:
    """The CT-like chest (see the module docstring) as a phantom-file dictionary.

    ``scale`` (x, y, z) stretches every centre and extent (the shipped file is scale 1); a
    rotated body's extents are scaled along its own axes, which keeps it a box or ellipsoid.
    """
    sx, sy, sz = (float(v) for v in scale)
    if not min(sx, sy, sz) > 0:
        raise ValueError(f"scale: expected three positive factors, got {scale}")

    def body(kind: str, material: str, name: str, center: list, **params: object) -> dict:
        return {"type": kind, "material": material, "name": name, "center": [sx * center[0], sy * center[1],
                                                                             sz * center[2]], **params}

    def xy(r: list) -> list:
        return [sx * r[0], sy * r[1]]

    def xyz(r: list) -> list:
        return [sx * r[0], sy * r[1], sz * r[2]]

    bodies = [
        body("cylinder", "adipose", "fat", [0, 0, 0], radius=xy([160, 105]), height=sz * 300),
        body("cylinder", "soft_tissue", "muscle", [0, 0, 0], radius=xy([150, 95]), height=sz * 300),
        body("ellipsoid", "lung", "right lung", [-70, 5, 30], radii=xyz([60, 62, 110])),
        body("ellipsoid", "lung", "left lung", [72, 10, 38], radii=xyz([52, 58, 100])),
        body("ellipsoid", "soft_tissue", "heart", [25, -25, -30], radii=xyz([50, 42, 55]), rotation_deg=[0, 0, -30]),
        body("box", "cortical_bone", "sternum", [0, -88, 10], size=xyz([24, 8, 150])),
    ]
    # Spine: vertebral bodies (cortical shell around a tissue core) every 30 mm with 6 mm discs,
    # spinous processes pointing posterior (+y) and tilted caudally.
    for i, z in enumerate(np.arange(-135.0, 136.0, 30.0)):
        bodies.append(body("cylinder", "cortical_bone", f"vertebra{i}", [0, 45, float(z)], radius=xy([20, 16]),
                           height=sz * 24, inner_radius=12 * min(sx, sy)))
        bodies.append(body("box", "cortical_bone", f"spinous{i}", [0, 80, float(z) - 4], size=xyz([7, 34, 10]),
                           rotation_deg=[20, 0, 0]))
    return {
        "schema": PHANTOM_SCHEMA,
        "name": "torso",
        "description": ("CT-like chest (LPS: x left, y posterior, z superior): fat and soft-tissue elliptic "
                        "cylinders 320 x 210 x 300 mm, unequal lungs, heart-like ellipsoid on the left, sternum, "
                        "10 vertebral bodies with spinous processes."),
        "bodies": bodies,
        "markers": [],
    }


def torso_phantom(
    size: Sequence[int] = (128, 96, 80),
    spacing: Sequence[float] | float = 2.5,
    center: Sequence[float] = (0.0, 0.0, 0.0),
    supersample: int = 2,
    energy_kev: float = 60.0,
) -> Volume:
    """The built-in torso (:func:`torso_spec`, ``torso.json``) as a CT in HU on a grid of ``size``
    voxels (x, y, z) of ``spacing`` mm centred on ``center``.

    The torso is scaled to the grid as a CT's field of view frames a patient: its 320 x 210 mm
    cross-section fills 84 % x 80 % of the grid's width and depth and its 300 mm length 90 % of
    the grid's height, with air around it (the default grid, 320 x 240 x 200 mm, shows it at
    0.84 x 0.91 x 0.6). HU are unclipped, ``1000 (mu / mu_water - 1)`` at ``energy_kev``, so
    :func:`~stereodrr.volume.hu_to_mu` at that energy gives back the voxelized mu; identity
    direction.

    Args:
        size: voxels along x, y, z.
        spacing: mm per voxel (one number or three).
        center: world position of the grid's and the torso's centre.
        supersample: sub-samples per axis for boundary voxels (:func:`voxelize`).
        energy_kev: the energy of the HU scale.
    """
    n = np.asarray([int(v) for v in size])
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
    if n.shape != (3,) or n.min() < 1 or np.any(sp <= 0):
        raise ValueError(f"size/spacing: expected positive values, got size={size}, spacing={spacing}")
    c = np.asarray(center, dtype=np.float64)
    if c.shape != (3,) or not np.all(np.isfinite(c)):
        raise ValueError(f"center: expected 3 finite numbers (mm), got {center}")
    extent = n * sp
    scale = (0.84 * extent[0] / 320.0, 0.80 * extent[1] / 210.0, 0.90 * extent[2] / 300.0)
    phantom = phantom_from_dict(torso_spec(scale), "torso").moved(rigid_pose((0.0, 0.0, 0.0), c))
    vox = voxelize(phantom, sp, energy_kev=energy_kev,
                   grid=VoxelGrid(tuple(int(v) for v in n), c - sp * (n - 1) / 2, np.eye(3)),
                   options=VoxelizeOptions(supersample, hu_range=None), progress=False)
    return vox.hu


def write_all(folder: str | Path) -> list[Path]:
    """Write the three definition files into ``folder``."""
    out = []
    for spec in (lego_stereo_spec(), lego_cube_spec(), torso_spec()):
        phantom_from_dict(spec, spec["name"])  # validate before writing
        p = Path(folder) / f"{spec['name']}.json"
        atomic_write_text(p, json.dumps(spec, indent=1) + "\n")
        out.append(p)
    return out


if __name__ == "__main__":  # pragma: no cover
    for path in write_all(sys.argv[1] if len(sys.argv) > 1 else "phantoms"):
        print(f"wrote {path}")

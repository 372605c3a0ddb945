"""LEGO bricks as primitives, with the real system dimensions.

A brick of ``nx x ny`` studs and ``plates`` plate heights (a standard brick is 3 plates) is a
hollow box (open underneath) plus cylindrical studs on top and, for bricks at least 2 studs
wide, bottom tubes between the studs. Its local frame: origin at the centre of the hollow box
(studs excluded), x along the ``nx`` studs, +z up (studs on +z).

Dimensions (mm), the published LEGO system measures: stud pitch 8.0; footprint
``8 n - 0.2`` (0.1 mm clearance per side: 31.8 x 15.8 for a 2x4); plate height 3.2, brick
9.6; side walls 1.5 (the issue's figure; moulded walls are 1.2-1.5); top 1.0; studs 4.8
diameter x 1.7 high; bottom tubes 6.51 outer / 4.8 inner diameter.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..geometry.se3 import compose, rigid_matrix
from .materials import Material, get_material
from .model import Body
from .primitives import Cylinder, HollowBox

__all__ = [
    "STUD_PITCH", "PLATE_HEIGHT", "BRICK_HEIGHT", "CLEARANCE", "WALL", "TOP", "STUD_DIAMETER",
    "STUD_HEIGHT", "TUBE_OUTER_DIAMETER", "TUBE_INNER_DIAMETER", "lego_brick", "brick_size",
]

STUD_PITCH = 8.0
PLATE_HEIGHT = 3.2
BRICK_HEIGHT = 3 * PLATE_HEIGHT  # 9.6
CLEARANCE = 0.2  # footprint = n * pitch - clearance
WALL = 1.5
TOP = 1.0
STUD_DIAMETER = 4.8
STUD_HEIGHT = 1.7
TUBE_OUTER_DIAMETER = 6.51
TUBE_INNER_DIAMETER = 4.8


def brick_size(studs: Sequence[int], plates: int = 3) -> np.ndarray:
    """``(3,)`` outer size of the brick body (studs excluded): ``(8 nx - 0.2, 8 ny - 0.2, 3.2 plates)``."""
    nx, ny = (int(v) for v in studs)
    return np.array([nx * STUD_PITCH - CLEARANCE, ny * STUD_PITCH - CLEARANCE, plates * PLATE_HEIGHT])


def lego_brick(studs: Sequence[int] = (4, 2), pose: np.ndarray | None = None, plates: int = 3,
               material: Material | str = "abs", name: str = "brick") -> list[Body]:
    """Bodies of one LEGO brick placed by ``pose`` (brick frame -> phantom frame).

    Args:
        studs: ``(nx, ny)`` studs along the brick's x and y (positive integers).
        pose: ``(4, 4)`` rigid transform of the brick frame (centre of the hollow box); default identity.
        plates: height in plates (3 = brick, 1 = plate).
        material: material or its name.
        name: prefix of the body names.

    Returns:
        The shell, then ``nx * ny`` studs, then ``(nx - 1)(ny - 1)`` tubes when both are >= 2.
    """
    vals = [studs[0], studs[1], plates] if len(studs) == 2 else None
    if vals is None or any(isinstance(v, bool) or int(v) != v or v < 1 for v in vals):
        raise ValueError(f"{name}: studs must be two positive integers and plates a positive integer, got studs={list(studs)}, plates={plates}")
    nx, ny, plates = (int(v) for v in vals)
    mat = get_material(material) if isinstance(material, str) else material
    size = brick_size((nx, ny), plates)
    T = np.eye(4) if pose is None else np.asarray(pose, dtype=np.float64)

    def at(x: float, y: float, z: float) -> np.ndarray:
        return compose(T, rigid_matrix(np.eye(3), np.array([x, y, z])))

    bodies = [Body(HollowBox(size, WALL, min(TOP, size[2] / 2)), mat, T, f"{name}/shell")]
    xs = (np.arange(nx) - (nx - 1) / 2) * STUD_PITCH
    ys = (np.arange(ny) - (ny - 1) / 2) * STUD_PITCH
    z_stud = size[2] / 2 + STUD_HEIGHT / 2
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            bodies.append(Body(Cylinder(STUD_DIAMETER / 2, STUD_HEIGHT), mat, at(x, y, z_stud), f"{name}/stud{i}{j}"))
    if nx >= 2 and ny >= 2:
        # Tubes stand between four studs, from the open bottom up to the underside of the top.
        h = size[2] - TOP
        for i, x in enumerate((xs[:-1] + xs[1:]) / 2):
            for j, y in enumerate((ys[:-1] + ys[1:]) / 2):
                tube = Cylinder(TUBE_OUTER_DIAMETER / 2, h, TUBE_INNER_DIAMETER / 2)
                bodies.append(Body(tube, mat, at(x, y, -size[2] / 2 + h / 2), f"{name}/tube{i}{j}"))
    return bodies

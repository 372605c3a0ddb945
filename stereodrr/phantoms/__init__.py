"""Calibration and anatomy phantoms: exact geometric models and CT-like volumes.

A :class:`Phantom` is a list of bodies (posed primitives of one material, painted in order)
plus spherical markers (id, centre, diameter, material), in a phantom frame that ``pose``
places in the world (LPS, mm). Definition files are JSON (schema ``stereodrr.phantom/1``, see
:mod:`stereodrr.phantoms.io`); the built-in ones ship as package data in
``stereodrr/phantoms/data/`` (``phantoms/`` in the repository links there) and load by name,
``load_phantom("lego_stereo")``.

Typical use::

    from stereodrr.phantoms import load_phantom, rigid_pose, voxelize, save_voxelized

    ph = load_phantom("phantoms/lego_stereo.json")
    ph = ph.moved(rigid_pose(rotation_deg=(0, 0, 10), translation_mm=(2, 0, 0)))  # place it
    truth = ph.marker_table()          # DataFrame marker_id, x, y, z, diameter_mm, material (world mm)

    # DRR of plastic bricks + exact steel balls:
    bodies = voxelize(ph, 0.5, energy_kev=60, markers="carve").mu   # Volume, mu in 1/mm, balls as air
    balls = ph.marker_arrays(60)       # .centers (N, 3) world mm, .diameters (N,), .mu (N,) 1/mm (true)

    vox = voxelize(ph, 0.5)            # .mu, .hu (clipped to 12 bits), .labels, .marker_fraction
    save_voxelized(vox, "out/", phantom=ph)   # mu/hu/labels .mha, markers.csv, voxelize.json

    ct = torso_phantom((128, 96, 80), 2.5)     # the built-in torso as a CT in HU (a Volume)

Materials (:data:`MATERIALS`: air, water, soft_tissue, adipose, lung, cortical_bone, abs,
stainless_steel, tantalum) carry a density and NIST mass attenuation tables:
``Material.mu(keV)`` in 1/mm and ``Material.hu(keV) = 1000 (mu / mu_water - 1)``. Metals far
exceed a 12-bit CT (steel ~ +45,000 HU at 60 keV): ``voxelize`` keeps the true ``mu`` in the mu
volume and clips only the HU volume (default -1024..3071).

Primitives (:mod:`~stereodrr.phantoms.primitives`): :class:`Box`, :class:`HollowBox`,
:class:`Cylinder` (elliptic, tubes), :class:`Sphere`, :class:`Ellipsoid`; LEGO bricks with the
real dimensions are built from them by :func:`lego_brick`.

Label map classes (:data:`LABELS`): 0 air, 1 plastic / soft tissue, 2 bone, 3 metal marker,
4 lung.

The shipped definition files (``lego_stereo``, ``lego_cube``, ``torso``) are written by
:mod:`stereodrr.phantoms.designs` (``python -m stereodrr.phantoms.designs phantoms/``), which
documents how they were designed and checked against the default 5 deg stereo rig.
"""

from .designs import torso_phantom
from .io import (
                 PHANTOM_SCHEMA,
                 PhantomAmbiguityWarning,
                 load_phantom,
                 marker_classes,
                 phantom_from_dict,
                 phantom_to_dict,
                 save_phantom,
)
from .lego import brick_size, lego_brick
from .materials import LABELS, MATERIALS, Material, get_material, material_table
from .model import MARKER_COLUMNS, Body, Marker, MarkerArrays, Phantom, rigid_pose
from .primitives import PRIMITIVES, Box, Cylinder, Ellipsoid, HollowBox, Primitive, Sphere
from .symmetry import MarkerSymmetry, identification_ambiguities, marker_symmetries
from .voxelize import (
                 HU_RANGE_12BIT,
                 VoxelGrid,
                 VoxelizedPhantom,
                 VoxelizeOptions,
                 phantom_grid,
                 save_voxelized,
                 voxelize,
)

__all__ = [
    "PHANTOM_SCHEMA", "PhantomAmbiguityWarning", "load_phantom", "marker_classes",
    "MarkerSymmetry", "identification_ambiguities", "marker_symmetries", "phantom_from_dict", "phantom_to_dict", "save_phantom",
    "brick_size", "lego_brick",
    "LABELS", "MATERIALS", "Material", "get_material", "material_table",
    "MARKER_COLUMNS", "Body", "Marker", "MarkerArrays", "Phantom", "rigid_pose",
    "PRIMITIVES", "Box", "Cylinder", "Ellipsoid", "HollowBox", "Primitive", "Sphere",
    "HU_RANGE_12BIT", "VoxelizedPhantom", "VoxelGrid", "VoxelizeOptions", "phantom_grid", "save_voxelized", "voxelize",
    "torso_phantom",
]

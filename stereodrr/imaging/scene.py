"""What is imaged: voxel bodies (CTs, voxelized phantom bodies) and analytic marker balls, at a
reference energy.

A :class:`Scene` holds its voxel bodies as they came (HU or mu, :class:`Voxels`) and converts
them once, here: ``mu`` at the reference energy for the monochromatic route, HU for the
material decomposition of the polychromatic route (:mod:`stereodrr.imaging.materials`).
``decomposition="none"`` says the scene is known only by its mu at ``energy_kev``: it can be
imaged with a one-line spectrum at that energy (or as line integrals), nothing else.
Room for more kinds of object (a calibration grid, say) is one more field rendered by the
pipeline's two routes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..phantoms import Phantom, VoxelizeOptions, voxelize
from ..phantoms.materials import get_material
from ..volume import Volume, hu_to_mu, mu_to_hu
from .materials import DECOMPOSITIONS, Decomposition

__all__ = ["Scene", "Voxels", "Balls", "Units", "SceneDecomposition"]

Units = Literal["hu", "mu"]
SceneDecomposition = Decomposition | Literal["none"]


@dataclass(frozen=True, eq=False)
class Voxels:
    """A voxel body: a :class:`~stereodrr.volume.Volume` of HU or of mu (1/mm)."""

    volume: Volume
    units: Units = "hu"

    def __post_init__(self) -> None:
        if self.units not in ("hu", "mu"):
            raise ValueError(f"units: expected 'hu' or 'mu', got {self.units!r}")
        if not isinstance(self.volume, Volume):
            raise ValueError(f"volume: expected a stereodrr Volume, got {type(self.volume).__name__}")

    def mu(self, energy_kev: float) -> Volume:
        """Attenuation (1/mm) at ``energy_kev``."""
        return self.volume if self.units == "mu" else hu_to_mu(self.volume, energy_kev)

    def hu(self, energy_kev: float) -> Volume:
        """HU at ``energy_kev``."""
        return self.volume if self.units == "hu" else self.volume.with_data(mu_to_hu(self.volume.data, energy_kev))


@dataclass(frozen=True, eq=False)
class Balls:
    """Analytic balls (marker spheres), rendered exactly.

    Attributes:
        centers: ``(M, 3)`` world mm; diameters: ``(M,)`` mm.
        materials: ``(M,)`` material names (:data:`stereodrr.phantoms.MATERIALS`).
        mu: ``(M,)`` attenuation (1/mm) at the scene's energy (default: from the materials).
        ids: ``(M,)`` marker ids (default ``0 .. M-1``).
    """

    centers: np.ndarray
    diameters: np.ndarray
    materials: tuple[str, ...]
    mu: np.ndarray
    ids: np.ndarray

    @classmethod
    def of(cls, centers: np.ndarray, diameters: np.ndarray, materials: tuple[str, ...] | list[str],
           energy_kev: float = 60.0, mu: np.ndarray | None = None, ids: np.ndarray | None = None) -> Balls:
        """Balls with their mu and ids filled in (module docstring); checks the shapes."""
        c = np.asarray(centers, np.float64).reshape(-1, 3)
        d = np.asarray(diameters, np.float64).reshape(-1)
        mats = tuple(str(m) for m in materials)
        if not (len(c) == len(d) == len(mats)):
            raise ValueError(f"balls: expected one centre, diameter and material per ball, got {len(c)}, {len(d)}, "
                             f"{len(mats)}")
        if not (np.all(np.isfinite(c)) and np.all(d > 0)):
            raise ValueError("balls: centres must be finite and diameters positive (mm)")
        m = (np.array([get_material(n).mu(energy_kev) for n in mats], np.float64) if mu is None
             else np.asarray(mu, np.float64).reshape(-1))
        i = np.arange(len(c), dtype=np.int64) if ids is None else np.asarray(ids, np.int64).reshape(-1)
        return cls(c, d, mats, m, i)

    def __len__(self) -> int:
        return len(self.centers)

    def of_material(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Centres and diameters of the balls of one material."""
        sel = np.array([m == name for m in self.materials])
        return self.centers[sel], self.diameters[sel]


@dataclass(frozen=True, eq=False)
class Scene:
    """Voxel bodies and analytic balls seen at a reference energy.

    Attributes:
        voxels: voxel bodies, rendered and summed in order.
        balls: analytic balls, or ``None``.
        energy_kev: the reference energy: HU <-> mu, the balls' mu, the line integrals' energy.
        decomposition: how the bodies' HU split into materials for a spectrum
            (:data:`~stereodrr.imaging.materials.DECOMPOSITIONS`), or ``"none"`` (mu only).
        metal: material of voxels above the metal threshold (``"tissue_bone"``).
    """

    voxels: tuple[Voxels, ...] = ()
    balls: Balls | None = None
    energy_kev: float = 60.0
    decomposition: SceneDecomposition = "tissue_bone"
    metal: str = "titanium"

    def __post_init__(self) -> None:
        if not (self.voxels or (self.balls is not None and len(self.balls))):
            raise ValueError("scene: give voxel bodies (a CT or a phantom) and/or balls; it is empty")
        if not (math.isfinite(self.energy_kev) and 10.0 <= self.energy_kev <= 200.0):
            raise ValueError(f"energy_kev: expected the diagnostic range 10-200 keV, got {self.energy_kev}")
        if self.decomposition not in (*DECOMPOSITIONS, "none"):
            raise ValueError(f"decomposition: expected one of {[*DECOMPOSITIONS, 'none']}, got {self.decomposition!r}")
        devices = {v.volume.device for v in self.voxels}
        if len(devices) > 1:
            raise ValueError(f"scene: the voxel bodies lie on different devices {sorted(map(str, devices))}")

    @property
    def device(self) -> torch.device:
        return self.voxels[0].volume.device if self.voxels else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return self.voxels[0].volume.data.dtype if self.voxels else torch.float32

    @classmethod
    def from_phantom(cls, phantom: Phantom, voxel_mm: float, energy_kev: float = 60.0, supersample: int = 4,
                     device: torch.device | str = "cpu", progress: bool = True) -> Scene:
        """A phantom: its bodies voxelized at ``voxel_mm`` (markers carved out as air) and its
        markers as exact balls."""
        vox = voxelize(phantom, voxel_mm, energy_kev=energy_kev, markers="carve",
                       options=VoxelizeOptions(supersample, device=device), progress=progress)
        m = phantom.marker_arrays(energy_kev)
        balls = Balls.of(m.centers, m.diameters, [mk.material.name for mk in phantom.markers], energy_kev, m.mu, m.ids)
        return cls((Voxels(vox.mu, "mu"),), balls if len(balls) else None, energy_kev)

    def with_(self, **changes: object) -> Scene:
        """A copy with some fields changed."""
        from dataclasses import replace

        return replace(self, **changes)  # type: ignore[arg-type]

"""A CT's voxels as partial densities of a few materials, and their attenuation per energy bin.

With the CT's HU defined at a reference energy ``E_ref`` (the scanner's effective energy; 60 keV
by default, the project's HU <-> mu energy), :func:`decompose_hu` splits each voxel:

* ``"water"``: one channel, water of density ``max(1 + HU/1000, 0)`` -- exactly
  ``hu_to_mu`` at every energy (everything hardens like water).
* ``"tissue_bone"`` (default): the two-material basis of dual-energy CT. Between the HU of
  ICRU-44 soft tissue and of ICRU-44 cortical bone at ``E_ref`` a voxel is a mixture with bone
  volume fraction ``f = (HU - HU_t) / (HU_b - HU_t)``; below ``HU_t`` (fat, lung, air) it is
  soft tissue, above ``HU_b`` bone, at the density that keeps ``mu(E_ref)``. So
  ``sum_m rho_m (mu/rho)_m(E_ref) / 10 = hu_to_mu(HU, E_ref)`` for every voxel below the metal
  threshold: at ``E_ref`` the render equals the monochromatic one.
* metal: voxels at or above ``metal_hu`` (3000 HU by default; a 12-bit CT clips metal at 3071)
  are the metal (``"titanium"`` Ti-6Al-4V by default) at its nominal density, since a CT's HU of
  metal is clipped and carries no density.

``(mu/rho)_m`` come from xraylib (:mod:`stereodrr.phantoms.materials`).
"""

from __future__ import annotations

from typing import Literal, Sequence, get_args

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..phantoms.materials import get_material
from ..volume import hu_to_mu

__all__ = ["Decomposition", "DECOMPOSITIONS", "decompose_hu", "attenuation_table"]

Decomposition = Literal["tissue_bone", "water"]
"""How HU split into materials (module docstring): ``tissue_bone`` (soft tissue and cortical bone
mixed by HU, metal above the threshold) or ``water`` (one water channel of density
``max(1 + HU/1000, 0)``)."""
DECOMPOSITIONS: tuple[str, ...] = get_args(Decomposition)
"""The names of :data:`Decomposition`."""


def decompose_hu(hu: Float[Tensor, "*shape"], reference_kev: float = 60.0, model: Decomposition = "tissue_bone",
                 metal: str = "titanium", metal_hu: float = 3000.0) -> tuple[list[str], Float[Tensor, "M ..."]]:
    """Partial densities of materials from HU (module docstring for the models).

    Args:
        hu: ``(...)`` HU at ``reference_kev``.
        model: ``"tissue_bone"`` or ``"water"``.
        metal: material of voxels at or above ``metal_hu`` (a name of
            :data:`stereodrr.phantoms.MATERIALS`); ignored by ``"water"``.

    Returns:
        Material names ``(M,)`` and ``(M, ...)`` densities in g/cm^3 (the metal channel only
        when some voxel reaches ``metal_hu``).
    """
    if model not in DECOMPOSITIONS:
        raise ValueError(f"decomposition: expected one of {list(DECOMPOSITIONS)}, got {model!r}")
    mu_ref: Tensor = hu_to_mu(torch.as_tensor(hu), reference_kev)
    if model == "water":
        water = get_material("water")
        return ["water"], (mu_ref / float(water.mu(reference_kev)) * water.density)[None]
    tissue, bone, met = get_material("soft_tissue"), get_material("cortical_bone"), get_material(metal)
    hu_t, hu_b = float(tissue.hu(reference_kev)), float(bone.hu(reference_kev))
    f = ((hu - hu_t) / (hu_b - hu_t)).clamp(0.0, 1.0)
    mu_t, mu_b = float(tissue.mu(reference_kev)), float(bone.mu(reference_kev))
    # Scale so the mixture keeps mu(E_ref); exactly 1 between the two reference HUs.
    scale = mu_ref / ((1.0 - f) * mu_t + f * mu_b)
    is_metal = hu >= metal_hu
    keep = (~is_metal).to(hu.dtype)
    names, chans = ["soft_tissue", "cortical_bone"], [(1.0 - f) * tissue.density * scale * keep,
                                                       f * bone.density * scale * keep]
    if bool(is_metal.any()):
        names.append(met.name)
        chans.append(is_metal.to(hu.dtype) * met.density)
    return names, torch.stack(chans)


def attenuation_table(names: Sequence[str], energies_kev: np.ndarray, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> Float[Tensor, "M K"]:
    """``(M, K)`` ``(mu/rho)_m(E_k) / 10``: multiplies ``L_m`` (g/cm^3 mm) into an exponent."""
    a = np.stack([np.atleast_1d(get_material(n).mass_attenuation(np.asarray(energies_kev))) / 10.0 for n in names])
    return torch.as_tensor(a, device=device, dtype=dtype)

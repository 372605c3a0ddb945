"""The imaged subject of a dataset -- the built-in torso, a CT file or a marker phantom -- as an
attenuation volume plus optional analytic markers, and its rigid placement per item.

A pose ``T`` (4x4, ``x' = R x + t``) moves the subject without resampling: the posed volume
keeps its voxels and takes the moved geometry

    origin' = R origin + t,   direction' = R direction

(since ``world = origin + direction diag(spacing) ijk``), and marker centres move as
``c' = R c + t``. The renderer then sees exactly the rigidly moved object.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from ..geometry import transform_points
from ..phantoms import torso_phantom
from ..volume import Volume, hu_to_mu, load_volume
from .config import canonical_json, input_stamp

__all__ = ["Subject", "load_subject", "posed_volume"]


@dataclass(frozen=True, eq=False)
class Subject:
    """Attenuation volume and markers in world mm, un-posed.

    Attributes:
        volume: mu in 1/mm.
        marker_ids: ``(M,)`` int64 (empty without markers).
        marker_centers: ``(M, 3)`` world mm.
        marker_diameters: ``(M,)`` mm.
        marker_mu: ``(M,)`` 1/mm.
        marker_materials: ``(M,)`` material names (for the polychromatic render).
    """

    volume: Volume
    marker_ids: np.ndarray
    marker_centers: np.ndarray
    marker_diameters: np.ndarray
    marker_mu: np.ndarray
    marker_materials: tuple[str, ...] = ()

    @property
    def center(self) -> np.ndarray:
        """``(3,)`` world centre of the volume's box: the rig's isocenter and the pose's pivot."""
        return self.volume.center

    @property
    def has_markers(self) -> bool:
        return len(self.marker_ids) > 0


def posed_volume(volume: Volume, T: np.ndarray) -> Volume:
    """The volume rigidly moved by ``T`` ``(4, 4)``: same voxels, ``origin' = T(origin)``,
    ``direction' = R direction``."""
    T = np.asarray(T, dtype=np.float64)
    origin = transform_points(T, volume.origin[None])[0]
    return Volume(volume.data, origin, volume.spacing, T[:3, :3] @ volume.direction)


def _no_markers(volume: Volume) -> Subject:
    return Subject(volume, np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0), np.zeros(0))


@functools.lru_cache(maxsize=4)
def _load_cached(subject_json: str, energy_kev: float, device: str, stamp: tuple[tuple[str, int, int], ...]) -> Subject:
    base = _load_cpu(subject_json, energy_kev, stamp)
    if device == "cpu":
        return base
    return Subject(base.volume.to(device), base.marker_ids, base.marker_centers, base.marker_diameters, base.marker_mu,
                   base.marker_materials)


@functools.lru_cache(maxsize=4)
def _load_cpu(subject_json: str, energy_kev: float, stamp: tuple[tuple[str, int, int], ...]) -> Subject:
    """The subject (``stamp``: its files' :func:`~stereodrr.dataset.config.input_stamp`, so an
    edited file is read again)."""
    spec = json.loads(subject_json)
    kind = spec["kind"]
    if kind == "torso":
        hu = torso_phantom(size=spec["size"], spacing=spec["spacing_mm"])
        return _no_markers(hu.with_data(hu_to_mu(hu.data, energy_kev)))
    if kind == "volume":
        vol = load_volume(spec["path"])
        if spec["spacing_mm"] is not None:
            vol = vol.resample(spec["spacing_mm"])
        return _no_markers(vol.with_data(hu_to_mu(vol.data, energy_kev)) if spec["units"] == "hu" else vol)
    from ..phantoms import load_phantom, voxelize

    phantom = load_phantom(spec["path"])
    # Bodies are voxelised with the balls carved out; the balls are rendered analytically with
    # their true mu, so their projected centres are exact.
    vol = voxelize(phantom, spec["voxel_mm"], energy_kev=energy_kev, markers="carve", progress=False).mu
    m = phantom.marker_arrays(energy_kev)
    return Subject(vol, m.ids, m.centers, m.diameters, m.mu, tuple(mk.material.name for mk in phantom.markers))


def load_subject(config: Mapping[str, Any], device: str = "cpu") -> Subject:
    """The subject of a validated config with its volume on ``device``, loaded once per process
    (cached on the subject spec, energy and device, and its files' modification times and sizes).

    Raises:
        ValueError: ``device`` is a CUDA device and this machine has none.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"render.device: {device!r} requested but CUDA is not available on this machine")
    return _load_cached(canonical_json(config["subject"]), float(config["energy_kev"]), device, input_stamp(config))

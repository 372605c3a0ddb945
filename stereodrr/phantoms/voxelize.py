"""Phantom -> CT-like volumes (mu, HU, labels) with partial-volume anti-aliasing, in chunks.

Each voxel ends up with the attenuation of what covers it, painted body by body (later bodies
displace earlier ones, markers last)::

    mu <- (1 - f) mu + f mu_body        f = covered fraction of the voxel, 0..1

``f`` is exact 0 or 1 where the body's distance bound ``|g|`` at the voxel centre exceeds half
the voxel diagonal; the other (boundary) voxels are supersampled with ``s^3`` sub-voxel centres
(midpoint rule). ``s`` is ``supersample`` (default 4) but at least ``32 h / c`` (at most 16) for a
body whose smallest diameter of curvature ``c`` spans few voxels of size ``h``: a 1 mm ball at
0.5 mm voxels gets ``s = 16`` and keeps its volume within 0.6 % wherever it sits on the grid
(sub-sample lattice counting error), and its centroid. The grid is
processed in slabs along k, and each body only over its bounding box, so the working memory is
bounded by ``max_chunk_voxels`` besides the outputs (4 float32 volumes).

Metal: stainless steel is about +45,000 HU and tantalum +290,000 HU at 60 keV, far beyond what a
12-bit CT stores. The ``mu`` volume keeps the true attenuation (float32, never clipped); the
``hu`` volume is ``HU = 1000 (mu / mu_water - 1)`` clipped to ``hu_range`` (default
-1024..3071, the 12-bit range of CT scanners), so metal voxels read 3071 there. For exact metal
in DRRs render the markers analytically (:meth:`Phantom.marker_arrays`) and voxelize the bodies
with ``markers="carve"``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from tqdm.auto import tqdm

from .._deprecation import legacy_options
from ..fileio import atomic_path, atomic_write_text
from ..geometry.se3 import compose, invert
from ..resources import MAX_INT64
from ..volume import Volume, mu_to_hu, mu_water
from .materials import get_material, material_table
from .model import Body, Phantom

__all__ = ["VoxelizedPhantom", "VoxelGrid", "VoxelizeOptions", "voxelize", "phantom_grid", "save_voxelized", "HU_RANGE_12BIT"]

# Range of a 12-bit CT stored with rescale intercept -1024 (DICOM): -1024 .. 4095 - 1024.
HU_RANGE_12BIT = (-1024.0, 3071.0)
"""Range of a 12-bit CT stored with rescale intercept -1024 (DICOM): -1024 .. 4095 - 1024."""
MarkerMode = Literal["include", "exclude", "carve"]


@dataclass(frozen=True, eq=False)
class VoxelizedPhantom:
    """Voxelized phantom, all four volumes on one grid.

    Attributes:
        mu: linear attenuation in 1/mm at ``energy_kev`` (true values, metal unclipped).
        hu: Hounsfield units, clipped to ``hu_range`` (``None``: unclipped).
        labels: label classes (0 air, 1 plastic/soft tissue, 2 bone, 3 metal marker, 4 lung),
            the class of the last body covering at least half of each voxel.
        marker_fraction: fraction of each voxel covered by marker balls (0..1), whatever
            ``markers`` mode painted.
        markers: ground-truth marker table (world mm).
        energy_kev, hu_range, markers_mode, supersample: how it was made.
    """

    mu: Volume
    hu: Volume
    labels: Volume
    marker_fraction: Volume
    markers: pd.DataFrame
    energy_kev: float
    hu_range: tuple[float, float] | None
    markers_mode: str
    supersample: int


def _spacing3(spacing: float | Sequence[float]) -> np.ndarray:
    sp = np.asarray(spacing, dtype=np.float64)
    sp = np.full(3, float(sp)) if sp.ndim == 0 else sp
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing: expected one or three positive voxel sizes (mm), got {spacing!r}")
    return sp


def phantom_grid(phantom: Phantom, spacing: float | Sequence[float], margin_mm: float = 5.0,
                 direction: np.ndarray | None = None, size: Sequence[int] | None = None,
                 origin: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int, int]]:
    """A grid ``(origin, spacing, direction, size)`` for the phantom.

    Without ``size`` the grid covers the phantom's bounding box (in the grid's axes) plus
    ``margin_mm`` on every side; without ``origin`` it is centred on that box.

    Returns:
        origin ``(3,)`` world mm of voxel (0, 0, 0), spacing ``(3,)``, direction ``(3, 3)``,
        size ``(nx, ny, nz)``.
    """
    sp = _spacing3(spacing)
    D = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(D)) or np.abs(D.T @ D - np.eye(3)).max() > 1e-6:
        raise ValueError(f"direction: expected an orthonormal 3x3 matrix, got {np.asarray(direction).tolist()}")
    if not (np.isfinite(margin_mm) and margin_mm >= 0):
        raise ValueError(f"margin_mm: expected a non-negative distance, got {margin_mm}")
    to_axes = np.eye(4)
    to_axes[:3, :3] = D.T  # world -> grid-axis coordinates
    lo, hi = phantom.bounds(T=to_axes)
    if size is None:
        n = np.maximum(np.ceil((hi - lo + 2 * margin_mm) / sp - 1e-9), 1)
        if not np.all(n <= MAX_INT64):  # (inf too) the cast would wrap round to a negative size
            raise ValueError(f"spacing {' x '.join(f'{v:g}' for v in sp)} mm, margin {margin_mm:g} mm: the grid would be "
                             f"{' x '.join(f'{v:.3g}' for v in n)} voxels; expected a coarser spacing or a "
                             "smaller margin")
        n = n.astype(int)
    else:
        n = np.asarray(size)
        if n.shape != (3,) or np.any(n < 1) or np.any(n != np.round(n)):
            raise ValueError(f"size: expected three positive voxel counts (x, y, z), got {size!r}")
        n = n.astype(int)
    if origin is None:
        org = D @ ((lo + hi) / 2 - sp * (n - 1) / 2)
    else:
        org = np.asarray(origin, dtype=np.float64)
        if org.shape != (3,) or not np.all(np.isfinite(org)):
            raise ValueError(f"origin: expected 3 finite numbers (mm), got {origin!r}")
    return org, sp, D, (int(n[0]), int(n[1]), int(n[2]))


def _subvoxel_offsets(s: int, device: torch.device) -> torch.Tensor:
    """``(s^3, 3)`` centres of the ``s^3`` sub-voxels of a voxel, in index units about its centre."""
    o = (torch.arange(s, dtype=torch.float32, device=device) + 0.5) / s - 0.5
    return torch.stack(torch.meshgrid(o, o, o, indexing="ij"), -1).reshape(-1, 3)


def _coverage(body: Body, M: torch.Tensor, ijk_lo: Sequence[int], ijk_hi: Sequence[int], half_diag: float,
              offsets: torch.Tensor, max_points: int) -> torch.Tensor:
    """Covered fraction ``(nk, nj, ni)`` of the voxels ``ijk_lo <= (i, j, k) < ijk_hi``.

    ``M`` (4, 4) maps voxel indices to the body's local frame; ``offsets`` ``(s^3, 3)`` are the
    sub-voxel centres in index units.
    """
    dev, dt = M.device, M.dtype
    i = torch.arange(ijk_lo[0], ijk_hi[0], device=dev, dtype=dt)
    j = torch.arange(ijk_lo[1], ijk_hi[1], device=dev, dtype=dt)
    k = torch.arange(ijk_lo[2], ijk_hi[2], device=dev, dtype=dt)
    A, b = M[:3, :3], M[:3, 3]
    p = (k[:, None, None, None] * A[:, 2] + j[None, :, None, None] * A[:, 1]
         + i[None, None, :, None] * A[:, 0] + b)  # (nk, nj, ni, 3) local mm
    g = body.shape.implicit(p)
    frac = (g < -half_diag).to(dt)
    edge = g.abs() <= half_diag
    if bool(edge.any()):
        pe = p[edge]  # (nb, 3)
        sub = offsets @ A.T  # (s^3, 3) local offsets of the sub-voxel centres
        step = max(1, max_points // sub.shape[0])
        parts = [body.shape.contains(pe[a:a + step, None, :] + sub).sum(-1) for a in range(0, pe.shape[0], step)]
        frac[edge] = torch.cat(parts).to(dt) / sub.shape[0]
    return frac


@dataclass(frozen=True)
class VoxelGrid:
    """Where the voxels lie (:func:`phantom_grid`): ``size`` voxels (x, y, z), ``origin`` (world
    mm of voxel (0, 0, 0)), ``direction`` (3 x 3, columns = world directions of the index axes);
    a part left out is derived: the phantom's bounding box plus ``margin_mm``, centred."""

    size: Sequence[int] | None = None
    origin: Sequence[float] | None = None
    direction: np.ndarray | None = None
    margin_mm: float = 5.0


@dataclass(frozen=True)
class VoxelizeOptions:
    """Tuning knobs of :func:`voxelize`.

    Attributes:
        supersample: sub-samples per axis for boundary voxels (``s^3`` per voxel); raised to
            ``32 h / c`` (at most 16) for bodies whose smallest diameter of curvature ``c`` spans
            few voxels ``h`` (small balls).
        hu_range: clip range of the HU volume, ``None`` to keep all values.
        max_chunk_voxels: points evaluated at once (working-memory bound).
        threads: torch CPU threads while voxelizing (restored afterwards); ``None`` keeps the
            current setting. One is the default because the work is many small tensor operations
            (one per body and slab) whose thread fan-out costs more than it gains, and costs 10-30x
            when the cores are shared with other processes (measured on 2 shared cores).
        device: torch device for the computation and the returned volumes.
    """

    supersample: int = 4
    hu_range: tuple[float, float] | None = HU_RANGE_12BIT
    max_chunk_voxels: int = 1 << 22
    threads: int | None = 1
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        if isinstance(self.supersample, bool) or int(self.supersample) != self.supersample or self.supersample < 1:
            raise ValueError(f"supersample: expected a positive integer, got {self.supersample!r}")
        if self.hu_range is not None and not (len(self.hu_range) == 2 and self.hu_range[0] < self.hu_range[1]):
            raise ValueError(f"hu_range: expected (low, high) with low < high, got {self.hu_range!r}")
        if self.threads is not None and (int(self.threads) != self.threads or self.threads < 1):
            raise ValueError(f"threads: expected a positive integer or None, got {self.threads!r}")


_GRID_KEYS = ("size", "origin", "direction", "margin_mm")


def voxelize(
    phantom: Phantom,
    spacing: float | Sequence[float] = 0.5,
    *,
    energy_kev: float = 60.0,
    markers: MarkerMode = "include",
    grid: VoxelGrid | Volume | None = None,
    options: VoxelizeOptions | None = None,
    progress: bool = True,
    **legacy: Any,
) -> VoxelizedPhantom:
    """Voxelize a phantom into mu (1/mm), HU and label volumes.

    Args:
        phantom: the phantom (its world pose is used).
        spacing: voxel size in mm (one number or x, y, z); ignored with a reference volume.
        energy_kev: effective energy for ``mu`` and HU (10-200 keV).
        markers: ``"include"`` paints marker balls; ``"exclude"`` leaves them out (the bodies
            stay whole); ``"carve"`` paints them as air, so adding analytic spheres of the true
            ``mu`` (:meth:`Phantom.marker_arrays`) reproduces the full phantom.
        grid: a :class:`VoxelGrid`, or a volume (e.g. a CT) whose grid to voxelize onto
            (default: the phantom's box plus 5 mm).
        options: the tuning knobs and the torch device (:class:`VoxelizeOptions`).
        progress: show a tqdm bar over the evaluated voxels.
        legacy: the former keywords (``size``, ``origin``, ``direction``, ``margin_mm``,
            ``reference``, ``supersample``, ``hu_range``, ``max_chunk_voxels``, ``threads``,
            ``device``), accepted for one release with a ``DeprecationWarning``.

    Returns:
        :class:`VoxelizedPhantom`.

    Raises:
        ValueError: the grid cannot hold the phantom, or a bad argument.
    """
    grid, o = _legacy(grid, options, legacy)
    before = torch.get_num_threads()
    if o.threads is not None and torch.device(o.device).type == "cpu":
        torch.set_num_threads(int(o.threads))
    try:
        return _voxelize(phantom, spacing, energy_kev, markers, grid if grid is not None else VoxelGrid(), o, progress)
    finally:
        torch.set_num_threads(before)


def _legacy(grid: VoxelGrid | Volume | None, options: VoxelizeOptions | None, legacy: dict[str, Any]
            ) -> tuple[VoxelGrid | Volume | None, VoxelizeOptions]:
    """The grid and options the former keywords describe (each kind with a ``DeprecationWarning``):
    ``reference`` (a volume, which wins), the fields of :class:`VoxelGrid`, of :class:`VoxelizeOptions`."""
    # The options first: a keyword that is neither raises TypeError there, before any warning.
    o = legacy_options("voxelize", options, {k: v for k, v in legacy.items() if k not in (*_GRID_KEYS, "reference")},
                       VoxelizeOptions, stacklevel=4)
    grid_keys = {k: legacy[k] for k in _GRID_KEYS if k in legacy}
    if grid_keys:
        grid = legacy_options("voxelize", grid if isinstance(grid, VoxelGrid) else None, grid_keys, VoxelGrid,
                              stacklevel=4, parameter="grid")
    if "reference" in legacy:
        warnings.warn("voxelize(reference=) is deprecated: pass grid=<the reference volume>", DeprecationWarning,
                      stacklevel=3)
        if legacy["reference"] is not None:
            grid = legacy["reference"]
    return grid, o


# One thing to paint: (body, mu painted or None, label painted or None, is a marker).
_Item = tuple[Body, float | None, int | None, bool]


def _paint_items(phantom: Phantom, markers: MarkerMode, energy_kev: float) -> list[_Item]:
    """Every body, then every marker as ``markers`` says, in painting order."""
    air = get_material("air")
    items: list[_Item] = [(b, float(b.material.mu(energy_kev)), b.material.label, False) for b in phantom.bodies]
    for m in phantom.markers:
        paint: tuple[float | None, int | None] = {
            "include": (float(m.material.mu(energy_kev)), m.material.label), "exclude": (None, None),
            "carve": (float(air.mu(energy_kev)), air.label)}[markers]
        items.append((m.as_body(), *paint, True))
    return items


def _index_boxes(items: list[_Item], phantom: Phantom, mu: Volume, n: tuple[int, int, int], sp: np.ndarray
                 ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[torch.Tensor]]:
    """Each item's index-space box and its index -> local map (local = inv(pose_world_body) @ affine)."""
    nx, ny, nz = n
    boxes, maps = [], []
    for body, *_ in items:
        lo, hi = body.bounds(compose(mu.index_from_world, phantom.pose))
        if np.any(lo < -0.5 - 1e-6) or np.any(hi > np.array(n) - 0.5 + 1e-6):
            over = np.maximum(np.maximum(-0.5 - lo, hi - (np.array(n) - 0.5)), 0) * sp
            raise ValueError(
                f"grid {nx}x{ny}x{nz} at {sp.tolist()} mm cannot hold phantom {phantom.name!r}: "
                f"{body.name or body.shape.kind} extends {over.max():.2f} mm beyond it (x, y, z: "
                f"{np.round(over, 2).tolist()} mm); enlarge size or margin, or move origin"
            )
        boxes.append((np.maximum(np.ceil(lo - 0.5), 0).astype(int), np.minimum(np.floor(hi + 0.5), np.array(n) - 1).astype(int) + 1))
        M = compose(invert(compose(phantom.pose, body.pose)), mu.affine)
        maps.append(torch.as_tensor(M, dtype=torch.float32, device=mu.device))
    return boxes, maps


def _voxelize(phantom: Phantom, spacing: float | Sequence[float], energy_kev: float, markers: MarkerMode,
              grid: VoxelGrid | Volume, o: VoxelizeOptions, progress: bool) -> VoxelizedPhantom:
    """:func:`voxelize` after the thread setting."""
    if markers not in ("include", "exclude", "carve"):
        raise ValueError(f"markers: expected 'include', 'exclude' or 'carve', got {markers!r}")
    mu_water(energy_kev)  # validates the energy
    if isinstance(grid, Volume):
        org, sp, D, n = grid.origin, grid.spacing, grid.direction, grid.size
    else:
        org, sp, D, n = phantom_grid(phantom, spacing, grid.margin_mm, grid.direction, grid.size, grid.origin)
    nx, ny, nz = n
    if nx * ny * nz > 1 << 31:
        raise ValueError(f"grid of {nx}x{ny}x{nz} voxels is too large (over 2^31 voxels); use a coarser spacing")
    dev = torch.device(o.device)
    mu = Volume(torch.full((nz, ny, nx), float(get_material("air").mu(energy_kev)), dtype=torch.float32, device=dev),
                org, sp, D)
    items = _paint_items(phantom, markers, energy_kev)
    boxes, maps = _index_boxes(items, phantom, mu, (nx, ny, nz), sp)
    s = int(o.supersample)
    # Sub-samples per axis: at least 32 across the smallest curved feature (sphere diameter ...).
    h = float(sp.max())
    per_body = [min(max(s, 16), max(s, math.ceil(32 * h / body.shape.curvature_size() - 1e-9)))
                if math.isfinite(body.shape.curvature_size()) else s for body, *_ in items]
    offsets = {k: _subvoxel_offsets(k, dev) for k in set(per_body)}
    slab = max(1, int(o.max_chunk_voxels) // (nx * ny))
    # Work units: every body over its box, slab by slab; the bar counts evaluated voxels.
    work = [[(it, lo, hi, M, offsets[k], max(lo[2], k0), min(hi[2], k0 + slab))
             for it, (lo, hi), M, k in zip(items, boxes, maps, per_body) if max(lo[2], k0) < min(hi[2], k0 + slab)]
            for k0 in range(0, nz, slab)]
    labels, mfrac, hu = _paint(mu, work, slab, 0.5 * float(np.linalg.norm(sp)), energy_kev, o, f"voxelize {phantom.name}",
                               progress)
    return VoxelizedPhantom(
        mu=mu, hu=mu.with_data(hu), labels=mu.with_data(labels), marker_fraction=mu.with_data(mfrac),
        markers=phantom.marker_table(), energy_kev=float(energy_kev),
        hu_range=None if o.hu_range is None else (float(o.hu_range[0]), float(o.hu_range[1])),
        markers_mode=markers, supersample=s,
    )


def _paint(mu: Volume, work: list, slab: int, half_diag: float, energy_kev: float, o: VoxelizeOptions, what: str,
           progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paint the work units slab by slab into ``mu`` (in place): coverage-weighted mu, the
    labels of voxels at least half covered, the marker fraction; then each slab's HU."""
    data = mu.data
    labels = torch.zeros_like(data)
    mfrac = torch.zeros_like(data)
    hu = torch.empty_like(data)
    nz = data.shape[0]
    total = sum(int(np.prod(hi[:2] - lo[:2])) * (kh - kl) for units in work for _, lo, hi, _, _, kl, kh in units)
    with tqdm(total=total, desc=what, unit="vox", unit_scale=True, disable=not progress) as bar:
        for k0, units in zip(range(0, nz, slab), work):
            k1 = min(nz, k0 + slab)
            for (body, mu_b, label_b, is_marker), lo, hi, M, sub, kl, kh in units:
                f = _coverage(body, M, (lo[0], lo[1], kl), (hi[0], hi[1], kh), half_diag, sub, o.max_chunk_voxels)
                sl = (slice(kl, kh), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
                if mu_b is not None:
                    assert label_b is not None  # painted bodies have a label
                    data[sl] += f * (mu_b - data[sl])
                    labels[sl] = torch.where(f >= 0.5, float(label_b), labels[sl])
                if is_marker:
                    mfrac[sl] += f * (1.0 - mfrac[sl])
                bar.update(int(np.prod(hi[:2] - lo[:2])) * (kh - kl))
            hu[k0:k1] = mu_to_hu(data[k0:k1], energy_kev)
            if o.hu_range is not None:
                hu[k0:k1].clamp_(o.hu_range[0], o.hu_range[1])
    return labels, mfrac, hu


def _write_image(volume: Volume, path: Path, pixel: int) -> Path:
    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.Cast(volume.to_sitk(), pixel), str(tmp), useCompression=True)
    return path


def save_voxelized(vox: VoxelizedPhantom, out_dir: str | os.PathLike[str], fmt: str = "mha",
                   phantom: Phantom | None = None) -> dict[str, Path]:
    """Write the volumes and the ground truth into ``out_dir`` (each file atomically).

    Files (MHA by default: it stores the geometry exactly, NIfTI headers hold float32):
    ``mu.<fmt>`` (float32, 1/mm), ``hu.<fmt>`` (int16, rounded, clipped),
    ``labels.<fmt>`` (uint8), ``markers.csv`` and ``voxelize.json`` (energy, clipping, grid,
    material table). The MIP figure is the plot layer's
    (:func:`stereodrr.plot.phantoms.plot_voxelized`; ``stereodrr phantom`` writes it).

    Args:
        vox: from :func:`voxelize`.
        out_dir: folder (created).
        fmt: ``"nii.gz"``, ``"nii"``, ``"mha"`` or ``"nrrd"``.
        phantom: if given, its name and definition are stored in the JSON.

    Returns:
        ``{"mu", "hu", "labels", "markers", "meta"}`` -> path.
    """
    if fmt not in ("nii.gz", "nii", "mha", "nrrd"):
        raise ValueError(f"fmt: expected 'nii.gz', 'nii', 'mha' or 'nrrd', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if vox.hu_range is not None and (vox.hu_range[0] < -32768 or vox.hu_range[1] > 32767):
        raise ValueError(f"hu_range {vox.hu_range} does not fit int16 HU files; clip to within -32768..32767")
    hu_pixel = sitk.sitkInt16 if vox.hu_range is not None else sitk.sitkFloat32
    hu = vox.hu.with_data(torch.round(vox.hu.data)) if vox.hu_range is not None else vox.hu
    paths = {
        "mu": _write_image(vox.mu, out / f"mu.{fmt}", sitk.sitkFloat32),
        "hu": _write_image(hu, out / f"hu.{fmt}", hu_pixel),
        "labels": _write_image(vox.labels, out / f"labels.{fmt}", sitk.sitkUInt8),
    }
    with atomic_path(out / "markers.csv") as tmp:
        vox.markers.to_csv(tmp, index=False, float_format="%.6f")
    paths["markers"] = out / "markers.csv"
    name = phantom.name if phantom is not None else "phantom"
    meta = {
        "phantom": name, "energy_kev": vox.energy_kev, "hu_range": vox.hu_range, "markers_mode": vox.markers_mode,
        "supersample": vox.supersample, "size_xyz": list(vox.mu.size), "spacing_mm": vox.mu.spacing.tolist(),
        "origin_mm": vox.mu.origin.tolist(), "direction": vox.mu.direction.ravel().tolist(),
        "mu_water_per_mm": mu_water(vox.energy_kev),
        "materials": material_table(vox.energy_kev).to_dict(orient="records"),
        "files": {k: p.name for k, p in paths.items()},
    }
    if phantom is not None:
        from .io import phantom_to_dict

        meta["definition"] = phantom_to_dict(phantom)
    paths["meta"] = out / "voxelize.json"
    atomic_write_text(paths["meta"], json.dumps(meta, indent=1) + "\n")
    return paths

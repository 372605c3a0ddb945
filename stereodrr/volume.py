"""CT-like volumes with SimpleITK geometry, medical image I/O and HU <-> attenuation (the
built-in torso CT is :func:`stereodrr.phantoms.torso_phantom`).

A :class:`Volume` holds a float32 tensor in SimpleITK/numpy array order ``(Z, Y, X)`` and the
image geometry: ``origin`` (world mm of voxel index 0), ``spacing`` (mm, x/y/z order) and
``direction`` (3x3, columns = world directions of the index axes i, j, k). Index ``(i, j, k)``
(x, y, z order, voxel centres at integers) maps to world exactly as
``SimpleITK.Image.TransformContinuousIndexToPhysicalPoint``::

    world = origin + direction @ (spacing * (i, j, k))

The volume's box spans indices ``-0.5 .. n - 0.5`` on each axis (voxel edges).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, overload

import numpy as np
import SimpleITK as sitk
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from .fileio import atomic_path, captured_native_stderr, itk_reason
from .geometry.se3 import transform_points
from .physics.attenuation import mass_attenuation

__all__ = [
    "Volume",
    "load_volume",
    "save_volume",
    "mu_water",
    "hu_to_mu",
    "mu_to_hu",
]

def mu_water(energy_kev: float = 60.0) -> float:
    """Linear attenuation of liquid water in 1/mm at an effective energy: xraylib's NIST
    compound "Water, Liquid" (density 1.000 g/cm^3, :mod:`stereodrr.physics.attenuation`).

    60 keV gives 0.02059 /mm.
    """
    if np.ndim(energy_kev) != 0:
        raise ValueError(f"energy_kev: expected one energy in keV, got {energy_kev!r}")
    return float(mass_attenuation("Water, Liquid", float(energy_kev))[0]) * 1.0 / 10.0  # cm^2/g * g/cm^3 -> 1/mm


@overload
def hu_to_mu(hu: Volume, energy_kev: float = 60.0) -> Volume: ...
@overload
def hu_to_mu(hu: Tensor, energy_kev: float = 60.0) -> Tensor: ...
@overload
def hu_to_mu(hu: np.ndarray | float, energy_kev: float = 60.0) -> np.ndarray: ...
def hu_to_mu(hu: Volume | Tensor | np.ndarray | float, energy_kev: float = 60.0) -> Volume | Tensor | np.ndarray:
    """``mu = mu_water(E) (1 + HU/1000)``, clamped at 0 (nothing attenuates less than vacuum); a
    :class:`Volume` gives a volume with the same geometry."""
    if isinstance(hu, Volume):
        return hu.with_data(hu_to_mu(hu.data, energy_kev))
    mw = mu_water(energy_kev)
    if isinstance(hu, Tensor):
        return (mw * (1.0 + hu / 1000.0)).clamp_min(0.0)
    return np.asarray(np.maximum(mw * (1.0 + np.asarray(hu) / 1000.0), 0.0))


@overload
def mu_to_hu(mu: Volume, energy_kev: float = 60.0) -> Volume: ...
@overload
def mu_to_hu(mu: Tensor, energy_kev: float = 60.0) -> Tensor: ...
@overload
def mu_to_hu(mu: np.ndarray | float, energy_kev: float = 60.0) -> np.ndarray: ...
def mu_to_hu(mu: Volume | Tensor | np.ndarray | float, energy_kev: float = 60.0) -> Volume | Tensor | np.ndarray:
    """``HU = 1000 (mu / mu_water(E) - 1)``; a :class:`Volume` gives a volume with the same geometry."""
    if isinstance(mu, Volume):
        return mu.with_data(mu_to_hu(mu.data, energy_kev))
    mw = mu_water(energy_kev)
    if isinstance(mu, Tensor):
        return 1000.0 * (mu / mw - 1.0)
    return np.asarray(1000.0 * (np.asarray(mu) / mw - 1.0))  # a list too, as hu_to_mu takes one


def _vec3(name: str, value: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected 3 finite numbers, got {value}")
    return arr


@dataclass(eq=False)
class Volume:
    """A 3D image with SimpleITK geometry.

    Attributes:
        data: ``(Z, Y, X)`` float32 tensor (any device).
        origin: ``(3,)`` world mm of the centre of voxel (0, 0, 0).
        spacing: ``(3,)`` voxel size in mm along i, j, k (x, y, z order).
        direction: ``(3, 3)`` orthonormal; column c is the world direction of index axis c.
    """

    data: Tensor
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray

    def __post_init__(self) -> None:
        data = self.data if isinstance(self.data, Tensor) else torch.as_tensor(np.asarray(self.data))
        if data.ndim != 3 or min(data.shape) < 1:
            raise ValueError(f"volume data: expected a 3D array (Z, Y, X), got shape {tuple(data.shape)}")
        data = data.to(torch.float32)
        if not bool(torch.isfinite(data).all()):
            n_bad = int((~torch.isfinite(data)).sum())
            raise ValueError(f"volume data: {n_bad} voxel(s) are NaN or inf")
        self.data = data
        self.origin = _vec3("origin", self.origin)
        self.spacing = _vec3("spacing", self.spacing)
        if np.any(self.spacing <= 0):
            raise ValueError(f"spacing: expected positive voxel sizes (mm), got {self.spacing.tolist()}")
        d = np.asarray(self.direction, dtype=np.float64)
        if d.shape == (9,):
            d = d.reshape(3, 3)
        if d.shape != (3, 3) or not np.all(np.isfinite(d)) or np.abs(d.T @ d - np.eye(3)).max() > 1e-6:
            raise ValueError(f"direction: expected an orthonormal 3x3 matrix, got {np.asarray(self.direction).tolist()}")
        self.direction = d

    # ---- construction
    @classmethod
    def from_numpy(cls, array: np.ndarray, spacing: ArrayLike = (1.0, 1.0, 1.0), origin: ArrayLike = (0.0, 0.0, 0.0),
                   direction: ArrayLike | None = None) -> Volume:
        """From a ``(Z, Y, X)`` array (identity ``direction`` by default)."""
        return cls(torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32)), np.asarray(origin, dtype=np.float64),
                   np.asarray(spacing, dtype=np.float64), np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64))

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        """From a 3D scalar SimpleITK image (geometry copied exactly)."""
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"image: expected a 3D scalar image, got {image.GetDimension()}D with "
                f"{image.GetNumberOfComponentsPerPixel()} component(s)"
            )
        arr = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
        return cls(torch.from_numpy(np.ascontiguousarray(arr)), image.GetOrigin(), image.GetSpacing(), image.GetDirection())

    def to_sitk(self) -> sitk.Image:
        """SimpleITK float32 image with the same geometry."""
        img = sitk.GetImageFromArray(self.data.detach().cpu().numpy())
        img.SetOrigin(tuple(self.origin.tolist()))
        img.SetSpacing(tuple(self.spacing.tolist()))
        img.SetDirection(tuple(self.direction.ravel().tolist()))
        return img

    def with_data(self, data: Tensor) -> Volume:
        """Same geometry, other voxel values (``(Z, Y, X)``, same shape)."""
        if tuple(data.shape) != tuple(self.data.shape):
            raise ValueError(f"data: expected shape {tuple(self.data.shape)}, got {tuple(data.shape)}")
        return Volume(data, self.origin, self.spacing, self.direction)

    def to(self, device: torch.device | str) -> Volume:
        """Copy with the voxel tensor on ``device`` (geometry stays numpy float64)."""
        return Volume(self.data.to(device), self.origin, self.spacing, self.direction)

    @property
    def device(self) -> torch.device:
        return self.data.device

    # ---- geometry
    @property
    def size(self) -> tuple[int, int, int]:
        """Voxel counts along i, j, k (x, y, z order, as SimpleITK's GetSize)."""
        z, y, x = self.data.shape
        return (x, y, z)

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` index (i, j, k) -> world mm."""
        A = np.eye(4)
        A[:3, :3] = self.direction * self.spacing[None, :]
        A[:3, 3] = self.origin
        return A

    @property
    def index_from_world(self) -> np.ndarray:
        """``(4, 4)`` world mm -> continuous index (i, j, k): the inverse of :attr:`affine`, the
        map every renderer and resampler needs (the one place it is inverted)."""
        return np.linalg.inv(self.affine)

    def index_from_world_tensor(self, dtype: torch.dtype | None = None) -> Tensor:
        """:attr:`index_from_world` as a ``(4, 4)`` tensor on ``data``'s device, in ``dtype``
        (default ``data``'s; the renderer's argument; inverted in float64, then cast)."""
        return torch.as_tensor(self.index_from_world, dtype=dtype or self.data.dtype, device=self.data.device)

    @overload
    def index_to_world(self, ijk: Tensor) -> Tensor: ...
    @overload
    def index_to_world(self, ijk: np.ndarray) -> np.ndarray: ...
    def index_to_world(self, ijk: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """Continuous indices ``(N, 3)`` (i, j, k) -> world ``(N, 3)`` mm (numpy in, numpy out)."""
        return transform_points(self.affine, ijk)

    @overload
    def world_to_index(self, xyz: Tensor) -> Tensor: ...
    @overload
    def world_to_index(self, xyz: np.ndarray) -> np.ndarray: ...
    def world_to_index(self, xyz: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """World ``(N, 3)`` mm -> continuous indices ``(N, 3)`` (i, j, k)."""
        return transform_points(self.index_from_world, xyz)

    def corners(self) -> np.ndarray:
        """``(8, 3)`` world corners of the volume's box (voxel edges, indices -0.5 and n-0.5)."""
        n = np.asarray(self.size, dtype=np.float64)
        grid = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.float64)
        return self.index_to_world(grid * n - 0.5)

    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned world box ``(min (3,), max (3,))`` enclosing the volume."""
        c = self.corners()
        return c.min(0), c.max(0)

    @property
    def center(self) -> np.ndarray:
        """``(3,)`` world centre of the volume's box."""
        return self.index_to_world((np.asarray(self.size, dtype=np.float64)[None] - 1) / 2)[0]

    # ---- resampling
    def resample(self, spacing: Sequence[float] | float, interpolator: str = "linear") -> Volume:
        """Resample to a new voxel size over the same box (same direction), via SimpleITK.

        The new grid covers the old box with ``round(extent / spacing)`` voxels (at least one)
        and is centred on the old box, so the image does not shift.
        """
        new_sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (3,)).copy()
        if np.any(~np.isfinite(new_sp)) or np.any(new_sp <= 0):
            raise ValueError(f"spacing: expected positive voxel sizes (mm), got {spacing}")
        interp = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
        if interpolator not in interp:
            raise ValueError(f"interpolator: expected one of {sorted(interp)}, got {interpolator!r}")
        extent = np.asarray(self.size) * self.spacing
        new_size = np.maximum(np.round(extent / new_sp), 1).astype(int)
        # Keep the box centre: centre index (n-1)/2 maps to the same world point.
        new_origin = self.center - self.direction @ (new_sp * (new_size - 1) / 2)
        out = sitk.Resample(
            self.to_sitk(), [int(v) for v in new_size], sitk.Transform(), interp[interpolator],
            tuple(new_origin.tolist()), tuple(new_sp.tolist()), tuple(self.direction.ravel().tolist()),
            0.0, sitk.sitkFloat32,
        )
        return Volume.from_sitk(out).to(self.device)

    def downsample(self, factor: int | Sequence[int]) -> Volume:
        """Average blocks of ``factor`` voxels: one integer for every axis, or three ``(fi, fj, fk)``
        along the index axes i, j, k (x, y, z order) so thick slices need not be merged further.

        The box centre and extent are kept where the sizes divide (a partial last block averages
        the voxels it has).
        """
        f = np.broadcast_to(np.asarray(factor), (3,)) if np.ndim(factor) == 0 else np.asarray(factor)
        if f.shape != (3,) or not all(float(v).is_integer() and v >= 1 for v in f.tolist()):
            raise ValueError(f"factor: expected a positive integer or three (x, y, z order), got {factor}")
        f = f.astype(int)
        if np.all(f == 1):
            return self
        kernel = (int(f[2]), int(f[1]), int(f[0]))  # data is (Z, Y, X)
        pooled = torch.nn.functional.avg_pool3d(self.data[None, None], kernel, ceil_mode=True)[0, 0]
        # Index 0 of the pooled grid is the centre of the first block of `f` voxels.
        origin = self.index_to_world(((f - 1) / 2.0)[None])[0]
        return Volume(pooled, origin, self.spacing * f, self.direction)


# ---- file I/O
_EXTS = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr")


def load_volume(path: str | os.PathLike[str]) -> Volume:
    """Read NIfTI, MHA/MHD, NRRD or a DICOM series folder into a :class:`Volume`.

    A file is checked to be complete before it is read (SimpleITK fills the missing part of a
    truncated NIfTI with zeros without a word): a compressed stream must reach its end marker,
    and the voxel bytes present must match the header's size and pixel type. A float NIfTI's
    voxels are checked for NaN in the file itself (SimpleITK reads them as 0). A folder with
    several DICOM series is read as its series of the most slices, with a warning naming the
    others.

    A NIfTI is placed as ITK places it: by its sform when ``sform_code`` is 1 or there is no
    qform, else by its qform (scanner space; a sform of code 2-4 maps to another space). Where
    that sform scales the voxels other than the header's pixdim it is taken whole, as the NIfTI
    standard and nibabel read it (ITK takes pixdim), with a warning.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file cannot be read as an image, is truncated or corrupt (the message
            says how many bytes the header promises and how many are there), is not 3D scalar,
            or holds NaN voxels.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"volume {str(p)!r} does not exist")
    with captured_native_stderr() as native:
        try:
            if p.is_dir():
                image = _read_dicom_series(p)
            else:
                with _alone(p) as q:
                    info = sitk.ImageFileReader()
                    info.SetFileName(str(q))
                    info.ReadImageInformation()
                    try:
                        nifti = _check_complete(q, info)
                    except ValueError as exc:  # name the user's file, not the temporary link
                        raise ValueError(str(exc).replace(str(q), str(p))) from None
                    image = sitk.ReadImage(str(q))
                    if nifti is not None:
                        _sform_geometry(p, nifti, image)
                    if image.HasMetaDataKey("0008|0016"):  # SOP Class UID: every DICOM file has one
                        _one_slice_thickness(p, image, image.GetMetaData if image.HasMetaDataKey(_THICKNESS) else None)
        except RuntimeError as exc:
            raise ValueError(f"{p}: cannot read as a medical image ({itk_reason(str(exc), native())})") from None
    try:
        return Volume.from_sitk(image)
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None


def _read_dicom_series(folder: Path) -> sitk.Image:
    """The folder's DICOM series with the most slices (a scout or a second reconstruction
    beside the CT is passed over, with a warning naming it)."""
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise ValueError(f"{folder}: folder holds no DICOM series")
    files = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series}
    chosen = max(series, key=lambda uid: len(files[uid]))
    if len(series) > 1:
        others = ", ".join(f"{uid} ({len(files[uid])} files)" for uid in series if uid != chosen)
        warnings.warn(f"{folder}: {len(series)} DICOM series; reading {chosen} ({len(files[chosen])} files), "
                      f"not {others}", stacklevel=3)
    reader.SetFileNames(files[chosen])
    reader.MetaDataDictionaryArrayUpdateOn()  # each slice's position, for the spacing check
    image = reader.Execute()
    _check_even_slices(folder, reader, image)
    _one_slice_thickness(folder, image, (lambda key: reader.GetMetaData(0, key)) if reader.HasMetaDataKey(0, _THICKNESS)
                         else None)
    return image


_THICKNESS = "0018|0050"  # Slice Thickness


def _one_slice_thickness(path: Path, image: sitk.Image, metadata: Callable[[str], str] | None) -> None:
    """A DICOM volume of one slice has no slice spacing (GDCM gives it 1 mm): take the slice's own
    thickness as its z size, or refuse when the file does not say it."""
    if image.GetDimension() != 3 or image.GetSize()[2] != 1:
        return
    try:
        thickness = float(metadata(_THICKNESS)) if metadata is not None else math.nan
    except ValueError:
        thickness = math.nan
    if not (math.isfinite(thickness) and thickness > 0):
        raise ValueError(f"{path}: one DICOM slice without a slice thickness (0018,0050): its size along z is not "
                         "known; give the folder of the whole series")
    sx, sy, _ = image.GetSpacing()
    image.SetSpacing((sx, sy, thickness))


def _check_even_slices(folder: Path, reader: sitk.ImageSeriesReader, image: sitk.Image) -> None:
    """Refuse a series whose slices are not evenly spaced along their normal (a missing or
    duplicated slice): the volume's one z spacing would stretch or squeeze the anatomy."""
    n = image.GetSize()[2]
    tag = "0020|0032"  # Image Position (Patient)
    if n < 3 or not all(reader.HasMetaDataKey(i, tag) for i in range(n)):
        return
    normal = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    pos = np.array([[float(x) for x in reader.GetMetaData(i, tag).split("\\")] for i in range(n)]) @ normal
    gaps = np.diff(np.sort(pos))
    step = float(np.median(gaps))
    if step <= 0 or gaps.max() > 1.5 * step or gaps.min() < 0.5 * step:
        raise ValueError(f"{folder}: the DICOM slices are not evenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm "
                         f"apart, mostly {step:.3g}: a missing or repeated slice?); one spacing would stretch the "
                         "volume")


@contextlib.contextmanager
def _alone(path: Path) -> Iterator[Path]:
    """``path``, or for ``x.nii.gz`` beside an ``x.nii`` a link to it alone in a temporary folder:
    the NIfTI library reads the uncompressed sibling's voxels under the compressed file's header
    (nifti_clib issue 129)."""
    name = path.name.lower()
    if not (name.endswith(".nii.gz") and path.with_name(path.name[:-3]).exists()):
        yield path
        return
    with tempfile.TemporaryDirectory() as tmp:
        alone = Path(tmp) / "volume.nii.gz"
        try:
            alone.symlink_to(path.resolve())
        except OSError:  # no symlinks here (some Windows setups): a copy
            import shutil

            shutil.copyfile(path, alone)
        yield alone


_GZIP_MAGIC = b"\x1f\x8b"


class _NonFiniteCount:
    """Counts NaN/inf among the ``length`` bytes at ``offset`` of a byte stream fed block by
    block (a float NIfTI's voxels: SimpleITK's NIfTI reader turns NaN into 0 without a word)."""

    def __init__(self, offset: int, length: int, dtype: np.dtype):
        self.offset, self.end, self.dtype = offset, offset + length, dtype
        self.carry, self.count = b"", 0

    def __call__(self, position: int, block: bytes) -> None:
        lo, hi = max(self.offset - position, 0), min(self.end - position, len(block))
        if hi <= lo:
            return
        data = self.carry + block[lo:hi]
        usable = len(data) - len(data) % self.dtype.itemsize
        self.count += int((~np.isfinite(np.frombuffer(data[:usable], self.dtype))).sum())
        self.carry = data[usable:]


def _stream_size(path: Path, what: str, start: int = 0, zlib_header: bool = False,
                 scan: Callable[[int, bytes], None] | None = None) -> int:
    """Bytes a compressed stream inflates to; raises ValueError when it ends early or is corrupt.
    ``scan(position, block)`` sees every inflated block."""
    d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else 16 + zlib.MAX_WBITS)
    total = 0

    def inflate(data: bytes) -> int:
        out = d.decompress(data)
        if scan is not None:
            scan(total, out)
        return len(out)

    with open(path, "rb") as f:
        f.seek(start)
        try:
            while block := f.read(1 << 22):
                total += inflate(block)
                while d.eof and d.unused_data:  # concatenated gzip members
                    rest = d.unused_data
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    total += inflate(rest)
        except zlib.error as exc:
            raise ValueError(f"{path}: corrupt compressed data ({exc})") from None
    if not d.eof:
        raise ValueError(f"{path}: truncated: the compressed stream ends early; {what}, it inflates to {total}")
    return total


def _check_complete(path: Path, info: sitk.ImageFileReader) -> _NiftiHeader | None:
    """Compare the voxel bytes a file holds with what its header promises (NIfTI, MetaImage);
    a NIfTI file's header as read (None for other formats)."""
    nvox = int(np.prod(info.GetSize())) * int(info.GetNumberOfComponents())
    sample = sitk.Image([1] * info.GetDimension(), info.GetPixelID(), int(info.GetNumberOfComponents()))
    need = nvox * int(sample.GetSizeOfPixelComponent())
    shape = " x ".join(map(str, info.GetSize()))
    name = path.name.lower()
    what = f"the header promises {shape} voxels of {sitk.GetPixelIDValueAsString(info.GetPixelID())} ({need} bytes)"
    if name.endswith((".nii", ".nii.gz")):
        header = _NiftiHeader.read(path)
        _check_nifti(path, header, shape, need, what)
        return header
    if name.endswith((".mha", ".mhd")):
        _check_metaimage(path, need, what)
    return None


@dataclass(frozen=True)
class _NiftiHeader:
    """The fields of a NIfTI-1 or NIfTI-2 header that ITK's reading is checked against."""

    order: str  # byte order, "<" or ">"
    dim: tuple[int, ...]
    datatype: int
    bitpix: int
    offset: int  # vox_offset: where the voxels start
    gz: bool  # gzip-compressed (.nii.gz)
    qform_code: int
    sform_code: int
    srow: np.ndarray  # (3, 4) voxel index -> RAS mm

    @classmethod
    def read(cls, path: Path) -> _NiftiHeader:
        with open(path, "rb") as f:
            gz = f.read(2) == _GZIP_MAGIC
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as f:
            head = f.read(544)
        order = "<" if int.from_bytes(head[:4], "little") in (348, 540) else ">"
        u = lambda fmt, start: struct.unpack_from(order + fmt, head, start)  # noqa: E731
        if u("i", 0)[0] == 348:  # NIfTI-1: 32-bit fields
            return cls(order, u("8h", 40), u("h", 70)[0], u("h", 72)[0], int(u("f", 108)[0]), gz,
                       u("h", 252)[0], u("h", 254)[0], np.array(u("12f", 280), dtype=np.float64).reshape(3, 4))
        return cls(order, u("8q", 16), u("h", 12)[0], u("h", 14)[0], int(u("q", 168)[0]), gz,
                   u("i", 344)[0], u("i", 348)[0], np.array(u("12d", 400)).reshape(3, 4))


def _check_nifti(path: Path, h: _NiftiHeader, shape: str, need: int, what: str) -> None:
    """A NIfTI file holds the bytes its own header ``h`` promises, and a float one no NaN or inf."""
    order, dim, datatype, bitpix, offset, gz = h.order, h.dim, h.datatype, h.bitpix, h.offset, h.gz
    # The stored bytes follow the header's own dim and bitpix: with scl_slope/scl_inter
    # (int16 CTs stored with an intercept of -1024) ITK reports the scaled float type instead.
    if 1 <= dim[0] <= 7 and bitpix > 0:
        need = int(np.prod([max(int(d), 1) for d in dim[1:dim[0] + 1]])) * bitpix // 8
        what = f"the header promises {shape} voxels of {bitpix} bits ({need} bytes)"
    # NIfTI datatypes 16 and 64: float32, float64 (the only ones that can hold NaN).
    floats = {16: "f4", 64: "f8"}.get(int(datatype))
    scan = _NonFiniteCount(offset, need, np.dtype(order + floats)) if floats else None
    if gz:
        have = _stream_size(path, what, scan=scan) - offset
    else:
        have = path.stat().st_size - offset
        if scan is not None and have >= need:
            with open(path, "rb") as f:  # the same block scan as the compressed stream's
                f.seek(offset)
                position = offset
                while position < offset + need and (block := f.read(1 << 22)):
                    scan(position, block)
                    position += len(block)
    if have < need:
        raise ValueError(f"{path}: truncated: {what}, the file holds {max(have, 0)}")
    if scan is not None and scan.count:
        raise ValueError(f"{path}: {scan.count} voxel(s) are NaN or inf (expected finite values)")


def _sform_geometry(path: Path, h: _NiftiHeader, image: sitk.Image) -> None:
    """Place a NIfTI volume by its sform where ITK did not (in place).

    ITK places a NIfTI by its sform when ``sform_code`` is 1 (scanner) or the file has no qform
    (``qform_code`` 0), else by its qform (a sform of codes 2-4 maps to another space: aligned,
    Talairach, MNI). Where it takes the sform it takes the voxel sizes from ``pixdim`` and only
    the sform's directions ("unexpected scales in sform"), so a header whose sform scales differ
    from its pixdim (nibabel writes one when the zooms are left at 1) would place voxels
    millimetres off. Such a file is read by its sform (``h``, the file's header), with a warning;
    a file ITK places by its qform keeps that placement.
    """
    itk_took_sform = h.sform_code == 1 or (h.sform_code > 0 and h.qform_code == 0)
    if not itk_took_sform or image.GetDimension() != 3:
        return
    lps = np.diag([-1.0, -1.0, 1.0]) @ h.srow  # RAS -> ITK's LPS
    sizes = np.linalg.norm(lps[:, :3], axis=0)
    spacing = np.array(image.GetSpacing())
    if not np.all(sizes > 0) or np.abs(sizes / spacing - 1).max() <= 1e-4:
        return
    warnings.warn(f"{path}: the header's sform gives voxels of {_mm(sizes)} mm, its pixdim {_mm(spacing)} mm; "
                  "placed by the sform (sform_code > 0: the NIfTI standard's mapping)", stacklevel=3)
    image.SetSpacing(sizes.tolist())
    image.SetDirection((lps[:, :3] / sizes).ravel().tolist())  # orthonormal: ITK refuses a sheared sform
    image.SetOrigin(lps[:, 3].tolist())


def _mm(values: np.ndarray) -> str:
    return " x ".join(f"{v:.6g}" for v in values)


def _check_metaimage(path: Path, need: int, what: str) -> None:
    """A MetaImage file (or its ElementDataFile) holds the bytes its header promises."""
    with open(path, "rb") as f:
        header, line = {}, b""
        while line := f.readline():
            if b"=" not in line:
                break
            key, _, value = line.decode("latin-1").partition("=")
            header[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
        data_start = f.tell()
    source = header.get("ElementDataFile", "")
    if source.upper() == "LOCAL":
        data, start = path, data_start
    elif source and " " not in source and "%" not in source and source.upper() != "LIST":
        data, start = path.parent / source, 0
        if not data.is_file():
            raise ValueError(f"{path}: its data file {str(data)!r} (ElementDataFile) does not exist")
    else:
        return  # file lists: left to ITK
    if header.get("CompressedData", "False").lower() == "true":
        have = _stream_size(data, what, start, zlib_header=True)
    else:
        have = data.stat().st_size - start
    if have < need:
        raise ValueError(f"{path}: truncated: {what}, the file holds {have}")


def save_volume(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write a volume (NIfTI ``.nii[.gz]``, ``.mha``, ``.nrrd``) atomically via SimpleITK."""
    p = Path(path)
    if not p.name.lower().endswith(_EXTS):
        raise ValueError(f"{p}: expected one of the extensions {_EXTS}")
    if p.name.lower().endswith((".mhd", ".nhdr")):
        raise ValueError(f"{p}: header+raw pairs cannot be written atomically; use .mha or .nrrd")
    with atomic_path(p) as tmp:
        sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=True)
    return p

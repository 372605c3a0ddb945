"""Frames of real trials: reading image sequences, their polarity, the image intensifier's round
field of view (:func:`stereodrr.distortion.field_of_view`), and the line-integral image
registration compares DRRs with.

Frames are 8- or 16-bit grey images (TIFF, PNG, JPEG; one image also BMP, DICOM, MHA, NRRD), ``(H, W)`` with row = v, column = u
(OpenCV pixel centres at integers). *Polarity*: X-ray frames show air bright (raw exposure,
XMALab's and Autoscoper's frames); some exports invert them. An image intensifier images a round
field: outside it the frame is black (or white when inverted), and nothing there is data.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np

from ..distortion.fov import FieldOfView, falloff_margin, field_of_view
from ..fileio import captured_native_stderr, check_input_file, itk_reason, open_tiff
from ..interop.autoscoper import read_tiff_stack
from ..registration.inputs import to_line_integral

__all__ = ["Polarity", "SEQUENCE_SUFFIXES", "FieldOfView", "read_frame", "read_image", "read_frame_size", "read_page_sizes", "sequence_files",
           "field_of_view", "frame_polarity", "bright_air_frame", "line_integral_frame"]

Polarity = Literal["auto", "bright_air", "dark_air"]
"""A frame's polarity: ``bright_air`` (raw), ``dark_air`` (an inverted export) or ``auto`` (found from the frame)."""
SEQUENCE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
"""File suffixes read as frames of an image sequence."""


def read_frame(path: str | os.PathLike[str]) -> np.ndarray:
    """One grey frame ``(H, W)`` as stored (uint8, uint16 or float): a TIFF's first page, a PNG,
    JPEG or BMP (a colour file whose channels are equal is grey), or one 2D image SimpleITK reads
    (DICOM, MHA, NRRD, NIfTI).

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, or not one grey channel (a colour
            image whose channels differ).
    """
    return _read_grey(path, "frame", first_page=True)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """One X-ray image ``(H, W)`` as stored, read as :func:`read_frame` reads a frame but refusing
    a file of several images (a TIFF stack or a multi-frame DICOM): which one is meant is not known.

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, several images, or not one grey channel.
    """
    return _read_grey(path, "image", first_page=False)


def _read_grey(path: str | os.PathLike[str], what: str, first_page: bool) -> np.ndarray:
    p = check_input_file(path, what)
    suffix = p.suffix.lower()
    if suffix in (".tif", ".tiff"):
        stack = read_tiff_stack(p)
    elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
        image = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise ValueError(f"{p}: cannot read as an image (expected TIFF, PNG, JPEG or BMP)")
        stack = _grey(p, image)[None]
    else:
        stack = _read_itk(p)
    if len(stack) > 1 and not first_page:
        raise ValueError(f"{p}: holds {len(stack)} images, expected one {what}")
    return stack[0]


def _grey(p: Path, image: np.ndarray) -> np.ndarray:
    """``image`` as one grey channel: a colour image's channels (alpha aside) must be equal."""
    if image.ndim == 3:
        channels = image[..., :3]
        if not all(np.array_equal(channels[..., 0], channels[..., c]) for c in range(1, channels.shape[2])):
            raise ValueError(f"{p}: expected a grey image, got {image.shape[2]} differing colour channels")
        image = channels[..., 0]
    if image.ndim != 2:
        raise ValueError(f"{p}: expected a 2D grey image, got shape {image.shape}")
    return image


def _read_itk(p: Path) -> np.ndarray:
    """A DICOM, MHA, NRRD or NIfTI image as ``(frames, H, W)`` (a 2D image: one frame)."""
    import SimpleITK as sitk

    with captured_native_stderr() as native:
        try:
            image = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            raise ValueError(f"{p}: cannot read as an image ({itk_reason(str(exc), native())}); expected TIFF, "
                             "PNG, JPEG, BMP, DICOM, MHA, NRRD or NIfTI") from None
    vector = image.GetNumberOfComponentsPerPixel() > 1
    arr = sitk.GetArrayFromImage(image)
    if image.GetDimension() == 2 or (image.GetDimension() == 3 and image.GetSize()[2] == 1):
        return _grey(p, arr.reshape(arr.shape[-3 if vector else -2:]))[None]
    if image.GetDimension() == 3 and not vector:
        return arr
    raise ValueError(f"{p}: expected a 2D grey image, got a {image.GetDimension()}D image of "
                     f"{image.GetNumberOfComponentsPerPixel()} component(s)")


def read_frame_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` of a frame (a TIFF's first page), from its header where the format allows."""
    return read_page_sizes(path, first=True)[0]


def read_page_sizes(path: str | os.PathLike[str], first: bool = False) -> list[tuple[int, int]]:
    """``(width, height)`` of every page of a TIFF (of its first alone with ``first``) from the
    headers, or of the one image of a PNG or JPEG.

    Raises:
        FileNotFoundError: no such file. ValueError: unreadable, or a page that is not one grey channel.
    """
    p = check_input_file(path, "frame")
    if p.suffix.lower() not in (".tif", ".tiff"):
        h, w = read_frame(p).shape
        return [(w, h)]
    import tifffile

    try:
        with open_tiff(p) as tif:
            shapes = [tif.pages[0].shape] if first else [page.shape for page in tif.pages]
    except (tifffile.TiffFileError, OSError, IndexError) as exc:
        raise ValueError(f"{p}: cannot read as a TIFF ({exc})") from None
    if not shapes:
        raise ValueError(f"{p}: the TIFF holds no page")
    for shape in shapes:
        if len(shape) != 2:
            raise ValueError(f"{p}: expected a 2D grey frame, got page shape {shape}")
    return [(int(shape[1]), int(shape[0])) for shape in shapes]


def sequence_files(folder: str | os.PathLike[str], suffixes: Sequence[str] = SEQUENCE_SUFFIXES) -> list[Path]:
    """The frames of an image-sequence folder: files with one of ``suffixes`` (any case), not
    hidden, sorted by name (XMALab and Autoscoper number frames with zero-padded counters).

    Raises:
        FileNotFoundError: no such folder. ValueError: not a folder, or no frame in it.
    """
    d = Path(folder)
    if not d.exists():
        raise FileNotFoundError(f"frame folder {str(d)!r} does not exist")
    if not d.is_dir():
        raise ValueError(f"frame folder {str(d)!r} is not a folder")
    files = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith(".")
                   and f.suffix.lower() in suffixes)
    if not files:
        raise ValueError(f"frame folder {str(d)!r} holds no frame ({', '.join(suffixes)})")
    return files


def frame_polarity(image: np.ndarray, field: FieldOfView | None = None) -> Literal["bright_air", "dark_air"]:
    """``"dark_air"`` when the outside of a round field is brighter than its inside (an inverted
    export), else ``"bright_air"`` (what an X-ray frame shows: air bright)."""
    a = np.asarray(image, dtype=np.float32)
    fov = field_of_view(a) if field is None else field
    if not fov.round:
        return "bright_air"
    inside = fov.mask(a.shape)
    outside = ~FieldOfView(fov.center, fov.radius, -2.0).mask(a.shape)
    if not outside.any():
        return "bright_air"
    return "dark_air" if np.median(a[outside]) > np.median(a[inside]) else "bright_air"


def _white_level(a: np.ndarray) -> float:
    """The level an inverted display was inverted about: for integers, the full scale of the
    smallest bit depth that holds the frame (a 12-bit frame in 16-bit words: 4095, not 65535);
    for floats, the frame's maximum."""
    if not np.issubdtype(a.dtype, np.integer):
        return float(a.max())
    bits = max(1, int(a.max()).bit_length())
    return float(min(2**bits - 1, np.iinfo(a.dtype).max))


def bright_air_frame(image: np.ndarray, field: FieldOfView | None = None, polarity: Polarity = "auto") -> np.ndarray:
    """A frame with air bright, as detectors that take ``-log`` of the frame expect: a dark-air
    (inverted) export turned back about its white level (:func:`_white_level`), in the frame's own
    type; a bright-air frame as it is. ``polarity="auto"``: :func:`frame_polarity` of the frame."""
    a = np.asarray(image)
    pol = frame_polarity(a, field) if polarity == "auto" else polarity
    if pol == "bright_air":
        return a
    white = _white_level(a)
    # white >= every pixel, so the difference fits the frame's own (unsigned) type.
    return (white - a.astype(np.float64)).astype(a.dtype)


def line_integral_frame(image: np.ndarray, field: FieldOfView | None = None, polarity: Polarity = "auto",
                        name: str = "frame") -> tuple[np.ndarray, np.ndarray]:
    """A frame as the registration compares DRRs with: ``-log(I / I0)`` inside the field (air
    bright first; :func:`stereodrr.registration.inputs.to_line_integral` with its air estimate), 0
    outside, and the field's mask. Without ``field``, the frame's own, less the band where the
    brightness falls off next to its edge (:func:`~stereodrr.distortion.falloff_margin`).

    Returns:
        ``(line integral (H, W) float32, mask (H, W) bool)``.
    """
    a = np.asarray(image)
    if field is None:
        fov = field_of_view(a)
        fov = replace(fov, margin=falloff_margin(a, fov))
    else:
        fov = field
    pol = frame_polarity(a, fov) if polarity == "auto" else polarity
    if pol == "dark_air":
        a = _white_level(a) - a.astype(np.float64)
    mask = fov.mask(a.shape)
    inside = np.where(mask, a, 0)
    line, _ = to_line_integral(np.asarray(inside, dtype=np.float64), "intensity", name)
    return np.where(mask, line, 0.0).astype(np.float32), mask

"""A trial: calibrated cameras, synchronised frames per camera, and the bones' CT volumes.

:func:`load_trial` reads an Autoscoper trial file (``.cfg``) as Autoscoper does
(:mod:`stereodrr.interop.autoscoper`): cameras from MayaCam files named ``cam1``, ``cam2``, ...
(XMALab's numbering), frame ``i`` the i-th TIFF of every camera folder, volumes placed in
Autoscoper's object frame (so a volume's pose is Autoscoper's CT -> world matrix). Everything is
checked before any work: the files exist, every camera has as many frames as the others, every
frame has its camera's image size.

Frames recorded through an image intensifier and not yet corrected (XMALab corrects them with a
grid image per camera) are corrected here when the trial is given a camera's distortion map
(:func:`stereodrr.distortion.fit_distortion`): every image the trial hands out, and the field
fitted to them, is then the corrected frame.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import numpy as np

from ..calib.dlt import rig_isocenter
from ..distortion import DistortionMap, falloff_margin, load_distortion
from ..geometry import Camera, StereoRig
from ..interop.autoscoper import AutoscoperTrialFile, frame_files, load_autoscoper_volume, read_trial_file
from ..interop.mayacam import load_mayacam
from ..volume import Volume
from .frames import (
    FieldOfView,
    Polarity,
    bright_air_frame,
    field_of_view,
    line_integral_frame,
    read_frame,
    read_frame_size,
    sequence_files,
)

__all__ = ["TrialVolume", "Trial", "load_trial"]


@dataclass
class TrialVolume:
    """A bone's CT: its name (the file's stem), file and the volume in the trial's frame."""

    name: str
    path: Path
    volume: Volume


@dataclass
class Trial:
    """Cameras, frames and volumes of one trial.

    Attributes:
        rig: the calibrated cameras (``cam1``, ``cam2``, ...).
        frames: per camera, the frame files; frame ``i`` is the i-th file of every camera.
        volumes: the bones' CT volumes.
        polarity: how the frames show air (``"auto"``: found per camera from its first frame).
        source: the trial file read, if any.
        distortion: per camera, the intensifier's distortion map its frames are corrected with
            (cameras without one: frames used as recorded, e.g. XMALab's undistorted exports).
    """

    rig: StereoRig
    frames: dict[str, list[Path]]
    volumes: list[TrialVolume] = field(default_factory=list)
    polarity: Polarity = "auto"
    source: Path | None = None
    distortion: dict[str, DistortionMap] = field(default_factory=dict)
    _fields: dict[str, FieldOfView] = field(default_factory=dict, repr=False)
    _usable: dict[str, FieldOfView] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if set(self.frames) != set(self.rig.names):
            raise ValueError(f"trial: frames given for cameras {sorted(self.frames)}, the rig has {self.rig.names}")
        counts = {name: len(files) for name, files in self.frames.items()}
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise ValueError(f"trial: every camera needs the same number of frames (>= 1), got {counts}")
        _warn_unmatched_numbers(self.frames)
        for name, m in self.distortion.items():
            if name not in self.rig.names:
                raise ValueError(f"trial: a distortion map for camera {name!r}, the rig has {self.rig.names}")
            cam = self.rig[name]
            if (m.width, m.height) != (cam.width, cam.height):
                raise ValueError(f"trial: the distortion map of {name!r} is for {m.width}x{m.height} images, the "
                                 f"camera is calibrated for {cam.width}x{cam.height}")
        for name, files in self.frames.items():
            cam = self.rig[name]
            for f in files:
                w, h = read_frame_size(f)
                if (w, h) != (cam.width, cam.height):
                    raise ValueError(f"{f}: frame is {w}x{h} pixels, camera {name!r} is calibrated for "
                                     f"{cam.width}x{cam.height}")

    @property
    def n_frames(self) -> int:
        return len(next(iter(self.frames.values())))

    def volume(self, index: int) -> TrialVolume:
        """The ``index``-th volume (0-based, in the trial file's order)."""
        if not 0 <= index < len(self.volumes):
            raise ValueError(f"volume: expected an index 0..{len(self.volumes) - 1}, got {index}")
        return self.volumes[index]

    def image(self, camera: str, frame: int) -> np.ndarray:
        """Frame ``frame`` of ``camera`` as read, or corrected through the camera's distortion map
        (area-preserving, rounded back to the frame's integer type)."""
        self._check_frame(frame)
        raw = read_frame(self.frames[camera][frame])
        m = self.distortion.get(camera)
        return raw if m is None else m.correct_frame(raw)

    def bright_air_image(self, camera: str, frame: int) -> np.ndarray:
        """:meth:`image` with air bright (:func:`~stereodrr.trial.frames.bright_air_frame`, the
        trial's ``polarity``; ``auto``: found from the frame and the camera's field): an inverted
        export shows beads bright, and a detector that takes ``-log`` of the frame would find none."""
        return bright_air_frame(self.image(camera, frame), self.field(camera), self.polarity)

    def images(self, frame: int) -> dict[str, np.ndarray]:
        """Frame ``frame`` of every camera (:meth:`image`)."""
        return {name: self.image(name, frame) for name in self.frames}

    def field(self, camera: str) -> FieldOfView:
        """The camera's intensifier field, fitted to up to five frames spread through the trial
        (the intensifier does not move within a trial; anatomy at the edge differs per frame)."""
        self._fit_field(camera)
        return self._fields[camera]

    def usable_field(self, camera: str) -> FieldOfView:
        """:meth:`field` with its margin widened past the band where the intensifier's brightness
        falls off next to the edge (:func:`~stereodrr.distortion.falloff_margin`): the pixels
        whose ``-log`` a DRR can explain, which :meth:`line_integrals` masks."""
        self._fit_field(camera)
        return self._usable[camera]

    def _fit_field(self, camera: str) -> None:
        """The camera's field and its fall-off band, measured once on up to five frames spread
        through the trial (read once for both)."""
        if camera in self._usable:
            return
        picks = sorted({round(i * (self.n_frames - 1) / 4) for i in range(5)})
        frames = [self.image(camera, i) for i in picks]
        fov = self._fields[camera] = field_of_view(frames)
        self._usable[camera] = replace(fov, margin=falloff_margin(frames, fov))

    def line_integrals(self, frame: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Frame ``frame`` of every camera as ``-log(I / I0)`` (0 outside the usable field) and the
        usable fields' masks (:meth:`usable_field`, :func:`~stereodrr.trial.frames.line_integral_frame`)."""
        images, masks = {}, {}
        for name, image in self.images(frame).items():
            images[name], masks[name] = line_integral_frame(image, self.usable_field(name), self.polarity,
                                                            str(self.frames[name][frame]))
        return images, masks

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.n_frames:
            raise ValueError(f"frame: expected an index 0..{self.n_frames - 1}, got {frame}")


def _frame_numbers(paths: list[Path]) -> list[int] | None:
    """Each file's frame number: the one run of digits in the names that changes from file to
    file (not a camera's number, which stays); ``None`` where no single such run exists."""
    runs = [re.findall(r"\d+", p.stem) for p in paths]
    if len(paths) < 2 or len({len(r) for r in runs}) != 1:
        return None
    varying = [k for k in range(len(runs[0])) if len({int(r[k]) for r in runs}) > 1]
    return [int(r[varying[0]]) for r in runs] if len(varying) == 1 else None


def _warn_unmatched_numbers(frames: Mapping[str, list[Path]]) -> None:
    """Warn (once) when frame ``i`` carries different numbers in different cameras: frames pair
    by position, as in Autoscoper, so a folder missing one frame shifts every later pair (the
    Autoscoper knee sample's third frames are 0260 and 0272)."""
    names = list(frames)
    numbers = [_frame_numbers(frames[n]) for n in names]
    if any(x is None for x in numbers):
        return
    for i, row in enumerate(zip(*numbers)):
        if len(set(row)) > 1:
            which = ", ".join(f"{n} {frames[n][i].name}" for n in names)
            warnings.warn(f"trial: frame {i} pairs files numbered differently ({which}); frames are paired "
                          "by their position in each camera folder, as in Autoscoper", stacklevel=2)
            return


def _rig(cameras: Mapping[str, Camera], src: str) -> StereoRig:
    names = list(cameras)
    for i, a in enumerate(names):
        for b in names[i + 1:]:  # one calibration listed twice: no baseline, nothing to triangulate
            if np.linalg.norm(cameras[a].center - cameras[b].center) < 1e-6 * (1.0 + np.linalg.norm(cameras[a].center)):
                raise ValueError(f"{src}: cameras {a} and {b} have their source at one place (the same "
                                 "mayaCam_csv calibration twice?); each camera needs its own")
    try:
        return StereoRig(dict(cameras), rig_isocenter(cameras))
    except ValueError as exc:
        raise ValueError(f"{src}: the cameras do not form a rig: {exc}") from None


def _camera_frames(folder: Path) -> list[Path]:
    """A camera folder's frames: its TIFFs as Autoscoper finds them (frame i is Autoscoper's
    frame i); a folder without those (PNG or JPEG frames, ``.TIF``), which Autoscoper does not
    read, as an image sequence sorted by name."""
    try:
        return frame_files(folder)
    except ValueError:
        return sequence_files(folder)


def load_trial(path: str | os.PathLike[str], polarity: Polarity = "auto",
               distortion: Mapping[str, DistortionMap | str | os.PathLike[str]] | None = None,
               volumes: bool = True) -> Trial:
    """Read an Autoscoper trial file into a :class:`Trial` (module docstring).

    Args:
        path: the trial file; polarity: how the frames show air (``"auto"``: found per camera).
        distortion: per camera (``cam1``, ...), a distortion map or its ``distortion.json`` to
            correct the frames with.
        volumes: ``False``: cameras and frames only (bead tracking), the volume lines neither
            required nor read.

    Raises:
        FileNotFoundError: the trial file, a MayaCam file, a camera folder or a volume is missing.
        ValueError: a malformed file, cameras with different frame counts, a frame of another size
            than its camera, a volume that is not a TIFF stack.
    """
    spec: AutoscoperTrialFile = read_trial_file(path, volumes)
    src = str(spec.source)
    cams = {f"cam{i + 1}": load_mayacam(p) for i, p in enumerate(spec.cameras)}
    frames = {f"cam{i + 1}": _camera_frames(d) for i, d in enumerate(spec.camera_dirs)}
    loaded = []
    for v in spec.volumes:
        if not v.path.exists():
            raise FileNotFoundError(f"{src}: VolumeFile {str(v.path)!r} does not exist")
        loaded.append(TrialVolume(v.path.stem, v.path, load_autoscoper_volume(v.path, v.voxel_size, v.flip)))
    maps = {name: m if isinstance(m, DistortionMap) else load_distortion(m) for name, m in (distortion or {}).items()}
    return Trial(_rig(cams, src), frames, loaded, polarity, spec.source, maps)

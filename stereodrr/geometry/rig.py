"""Stereo, biplanar and N-view X-ray rigs: named cameras around an isocenter.

Factory geometry: every source sits at distance SID from the isocenter and its principal ray
passes through the isocenter. Views are placed by rotating a central viewing direction about
the rig's ``up`` axis (through the isocenter). With the defaults (central direction +y, up +z in
LPS) the central view is an AP projection (source anterior, detector posterior) with the
patient's head at the top of the image; a convergent pair separates along the L-R axis.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from typing_extensions import TypedDict, Unpack

if TYPE_CHECKING:
    import pandas as pd

from .camera import Camera, stack_cameras
from .se3 import rotvec_to_matrix

__all__ = ["StereoRig", "Placement", "StereoAngleWarning", "RECOMMENDED_STEREO_ANGLE_DEG", "depth_inplane_ratio"]

RECOMMENDED_STEREO_ANGLE_DEG = (3.0, 7.0)
"""Stereo angles (degrees) a convergent pair should stay within; outside, a ``StereoAngleWarning``."""


class StereoAngleWarning(UserWarning):
    """The stereo angle lies outside the recommended 3-7 deg band (it still works)."""


def depth_inplane_ratio(stereo_angle_deg: float) -> float:
    """Depth / in-plane error ratio of a symmetric rig, ``1 / (sqrt(2) sin(theta/2))``.

    With independent image errors of ``sigma`` (scaled to the object) on every coordinate of
    both views, the triangulated in-plane error (2D magnitude, each axis averaged over the two
    views) has RMS ``sigma``, and the disparity error ``sqrt(2) sigma`` divided by the disparity
    change per unit depth, ``2 sin(theta/2)``, gives a depth RMS of ``sigma / (sqrt(2) sin(theta/2))``.
    A small-angle model: at 90 deg a simulation gives 0.83 rather than 1.
    """
    half = math.radians(stereo_angle_deg) / 2
    if not 0 < half < math.pi / 2:
        raise ValueError(f"stereo_angle_deg: expected 0 < angle < 180, got {stereo_angle_deg}")
    return 1.0 / (math.sqrt(2.0) * math.sin(half))


def _unit(name: str, v: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(a)
    if a.shape != (3,) or not np.isfinite(n) or n == 0:
        raise ValueError(f"{name}: expected a non-zero 3-vector, got {v}")
    return a / n



#: How far ``sdd`` may stray from ``K[0, 0] * du`` (the pitch and SDD a camera's ``fx`` implies)
#: before a rig warns: calibrated and file-loaded cameras agree to rounding.
SDD_TOLERANCE = 0.01


def _check_sdd(name: str, cam: Camera) -> None:
    """Warn when a view's ``sdd`` disagrees with its ``fx * du`` (a rig file edited by hand):
    images follow K, while the calibration verdict's SDD and magnification checks, the rig
    figure and the isocenter fallback use ``sdd``."""
    implied = cam.K[0, 0] * cam.pixel_spacing[0]
    if abs(implied / cam.sdd - 1.0) > SDD_TOLERANCE:
        warnings.warn(f"view {name!r}: sdd {cam.sdd:g} mm disagrees with K[0,0] x pixel pitch = {implied:g} mm "
                      "(images follow K; the calibration verdict and rig figures use sdd): fix one of them",
                      stacklevel=4)


class Placement(TypedDict, total=False):
    """Where a factory rig stands (keywords of :meth:`StereoRig.arc`, ``convergent``, ``biplanar``).

    Attributes:
        isocenter: ``(3,)`` world mm the principal rays go through (default the origin).
        central_direction: the central principal ray, source to detector (default ``(0, 1, 0)``:
            AP, source anterior).
        up: the axis the views turn about (its part across ``central_direction``), up in the
            images (default ``(0, 0, 1)``: superior).
        names: the views' names.
    """

    isocenter: Sequence[float] | np.ndarray
    central_direction: Sequence[float] | np.ndarray
    up: Sequence[float] | np.ndarray
    names: Sequence[str]

@dataclass(frozen=True, eq=False)
class StereoRig:
    """Named cameras (insertion order kept) sharing an isocenter (world mm).

    Raises:
        ValueError: when the rig is empty, a name is not a non-empty string, or the isocenter lies
            behind a camera's source.
    """

    cameras: Mapping[str, Camera]
    isocenter: np.ndarray

    def __post_init__(self) -> None:
        cams = dict(self.cameras)
        if not cams:
            raise ValueError("rig: expected at least one camera")
        iso = np.asarray(self.isocenter, dtype=np.float64)
        if iso.shape != (3,) or not np.all(np.isfinite(iso)):
            raise ValueError(f"isocenter: expected 3 finite numbers (mm), got {self.isocenter}")
        for name, cam in cams.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"rig: view names must be non-empty strings, got {name!r}")
            if not isinstance(cam, Camera):
                raise ValueError(f"view {name!r}: expected a Camera, got {type(cam).__name__}")
            _check_sdd(name, cam)
            depth = cam.project(iso[None])[1][0]
            if not depth > 0:
                raise ValueError(
                    f"view {name!r}: the isocenter {iso.tolist()} lies behind the source "
                    f"(depth {depth:.3f} mm); expected it in front of every camera"
                )
        iso.setflags(write=False)
        object.__setattr__(self, "cameras", cams)
        object.__setattr__(self, "isocenter", iso)

    # ---- container protocol
    @property
    def names(self) -> list[str]:
        return list(self.cameras)

    def __getitem__(self, name: str) -> Camera:
        try:
            return self.cameras[name]
        except KeyError:
            raise KeyError(f"rig has no view {name!r}; views: {self.names}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.cameras)

    def __len__(self) -> int:
        return len(self.cameras)

    def to_torch(self, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        """``K (V, 3, 3)``, ``R (V, 3, 3)``, ``t (V, 3)`` of the views in :attr:`names` order
        (:func:`~stereodrr.geometry.camera.stack_cameras`)."""
        return stack_cameras(list(self.cameras.values()), device, dtype)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StereoRig):
            return NotImplemented
        return (
            self.names == other.names
            and all(self.cameras[n] == other.cameras[n] for n in self.names)
            and np.array_equal(self.isocenter, other.isocenter)
        )

    # ---- two-view quantities
    def _pair(self, a: str | None, b: str | None) -> tuple[Camera, Camera]:
        if a is None and b is None:
            if len(self) < 2:
                raise ValueError("rig: a two-view quantity needs at least two views")
            a, b = self.names[:2]
        if a is None or b is None:
            raise ValueError("name both views of the pair, or neither")
        return self[a], self[b]

    def baseline(self, a: str | None = None, b: str | None = None) -> float:
        """Distance between the two sources in mm (default: the first two views)."""
        ca, cb = self._pair(a, b)
        return float(np.linalg.norm(ca.center - cb.center))

    def stereo_angle_deg(self, a: str | None = None, b: str | None = None) -> float:
        """Angle between the two principal rays in degrees (default: the first two views)."""
        ca, cb = self._pair(a, b)
        c = float(np.clip(ca.principal_ray @ cb.principal_ray, -1.0, 1.0))
        return math.degrees(math.acos(c))

    def depth_resolution(self, disparity_error_px: float = 0.1, depth_mm: float | None = None,
                         a: str | None = None, b: str | None = None) -> float:
        """Depth resolution ``dZ = Z^2 dd / (B f)`` in mm.

        ``Z`` is the source-to-point distance (default: the mean source-to-isocenter distance,
        i.e. SID), ``dd`` the disparity error in pixels, ``B`` the baseline in mm and ``f`` the
        mean focal length in pixels. The parallel-stereo estimate, accurate for small angles.
        """
        ca, cb = self._pair(a, b)
        if depth_mm is None:
            depth_mm = 0.5 * (np.linalg.norm(ca.center - self.isocenter) + np.linalg.norm(cb.center - self.isocenter))
        f = 0.25 * (ca.K[0, 0] + ca.K[1, 1] + cb.K[0, 0] + cb.K[1, 1])
        B = float(np.linalg.norm(ca.center - cb.center))
        if B == 0:
            raise ValueError("depth resolution: the two sources coincide (zero baseline)")
        return float(depth_mm**2 * disparity_error_px / (B * f))

    def summary(self, disparity_error_px: float = 0.1) -> pd.DataFrame:
        """One row per view: size, pitch, SDD, source position, distance to the isocenter."""
        import pandas as pd

        rows = []
        for name, cam in self.cameras.items():
            c = cam.center
            rows.append({
                "view": name,
                "size_px": f"{cam.width}x{cam.height}",
                "pixel_mm": cam.pixel_spacing[0],
                "sdd_mm": cam.sdd,
                "source_x_mm": c[0], "source_y_mm": c[1], "source_z_mm": c[2],
                "sid_mm": float(np.linalg.norm(c - self.isocenter)),
            })
        return pd.DataFrame(rows)

    # ---- factories
    @classmethod
    def arc(cls, n_views: int, arc_deg: float, sid: float, sdd: float, pixel_spacing: float | Sequence[float],
            width: int, height: int, **placement: Unpack[Placement]) -> StereoRig:
        """``n_views`` sources evenly spread over ``arc_deg`` about ``up`` through the isocenter.

        The arc is centred on ``central_direction`` (the direction of the central principal ray,
        source to detector). View ``i`` looks along the central direction rotated by
        ``-arc/2 + i * arc/(n-1)`` degrees about ``up`` (right-handed); the first view's source
        is on the image's -u side, as the left camera of an OpenCV stereo pair. ``placement``:
        :class:`Placement` keywords (default names ``view0, view1, ...``).
        """
        if int(n_views) != n_views or n_views < 1:
            raise ValueError(f"n_views: expected a positive integer, got {n_views}")
        if n_views > 1:
            _check_arc(n_views, arc_deg)
        names = placement.get("names")
        names = list(names) if names is not None else [f"view{i}" for i in range(n_views)]
        angles = [0.0] if n_views == 1 else list(np.linspace(-arc_deg / 2, arc_deg / 2, n_views))
        return cls._ring(angles, sid, sdd, (pixel_spacing, width, height), {**placement, "names": names})

    @classmethod
    def _ring(cls, angles_deg: Sequence[float], sid: float, sdd: float,
              panel: tuple[float | Sequence[float], int, int], placement: Placement) -> StereoRig:
        """Views looking at the isocenter along ``central_direction`` rotated by each angle about
        ``up``'s part across it (so the principal rays are the angles apart even where ``up`` is
        not perpendicular to ``central_direction``)."""
        names = list(placement["names"])
        if len(names) != len(angles_deg) or len(set(names)) != len(names):
            raise ValueError(f"names: expected {len(angles_deg)} distinct names, got {list(names)}")
        if not (sid > 0 and sdd > sid):
            raise ValueError(f"sid/sdd: expected 0 < SID < SDD (mm), got SID={sid}, SDD={sdd}")
        d0 = _unit("central_direction", placement.get("central_direction", (0.0, 1.0, 0.0)))
        upv = _unit("up", placement.get("up", (0.0, 0.0, 1.0)))
        if abs(d0 @ upv) > 1 - 1e-9:
            raise ValueError("up: must not be parallel to central_direction")
        axis = upv - (d0 @ upv) * d0  # upv itself, to the bit, when perpendicular
        axis = axis / np.linalg.norm(axis)
        iso = np.asarray(placement.get("isocenter", (0.0, 0.0, 0.0)), dtype=np.float64)
        cams = {}
        for name, phi in zip(names, angles_deg):
            d = rotvec_to_matrix(axis * math.radians(phi)) @ d0
            cams[name] = Camera.look_at(iso - sid * d, iso, sdd, panel[0], panel[1], panel[2], up=upv)
        return cls(cams, iso)

    @classmethod
    def convergent(cls, stereo_angle_deg: float, sid: float, sdd: float, pixel_spacing: float | Sequence[float],
                   width: int, height: int, **placement: Unpack[Placement]) -> StereoRig:
        """Symmetric convergent stereo pair: both principal rays through the isocenter, the
        angle between them ``stereo_angle_deg``, baseline ``2 SID sin(theta/2)``; ``placement``:
        :class:`Placement` keywords (default names ``left, right``).

        Warns with :class:`StereoAngleWarning` outside the recommended 3-7 deg band.
        """
        if not 0 < stereo_angle_deg < 180:
            raise ValueError(f"stereo_angle_deg: expected 0 < angle < 180, got {stereo_angle_deg}")
        lo, hi = RECOMMENDED_STEREO_ANGLE_DEG
        if not lo <= stereo_angle_deg <= hi:
            warnings.warn(
                f"stereo angle {stereo_angle_deg:g} deg is outside the recommended {lo:g}-{hi:g} deg band "
                "(smaller: poor depth resolution; larger: less image overlap); it works all the same",
                StereoAngleWarning,
                stacklevel=2,
            )
        pair: Placement = {"names": ("left", "right"), **placement}
        return cls.arc(2, stereo_angle_deg, sid, sdd, pixel_spacing, width, height, **pair)

    @classmethod
    def biplanar(cls, sid: float, sdd: float, pixel_spacing: float | Sequence[float], width: int, height: int,
                 **placement: Unpack[Placement]) -> StereoRig:
        """Biplanar rig: a frontal view along ``central_direction`` and a lateral view rotated
        90 deg about ``up`` (with the defaults: AP, and a lateral with the source on the
        patient's left (+x), beam towards the right); default names ``frontal, lateral``."""
        pair: Placement = {"names": ("frontal", "lateral"), **placement}
        return cls._ring((0.0, 90.0), sid, sdd, (pixel_spacing, width, height), pair)


def _check_arc(n_views: int, arc_deg: float) -> None:
    """Refuse an arc whose views coincide: views ``m`` apart are ``m arc / (n - 1)`` degrees apart,
    one place when that is a multiple of 360 (the arc includes both ends: 360 degrees put the
    last view on the first)."""
    if not math.isfinite(arc_deg):
        raise ValueError(f"arc_deg: expected a finite angle in degrees, got {arc_deg}")
    step = arc_deg / (n_views - 1)
    for m in range(1, n_views):
        turns = m * step / 360
        if abs(turns - round(turns)) < 1e-9:
            raise ValueError(f"arc_deg: views 0 and {m} of {n_views} coincide on an arc of {arc_deg:g} degrees "
                             f"(both ends are views: a full ring of {n_views} is {360 * (n_views - 1) / n_views:g})")

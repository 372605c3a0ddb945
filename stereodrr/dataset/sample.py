"""Per-item random parameters: item ``i`` depends only on ``(seed, i)``.

Each item draws from its own generator ``default_rng(SeedSequence(seed, spawn_key=(i,)))`` --
the generator ``SeedSequence(seed).spawn(n)[i]`` would give, without spawning the ``i - 1``
before it -- so items can be rendered in any order, on any worker, in any shard, and a resumed
run renders the same item again bit for bit.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from ..distortion import PRESETS, scaled_field
from ..geometry import StereoAngleWarning, StereoRig, euler_to_matrix, pose_matrix
from ..imaging import DetectorModel

__all__ = ["ItemSample", "item_rng", "sample_item", "item_rig", "item_pose", "item_detector"]

# Extrinsic rotations about the fixed LPS x, then y, then z axes (see geometry.se3 conventions).
POSE_EULER_SEQ = "xyz"


@dataclass(frozen=True)
class ItemSample:
    """Everything random about one item.

    Attributes:
        index: item number ``i``.
        seed: the dataset seed.
        rig_kind: ``convergent``, ``arc`` or ``biplanar``.
        n_views: number of views.
        stereo_angle_deg: the rig's stereo angle: between the two principal rays (convergent),
            the whole arc from the first view to the last (``arc``), 90 (biplanar).
        sid_mm, sdd_mm: source-isocenter and source-detector distances.
        pixel_spacing_mm: detector pitch (square pixels).
        width, height: detector size in pixels.
        rotation_deg: ``(3,)`` extrinsic x, y, z rotation of the subject about its centre.
        translation_mm: ``(3,)`` subject translation after the rotation.
        photons_per_pixel: unattenuated photons per pixel ``I0`` (the dose).
        electronic_sigma: read-out noise standard deviation in counts (photons times the gain).
        blur_px: detector blur sigma in pixels.
        noise_seed: seed of the detector noise of view 0; view ``v`` uses ``noise_seed + v``.
        focal_spot_blur_px: focal-spot blur sigma in pixels (drawn after the noise seed, so
            configs without it keep their items).
    """

    index: int
    seed: int
    rig_kind: str
    n_views: int
    stereo_angle_deg: float
    sid_mm: float
    sdd_mm: float
    pixel_spacing_mm: float
    width: int
    height: int
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    photons_per_pixel: float
    electronic_sigma: float
    blur_px: float
    noise_seed: int
    focal_spot_blur_px: float = 0.0
    distortion: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of item ``index``: ``default_rng(SeedSequence(seed, spawn_key=(index,)))``."""
    if int(index) != index or index < 0:
        raise ValueError(f"index: expected a non-negative integer, got {index}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


def _uniform(rng: np.random.Generator, r: list[float]) -> float:
    # Always draw, even for a fixed value, so every parameter keeps its place in the stream.
    return float(r[0] + (r[1] - r[0]) * rng.random())


def sample_item(config: Mapping[str, Any], index: int) -> ItemSample:
    """Draw item ``index`` of a validated config (:func:`stereodrr.dataset.config.validate_config`).

    Draw order (fixed): stereo angle, SID, SDD, pixel pitch, detector size, three rotations,
    three translations, log-dose ``ln I0 ~ U(ln lo, ln hi)``, read-out noise, blur, noise seed,
    focal-spot blur, then the intensifier's ranged parameters in sorted order (when it has one).
    """
    rng = item_rng(config["seed"], index)
    rig, pose, det = config["rig"], config["pose"], config["detector"]
    angle = _uniform(rng, rig["stereo_angle_deg"])
    sid = _uniform(rng, rig["sid_mm"])
    sdd = _uniform(rng, rig["sdd_mm"])
    pitch = _uniform(rng, rig["pixel_spacing_mm"])
    w, h = rig["detector_px"][int(rng.integers(len(rig["detector_px"])))]
    r, t = pose["rotation_deg"], pose["translation_mm"]
    rot = (_uniform(rng, r[0]), _uniform(rng, r[1]), _uniform(rng, r[2]))
    trans = (_uniform(rng, t[0]), _uniform(rng, t[1]), _uniform(rng, t[2]))
    lo, hi = det["photons_per_pixel"]
    i0 = float(math.exp(_uniform(rng, [math.log(lo), math.log(hi)])))
    sigma_e = _uniform(rng, det["electronic_sigma"])
    blur = _uniform(rng, det["blur_px"])
    # 2**62 leaves room for the per-view offsets below 2**63.
    noise_seed = int(rng.integers(2**62))
    focal = _uniform(rng, det.get("focal_spot_blur_px", [0.0, 0.0]))
    distortion = _distortion(rng, det.get("distortion"))
    if rig["kind"] == "biplanar":
        angle = 90.0
    return ItemSample(
        index=int(index), seed=int(config["seed"]), rig_kind=rig["kind"], n_views=int(rig["views"]),
        stereo_angle_deg=angle, sid_mm=sid, sdd_mm=sdd, pixel_spacing_mm=pitch, width=int(w), height=int(h),
        rotation_deg=rot, translation_mm=trans, photons_per_pixel=i0, electronic_sigma=sigma_e, blur_px=blur,
        noise_seed=noise_seed, focal_spot_blur_px=focal, distortion=distortion,
    )


def _distortion(rng: np.random.Generator, spec: Mapping[str, Any] | None) -> dict[str, float] | None:
    """The item's intensifier (:data:`stereodrr.distortion.SCALED_PARAMETERS`): the preset's
    parameters with the config's drawn in sorted order (none drawn for a flat panel)."""
    if spec is None:
        return None
    return {**PRESETS[spec["preset"]], **{k: _uniform(rng, spec[k]) for k in sorted(spec) if k != "preset"}}


def item_detector(config: Mapping[str, Any], sample: ItemSample) -> DetectorModel:
    """The item's :class:`~stereodrr.imaging.DetectorModel`: the config's detector section
    (:func:`stereodrr.dataset.config.detector_fields`) with the item's dose, read-out noise and
    blurs (``photons`` is ``None`` for ``noise: "none"``)."""
    from .config import detector_fields

    det = config["detector"]
    return DetectorModel.from_dict({
        **detector_fields(det, float(config["energy_kev"])),
        "detector_blur_px": sample.blur_px, "focal_spot_blur_px": sample.focal_spot_blur_px,
        "photons": sample.photons_per_pixel if det["noise"] == "poisson" else None,
        "electronic_sigma": sample.electronic_sigma, "name": "dataset",
        "distortion": None if sample.distortion is None else scaled_field(sample.distortion, sample.width, sample.height)})


def item_rig(sample: ItemSample, isocenter: np.ndarray) -> StereoRig:
    """The item's rig around ``isocenter`` (world mm), built by the :class:`StereoRig` factories.

    The stereo angle comes from the config's range, so the 3-7 deg advisory warning is silenced.
    """
    common: dict[str, Any] = dict(sid=sample.sid_mm, sdd=sample.sdd_mm, pixel_spacing=sample.pixel_spacing_mm,
                  width=sample.width, height=sample.height, isocenter=np.asarray(isocenter, dtype=np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StereoAngleWarning)
        if sample.rig_kind == "biplanar":
            return StereoRig.biplanar(**common)
        if sample.rig_kind == "arc":
            return StereoRig.arc(sample.n_views, sample.stereo_angle_deg, **common)
        return StereoRig.convergent(sample.stereo_angle_deg, **common)


def item_pose(sample: ItemSample, center: np.ndarray) -> np.ndarray:
    """``(4, 4)`` subject pose ``x' = R (x - c) + c + t``: rotation about the centre ``c``, then translation."""
    R = euler_to_matrix(np.radians(np.asarray(sample.rotation_deg, dtype=np.float64)), POSE_EULER_SEQ)
    return pose_matrix(R, np.asarray(sample.translation_mm, dtype=np.float64), np.asarray(center, dtype=np.float64))

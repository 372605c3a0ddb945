"""Dataset configuration: a JSON file validated up front, so a typo or an impossible range fails
before any item is rendered, with a message naming the key.

A config (schema ``stereodrr.dataset/1``; every section and key optional, defaults below)::

    {
      "seed": 0,
      "subject": {"kind": "torso", "size": [96, 72, 64], "spacing_mm": 3.0},
      "energy_kev": 60.0,
      "rig": {"kind": "convergent", "stereo_angle_deg": [3, 7], "views": 2,
              "sid_mm": [740, 760], "sdd_mm": [1180, 1220], "pixel_spacing_mm": 0.8,
              "detector_px": [[256, 256]]},
      "pose": {"rotation_deg": [[-5, 5], [-5, 5], [-10, 10]], "translation_mm": [[-10, 10], [-10, 10], [-10, 10]]},
      "detector": {"photons_per_pixel": [1e3, 1e5], "noise": "poisson", "electronic_sigma": 0,
                   "blur_px": 0, "focal_spot_blur_px": 0, "spectrum": null, "layer": "ideal",
                   "scatter": "none", "decomposition": "tissue_bone", "gain": 1, "offset": 0,
                   "bit_depth": null, "aperture": "area", "subpixels": 6, "distortion": null},
      "render": {"mode": "trilinear", "step_mm": null, "device": "cpu"},
      "output": {"format": "png16"}
    }

A *range* is a number (fixed) or ``[lo, hi]`` sampled uniformly; ``photons_per_pixel`` is
sampled log-uniformly (dose spans decades); ``noise`` is ``"poisson"`` (quantum noise plus
Gaussian read-out noise of ``electronic_sigma`` counts, the detector's output units, so photons
times ``gain``) or ``"none"`` (the expected intensity);
``blur_px`` is the detector's Gaussian blur sigma (:func:`stereodrr.imaging.functional.detect`),
``focal_spot_blur_px`` the focal spot's (both ranges). The rest of ``detector`` is the
:class:`~stereodrr.imaging.DetectorModel`: ``spectrum`` ``null`` (one line at ``energy_kev``: the
monochromatic model) or ``{"kvp": 80, "filter": "Al:2.5", "anode_angle_deg": 12}`` (spekpy) or
``{"table": "spectrum.csv"}``; ``layer`` ``"ideal"``, ``"csi"``, ``"gos"`` or ``{"material":
"Cesium Iodide", "thickness_mm": 0.6}``; ``scatter`` ``"none"``, ``"kernel"`` or ``"grid"``;
``decomposition`` of the CT into materials when the spectrum is not one line (``"tissue_bone"``
or ``"water"``; HU taken at ``energy_kev``); ``gain`` (counts per photon), ``offset`` (counts),
``bit_depth`` (``null`` or 1-16: counts rounded and clipped to ``0 .. 2^bits - 1``, the expected
intensity's too with ``noise`` ``"none"``; stored unscaled in png16),
``aperture`` / ``subpixels`` (the pixel aperture: sub-rays per pixel axis through the marker balls),
``distortion`` an image intensifier (``null``: a flat panel; ``"mild"`` or ``"strong"``; or
``{"preset": "strong", "s_deg": [0.2, 1.0], ...}``: a preset whose parameters of
:data:`stereodrr.distortion.SCALED_PARAMETERS` are replaced by numbers or ranges, drawn per
item and scaled to its detector; the item's ``markers_uv`` are then where the markers appear in
the recorded image, and its detector record holds the field in pixels).
``detector_px`` is one ``[W, H]`` or a list of them to choose from. ``subject.kind``: ``"torso"`` (the built-in :func:`stereodrr.phantoms.torso_phantom`,
keys ``size``, ``spacing_mm``), ``"volume"`` (a CT file, keys ``path``, ``units`` ``"hu"`` or
``"mu"``, optional ``spacing_mm`` to resample) or ``"phantom"`` (a phantom JSON file or a
built-in phantom's name such as ``"lego_stereo"``, keys ``path``, ``voxel_mm``). ``rig.kind``: ``"convergent"`` (two views, the stereo angle between
them), ``"arc"`` (``views`` sources spread over the stereo angle) or ``"biplanar"`` (90 deg,
the stereo angle range is ignored). Pose: rotation (extrinsic x, y, z degrees, LPS axes) about
the subject's centre, then translation; the rig's isocenter is the un-posed subject's centre.
``render.device`` is a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``) for the renderer and
the detector model on every worker; items are bit-reproducible on one kind of device.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping

from ..distortion import PRESETS, SCALED_PARAMETERS, scaled_field
from ..fileio import read_json
from ..imaging import DetectorModel
from ..render import MODES
from ..resources import MAX_BLUR_PX, MAX_INT64, MAX_PHOTONS, MIN_STEP_MM, MIN_VOXEL_MM, PIXEL_PITCH_MM
from .manifest import sha256_file

__all__ = ["SCHEMA", "DEFAULT_CONFIG", "load_config", "validate_config", "config_digest", "canonical_json",
           "input_files", "input_stamp", "input_digests"]

SCHEMA = "stereodrr.dataset/1"
"""Schema name of a dataset config."""

DEFAULT_CONFIG: dict[str, Any] = {
    "schema": SCHEMA,
    "seed": 0,
    "subject": {"kind": "torso", "size": [96, 72, 64], "spacing_mm": 3.0},
    "energy_kev": 60.0,
    "rig": {
        "kind": "convergent",
        "stereo_angle_deg": [3.0, 7.0],
        "views": 2,
        "sid_mm": [740.0, 760.0],
        "sdd_mm": [1180.0, 1220.0],
        "pixel_spacing_mm": 0.8,
        "detector_px": [[256, 256]],
    },
    "pose": {
        "rotation_deg": [[-5.0, 5.0], [-5.0, 5.0], [-10.0, 10.0]],
        "translation_mm": [[-10.0, 10.0], [-10.0, 10.0], [-10.0, 10.0]],
    },
    # The DetectorModel's own defaults for its fields (MODEL_KEYS), the config's spelling of
    # "none" for spectrum, layer and scatter.
    "detector": {"photons_per_pixel": [1.0e3, 1.0e5], "noise": "poisson", "electronic_sigma": 0.0, "blur_px": 0.0,
                 "focal_spot_blur_px": 0.0, "spectrum": None, "layer": "ideal", "scatter": "none",
                 "decomposition": "tissue_bone",
                 **{k: {f.name: f.default for f in fields(DetectorModel)}[k]
                    for k in ("gain", "offset", "bit_depth", "aperture", "subpixels", "distortion")}},
    "render": {"mode": "trilinear", "step_mm": None, "device": "cpu"},
    "output": {"format": "png16"},
}
"""Every config key with its default; a user's config overrides parts of it."""

_SUBJECT_KEYS = {
    "torso": {"kind", "size", "spacing_mm"},
    "volume": {"kind", "path", "units", "spacing_mm"},
    "phantom": {"kind", "path", "voxel_mm"},
}
RIG_KINDS = ("convergent", "arc", "biplanar")
NOISE_MODELS = ("poisson", "none")
FORMATS = ("png16", "tiff32")


def canonical_json(obj: Any) -> str:
    """Sorted-key compact JSON: equal configs give equal text (and digest)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a validated config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def input_files(config: Mapping[str, Any]) -> list[Path]:
    """The files a validated config reads (its subject's CT or phantom, a spectrum table); a
    folder (a DICOM series) stands for the files in it."""
    paths = [Path(config["subject"]["path"])] if "path" in config["subject"] else []
    spectrum = config["detector"]["spectrum"]
    if spectrum is not None and "table" in spectrum:
        paths.append(Path(spectrum["table"]))
    return [f for p in paths for f in (sorted(x for x in p.iterdir() if x.is_file()) if p.is_dir() else [p])]


def input_stamp(config: Mapping[str, Any]) -> tuple[tuple[str, int, int], ...]:
    """``(path, mtime_ns, size)`` of each of :func:`input_files`: changes when a file is edited."""
    return tuple((str(f), (st := f.stat()).st_mtime_ns, st.st_size) for f in input_files(config))


def input_digests(config: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 (hex) of the contents of each of :func:`input_files`, by path (a file is read once
    per process while its time and size stay: a run checks its folder twice)."""
    return {path: _sha256(path, mtime_ns, size) for path, mtime_ns, size in input_stamp(config)}


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a config file; relative subject paths resolve against the file's folder.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not JSON, or an invalid config (the message names the key).
    """
    p = Path(path)
    raw = read_json(p, "config")
    return validate_config(raw, base_dir=p.parent)


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"config: unknown key '{where}{unknown[0]}' (known keys: {sorted(defaults)})")
    out = copy.deepcopy(dict(defaults))
    for k, v in given.items():
        if isinstance(defaults[k], dict) and k != "subject":
            if not isinstance(v, Mapping):
                raise ValueError(f"config: {where}{k}: expected an object, got {v!r}")
            out[k] = _merge(defaults[k], v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"config: {key}: expected a finite number, got {v!r}")
    return float(v)


def _range(key: str, v: Any, lo_bound: float = -math.inf, hi_bound: float = math.inf,
           open_lo: bool = False) -> list[float]:
    """``v`` (a number or ``[lo, hi]``) as ``[lo, hi]`` inside the bounds."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"config: {key}: expected a number or [lo, hi], got {v!r}")
        lo, hi = _number(key, v[0]), _number(key, v[1])
    else:
        lo = hi = _number(key, v)
    if lo > hi:
        raise ValueError(f"config: {key}: empty range, lo {lo:g} > hi {hi:g}")
    if lo < lo_bound or (open_lo and lo <= lo_bound) or hi > hi_bound:
        left = "(" if open_lo else "["
        raise ValueError(f"config: {key}: range [{lo:g}, {hi:g}] leaves the allowed interval "
                         f"{left}{lo_bound:g}, {hi_bound:g}]")
    return [lo, hi]


def _ranges3(key: str, v: Any, bound: float) -> list[list[float]]:
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError(f"config: {key}: expected three ranges (x, y, z), got {v!r}")
    return [_range(f"{key}[{a}]", r, -bound, bound) for a, r in enumerate(v)]


def _choice(key: str, v: Any, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise ValueError(f"config: {key}: expected one of {list(allowed)}, got {v!r}")
    return str(v)


def _positive_int(key: str, v: Any, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ValueError(f"config: {key}: expected an integer >= {minimum}, got {v!r}")
    return int(v)


def _detector_sizes(key: str, v: Any) -> list[list[int]]:
    sizes = [v] if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v) else v
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ValueError(f"config: {key}: expected [W, H] or a list of [W, H], got {v!r}")
    out = []
    for s in sizes:
        if not isinstance(s, (list, tuple)) or len(s) != 2:
            raise ValueError(f"config: {key}: expected [W, H] pairs, got {s!r}")
        out.append([_positive_int(f"{key} (W)", s[0]), _positive_int(f"{key} (H)", s[1])])
    return out


def _subject(v: Any, base_dir: Path | None) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise ValueError(f"config: subject: expected an object, got {v!r}")
    kind = _choice("subject.kind", v.get("kind", "torso"), tuple(_SUBJECT_KEYS))
    unknown = sorted(set(v) - _SUBJECT_KEYS[kind])
    if unknown:
        raise ValueError(f"config: unknown key 'subject.{unknown[0]}' for subject kind {kind!r} "
                         f"(known keys: {sorted(_SUBJECT_KEYS[kind])})")
    out: dict[str, Any] = {"kind": kind}
    if kind == "torso":
        size = v.get("size", DEFAULT_CONFIG["subject"]["size"])
        if not isinstance(size, (list, tuple)) or len(size) != 3:
            raise ValueError(f"config: subject.size: expected three voxel counts (x, y, z), got {size!r}")
        out["size"] = [_positive_int("subject.size", s) for s in size]
        out["spacing_mm"] = _range("subject.spacing_mm", v.get("spacing_mm", 3.0), MIN_VOXEL_MM)[0]
        return out
    if "path" not in v:
        raise ValueError(f"config: subject.path: required for subject kind {kind!r}")
    path = Path(str(v["path"]))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    path = path.resolve()
    if kind == "phantom" and not path.exists() and Path(str(v["path"])).parent == Path("."):
        from ..phantoms.io import BUILTIN_DIR, builtin_phantoms  # a built-in phantom by name

        stem = Path(str(v["path"])).name.removesuffix(".json")
        if stem in builtin_phantoms():
            path = BUILTIN_DIR / f"{stem}.json"
    if not path.exists():
        raise FileNotFoundError(f"config: subject.path: {str(path)!r} does not exist")
    if kind == "phantom" and not path.is_file():
        raise ValueError(f"config: subject.path: {str(path)!r} is a folder, expected a phantom JSON file")
    out["path"] = str(path)
    if kind == "volume":
        out["units"] = _choice("subject.units", v.get("units", "hu"), ("hu", "mu"))
        sp = v.get("spacing_mm")
        out["spacing_mm"] = None if sp is None else _range("subject.spacing_mm", sp, MIN_VOXEL_MM)[0]
    else:
        out["voxel_mm"] = _range("subject.voxel_mm", v.get("voxel_mm", 0.5), 0.0, open_lo=True)[0]
    return out


#: The detector section's keys that are DetectorModel fields as they are (the others: the sampled
#: ``photons_per_pixel``, ``electronic_sigma``, ``blur_px``, ``focal_spot_blur_px``, the ``noise``
#: switch, and ``decomposition``, which belongs to the scene).
MODEL_KEYS = ("spectrum", "layer", "scatter", "aperture", "subpixels", "gain", "offset", "bit_depth")


def detector_fields(det: Mapping[str, Any], energy_kev: float) -> dict[str, Any]:
    """The :class:`~stereodrr.imaging.DetectorModel` fields of a validated ``detector`` section
    (for :meth:`DetectorModel.from_dict`): the spectrum made from its spec (``null``: one line at
    ``energy_kev``), the rest as they are."""
    from ..imaging import spectrum_from_spec

    return {**{k: det[k] for k in MODEL_KEYS}, "spectrum": spectrum_from_spec(det["spectrum"], energy_kev)}


def _detector_model_keys(det: dict[str, Any], energy_kev: float, base_dir: Path | None) -> None:
    """Check (in place) the DetectorModel keys of the ``detector`` section: their form here, their
    values by :meth:`DetectorModel.from_dict` itself (one validation for every caller)."""
    from ..imaging import DetectorModel, spectrum_from_spec
    from ..imaging.materials import DECOMPOSITIONS
    from ..physics import LAYERS, SCATTER_MODELS, ScintillatorLayer

    det["focal_spot_blur_px"] = _range("detector.focal_spot_blur_px", det["focal_spot_blur_px"], 0.0, MAX_BLUR_PX)
    spec = det["spectrum"]
    if spec is not None:
        if not isinstance(spec, Mapping) or not (set(spec) <= {"kvp", "filter", "anode_angle_deg"} and "kvp" in spec
                                                 or set(spec) == {"table"}):
            raise ValueError('config: detector.spectrum: expected null, {"kvp": kV, "filter": "Al:2.5", '
                             f'"anode_angle_deg": 12}} or {{"table": "file.csv"}}, got {spec!r}')
        spec = dict(spec)
        if "table" in spec:
            path = Path(str(spec["table"]))
            path = (base_dir / path if not path.is_absolute() and base_dir is not None else path).resolve()
            if not path.is_file():
                raise FileNotFoundError(f"config: detector.spectrum.table: {str(path)!r} does not exist")
            spec["table"] = str(path)
        else:
            spec["kvp"] = _number("detector.spectrum.kvp", spec["kvp"])
            spec["anode_angle_deg"] = _number("detector.spectrum.anode_angle_deg", spec.get("anode_angle_deg", 12.0))
            spec["filter"] = str(spec.get("filter", "Al:2.5"))
        det["spectrum"] = spec
    layer = det["layer"]
    if isinstance(layer, Mapping):
        if set(layer) - {"material", "thickness_mm", "density"} or "material" not in layer:
            raise ValueError(f"config: detector.layer: expected a name {sorted(LAYERS)} or "
                             f"{{\"material\", \"thickness_mm\", \"density\"}}, got {layer!r}")
        try:
            det["layer"] = asdict_layer(ScintillatorLayer(**dict(layer)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config: detector.layer: {exc}") from None
    else:
        det["layer"] = _choice("detector.layer", layer, tuple(LAYERS))
    det["scatter"] = _choice("detector.scatter", det["scatter"], tuple(SCATTER_MODELS))
    det["decomposition"] = _choice("detector.decomposition", det["decomposition"], DECOMPOSITIONS)
    det["gain"] = _number("detector.gain", det["gain"])
    det["offset"] = _number("detector.offset", det["offset"])
    if det["bit_depth"] is not None:
        det["bit_depth"] = _positive_int("detector.bit_depth", det["bit_depth"])
        if det["bit_depth"] > 16:
            raise ValueError(f"config: detector.bit_depth: expected 1-16 bits (16-bit PNG), got {det['bit_depth']}")
    det["aperture"] = _choice("detector.aperture", det["aperture"], ("area", "point"))
    det["subpixels"] = _positive_int("detector.subpixels", det["subpixels"])
    try:
        spectrum = spectrum_from_spec(det["spectrum"], energy_kev)
    except ValueError as exc:
        raise ValueError(f"config: detector.spectrum: {exc}") from None
    try:
        DetectorModel.from_dict({**{k: det[k] for k in MODEL_KEYS}, "spectrum": spectrum})
    except ValueError as exc:
        raise ValueError(f"config: detector.{exc}") from None


def _distortion(det: dict[str, Any], sizes: list[list[int]]) -> None:
    """Check (in place) ``detector.distortion``: normalised to ``{"preset": name, parameter:
    [lo, hi], ...}``, or removed when ``null`` (so a flat panel's config, and its digest, are
    those it had before intensifiers existed)."""
    spec = det.pop("distortion")
    if spec is None:
        return
    if isinstance(spec, str):
        spec = {"preset": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"config: detector.distortion: expected null, a preset name {sorted(PRESETS)} or "
                         f'{{"preset": name, parameter: value or [lo, hi]}}, got {spec!r}')
    unknown = sorted(set(spec) - {"preset"} - set(SCALED_PARAMETERS))
    if unknown:
        raise ValueError(f"config: unknown key 'detector.distortion.{unknown[0]}' "
                         f"(known keys: {['preset', *sorted(SCALED_PARAMETERS)]})")
    out: dict[str, Any] = {"preset": _choice("detector.distortion.preset", spec.get("preset", "none"), tuple(PRESETS))}
    for k in sorted(set(spec) - {"preset"}):
        out[k] = _range(f"detector.distortion.{k}", spec[k], *SCALED_PARAMETERS[k])
    for w, h in sizes:  # both ends of every range on every detector size
        for end in (0, 1):
            try:
                scaled_field({**PRESETS[out["preset"]], **{k: v[end] for k, v in out.items() if k != "preset"}}, w, h)
            except ValueError as exc:
                raise ValueError(f"config: detector.distortion with rig.detector_px {[w, h]}: {exc}") from None
    det["distortion"] = out


def asdict_layer(layer: Any) -> dict[str, Any]:
    return {"material": layer.material, "thickness_mm": float(layer.thickness_mm), "density": float(layer.density)}


def validate_config(raw: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Fill defaults and check every key and range; returns the normalised config.

    Ranges become ``[lo, hi]`` lists, so two configs that mean the same compare equal.

    Raises:
        ValueError: an unknown key, a wrong type, an empty or impossible range (e.g. a stereo
            angle outside (0, 180) deg, an SID range reaching the SDD range), naming the key.
        FileNotFoundError: the subject file does not exist.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"config: expected a JSON object, got {type(raw).__name__}")
    if raw.get("schema", SCHEMA) != SCHEMA:
        raise ValueError(f"config: schema: expected {SCHEMA!r}, got {raw.get('schema')!r}")
    cfg = _merge(DEFAULT_CONFIG, raw, "")
    seed = cfg["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_INT64:
        # Seeds are stored as int64 in the item records and the manifest.
        raise ValueError(f"config: seed: expected an integer in [0, 2^63 - 1], got {seed!r}")
    cfg["subject"] = _subject(cfg["subject"], Path(base_dir) if base_dir is not None else None)
    # The diagnostic range of effective energies (the attenuation tables reach 1-800 keV).
    cfg["energy_kev"] = _range("energy_kev", cfg["energy_kev"], 10.0, 200.0)[0]

    rig = cfg["rig"]
    rig["kind"] = _choice("rig.kind", rig["kind"], RIG_KINDS)
    rig["views"] = _positive_int("rig.views", rig["views"], 2)
    if rig["kind"] != "arc" and rig["views"] != 2:
        raise ValueError(f"config: rig.views: a {rig['kind']} rig has 2 views, got {rig['views']} (use kind 'arc')")
    rig["stereo_angle_deg"] = _range("rig.stereo_angle_deg", rig["stereo_angle_deg"], 0.0, 179.0, open_lo=True)
    rig["sid_mm"] = _range("rig.sid_mm", rig["sid_mm"], 0.0, open_lo=True)
    rig["sdd_mm"] = _range("rig.sdd_mm", rig["sdd_mm"], 0.0, open_lo=True)
    if rig["sid_mm"][1] >= rig["sdd_mm"][0]:
        raise ValueError(f"config: rig.sid_mm: every SID must be below every SDD (the isocenter lies between "
                         f"source and detector), but max SID {rig['sid_mm'][1]:g} >= min SDD {rig['sdd_mm'][0]:g}")
    rig["pixel_spacing_mm"] = _range("rig.pixel_spacing_mm", rig["pixel_spacing_mm"], *PIXEL_PITCH_MM)
    rig["detector_px"] = _detector_sizes("rig.detector_px", rig["detector_px"])

    pose = cfg["pose"]
    pose["rotation_deg"] = _ranges3("pose.rotation_deg", pose["rotation_deg"], 180.0)
    pose["translation_mm"] = _ranges3("pose.translation_mm", pose["translation_mm"], math.inf)

    det = cfg["detector"]
    det["photons_per_pixel"] = _range("detector.photons_per_pixel", det["photons_per_pixel"], 0.0, MAX_PHOTONS,
                                      open_lo=True)
    det["noise"] = _choice("detector.noise", det["noise"], NOISE_MODELS)
    det["electronic_sigma"] = _range("detector.electronic_sigma", det["electronic_sigma"], 0.0, MAX_PHOTONS)
    det["blur_px"] = _range("detector.blur_px", det["blur_px"], 0.0, MAX_BLUR_PX)
    if det["noise"] == "none" and det["electronic_sigma"][1] > 0:
        raise ValueError("config: detector.electronic_sigma: must be 0 with detector.noise 'none'")
    _detector_model_keys(det, cfg["energy_kev"], Path(base_dir) if base_dir is not None else None)
    _distortion(det, rig["detector_px"])

    render = cfg["render"]
    render["mode"] = _choice("render.mode", render["mode"], MODES)
    if render["step_mm"] is not None:
        render["step_mm"] = _range("render.step_mm", render["step_mm"], MIN_STEP_MM)[0]
    # Checked for form only: whether the device exists is a property of each worker's machine.
    # (Not mps: the marker spheres and the detector chain compute in float64, which it lacks.)
    if not isinstance(render["device"], str) or not re.fullmatch(r"cpu|cuda(:\d+)?", render["device"]):
        raise ValueError(f"config: render.device: expected 'cpu', 'cuda' or 'cuda:N', got {render['device']!r}")
    cfg["output"]["format"] = _choice("output.format", cfg["output"]["format"], FORMATS)
    return cfg

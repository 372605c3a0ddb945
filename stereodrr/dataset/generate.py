"""Render and write a stereo dataset: per item a sampled rig, subject pose and dose, every view
through the renderer and the detector model, images and the item record written atomically;
items spread over a Dask cluster (a local one by default), resumable and shardable.

Guarantees:
    * item ``i`` depends only on ``(seed, i)`` (:mod:`stereodrr.dataset.sample`), so shards,
      workers and resumed runs produce the same bytes;
    * an item is complete when its ``item.json`` exists, written after its images; an item that
      fails (exception, full disk) deletes its folder, and one whose worker died is deleted and
      redone by ``resume``; the manifest lists complete items only;
    * an output folder holding another dataset is refused; the same dataset is continued only
      with ``resume``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..extras import require
from ..fileio import atomic_path, atomic_write_text, read_json
from ..geometry import StereoRig, transform_points
from ..imaging import Balls, Scene, Voxels, quantise, simulate, to_uint16, warn_saturation
from ..render import Projector
from ..resources import MAX_INT64, check_memory, render_bytes, voxelize_bytes
from ..volume import load_volume
from .config import DEFAULT_CONFIG, SCHEMA, config_digest, input_digests
from .lock import LOCK_DIR, dataset_lock, folder_mutex
from .manifest import (
    MANIFEST_FILE,
    ROOT_FILE,
    complete_items,
    is_complete,
    item_dir,
    rebuild_manifest,
    remove_incomplete,
    sha256_file,
    write_item_record,
)
from .sample import ItemSample, item_detector, item_pose, item_rig, sample_item
from .subject import Subject, load_subject, posed_volume

__all__ = ["parse_shard", "shard_indices", "prepare_output", "render_item", "write_item", "generate_dataset",
           "GenerationReport", "ItemGeometryError", "RenderedItem", "RenderedView", "IMAGE_SUFFIX"]

IMAGE_SUFFIX = {"png16": ".png", "tiff32": ".tiff"}
#: Seconds Dask's client waits for a scheduler that accepted the TCP connection.
SCHEDULER_TIMEOUT_S = 20
#: Peak bytes per detector pixel and view of an item: line integrals, counts, noise and blur
#: buffers (float32/float64) and the written image.
ITEM_BYTES_PER_PIXEL = 48


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``.

    Raises:
        ValueError: malformed or out of range.
    """
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ValueError(f"shard: expected 'i/n' with integers (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard: expected 0 <= i < n, got {text!r}")
    return i, n


def shard_indices(n_items: int, shard: tuple[int, int] = (0, 1)) -> list[int]:
    """Items of shard ``i/n``: every index ``k < n_items`` with ``k mod n == i`` (interleaved, so
    shards stay balanced when items grow in cost with the index)."""
    if int(n_items) != n_items or n_items < 0:
        raise ValueError(f"n: expected a non-negative number of items, got {n_items}")
    i, n = shard
    if not (int(i) == i and int(n) == n and n >= 1 and 0 <= i < n):
        raise ValueError(f"shard: expected (i, n) with 0 <= i < n, got {tuple(shard)}")
    return list(range(int(i), int(n_items), int(n)))


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    """Dotted path of the first key where two JSON-like configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k, None) != b.get(k, None) or (k in a) != (k in b):
                return _first_difference(a.get(k), b.get(k), f"{where}{k}.")
    return where.rstrip(".") or "<root>"


def prepare_output(out: str | os.PathLike[str], config: Mapping[str, Any], indices: Iterable[int],
                   resume: bool, write: bool = True) -> Path:
    """Create or check the dataset folder and clean this run's interrupted items.

    With ``write=False`` only the checks run (nothing is created or deleted).

    * empty or new folder: writes ``dataset.json``;
    * folder of a dataset with another config, or whose input files (the subject's CT or
      phantom, a spectrum table) have changed since it was started: refused (always);
    * folder of the same dataset: refused unless ``resume`` when any of ``indices`` is already on
      disk (complete or interrupted) -- another shard may join without ``resume``; with
      ``resume``, the interrupted items among ``indices`` are deleted (to be redone).

    Raises:
        ValueError: the folder holds something else, another dataset, or this run's items
            without ``resume``.
    """
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ValueError(f"output {str(root)!r} is a file, expected a folder")
    if write:
        root.mkdir(parents=True, exist_ok=True)
    # Under the folder's mutex: shards started at once into a new folder check and create
    # dataset.json one after the other (none sees another's half-written dataset.json, nor
    # writes its own config over another's).
    with folder_mutex(root) if root.is_dir() else contextlib.nullcontext():
        return _prepare_output(root, config, indices, resume, write)


def _prepare_output(root: Path, config: Mapping[str, Any], indices: Iterable[int], resume: bool,
                    write: bool) -> Path:
    meta_path = root / ROOT_FILE
    digest = config_digest(config)
    inputs = input_digests(config)
    indices = list(indices)
    if meta_path.is_file():
        try:
            meta = read_json(meta_path, ROOT_FILE)
            theirs = meta["config"]
        except (ValueError, KeyError, TypeError) as exc:
            why = f" ({exc})" if isinstance(exc, ValueError) else ""
            raise ValueError(f"output {str(root)!r}: {ROOT_FILE} is unreadable{why}; not a stereodrr dataset folder") from None
        if config_digest(theirs) != digest:
            key = _first_difference(theirs, dict(config))
            raise ValueError(f"output {str(root)!r} holds another dataset (its config differs at {key!r}); "
                             "choose another folder or use that dataset's config")
        changed = [f for f, h in (meta.get("input_sha256") or {}).items() if inputs.get(f) != h]
        if changed:  # (a dataset.json written before input digests existed has none to compare)
            raise ValueError(f"output {str(root)!r}: {changed[0]} has changed since this dataset was started (its "
                             "SHA-256 differs); its items would mix two inputs: restore the file or choose another "
                             "folder")
        present = [i for i in indices if item_dir(root, i).exists()]
        if present and not resume:
            raise ValueError(f"output {str(root)!r} already holds {len(present)} item(s) of this run "
                             f"(first: {present[0]}); pass --resume to continue it")
        if resume and write:
            remove_incomplete(root, indices)
        return root
    if root.is_dir() and any(p.name != LOCK_DIR for p in root.iterdir()):
        raise ValueError(f"output {str(root)!r} is not empty and holds no stereodrr dataset ({ROOT_FILE} missing); "
                         "choose an empty or new folder")
    if not write:
        return root
    atomic_write_text(meta_path, json.dumps(
        {"schema": SCHEMA, "stereodrr_version": __version__, "config_sha256": digest, "input_sha256": inputs,
         "config": config}, indent=1))
    return root


@dataclass
class RenderedView:
    """One detector image and its geometry.

    Attributes:
        camera: the view's :class:`~stereodrr.geometry.Camera`.
        image: ``(H, W)`` uint16 (png16) or float32 (tiff32) detector counts times ``scale``.
        scale: stored value per photon (``counts = image / scale``).
        markers_uv: ``(M, 2)`` exact marker centres in pixels where the image records them: the
            pinhole projection, moved by the detector's intensifier field when it has one.
        markers_in_image: ``(M,)`` whether each centre lies in the image (and inside the
            intensifier's round field of view).
    """

    camera: Any
    image: np.ndarray
    scale: float
    markers_uv: np.ndarray
    markers_in_image: np.ndarray


@dataclass
class RenderedItem:
    """One rendered item before writing: its sample, subject pose ``(4, 4)``, isocenter ``(3,)``,
    views by name, marker ids ``(M,)`` and posed marker centres ``(M, 3)`` (world mm)."""

    sample: ItemSample
    pose: np.ndarray
    isocenter: np.ndarray
    views: dict[str, RenderedView]
    marker_ids: np.ndarray
    markers_xyz: np.ndarray
    detector: dict[str, Any] = field(default_factory=dict)


def render_item(config: Mapping[str, Any], index: int) -> RenderedItem:
    """Sample item ``index``, render its views (CT plus analytic markers) and apply the detector.

    Images are the item's :class:`~stereodrr.imaging.DetectorModel` counts through
    :func:`stereodrr.imaging.simulate` (seed ``noise_seed + v`` for view ``v``): for the
    monochromatic model ``I0 exp(-L)`` with Poisson and read-out noise and detector blur, exactly
    as :func:`stereodrr.imaging.detect`; with a tube spectrum or a scintillator, the
    polychromatic chain over per-material line integrals. ``png16`` quantises the counts to 16
    bits with the scale that maps the image maximum to 65535 (:func:`stereodrr.imaging.to_uint16`;
    scale 1 when the model has a bit depth), ``tiff32`` keeps float32 counts (scale 1).
    """
    sample = sample_item(config, index)
    render, det = config["render"], config["detector"]
    subject = load_subject(config, render["device"])
    iso = subject.center
    T = item_pose(sample, iso)
    rig = item_rig(sample, iso)
    check_item_geometry(subject, T, rig, index)
    xyz = transform_points(T, subject.marker_centers)
    model = item_detector(config, sample)
    poisson = det["noise"] == "poisson"
    energy = float(config["energy_kev"])
    # The monochromatic model (one line at the config's energy, ideal layer) renders the subject's
    # mu (the mu route, plain Poisson); anything else decomposes its HU at that energy into materials.
    mono = model.is_monochromatic and float(model.spectrum.energies_kev[0]) == energy
    balls = (Balls.of(xyz, subject.marker_diameters, list(subject.marker_materials), energy, subject.marker_mu,
                      subject.marker_ids) if subject.has_markers else None)
    scene = Scene((Voxels(posed_volume(subject.volume, T), "mu"),), balls, energy,
                  "none" if mono else det["decomposition"])
    with torch.no_grad():
        counts_of = simulate(scene, rig, Projector(render["mode"], render["step_mm"]), model, seed=sample.noise_seed)
        views = {}
        for name in rig.names:
            counts = counts_of[name]
            if not poisson:  # expected counts come out for I0 = 1: gain exp(-L) + offset
                counts = (counts - model.offset) * sample.photons_per_pixel + model.offset
                if model.bit_depth is not None:
                    counts = quantise(counts, model.bit_depth)
                    warn_saturation(name, counts, model.bit_depth)
            if config["output"]["format"] == "png16":
                image, scale = to_uint16(counts.clamp_min(0.0), 1.0 if model.bit_depth is not None else None)
            else:
                image, scale = counts.cpu().numpy().astype(np.float32), 1.0
            cam = rig[name]
            uv, depth = cam.project(xyz) if len(xyz) else (np.zeros((0, 2)), np.zeros(0))
            seen = np.zeros(0, bool)
            if len(uv):
                intensifier = model.distortion
                uv = uv if intensifier is None else intensifier.distort(uv)
                seen = cam.in_image(uv) & (depth > 0) & (True if intensifier is None else intensifier.in_field(uv))
            views[name] = RenderedView(cam, image, scale, uv, seen)
    return RenderedItem(sample, T, iso, views, subject.marker_ids, xyz, model.to_dict())


def _write_image(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        # cv2.imwrite reports failure (full disk, unwritable folder) by returning False, not raising.
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"could not write image {str(path)!r} (disk full or folder not writable?)")


def _flat(a: np.ndarray) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64).ravel()]


def write_item(root: str | os.PathLike[str], config: Mapping[str, Any], index: int,
               threads: int | None = None) -> bool:
    """Render item ``index`` and write its images, then its record (the completion marker).

    Any failure (including a full disk) deletes the item's folder before re-raising, so no
    partial item stays on disk.

    Args:
        root: dataset folder (prepared by :func:`prepare_output`).
        config: validated config.
        index: item number.
        threads: torch intra-op threads of this process (Dask workers use 1 by default, so N
            workers use N cores).

    Returns:
        False when the item was already complete (nothing written), else True.
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
    root = Path(root)
    if is_complete(root, index):
        return False
    folder = item_dir(root, index)
    try:
        item = render_item(config, index)
        s = item.sample
        suffix = IMAGE_SUFFIX[config["output"]["format"]]
        views = []
        for v, (name, view) in enumerate(item.views.items()):
            path = folder / f"{name}{suffix}"
            _write_image(path, view.image)
            cam = view.camera
            views.append({
                "view": name, "view_index": v, "file": path.relative_to(root).as_posix(),
                "sha256": sha256_file(path), "bytes": path.stat().st_size, "format": config["output"]["format"],
                "scale": view.scale, "width": cam.width, "height": cam.height,
                "K": _flat(cam.K), "R": _flat(cam.R), "t": _flat(cam.t), "P": _flat(cam.P),
                "markers_uv": _flat(view.markers_uv),
                "markers_in_image": [bool(b) for b in view.markers_in_image],
            })
        write_item_record(root, index, {
            "item": index, "seed": s.seed, "rig_kind": s.rig_kind, "stereo_angle_deg": s.stereo_angle_deg,
            "sid_mm": s.sid_mm, "sdd_mm": s.sdd_mm, "pixel_spacing_mm": s.pixel_spacing_mm,
            "photons_per_pixel": s.photons_per_pixel, "noise": config["detector"]["noise"],
            "electronic_sigma": s.electronic_sigma, "blur_px": s.blur_px, "noise_seed": s.noise_seed,
            "focal_spot_blur_px": s.focal_spot_blur_px, "detector": json.dumps(item.detector, sort_keys=True),
            "pose": _flat(item.pose), "rotation_deg": list(s.rotation_deg), "translation_mm": list(s.translation_mm),
            "isocenter": _flat(item.isocenter), "marker_ids": [int(i) for i in item.marker_ids],
            "markers_xyz": _flat(item.markers_xyz), "views": views,
        })
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return True


@dataclass
class GenerationReport:
    """What a run did: folder, items asked for (this shard), already complete, written, failed
    (index -> error), manifest rows, and why the manifest could not be rebuilt (e.g. a full
    disk; the previous manifest is then left as it was)."""

    root: Path
    requested: int
    skipped: int
    written: int
    failed: dict[int, str] = field(default_factory=dict)
    manifest_rows: int = 0
    manifest_error: str | None = None

    @property
    def retryable(self) -> list[int]:
        """The failed items a rerun (``resume``) may yet write: all but those whose sampled
        pose and rig cannot image the subject (:class:`ItemGeometryError`), which fail alike
        on every run."""
        return [i for i, why in self.failed.items() if not why.startswith(f"{ItemGeometryError.__name__}:")]


@contextlib.contextmanager
def _kept_environ() -> Iterator[None]:
    """This process's environment as it was on entry, put back on exit: distributed's Nanny
    writes its pre-spawn variables (``OMP/MKL/OPENBLAS_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_``,
    ``PYTHONHASHSEED``) into the parent before it spawns a worker."""
    environ = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)


def _run_here(todo: Sequence[int], root: Path, config: Mapping[str, Any], bar: tqdm) -> tuple[int, dict[int, str]]:
    """Render and write ``todo`` in this process: ``(files written, {item: error})``. The items'
    warnings are said once each, after the last item (a saturated view would otherwise warn
    once per item: any ``warnings.catch_warnings`` block inside an item, as around spekpy, resets
    Python's record of what was said)."""
    written, failed = 0, {}
    with warnings.catch_warnings(record=True) as caught:
        for i in todo:
            try:
                written += write_item(root, config, i)
            except Exception as exc:  # a failed item is reported, the others go on
                failed[i] = f"{type(exc).__name__}: {exc}"
            bar.update(1)
    said: dict[tuple[type, str], warnings.WarningMessage] = {}
    for w in caught:
        said.setdefault((w.category, str(w.message)), w)
    for w in said.values():
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return written, failed


def _run_dask(todo: Sequence[int], root: Path, config: Mapping[str, Any], workers: int, scheduler: str | None,
              threads: int, bar: tqdm) -> tuple[int, dict[int, str]]:
    from distributed import Client, LocalCluster, as_completed

    written, failed = 0, {}
    with _kept_environ():
        if scheduler is not None:
            try:
                cluster, client = None, Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
            except OSError as exc:
                raise ConnectionError(f"scheduler {scheduler!r}: cannot connect ({exc})") from None
        else:
            # The standard thread-count variables, read when a worker process starts, cap OpenMP,
            # MKL and Numba pools as torch.set_num_threads caps torch's: N workers use N x threads cores.
            env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                   env=env)
            client = Client(cluster)
        try:
            task = functools.partial(write_item, str(root), dict(config), threads=threads)
            futures = client.map(task, todo, pure=False)
            index_of = {f.key: i for f, i in zip(futures, todo)}
            for fut in as_completed(futures):
                try:
                    written += bool(fut.result())
                except Exception as exc:  # a failed item is reported, the others go on
                    failed[index_of[fut.key]] = f"{type(exc).__name__}: {exc}"
                bar.update(1)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    return written, failed


def generate_dataset(
    config: Mapping[str, Any],
    out: str | os.PathLike[str],
    n: int,
    *,
    resume: bool = False,
    shard: tuple[int, int] = (0, 1),
    workers: int | str = 0,
    threads: int = 1,
    progress: bool = True,
) -> GenerationReport:
    """Generate items ``0 .. n-1`` of shard ``i/n`` into ``out`` and rebuild the manifest.

    Args:
        config: validated config (:func:`stereodrr.dataset.config.load_config`).
        out: dataset folder.
        n: number of items in the whole dataset.
        resume: continue a dataset in ``out`` (complete items are skipped, interrupted ones redone).
        shard: ``(i, n_shards)``: this run does the items ``k`` with ``k mod n_shards == i``.
            Each run ends by rebuilding the manifest from every complete item in ``out``; after
            shards that ran at once, one ``resume`` run of the whole dataset renders nothing
            and leaves the manifest complete.
        workers: where items are rendered: ``0`` (the default) in this process, without Dask; a
            number of local Dask worker processes (the ``dask`` extra); or the address of a running Dask scheduler
            (``"tcp://host:port"``), whose workers need stereodrr installed and ``out`` (and the
            subject file) on a shared path.
        threads: CPU threads per Dask worker (torch, OpenMP, MKL and Numba pools of local
            workers; torch's on a remote cluster, whose workers' environment sets the rest).
        progress: show a tqdm bar.

    Returns:
        A :class:`GenerationReport`; items that failed are listed there (and absent from the
        manifest), the others are written.
    """
    scheduler = workers if isinstance(workers, str) else None
    _check_arguments(config, n, 1 if scheduler is not None else workers, threads, scheduler)
    workers = 1 if scheduler is not None else int(workers)
    device = config["render"]["device"]
    indices = shard_indices(n, shard)
    # Everything that can be checked before a file is written: the subject (once, not per
    # item), the memory an item needs, the scheduler, the folder.
    check_subject_and_memory(config, max(1, workers if scheduler is None else 1))
    if indices:  # the first item's rig must see its subject (a config that sees nothing fails here)
        first = sample_item(config, indices[0])
        # on the CPU where workers render: a copy cached on their GPU here would only take its memory
        subject = load_subject(config, device if scheduler is None and workers == 0 else "cpu")
        check_item_geometry(subject, item_pose(first, subject.center), item_rig(first, subject.center), indices[0])
    if scheduler is not None or workers > 0:
        require("distributed", "dask", "rendering on Dask workers (workers > 0 or a scheduler)",
                "use workers=0 (stereodrr dataset --workers 0) to render in this process")
    if scheduler is not None:
        probe_scheduler(scheduler)
    prepare_output(out, config, indices, resume, write=False)
    with dataset_lock(out, shard, n):
        root = prepare_output(out, config, indices, resume)
        todo = [i for i in indices if not is_complete(root, i)]
        bar = tqdm(total=len(todo), desc=f"items (shard {shard[0]}/{shard[1]})", unit="item", disable=not progress)
        failed: dict[int, str] = {}
        written = 0
        with bar:
            if scheduler is None and workers == 0:
                written, failed = _run_here(todo, root, config, bar)
            elif todo:
                written, failed = _run_dask(todo, root, config, workers, scheduler, threads, bar)
        # A worker that died mid-item (and was not retried) could not clean up after itself: every
        # task of this run has ended, so any of its items still without a record is partial.
        remove_incomplete(root, todo)
        rows, manifest_error = 0, None
        try:
            rows = len(rebuild_manifest(root))
        except OSError as exc:  # full disk: the previous manifest stays (atomic write), the items too
            manifest_error = f"{root / MANIFEST_FILE}: not rebuilt ({exc.strerror or exc}); the previous " \
                             "manifest and every written item are intact: free space and rerun with --resume"
        beyond = [i for i in complete_items(root) if i >= n]
        if beyond:  # a resumed run with a smaller n: the manifest lists every complete item
            warnings.warn(f"output {str(root)!r} holds {len(beyond)} item(s) at or past n = {n} (first: {beyond[0]}) "
                          "from an earlier, larger run; the manifest lists them too: delete their folders or use "
                          "the larger n", stacklevel=2)
    return GenerationReport(root, len(indices), len(indices) - len(todo), written, dict(sorted(failed.items())),
                            rows, manifest_error)


def _check_arguments(config: Mapping[str, Any], n: int, workers: Any, threads: int, scheduler: str | None) -> None:
    """:func:`generate_dataset`'s arguments, before anything is loaded or written."""
    missing = sorted(set(DEFAULT_CONFIG) - set(config)) if isinstance(config, Mapping) else ["(all)"]
    if missing:
        raise ValueError(f"config: expected a config from validate_config or load_config, without section(s) "
                         f"{missing}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers: expected a non-negative integer or a scheduler's address, got {workers!r}")
    if int(threads) != threads or threads < 1:
        raise ValueError(f"threads: expected a positive integer, got {threads}")
    device = config["render"]["device"]
    if scheduler is None and device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"render.device: {device!r} requested but CUDA is not available on this machine")
    if int(n) != n or not 0 <= n <= MAX_INT64:
        raise ValueError(f"n: expected a number of items in [0, 2^63 - 1], got {n}")


def probe_scheduler(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing listens at a ``tcp://host:port`` scheduler address (other schemes
    are left to Dask's own connect, bounded by :data:`SCHEDULER_TIMEOUT_S`).

    Raises:
        ConnectionError: the address is malformed or refuses the connection.
    """
    m = re.fullmatch(r"(?:tcp://)?\[?([^\]/]+?)\]?:(\d+)/?", address.strip())
    if not m:
        if "://" in address and not address.startswith("tcp://"):
            return
        raise ValueError(f"scheduler {address!r}: expected an address tcp://host:port")
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectionError(f"scheduler {address!r}: cannot connect ({reason}); is the Dask scheduler running "
                              "there?") from None


class ItemGeometryError(ValueError):
    """An item whose sampled pose and rig cannot image its subject: it fails the same way on every
    run (an item depends only on the seed and its index), so it is not retried."""


def check_item_geometry(subject: Subject, pose: np.ndarray, rig: StereoRig, index: int) -> None:
    """Refuse an item whose rig cannot image its posed subject: a source inside or beside the
    subject's box (a corner at or behind the source), or a view the box's shadow misses.

    Raises:
        ItemGeometryError: naming the item and the view.
    """
    corners = transform_points(pose, subject.volume.corners())
    for name, cam in rig.cameras.items():
        uv, depth = cam.project(corners)
        if not np.all(depth > 0):
            raise ItemGeometryError(f"item {index}, view {name!r}: the subject's box reaches the X-ray source or behind it "
                             f"(corner depths {depth.min():.1f} to {depth.max():.1f} mm): increase rig.sid_mm or move "
                             "the subject (pose.translation_mm)")
        lo, hi = uv.min(0), uv.max(0)
        if hi[0] < -0.5 or lo[0] > cam.width - 0.5 or hi[1] < -0.5 or lo[1] > cam.height - 0.5:
            raise ItemGeometryError(f"item {index}, view {name!r}: the subject projects to u {lo[0]:.0f}..{hi[0]:.0f}, "
                             f"v {lo[1]:.0f}..{hi[1]:.0f}, off the {cam.width} x {cam.height} detector: check "
                             "pose.translation_mm, rig.pixel_spacing_mm and rig.detector_px")


def check_subject_and_memory(config: Mapping[str, Any], processes: int = 1) -> None:
    """Validate the subject file once, up front, and refuse items that cannot fit the memory budget.

    The volume of a ``volume`` subject is read in full here (so a truncated or corrupt file
    fails before any item, with its own message, not once per item); a ``phantom`` subject's
    definition is parsed. The estimate counts the subject volume and the detector buffers of
    the largest detector for every view, times the local worker processes.

    Raises:
        ValueError, FileNotFoundError: the subject file is unreadable (the message names it).
        ResourceError: over the budget (the message names the sizes).
    """
    subj = config["subject"]
    if subj["kind"] == "torso":
        subject_bytes = voxelize_bytes(*subj["size"])  # the torso phantom is voxelized onto that grid
        what = f"torso of {' x '.join(map(str, subj['size']))} voxels"
    elif subj["kind"] == "volume":
        vol = load_volume(subj["path"])
        size = np.asarray(vol.size, dtype=np.float64)
        if subj["spacing_mm"] is not None:
            size = np.maximum(np.round(size * vol.spacing / subj["spacing_mm"]), 1)
        subject_bytes = int(np.prod(size)) * 4 * 3
        what = f"volume {subj['path']} ({' x '.join(str(int(v)) for v in size)} voxels)"
    else:
        from ..phantoms import load_phantom
        from ..phantoms.voxelize import phantom_grid

        grid = phantom_grid(load_phantom(subj["path"]), subj["voxel_mm"])[3]
        subject_bytes = voxelize_bytes(*grid)
        what = f"phantom {subj['path']} at {subj['voxel_mm']:g} mm ({' x '.join(map(str, grid))} voxels)"
    rig = config["rig"]
    w, h = max(rig["detector_px"], key=lambda s: s[0] * s[1])
    image_bytes = render_bytes([(w, h)] * rig["views"], ITEM_BYTES_PER_PIXEL)
    check_memory(processes * (subject_bytes + image_bytes),
                 f"dataset items ({processes} process(es), each the {what} and {rig['views']} views of up to "
                 f"{w} x {h} px)")

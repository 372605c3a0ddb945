"""On-disk layout of a generated dataset, the per-item completion records, and the Parquet
manifest rebuilt from them.

Layout of a dataset folder::

    dataset.json                         config, its digest, the input files' digests, the package version
    manifest.parquet                     one row per view of every complete item
    items/0000/0000042/left.png          one image per view (16-bit PNG or float32 TIFF)
    items/0000/0000042/right.png
    items/0000/0000042/item.json         the item's record: written last, marks it complete

Every file is written atomically (temporary file + rename, :mod:`stereodrr.fileio`), and the
record last, so an item folder without ``item.json`` is an interrupted item: a resumed run
deletes and redoes it, and the manifest, rebuilt from the records alone, never lists it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..fileio import atomic_path, atomic_write_text, read_json
from .lock import folder_mutex

__all__ = [
    "ROOT_FILE", "MANIFEST_FILE", "ITEM_RECORD", "ITEM_SCHEMA", "MANIFEST_SCHEMA",
    "item_dir", "item_record_path", "is_complete", "read_item_record", "write_item_record",
    "complete_items", "remove_incomplete", "sha256_file", "rebuild_manifest", "load_manifest",
]

ROOT_FILE = "dataset.json"
MANIFEST_FILE = "manifest.parquet"
ITEM_RECORD = "item.json"
ITEM_SCHEMA = "stereodrr.dataset.item/1"
_ITEMS = "items"
_PER_FOLDER = 1000  # items per sub-folder, so no folder grows past ~1000 entries

_f64 = pa.float64()
#: Arrow schema of the manifest: one row per view. Matrices are row-major flat lists
#: (K 9, R 9, t 3, P 12, pose 16); markers are flat lists (uv 2M, xyz 3M) in marker_ids order.
#: ``scale`` converts stored pixel values to detector counts: ``counts = pixel / scale``.
MANIFEST_SCHEMA = pa.schema([
    ("item", pa.int64()), ("view", pa.string()), ("view_index", pa.int32()), ("seed", pa.int64()),
    ("file", pa.string()), ("sha256", pa.string()), ("bytes", pa.int64()), ("format", pa.string()),
    ("scale", _f64),
    ("width", pa.int32()), ("height", pa.int32()), ("pixel_spacing_mm", _f64), ("sid_mm", _f64),
    ("sdd_mm", _f64), ("rig_kind", pa.string()), ("stereo_angle_deg", _f64),
    ("photons_per_pixel", _f64), ("noise", pa.string()), ("electronic_sigma", _f64), ("blur_px", _f64),
    ("noise_seed", pa.int64()), ("focal_spot_blur_px", _f64), ("detector", pa.string()),
    ("K", pa.list_(_f64)), ("R", pa.list_(_f64)), ("t", pa.list_(_f64)), ("P", pa.list_(_f64)),
    ("pose", pa.list_(_f64)), ("rotation_deg", pa.list_(_f64)), ("translation_mm", pa.list_(_f64)),
    ("isocenter", pa.list_(_f64)), ("marker_ids", pa.list_(pa.int64())), ("markers_uv", pa.list_(_f64)),
    ("markers_xyz", pa.list_(_f64)), ("markers_in_image", pa.list_(pa.bool_())),
])
"""Arrow schema of ``manifest.parquet``: one row per view (matrices as row-major flat lists)."""


def item_dir(root: str | os.PathLike[str], index: int) -> Path:
    """Folder of item ``index``: ``items/<index // 1000>/<index>`` (zero-padded)."""
    return Path(root) / _ITEMS / f"{index // _PER_FOLDER:04d}" / f"{index:07d}"


def item_record_path(root: str | os.PathLike[str], index: int) -> Path:
    return item_dir(root, index) / ITEM_RECORD


def is_complete(root: str | os.PathLike[str], index: int) -> bool:
    """True when item ``index`` has its record (written after all of its images)."""
    return item_record_path(root, index).is_file()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_item_record(root: str | os.PathLike[str], index: int, record: dict[str, Any]) -> Path:
    """Write the item's record atomically: the last file of an item, its completion marker."""
    path = item_record_path(root, index)
    atomic_write_text(path, json.dumps({"schema": ITEM_SCHEMA, **record}, indent=1))
    return path


def read_item_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one ``item.json``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: malformed JSON (with line and column) or not an item record.
    """
    p = Path(path)
    rec = read_json(p, "item record")
    if not isinstance(rec, dict) or rec.get("schema") != ITEM_SCHEMA or not isinstance(rec.get("views"), list):
        raise ValueError(f"item record {str(p)!r}: expected schema {ITEM_SCHEMA!r} with a 'views' list")
    return rec


def _item_folders(root: Path) -> Iterator[tuple[int, Path]]:
    base = root / _ITEMS
    if not base.is_dir():
        return
    for group in sorted(base.iterdir()):
        if not (group.is_dir() and group.name.isdigit()):
            continue
        for d in sorted(group.iterdir()):
            if d.is_dir() and d.name.isdigit():
                yield int(d.name), d


def complete_items(root: str | os.PathLike[str]) -> list[int]:
    """Indices of every complete item on disk, ascending."""
    return [i for i, d in _item_folders(Path(root)) if (d / ITEM_RECORD).is_file()]


def remove_incomplete(root: str | os.PathLike[str], indices: Iterable[int] | None = None) -> list[int]:
    """Delete the folders of interrupted items (no record) among ``indices`` (default: all).

    Only the given indices are touched, so shards sharing a folder never delete each other's
    work in progress.

    Returns:
        The indices removed.
    """
    root = Path(root)
    wanted = None if indices is None else set(indices)
    removed = []
    for i, d in _item_folders(root):
        if (wanted is None or i in wanted) and not (d / ITEM_RECORD).is_file():
            shutil.rmtree(d)
            removed.append(i)
    return removed


def _record_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    item_keys = {"item", "seed", "rig_kind", "stereo_angle_deg", "sid_mm", "sdd_mm", "pixel_spacing_mm",
                 "photons_per_pixel", "noise", "electronic_sigma", "blur_px", "noise_seed", "pose", "rotation_deg", "translation_mm",
                 "isocenter", "marker_ids", "markers_xyz"}
    shared = {k: rec[k] for k in item_keys}
    # The detector model (JSON: spectrum, layer, scatter, noise, gain, bits); absent in older records.
    shared.update(focal_spot_blur_px=rec.get("focal_spot_blur_px", 0.0), detector=rec.get("detector"))
    return [{**shared, **view} for view in rec["views"]]


def rebuild_manifest(root: str | os.PathLike[str], verify: bool = False) -> pd.DataFrame:
    """Rebuild ``manifest.parquet`` from the records of every complete item and write it atomically.

    Args:
        root: the dataset folder.
        verify: also re-hash every image and drop items whose files are missing or changed.

    Returns:
        The manifest (one row per view, sorted by item then view order).
    """
    root = Path(root)
    # One rebuild of the folder at a time (runs of other shards rebuild it too): the last one
    # lists every item complete when it started, and a temporary manifest seen here is not
    # another run's write in progress but a killed run's leftover (atomic_path names them
    # ".<name>.*").
    with folder_mutex(root):
        for leftover in root.glob(f".{MANIFEST_FILE}.*"):
            leftover.unlink(missing_ok=True)
        rows: list[dict[str, Any]] = []
        for i in complete_items(root):
            rec = read_item_record(item_record_path(root, i))
            views = _record_rows(rec)
            if verify and not all((root / v["file"]).is_file() and sha256_file(root / v["file"]) == v["sha256"]
                                  for v in views):
                continue
            rows.extend(views)
        table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        with atomic_path(root / MANIFEST_FILE) as tmp:
            pq.write_table(table, tmp)
    return table.to_pandas()


def load_manifest(root: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a dataset's ``manifest.parquet``.

    Raises:
        FileNotFoundError: the folder has no manifest.
        ValueError: the file is not a Parquet table with the manifest's columns.
    """
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"dataset {str(root)!r} has no {MANIFEST_FILE} (generate it first)")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{str(path)!r}: not a readable Parquet file ({exc})") from None
    missing = sorted(set(MANIFEST_SCHEMA.names) - set(table.column_names))
    if missing:
        raise ValueError(f"{str(path)!r}: missing manifest column(s) {missing}")
    return table.to_pandas()

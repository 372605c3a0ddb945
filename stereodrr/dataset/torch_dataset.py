"""A ``torch.utils.data.Dataset`` over a generated stereo dataset: one sample per item, holding
every view's image and geometry, read through the Parquet manifest.

Images can be returned as the stored values, as detector counts (``stored / scale``) or as the
negative-log line-integral estimate ``-log(max((counts - offset) / gain, 0.5) / I0)`` with the
item's detector gain and offset (:meth:`stereodrr.imaging.DetectorModel.negative_log`), the
usual network input.

Items rendered through an image intensifier (``detector.distortion``) hold ``markers_uv`` in the
recorded (distorted) image, where the shadows are; ``P`` is the ideal pinhole, so ``P X`` lands
on the corrected image, not on ``markers_uv``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..imaging import DetectorModel
from .manifest import load_manifest, sha256_file

__all__ = ["StereoDRRDataset", "IMAGE_KINDS"]

IMAGE_KINDS = ("stored", "counts", "line_integral")


def _stack(rows: Any, column: str, shape: tuple[int, ...]) -> Tensor:
    return torch.as_tensor(np.stack([np.array(v, dtype=np.float64).reshape(shape) for v in rows[column]]))


def _detector(description: str, photons: float) -> DetectorModel:
    """What :meth:`~stereodrr.imaging.DetectorModel.negative_log` needs of an item's detector: its
    gain and offset (from the manifest's ``detector`` JSON) and its open-field photons."""
    d = json.loads(description) if description else {}
    return DetectorModel(photons=photons, gain=float(d.get("gain", 1.0)), offset=float(d.get("offset", 0.0)))


class StereoDRRDataset(Dataset):
    """Items of a dataset folder written by :func:`stereodrr.dataset.generate_dataset`.

    Each sample is a dict (``V`` views, ``M`` markers; geometry float64 as stored)::

        image        (V, H, W) float32   per ``image`` (see the module docstring)
        K, R         (V, 3, 3);  t (V, 3);  P (V, 3, 4)  OpenCV world -> pixel
        pose         (4, 4)   subject pose applied to the item (world mm)
        isocenter    (3,);  stereo_angle_deg, photons_per_pixel  () float64;  item () int64
        views        list of V view names
        marker_ids   (M,) int64;  markers_xyz (M, 3) world mm;  markers_uv (V, M, 2) pixels

    Items whose detectors differ in size cannot share a batch: sample one detector size in the
    config (or batch with ``batch_size=1``).

    Args:
        root: dataset folder.
        views: view names to return, in this order (default: every view of the first item).
        image: ``"stored"``, ``"counts"`` or ``"line_integral"``.
        verify: check every image's SHA-256 against the manifest when it is read.
        transform: optional callable applied to each sample dict.

    Raises:
        FileNotFoundError: no manifest in ``root``.
        ValueError: unknown ``image`` kind, an empty manifest, or views missing from an item.
    """

    def __init__(self, root: str | os.PathLike[str], *, views: Sequence[str] | None = None, image: str = "line_integral",
                 verify: bool = False, transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        if image not in IMAGE_KINDS:
            raise ValueError(f"image: expected one of {IMAGE_KINDS}, got {image!r}")
        self.root = Path(root)
        manifest = load_manifest(self.root)
        if manifest.empty:
            raise ValueError(f"dataset {str(self.root)!r}: the manifest lists no complete item")
        self.views = list(views) if views is not None else list(
            manifest[manifest["item"] == manifest["item"].iloc[0]].sort_values("view_index")["view"])
        groups = {int(i): g.set_index("view") for i, g in manifest.groupby("item", sort=True)}
        for i, g in groups.items():
            missing = [v for v in self.views if v not in g.index]
            if missing:
                raise ValueError(f"dataset {str(self.root)!r}: item {i} has no view(s) {missing} (it has {list(g.index)})")
        self.items = sorted(groups)
        self._groups = groups
        self.image = image
        self.verify = verify
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, row: Any) -> np.ndarray:
        path = self.root / row["file"]
        if not path.is_file():
            raise FileNotFoundError(f"dataset image {str(path)!r} is missing")
        if self.verify and sha256_file(path) != row["sha256"]:
            raise ValueError(f"dataset image {str(path)!r}: checksum differs from the manifest (file changed or corrupt)")
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None or img.shape != (row["height"], row["width"]):
            raise ValueError(f"dataset image {str(path)!r}: unreadable or not {row['height']}x{row['width']}")
        return img.astype(np.float32)

    def __getitem__(self, k: int) -> dict[str, Any]:
        if not -len(self) <= k < len(self):
            raise IndexError(f"item {k} out of range for a dataset of {len(self)} items")
        item = self.items[k]
        rows = self._groups[item].loc[self.views]
        first = rows.iloc[0]
        # The item's detector (one for all its views) turns counts into line integrals.
        detector = (_detector(first["detector"], float(first["photons_per_pixel"])) if self.image == "line_integral"
                    else None)
        images = []
        for _, row in rows.iterrows():
            img = torch.from_numpy(self._read(row))
            if self.image != "stored":
                img = img / float(row["scale"])
            if detector is not None:
                img = detector.negative_log(img)
            images.append(img)
        n_markers = len(first["marker_ids"])
        sample = {
            "image": torch.stack(images),
            "K": _stack(rows, "K", (3, 3)), "R": _stack(rows, "R", (3, 3)), "t": _stack(rows, "t", (3,)),
            "P": _stack(rows, "P", (3, 4)),
            "pose": torch.as_tensor(np.array(first["pose"], dtype=np.float64).reshape(4, 4)),
            "isocenter": torch.as_tensor(np.array(first["isocenter"], dtype=np.float64)),
            "stereo_angle_deg": torch.tensor(float(first["stereo_angle_deg"]), dtype=torch.float64),
            "photons_per_pixel": torch.tensor(float(first["photons_per_pixel"]), dtype=torch.float64),
            "item": torch.tensor(item, dtype=torch.int64),
            "views": list(self.views),
            "marker_ids": torch.as_tensor(np.array(first["marker_ids"], dtype=np.int64)),
            "markers_xyz": torch.as_tensor(np.array(first["markers_xyz"], dtype=np.float64).reshape(n_markers, 3)),
            "markers_uv": _stack(rows, "markers_uv", (n_markers, 2)),
        }
        return self.transform(sample) if self.transform is not None else sample

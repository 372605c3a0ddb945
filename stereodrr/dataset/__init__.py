"""Stereo dataset generation that scales out, and a torch Dataset to train on it.

Pipeline (one item = one rig, one subject pose, one dose, all views)::

    load_config(cfg.json) -> config          validated, defaults filled (config.py)
    sample_item(config, i) -> ItemSample     depends only on (seed, i) (sample.py)
    render_item(config, i) -> RenderedItem   renderer + analytic markers + detector (generate.py)
    write_item(root, config, i)              images, then item.json (the completion marker)
    generate_dataset(config, out, n, resume=, shard=, workers=N or "tcp://...")   Dask, tqdm
    rebuild_manifest(root) -> DataFrame      manifest.parquet: one row per view (manifest.py)
    StereoDRRDataset(root)                   torch Dataset: images + K, R, t, P, pose, markers

Command line: ``stereodrr dataset --config cfg.json -o out/ --n 10000 [--resume]
[--shard i/n] [--workers N | --scheduler tcp://host:port]``.
"""

from .config import DEFAULT_CONFIG, SCHEMA, config_digest, load_config, validate_config
from .generate import (
    GenerationReport,
    ItemGeometryError,
    RenderedItem,
    RenderedView,
    generate_dataset,
    parse_shard,
    prepare_output,
    render_item,
    shard_indices,
    write_item,
)
from .manifest import MANIFEST_SCHEMA, complete_items, item_dir, load_manifest, rebuild_manifest
from .sample import ItemSample, item_detector, item_pose, item_rig, item_rng, sample_item
from .subject import Subject, load_subject, posed_volume
from .torch_dataset import StereoDRRDataset

__all__ = [
    "DEFAULT_CONFIG", "SCHEMA", "config_digest", "load_config", "validate_config",
    "GenerationReport", "ItemGeometryError", "RenderedItem", "RenderedView", "generate_dataset", "parse_shard", "prepare_output",
    "render_item", "shard_indices", "write_item",
    "MANIFEST_SCHEMA", "complete_items", "item_dir", "load_manifest", "rebuild_manifest",
    "ItemSample", "item_detector", "item_pose", "item_rig", "item_rng", "sample_item",
    "Subject", "load_subject", "posed_volume",
    "StereoDRRDataset",
]

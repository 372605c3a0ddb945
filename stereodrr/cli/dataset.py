"""``stereodrr dataset``: generate a stereo DRR dataset (images + Parquet manifest), resumable,
shardable, on a local Dask cluster or a running scheduler."""

from __future__ import annotations

import argparse
import sys

from ..dataset import generate_dataset, load_config, parse_shard
from ..resources import MAX_INT64
from ._args import UsageError, input_file, integer, output_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset", help="generate a stereo DRR dataset (images + manifest.parquet)",
        description="Per item: sample a rig, a subject pose and a dose from the config, render every view "
                    "with the detector model, write the images and the item record; then rebuild the manifest.")
    p.add_argument("--config", required=True, help="dataset config (JSON, schema stereodrr.dataset/1)")
    p.add_argument("-o", "--output", required=True, help="dataset folder")
    p.add_argument("--n", type=integer(0, MAX_INT64, what="item count"), required=True, help="number of items in the dataset")
    p.add_argument("--resume", action="store_true", help="continue the dataset in --output (same config)")
    p.add_argument("--shard", default="0/1",
                   help="do only shard i of n (items k with k mod n == i), e.g. 0/4; shards may share --output. "
                        "When shards ran at once, finish with one --resume run without --shard: it renders "
                        "nothing and rebuilds the manifest from every complete item")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=integer(0, 1024, what="worker count"), default=0,
                       help="local Dask worker processes (needs the dask extra; default 0: render in this process)")
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--threads", type=integer(1, 1024, what="thread count"), default=1, help="CPU threads per Dask worker (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None  # the message starts "shard: "
    output_folder(args.output)
    config = load_config(input_file(args.config, "--config", "config file"))
    report = generate_dataset(config, args.output, args.n, resume=args.resume, shard=shard,
                              workers=args.scheduler if args.scheduler is not None else args.workers,
                              threads=args.threads,
                              progress=not args.quiet)
    manifest = (f"manifest lists {report.manifest_rows} view(s)" if report.manifest_error is None
                else "manifest NOT rebuilt")
    print(f"{report.root}: {report.written} item(s) written, {report.skipped} already complete, "
          f"{len(report.failed)} failed; {manifest}")
    errors = set(report.failed.values())
    if report.failed and len(errors) == 1 and len(report.failed) > 1:
        # One cause for every failed item (e.g. the disk is full): said once.
        print(f"{len(report.failed)} items failed ({min(report.failed)}..{max(report.failed)}), all with: "
              f"{errors.pop()}", file=sys.stderr)
    else:
        for index, error in report.failed.items():
            print(f"item {index} failed: {error}", file=sys.stderr)
    if report.manifest_error is not None:
        print(f"stereodrr dataset: error: {report.manifest_error}", file=sys.stderr)
    elif report.failed:
        fixed = len(report.failed) - len(report.retryable)
        if fixed:  # an item is a function of the seed and its index: these fail on every run
            print(f"{fixed} item(s) cannot image the subject with this config's pose and rig ranges and would fail "
                  "again: narrow pose.translation_mm / pose.rotation_deg or widen the detector, in a new folder",
                  file=sys.stderr)
        if report.retryable:
            print("rerun with --resume to retry the other failed items" if fixed else
                  "rerun with --resume to retry the failed items", file=sys.stderr)
    return 1 if report.failed or report.manifest_error else 0

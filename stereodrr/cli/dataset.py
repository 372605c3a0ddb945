"""``stereodrr dataset``: generate a stereo DRR dataset (images + Parquet manifest), resumable,
shardable, on a local Dask cluster or a running scheduler."""

from __future__ import annotations

import argparse
import sys

from ..dataset import generate_dataset, load_config, parse_shard


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset", help="generate a stereo DRR dataset (images + manifest.parquet)",
        description="Per item: sample a rig, a subject pose and a dose from the config, render every view "
                    "with the detector model, write the images and the item record; then rebuild the manifest.")
    p.add_argument("--config", required=True, help="dataset config (JSON, schema stereodrr.dataset/1)")
    p.add_argument("-o", "--output", required=True, help="dataset folder")
    p.add_argument("--n", type=int, required=True, help="number of items in the dataset")
    p.add_argument("--resume", action="store_true", help="continue the dataset in --output (same config)")
    p.add_argument("--shard", default="0/1",
                   help="do only shard i of n (items k with k mod n == i), e.g. 0/4; shards may share --output. "
                        "When shards ran at once, finish with one --resume run without --shard: it renders "
                        "nothing and rebuilds the manifest from every complete item")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=1,
                       help="local Dask worker processes (default 1; 0 renders in this process without Dask)")
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per Dask worker (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    report = generate_dataset(config, args.output, args.n, resume=args.resume, shard=parse_shard(args.shard),
                              workers=args.workers, scheduler=args.scheduler, threads=args.threads,
                              progress=not args.quiet)
    print(f"{report.root}: {report.written} item(s) written, {report.skipped} already complete, "
          f"{len(report.failed)} failed; manifest lists {report.manifest_rows} view(s)")
    for index, error in report.failed.items():
        print(f"item {index} failed: {error}", file=sys.stderr)
    if report.failed:
        print("rerun with --resume to retry the failed items", file=sys.stderr)
    return 1 if report.failed else 0

"""The ``stereodrr`` console script: one sub-command per module in this package.

Each sub-command module exposes ``add_parser(subparsers)`` that registers its parser and sets
``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Sequence

from .. import __version__

# Sub-command modules, in the order `--help` lists them.
COMMANDS = ["rig", "phantom", "render", "dataset", "calibrate", "demo", "register"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stereodrr",
        description="Stereo X-ray simulation and calibration: rigs, phantoms, DRRs, calibration, registration.",
    )
    parser.add_argument("--version", action="version", version=f"stereodrr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Warnings (e.g. a stereo angle outside 3-7 deg) reach the user as one line, not a traceback.
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"stereodrr {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

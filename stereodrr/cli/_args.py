"""Argument checks shared by the sub-commands: argparse ``type=`` factories for numbers with a
range, and output-path checks run before any work, so a bad value fails at once with the
user's option name and nothing is written.

Usage errors (a bad argument) exit with status 2, failures with 1 (see :mod:`stereodrr.cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

if TYPE_CHECKING:
    import torch

    from ..distortion import DistortionMap
    from ..trial import Trial
    from ..trial.frames import Polarity

__all__ = ["UsageError", "bad_argument", "expand_home", "distinct_files", "number", "integer", "torch_device", "output_folder", "output_file", "input_file", "frame_selection",
           "select_frames", "add_trial_arguments", "load_cli_trial", "load_view_maps", "with_polarity"]


class UsageError(ValueError):
    """A command-line argument is invalid (exit status 2)."""


@contextlib.contextmanager
def bad_argument() -> Iterator[None]:
    """Within the block, a ``ValueError`` is a bad argument (exit status 2, not 1): for the
    library's own checks of values the user typed (a preset's name, a tube potential, a
    filter), which only the library knows. Keep file reads out of the block: a malformed file
    is a failure."""
    try:
        yield
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def distinct_files(paths: Sequence[str], option: str, views: Sequence[str]) -> None:
    """Refuse one file given for two views (also through a symlink or another spelling of its
    path): each view has its own exposure, and the same image twice makes a degenerate pair
    whose failure (a planar F, a registration without depth) would not say why.

    Raises:
        UsageError: two of ``paths`` are one file.
    """
    seen: dict[tuple[int, int], int] = {}
    for k, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:  # a missing file is the reader's error, with its own message
            continue
        first = seen.setdefault((st.st_dev, st.st_ino), k)
        if first != k:
            raise UsageError(f"{option}: {paths[first]} and {path} are one file, given for views {views[first]!r} "
                             f"and {views[k]!r}; give each view its own image")


def expand_home(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with a leading ``~`` or ``~user`` of its text values (alone or in a list)
    expanded, as the shell does for a bare word but not for a quoted one or ``--output=~/out``:
    without this, ``-o "~/out"`` made a folder named ``~`` in the working directory and
    ``--rig "~/rig.json"`` was not found. No other value of an option starts with ``~``."""
    def expand(v: object) -> object:
        if isinstance(v, str) and v.startswith("~"):
            return os.path.expanduser(v)
        if isinstance(v, list):
            return [expand(x) for x in v]
        return v

    for key, value in vars(args).items():
        setattr(args, key, expand(value))
    return args


def number(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False,
           what: str = "number") -> Callable[[str], float]:
    """An argparse ``type`` for a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        bad = not math.isfinite(v) or (lo is not None and (v < lo or (open_lo and v <= lo))) \
            or (hi is not None and v > hi)
        if bad:
            raise argparse.ArgumentTypeError(f"expected a finite {what}{_interval(lo, hi, open_lo)}, got {text!r}")
        return v

    return parse


def integer(lo: int | None = None, hi: int | None = None, *, what: str = "count") -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[lo, hi]``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer ({what}), got {text!r}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expected an integer ({what}){_interval(lo, hi, False)}, got {text!r}")
        return v

    return parse


def torch_device(text: str) -> torch.device:
    """An argparse ``type``: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``, ...),
    refused at once rather than when the first tensor moves there."""
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cuda, cuda:1 or cpu, got {text!r}") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                                         "available to torch")
    return device


def _interval(lo: float | None, hi: float | None, open_lo: bool) -> str:
    def g(x: float | None) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" > {g(lo)}" if open_lo else f" >= {g(lo)}"
    if lo is None:
        return f" <= {g(hi)}"
    return f" in {'(' if open_lo else '['}{g(lo)}, {g(hi)}]"


def _writable_parent(p: Path, option: str) -> None:
    """The nearest existing ancestor of ``p`` must be a writable folder."""
    parent = p.parent if str(p.parent) else Path(".")
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {str(p)!r}: {str(parent)!r} is a file, expected a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {str(p)!r}: folder {str(parent)!r} is not writable")


def output_folder(path: str | os.PathLike[str], option: str = "-o/--output") -> Path:
    """Check an output folder before any work: a folder or a new path, in a writable place.

    Raises:
        UsageError: it names a file, lies under a file, or cannot be created or written.
    """
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise UsageError(f"{option} {str(p)!r}: is a file, expected a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"{option} {str(p)!r}: folder is not writable")
        return p
    _writable_parent(p, option)
    return p


def output_file(path: str | os.PathLike[str], option: str = "-o/--output") -> Path:
    """Check an output file before any work: a file or a new path, in a writable place.

    Raises:
        UsageError: it names a folder, lies under a file, or its folder is not writable.
    """
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {str(p)!r}: is a folder, expected a file name")
    if p.exists() and not os.access(p, os.W_OK):
        raise UsageError(f"{option} {str(p)!r}: file is not writable")
    _writable_parent(p, option)
    return p


def input_file(path: str | os.PathLike[str], option: str, what: str = "file") -> Path:
    """An existing file (not a folder).

    Raises:
        FileNotFoundError: missing.
        UsageError: a folder.
    """
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {str(p)!r}: is a folder, expected a {what}")
    if not p.exists():
        raise FileNotFoundError(f"{option} {str(p)!r}: no such {what}")
    return p


def frame_selection(text: str) -> tuple[str, ...]:
    """An argparse ``type`` for frames of a trial (0-based, as Autoscoper's frame index and the
    row of a ``.tra``): ``A:B`` (A up to B, B excluded; either may be left out), ``N``, or a
    comma-separated list of those. Resolved against the trial by :func:`select_frames`."""
    parts = tuple(p.strip() for p in text.split(","))
    for p in parts:
        bits = p.split(":")
        if len(bits) > 2 or not all(b.strip().isdigit() for b in bits if b.strip()) or p == "":
            raise argparse.ArgumentTypeError(f"expected frames as A:B, N or a comma-separated list of them "
                                             f"(0-based), got {text!r}")
    return parts


def select_frames(spec: tuple[str, ...] | None, n_frames: int, option: str = "--frames") -> list[int]:
    """The frame indices a :func:`frame_selection` names (all frames for ``None``), sorted, unique.

    Raises:
        UsageError: a frame beyond the trial's, or an empty selection.
    """
    if spec is None:
        return list(range(n_frames))
    chosen: set[int] = set()
    for p in spec:
        if ":" in p:
            a, b = (x.strip() for x in p.split(":"))
            lo, hi = int(a) if a else 0, int(b) if b else n_frames
            if hi > n_frames:
                raise UsageError(f"{option} {p}: the trial has frames 0..{n_frames - 1}")
            chosen.update(range(lo, hi))
        else:
            if int(p) >= n_frames:
                raise UsageError(f"{option} {p}: the trial has frames 0..{n_frames - 1}")
            chosen.add(int(p))
    if not chosen:
        raise UsageError(f"{option} {','.join(spec)}: selects no frame")
    return sorted(chosen)


def add_trial_arguments(p: argparse.ArgumentParser) -> None:
    """``--trial``, ``--distortion`` and ``--polarity`` of the commands that read a real trial."""
    p.add_argument("--trial", required=True, help="Autoscoper trial file (.cfg)")
    p.add_argument("--distortion", nargs="+", default=None, metavar="MAP",
                   help="frames not yet corrected for the image intensifier: one distortion.json per camera, in the "
                        "trial's camera order (stereodrr distortion measures them from grid images)")
    p.add_argument("--polarity", choices=("auto", "bright_air", "dark_air"), default="auto",
                   help="how the frames show air: bright_air (raw X-ray frames), dark_air (an inverted export) or "
                        "auto (default: from each camera's round intensifier field; frames without one, e.g. a flat "
                        "panel's, are taken as bright_air with a warning)")


def load_cli_trial(args: argparse.Namespace, volumes: bool = True) -> Trial:
    """The trial of ``--trial`` with the maps of ``--distortion`` (one per camera, in order) and
    the frames' ``--polarity``; ``volumes=False``: cameras and frames only."""
    from dataclasses import replace

    from ..trial import load_trial

    trial = load_trial(input_file(args.trial, "--trial", "trial file"), volumes=volumes)
    maps = load_view_maps(args.distortion, trial.rig.names)
    return with_polarity(trial if maps is None else replace(trial, distortion=maps), args.polarity)


def with_polarity(trial: Trial, polarity: Polarity) -> Trial:
    """``trial`` with its frames read as ``polarity``; with ``auto``, a warning for each camera
    whose frames show no round intensifier field: only that field's dark (or bright) outside
    tells an inverted export from a raw frame, and without one the frames are taken as raw (an
    inverted export would then be read as the negative of its anatomy, silently)."""
    if polarity == "auto":
        flat = [c for c in trial.rig.names if not trial.field(c).round]
        if flat:
            warnings.warn(f"camera(s) {', '.join(flat)}: the frames show no round intensifier field, so their "
                          "polarity cannot be found from it; taken as raw frames (air bright). Give --polarity dark_air "
                          "if they are an inverted export (air dark, bone bright)", UserWarning, stacklevel=2)
    read = copy.copy(trial)  # not dataclasses.replace: no second check of every frame
    read.polarity = polarity  # the fields found so far (shared) hold for any polarity
    return read


def load_view_maps(paths: Sequence[str] | None, views: Sequence[str]) -> dict[str, DistortionMap] | None:
    """The ``--distortion`` maps, one per view in the given order (``None`` without the option).

    Raises:
        UsageError: not one map per view.
    """
    if paths is None:
        return None
    from ..distortion import load_distortion

    if len(paths) != len(views):
        raise UsageError(f"--distortion: expected one map per view ({len(views)}: {', '.join(views)}), "
                         f"got {len(paths)}")
    return {v: load_distortion(input_file(m, "--distortion", "distortion map")) for v, m in zip(views, paths)}

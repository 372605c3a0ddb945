"""The ``stereodrr`` console script: one sub-command per module in this package.

Each sub-command module exposes ``add_parser(subparsers)`` that registers its parser and sets
``func`` (called with the parsed namespace, returning an exit code).

One error boundary: whatever goes wrong -- a bad argument, a missing or malformed file, an
unwritable output, a full disk, a job over the memory budget -- ends as one line on stderr,
``stereodrr <command>: error: <what and where>``, with exit status 2 for usage errors (a bad
argument) and 1 for failures; ``--debug`` shows the traceback instead.

Plugins: an installed package that declares an entry point in the group :data:`PLUGIN_GROUP`
(``[project.entry-points."stereodrr.plugins"]``, a module or a callable) is imported before the
parser is built, so what it adds to the registries (similarities, optimisers, backends, ...)
is among the sub-commands' choices.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
import traceback
import warnings
from typing import NoReturn, Sequence

from .. import __version__
from ._args import UsageError, expand_home

# Sub-command modules, in the order `--help` lists them.
COMMANDS = ["rig", "phantom", "render", "dataset", "calibrate", "demo", "register", "distortion", "undistort", "beads", "track"]

PLUGIN_GROUP = "stereodrr.plugins"
"""The entry-point group of the packages that extend stereodrr's registries (docs/extending.md)."""

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error (``prog: error: message (see prog --help)``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def load_plugins() -> list[str]:
    """Load every entry point of :data:`PLUGIN_GROUP` (a module is imported, a callable is
    called) and return the names loaded; one that fails is named in a warning and skipped, so
    a broken plugin cannot take the command line down."""
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported, not raised
            warnings.warn(f"plugin {ep.name!r} ({ep.value}) was not loaded: {describe(exc)}", stacklevel=2)
        else:
            loaded.append(ep.name)
    return loaded


def build_parser() -> argparse.ArgumentParser:
    load_plugins()  # first: the sub-commands' choices come from the registries
    parser = Parser(
        prog="stereodrr",
        description="Stereo X-ray simulation and calibration: rigs, phantoms, DRRs, calibration, registration.",
    )
    parser.add_argument("--version", action="version", version=f"stereodrr {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    for p in sub.choices.values():  # also after the sub-command; SUPPRESS keeps a --debug given before it
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
    return parser


def describe(exc: BaseException) -> str:
    """One line for an exception: its message, with the file and cause of an OSError."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename!s}: " if exc.filename else ""
        hint = {errno.ENOSPC: " (the disk is full)", errno.EDQUOT: " (disk quota exceeded)",
                errno.EROFS: " (read-only file system)"}.get(exc.errno or 0, "")
        return f"{where}{exc.strerror}{hint}"
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'allocation failed'}); reduce the sizes or the memory budget"
    text = " ".join(str(exc).split()) if str(exc).strip() else type(exc).__name__
    if isinstance(exc, KeyError):
        text = f"missing key {text}"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Warnings (a plugin that did not load, a stereo angle outside 3-7 deg) reach the user as
    # one line, not a traceback.
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    parser = build_parser()
    args = expand_home(parser.parse_args(argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    prog = f"stereodrr {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if _stdout_closed():
            return EXIT_BROKEN_PIPE  # `stereodrr ... | head`: the reader has what it wanted
        raise
    except Exception as exc:  # the boundary: every error becomes one line (or a traceback with --debug)
        if args.debug:
            traceback.print_exc()
        usage = isinstance(exc, UsageError)
        known = isinstance(exc, (ValueError, OSError, MemoryError, RuntimeError, KeyError))
        line = describe(exc) if known else f"internal error, please report it: {type(exc).__name__}: {describe(exc)}"
        hint = "" if args.debug or usage or known else " (--debug shows the traceback)"
        print(f"{prog}: error: {line}{hint}", file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_FAILURE


def _stdout_closed() -> bool:
    """True when standard output is a pipe whose reader has gone (poll reports an error on its
    write end); stdout then points at the null device, so that the interpreter's flush at exit
    does not fail again."""
    import os
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        gone = any(ev & select.POLLERR for _fd, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (captured, closed)
        return False
    if gone:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return gone


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Run locks of a dataset folder: two runs that would render the same items are refused.

Each run registers itself in ``<dataset>/.locks/<host>.<pid>.json`` (its host, process id and
start time, and the items it covers: the shard ``i/n`` of ``n_items``) before it touches any
item, and removes the file when it ends. A run is refused when a live lock covers one of its
items -- shards of one dataset that run at once cover disjoint items and pass -- so the startup
cleanup of one run never deletes another's work in progress and no item is rendered twice.

A lock whose process is gone is stale (a killed run) and is removed: on the same host when no
process has that pid (or the pid belongs to a process started later), on another host never
(its process cannot be checked from here): the message names the file to delete by hand.
Registration itself, the check and creation of ``dataset.json`` and the manifest's rebuild are
serialised with ``flock`` on the dataset folder (:func:`folder_mutex`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

__all__ = ["LOCK_DIR", "DatasetBusyError", "dataset_lock", "folder_mutex", "shards_overlap"]

LOCK_DIR = ".locks"


class DatasetBusyError(ValueError):
    """Another live run covers items of this run."""


def shards_overlap(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """Whether shards ``(i, n, n_items)`` share an item: some ``k < min(n_items)`` with
    ``k = i mod n`` and ``k = j mod m`` (the residues repeat every ``lcm(n, m)``)."""
    (i, n, na), (j, m, nb) = a, b
    stop = min(na, nb, i + n * m // math.gcd(n, m))
    return any(k % m == j for k in range(i, stop, n))


def _process_start(pid: int) -> float | None:
    """Start time of a local process (seconds since boot, from /proc), None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _alive(lock: dict[str, Any]) -> bool:
    """Whether a lock's process still runs (always assumed for another host)."""
    if lock.get("host") != socket.gethostname():
        return True
    pid = int(lock.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start, recorded = _process_start(pid), lock.get("proc_start")
    # The pid was reused by a process started after the lock was written.
    return not (start is not None and recorded is not None and abs(start - float(recorded)) > 1.0)


@contextlib.contextmanager
def folder_mutex(root: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive ``flock`` on the dataset folder itself (no file left behind): held while a run
    registers its lock, while ``dataset.json`` is checked or created, and while the manifest is
    rebuilt, so concurrent runs on one folder never see each other's half-done steps. Not
    re-entrant: a process must not take it twice."""
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def dataset_lock(root: str | os.PathLike[str], shard: tuple[int, int], n_items: int) -> Iterator[Path]:
    """Hold a run lock on ``root`` (created if needed) for the items of ``shard`` (``(i, n)``)
    among ``n_items``.

    Yields the lock file; it is removed when the block ends (also on error), and ``.locks``
    with it when no other run holds one.

    Raises:
        DatasetBusyError: a live run on this folder covers one of these items.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    locks = root / LOCK_DIR
    me = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _process_start(os.getpid()),
          "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shard": list(shard), "n_items": int(n_items)}
    mine = locks / f"{me['host']}.{me['pid']}.json"
    with folder_mutex(root):
        locks.mkdir(exist_ok=True)
        for path in sorted(locks.glob("*.json")):
            try:
                other = json.loads(path.read_text(encoding="utf-8"))
                theirs = (int(other["shard"][0]), int(other["shard"][1]), int(other["n_items"]))
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                path.unlink(missing_ok=True)  # a lock cut short by a crash while it was written
                continue
            if not _alive(other):
                path.unlink(missing_ok=True)  # stale: its run was killed
                continue
            if shards_overlap((shard[0], shard[1], int(n_items)), theirs):
                _remove_if_empty(locks)
                raise DatasetBusyError(
                    f"output {str(root)!r} is in use by another run (pid {other.get('pid')} on "
                    f"{other.get('host')}, shard {theirs[0]}/{theirs[1]}, started {other.get('started')}) that "
                    f"covers items of this run; wait for it, or delete {str(path)!r} if that run is dead")
        mine.write_text(json.dumps(me), encoding="utf-8")
    try:
        yield mine
    finally:
        with folder_mutex(root):
            mine.unlink(missing_ok=True)
            _remove_if_empty(locks)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()

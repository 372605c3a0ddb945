"""File helpers shared by every stage. Atomic writes: write a temporary file beside the target, then
rename it over the target, so a reader never sees a half-written file and a failure leaves the
old file intact. Reads: a JSON reader, a numeric CSV reader and an input-file check whose errors name the file,
what it was expected to be, and the line and column of malformed JSON. Text is read as UTF-8
with an optional byte-order mark (Windows tools write one). What native readers (ITK) print
while a file is read is caught, to become part of a one-line error, and so is what tifffile
logs about a broken file (:func:`open_tiff`)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder (same suffix); rename it to ``path`` on success.

    The temporary file is removed if the block raises.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix="".join(target.suffixes) or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def check_input_file(path: str | os.PathLike[str], what: str) -> Path:
    """An existing regular file: a folder or a missing path raise, naming ``what``.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: it is a folder (or another non-file).
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a folder, expected a file")
    if not p.exists():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist")
    if not p.is_file():
        raise ValueError(f"{what} {str(p)!r} is not a regular file")
    return p


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file; errors name ``what`` and the file, and give line and column.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a folder, not UTF-8 text, or malformed JSON.
    """
    p = check_input_file(path, what)
    try:
        return json.loads(p.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def listed_files(record: str | os.PathLike[str]) -> set[str]:
    """The names of the files a run's JSON record (``report.json``, ``voxelize.json``) lists
    under ``files`` and that are still files beside it: what a re-run into that folder removes
    where it writes no file of that name. Empty without a readable record of that form."""
    folder = Path(record).parent
    try:
        names = {Path(f).name for f in read_json(record, "run record").get("files", {}).values()}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in names if (folder / n).is_file()}


def read_numeric_csv(path: str | os.PathLike[str], what: str) -> np.ndarray:
    """``(rows, columns)`` float64 of a comma-separated numeric table. Skipped: a header line
    (its first field is not a number), ``#`` comments, and lines of only spaces, tabs or commas
    (a spreadsheet's re-save leaves those at the end).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not UTF-8 text, no row of numbers, a non-numeric field, or rows of different
            lengths.
    """
    return read_numeric_csv_with_header(path, what)[0]


def read_numeric_csv_with_header(path: str | os.PathLike[str], what: str) -> tuple[np.ndarray, list[str] | None]:
    """:func:`read_numeric_csv` and the header's column names (stripped; ``None`` without a
    header), for tables whose columns may come in either order."""
    p = check_input_file(path, what)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    lines = [line for line in lines if line.strip(" \t,")]
    header = None
    if lines:
        try:
            float(lines[0].split(",", 1)[0])
        except ValueError:
            header = [name.strip() for name in lines[0].split(",")]
            lines = lines[1:]
    if not lines:  # (numpy would warn and return a (0, 1) table)
        raise ValueError(f"{p}: the {what} holds no row of numbers")
    try:
        return np.loadtxt(lines, delimiter=",", ndmin=2), header
    except ValueError as exc:
        raise ValueError(f"{p}: not a numeric CSV: {exc}") from None


def json_ready(x: Any) -> Any:
    """``x`` with numpy arrays and scalars as Python values and NaN/inf as ``None`` (JSON has no
    NaN), dict keys as strings: for ``json.dumps`` of reports."""
    if isinstance(x, dict):
        return {str(k): json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_ready(x.tolist())
    if isinstance(x, np.generic):
        return json_ready(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@contextlib.contextmanager
def captured_native_stderr() -> Iterator[Callable[[], str]]:
    """Collect what native code (ITK's MetaIO, GDCM) prints on file descriptor 2 during the
    block, so the user sees one error line instead of library chatter; the text is passed on to
    stderr afterwards unless the block raised (then it is part of the error message)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to capture
        yield lambda: ""
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        failed = False

        def text() -> str:
            buf.seek(0)
            return buf.read().decode("utf-8", "replace")

        try:
            yield text
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not failed and (extra := text()):
                sys.stderr.write(extra)


class _Collect(logging.Handler):
    """A logging handler that keeps the records."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def open_tiff(path: str | os.PathLike[str]) -> Iterator[Any]:
    """``tifffile.TiffFile(path)`` for the block, a broken file an error: tifffile logs a page or
    tag offset past the end of the file (a truncated copy, a corrupt chain of pages) and reads on
    with the pages before it, so a cut stack would load as fewer slices without a word. What it
    logs during the block is kept off stderr; an ERROR among it raises, and so does the block's
    own failure after a warning (a first page past the end: no page), as that warning.

    Raises:
        ValueError: tifffile logged an error (a truncated or corrupt TIFF), or a warning before
            the block failed.
    """
    import tifffile

    handler = _Collect()
    records = handler.records
    logger = logging.getLogger("tifffile")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)

    def broken(level: int) -> ValueError | None:
        said = [r.getMessage() for r in records if r.levelno >= level]
        return ValueError(f"{path}: a truncated or corrupt TIFF ({' '.join(said[0].split())})") if said else None

    try:
        with tifffile.TiffFile(path) as tif:
            yield tif
    except Exception:
        # The block failed (no page, a page out of range): what tifffile found wrong says why.
        if (exc := broken(logging.WARNING)) is not None:
            raise exc from None
        raise
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if (exc := broken(logging.ERROR)) is not None:
        raise exc


def itk_reason(message: str, native: str) -> str:
    """The informative line of an ITK exception (plus what the library printed), one line."""
    if "Unable to determine ImageIO reader" in message:
        return "no ITK reader recognises it (empty or corrupt?)"
    lines = [ln.strip() for ln in (native + "\n" + message).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Reason:", "itk::", "Description:", "Exception thrown in"))
              and "No such file or directory" not in ln]
    return " ".join((useful or lines or ["unreadable"])[-2:]).removeprefix("sitk::ERROR: ")

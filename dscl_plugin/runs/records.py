"""A comparison's shared files, safe for several processes on one folder and for a crash
mid-write: ``runs.jsonl`` (one JSON record a line) and each run's claim.

**Records.** A writer holds an exclusive ``flock`` on the file, reads it and replaces it
whole (a temporary file beside it, fsync, ``os.replace``, fsync of the folder), so a reader
sees the old file or the new one and a crash leaves the old one. An append cut off
mid-line would instead leave a fragment that the next append glues to its own record,
losing a line another process wrote. A line that does not parse (a file cut off by an
older writer, or edited by hand) is skipped with one note naming the file and the line.

**Claims.** A run is claimed by an exclusive ``flock`` on ``claim.lock`` in its folder,
held while it runs. The operating system releases the lock of a process that ends, however
it ends (on a network disk, once its server sees the client gone), so a dead process
leaves no claim behind; a pid file would need a liveness check that means nothing across
the machines sharing a disk.
"""

import fcntl
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dscl_plugin.safe_io import PathLike, writing

CLAIM_FILE = "claim.lock"


@contextmanager
def locked(path: PathLike) -> Iterator[Path]:
    """Holds an exclusive lock on the file ``path`` (created empty if missing) for the
    block; a file replaced while this waited is locked again as it is now."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
                yield path
                return
        finally:
            os.close(fd)


def read_lines(path: PathLike) -> tuple[list[tuple[str, dict[str, Any]]], list[int]]:
    """The lines of ``path`` that hold a JSON object, as ``(line, object)``, and the
    numbers (from 1) of the non-blank lines that do not; none for a missing file."""
    path = Path(path)
    if not path.is_file():
        return [], []
    kept, bad = [], []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            kept.append((line, record))
        else:
            bad.append(number)
    return kept, bad


def read_records(
    path: PathLike,
    key: Sequence[str] = ("method", "seed"),
    note: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The JSON records of ``path`` (none if it is missing); a later record with the same
    ``key`` fields replaces an earlier one. Lines that do not parse are skipped, told once
    to ``note`` (default: a ``UserWarning``) as ``"<path>: line 5 is not a complete JSON
    record (cut off mid-write?): ignored"``."""
    kept, bad = read_lines(path)
    if bad:
        where = f"line {bad[0]} is" if len(bad) == 1 else f"lines {', '.join(map(str, bad))} are"
        plural = "" if len(bad) == 1 else "s"
        message = (
            f"{path}: {where} not a complete JSON record{plural} (cut off mid-write?): ignored"
        )
        if note is None:
            warnings.warn(message, UserWarning, stacklevel=2)
        else:
            note(message)
    records = {tuple(r.get(k) for k in key): r for _, r in kept}
    return list(records.values())


def append_record(path: PathLike, record: Mapping[str, Any]) -> None:
    """Adds ``record`` as the last line of ``path`` under :func:`locked`, by replacing the
    file whole (its lines that parse, then this one), so a crash cannot leave a torn line.

    Raises:
        OSError: the file cannot be written, naming ``path``; the old file is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, tmp), locked(path):
        lines = [line for line, _ in read_lines(path)[0]]
        try:
            with open(tmp, "w") as file:
                file.write("".join(f"{line}\n" for line in [*lines, json.dumps(record)]))
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (where the OS lets a folder be synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def claim(folder: PathLike, wait: bool = False) -> Iterator[bool]:
    """Claims the run in ``folder`` (created if missing) for the block: yields True once
    this process holds the lock on ``folder/claim.lock``, or False at once when another
    process holds it and not ``wait``; with ``wait`` it blocks until that process lets go
    (it finished the run, or ended)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / CLAIM_FILE, "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            held = False
        else:
            held = True
        yield held

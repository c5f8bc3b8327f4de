"""Safe file IO: crash-safe writes of torch files, and reads that say what is wrong with a
file.

Core: no PyTorch Lightning. :func:`atomic_save` writes checkpoints and exported backbones,
:func:`load_file` reads them (``weights_only``) with one-line errors naming the file and
why; :func:`writing` makes an ``OSError`` (disk full, permission denied) name the file
written. What to do about a bad file is the caller's to say (``hint``).
"""

import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from dscl_plugin.errors import CheckpointError

PathLike = str | Path


@contextmanager
def writing(path: PathLike, *temporary: PathLike) -> Iterator[Path]:
    """A block that writes ``path``: an ``OSError`` raised in it that names no file (a
    full disk reports none) or one of the ``temporary`` files written on the way is
    raised again naming ``path``, as the same ``OSError`` subclass (``PermissionError``,
    ...)."""
    path = Path(path)
    try:
        yield path
    except OSError as error:
        unnamed = error.filename is None or error.filename in {str(t) for t in temporary}
        if error.errno is None or not unnamed:
            raise
        raise OSError(error.errno, error.strerror, str(path)) from error


def atomic_save(obj: Any, path: PathLike, keep_previous: bool = False) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``:
    a crash mid-write leaves any previous file at ``path`` intact. ``keep_previous``
    first keeps the file being replaced as :func:`previous_path` (hard link or copy).

    Raises:
        OSError: the file cannot be written (e.g. ``ENOSPC``, ``EACCES``), naming
            ``path``; the previous file at ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    buffer = io.BytesIO()  # torch's writer hides the OSError of a failed file write
    torch.save(obj, buffer)
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            if keep_previous and path.is_file():
                _replace_with_copy(path, previous_path(path))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def previous_path(path: PathLike) -> Path:
    """``last.ckpt`` -> ``last.prev.ckpt``: the checkpoint before ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _replace_with_copy(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source`` (a hard link where possible), atomically."""
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_file(path: PathLike, hint: str | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; errors name the file and why it
    cannot be read, followed by ``hint`` (what to do) if given.

    Raises:
        CheckpointError: the file is missing, not a PyTorch file, corrupt, or holds
            Python objects that are not loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: '{path}'.")
    then = f" {hint}" if hint else ""
    if not _looks_like_torch_file(path):
        raise CheckpointError(
            f"'{path}' is not a PyTorch file (torch.save writes a zip archive).{then}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"Cannot read checkpoint '{path}': {_reason(error)}.{then}") from None


def _looks_like_torch_file(path: Path) -> bool:
    """Starts like a zip archive (``torch.save``'s format, even if truncated) or a legacy
    pickle (protocol 2+)."""
    with open(path, "rb") as file:
        start = file.read(4)
    return start == b"PK\x03\x04" or (len(start) >= 2 and start[0] == 0x80 and start[1] >= 2)


def _reason(error: Exception) -> str:
    """Why ``torch.load`` failed, without torch's advice to load with ``weights_only=False``
    (which would run arbitrary code from the file)."""
    message = str(error)
    if "Weights only load failed" in message:
        return (
            "it holds Python objects other than tensors and plain containers, which are "
            "not loaded (loading them could run arbitrary code)"
        )
    first_line = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return f"the file is corrupt or truncated ({first_line[:200]})"

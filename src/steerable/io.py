"""Atomic file writing: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from steerable.errors import SteerableError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move tmp_path to `path`; on any error nothing is left.

    The file gets the mode a plain ``open`` would give it (0666 less the umask; mkstemp's
    0600 would hide it from the group), and it reaches the disk before the rename, so a crash
    leaves either the old file or the whole new one, never an empty one.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise SteerableError(f"cannot write {path}: {err.strerror or err}; choose a writable location")
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    _fsync(path.parent)  # make the rename itself durable
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _umask() -> int:
    # The umask can only be read by setting it; set it straight back.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """Flush a file, or a directory's entries, to disk where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a directory
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

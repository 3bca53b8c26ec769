"""Atomic file writing: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import os
import secrets
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
        tmp = _new_file_beside(path)
        write(tmp)
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


def _new_file_beside(path: Path) -> Path:
    """A new empty hidden file in `path`'s folder, created with mode 0666 so that the kernel
    applies the umask as it does for a plain ``open``. The umask is never read: reading it means
    setting it, and for that moment every file another thread creates would get mode 0666."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


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


def check_format_version(found: object, reads: int, where: str | Path, remake: str) -> None:
    """Refuse a file this steerable cannot read, saying why by case: its `format_version` is a
    later one (upgrade steerable), an earlier one this steerable no longer reads, or not a
    version at all. `remake` says how to write it again with this steerable, e.g. "retrain it"."""
    if type(found) is int and found == reads:
        return
    if type(found) is not int:
        why, fix = "that is not a format version (a whole number)", remake
    elif found > reads:
        why = "a later steerable wrote it"
        fix = f"upgrade steerable (pip install -U steerable) to read it, or {remake}"
    else:
        why, fix = "an earlier steerable wrote it, and this one no longer reads it", remake
    raise SteerableError(
        f"{where} has format_version {found!r}, but this steerable reads format_version {reads}: "
        f"{why}; {fix} with this version"
    )

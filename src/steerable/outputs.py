"""What a command writes: checked before any work, and one writer at a time.

Every output (a `train` --output_dir, the --out of `score`, `sample`, `evaluate`, `compare`,
`export`) is claimed before the command does any work: `check_output` refuses one that cannot
be written or that is one of the command's inputs, and `output_lock` holds a lock file beside
it, `.NAME.lock`, while the command runs, so a second command writing the same output is
refused, naming the first one's pid, instead of destroying its work.

The lock file is created with O_CREAT | O_EXCL (of two commands starting at once, exactly one
creates it) and holds {"pid", "host"}. A lock whose process is gone from this host (killed,
crashed) is stale and taken over, and so is one that names this very process without being
among the locks it holds (a container restarted after a kill reuses its host name and pids);
one from another host cannot be checked from here and is refused, naming the file to delete.
The lock is removed when the command ends, by an error too.

Under `accelerate launch` every process runs the same command: the main process (global rank
0, the one that writes) takes the lock and tells the others whether it got it, so a launch
holds one lock and all its processes stop together when it is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from steerable.errors import SteerableError

try:
    import fcntl
except ImportError:  # Windows: stale locks are taken over without serialising the takers
    fcntl = None

# A lock file this young without its record is still being written by its creator.
BEING_WRITTEN_SECONDS = 1.0
# The locks this process holds. A lock that records this process but is not among them was left
# by a dead process that had the same pid on this host (a container restarted after a kill).
_held: set[Path] = set()


def lock_path(output: str | Path) -> Path:
    """The lock file of an output: hidden beside it, so a directory's contents stay its own."""
    output = Path(output).resolve()
    return output.with_name(f".{output.name}.lock")


def check_output(
    output: str | Path,
    inputs: Mapping[str, object] | None = None,
    directory: bool = False,
    formats: Sequence[str] | None = None,
    inside_inputs: bool = True,
) -> None:
    """Refuse an output that cannot be written (its folder is a file or read-only; a file where a
    directory is wanted, or the reverse; a suffix not in `formats`) or that is one of `inputs`
    (option name -> the path it was given; values that are not existing paths are skipped), or
    lies inside one unless `inside_inputs`."""
    output = Path(output)
    if formats is not None and output.suffix.lower() not in formats:
        raise SteerableError(
            f"output {output}: unknown format {output.suffix!r}; use one of {tuple(formats)}"
        )
    if directory and output.exists() and not output.is_dir():
        raise SteerableError(f"{output} is a file; give a directory to write into")
    if not directory and output.is_dir():
        raise SteerableError(f"{output} is a directory; give a file path")
    folder = output if directory else output.parent
    while not folder.exists():  # the nearest folder that exists is where it will be created
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise SteerableError(
            f"cannot write {output}: {folder} is not a writable directory; choose a writable location"
        )
    resolved = output.resolve()
    for option, value in (inputs or {}).items():
        if value is None or not Path(str(value)).exists():
            continue
        source = Path(str(value)).resolve()
        if resolved == source:
            raise SteerableError(f"{output} is the input {option}; write the output to another path")
        if not inside_inputs and source in resolved.parents:
            raise SteerableError(f"{output} is inside the input {option}; write the output elsewhere")


@contextlib.contextmanager
def output_lock(output: str | Path) -> Iterator[None]:
    """Hold the lock of `output` while the block runs (see the module docstring)."""
    lock = lock_path(output)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched:
        from steerable.stages import is_main_process

        main = is_main_process()
    else:
        main = True
    created: list[Path] = []  # folders made for the lock, removed again when left empty
    refusal = None
    if main:
        try:
            created = _make_folders(lock.parent)
            _acquire(lock, output)
        except SteerableError as err:
            refusal = str(err)
    if launched:
        from accelerate.utils import broadcast_object_list

        (refusal,) = broadcast_object_list([refusal])
    try:
        if refusal is not None:
            raise SteerableError(refusal)
        yield
    finally:
        if main:
            if refusal is None:
                _release(lock)
            for folder in reversed(created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: a refused command leaves no folders


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns those it created, outermost first."""
    missing, probe = [], folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SteerableError(f"cannot create {folder}: {err.strerror or err}; choose a writable location")
    return missing[::-1]


def _mine() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _acquire(lock: Path, output: str | Path) -> None:
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder_or_take_over(lock)
            if holder is None:
                continue  # it was stale and is gone, or is being written: try again
            where = "" if holder["host"] == socket.gethostname() else f" on {holder['host']}"
            raise SteerableError(
                f"{output} is being written by process {holder['pid']}{where} (its lock: {lock}); wait "
                f"for it to finish or write to another path (if that process is gone, delete {lock})"
            )
        except OSError as err:
            raise SteerableError(f"cannot write {lock}: {err.strerror or err}; choose a writable location")
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(_mine()) + "\n")
        _held.add(lock)
        return


def _holder_or_take_over(lock: Path) -> dict | None:
    """The record of the live process holding `lock`, or None after removing a stale lock (or
    while another process removes it, or its creator is still writing it). Takers serialise on
    flock and judge the very file they remove, so none can remove a lock taken meanwhile."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd) as handle:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another process is taking it over
                time.sleep(0.05)
                return None
        holder = _record(handle.read())
        if holder is None and time.time() - os.fstat(fd).st_mtime < BEING_WRITTEN_SECONDS:
            time.sleep(0.05)
            return None
        if holder is not None and _may_hold(holder, lock):
            return holder
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                lock.unlink()
    return None


def _record(text: str) -> dict | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    valid = isinstance(record, dict) and isinstance(record.get("pid"), int) and record["pid"] > 0
    return record if valid and isinstance(record.get("host"), str) else None


def _may_hold(holder: dict, lock: Path) -> bool:
    """Whether the process `holder` records may still hold `lock`: one on another host cannot be
    checked from here; one on this host holds it while it lives, this process while it is held."""
    if holder["host"] != socket.gethostname():
        return True
    if holder["pid"] == os.getpid():
        return lock in _held
    return _alive(holder["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _release(lock: Path) -> None:
    _held.discard(lock)
    with contextlib.suppress(OSError):
        if _record(lock.read_text()) == _mine():
            lock.unlink()

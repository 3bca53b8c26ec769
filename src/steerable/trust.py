"""Which `py:` scorer files the user of this machine has run, so that what they made from them
loads later without --trust-remote-code, while a file from elsewhere still asks.

An objective the user typed (``steerable score -o mine=py:rewards.py:f``, a training or evaluation
run's --objective, their own config file) runs as given, and its file's path and sha256 go into
the trust store, ``$STEERABLE_HOME/trusted.json`` (default ``$XDG_DATA_HOME/steerable``, else
``~/.local/share/steerable``). The statistics and model directories made from it record the same
hash next to the objective's spec. Read back from such a file, a py: scorer runs only when its
code file is in this machine's store with the hash the file records, and still has it: a
directory copied from another machine, or a scorer edited since, is refused until the user
passes --trust-remote-code (or scores with it again).

The hash covers the scorer's own file, not the modules that file imports.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
from pathlib import Path

from steerable.errors import SteerableError
from steerable.io import atomic_write_text

TRUST_STORE = "trusted.json"
TRUST_FORMAT_VERSION = 1


def steerable_home() -> Path:
    """Where steerable keeps what belongs to this machine's user: $STEERABLE_HOME, else
    $XDG_DATA_HOME/steerable, else ~/.local/share/steerable."""
    if os.environ.get("STEERABLE_HOME"):
        return Path(os.environ["STEERABLE_HOME"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data).expanduser() / "steerable"


def store_path() -> Path:
    return steerable_home() / TRUST_STORE


def code_file(target: str) -> Path | None:
    """The file holding a py: target's function (``path/file.py:f`` or ``package.module:f``),
    found without importing anything (importing is running the code); None if there is none."""
    where = target.rpartition(":")[0]
    if where.endswith(".py"):
        path = Path(where)
        return path.resolve() if path.is_file() else None
    found, search = None, None
    parts = where.split(".")
    for i in range(len(parts)):
        if i and search is None:  # a module, not a package, cannot hold submodules
            return None
        found = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), search)
        if found is None:
            return None
        search = found.submodule_search_locations
    if found.origin is None or not Path(found.origin).is_file():
        return None
    return Path(found.origin).resolve()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_trust(target: str) -> str | None:
    """Record that the user runs py: `target` as given: its file and sha256 go into the store.
    Returns the hash, for the statistics and manifests to keep (None when no file is found; the
    scorer then fails to import with its own message)."""
    path = code_file(target)
    if path is None:
        return None
    digest = file_sha256(path)
    trusted = _trusted_files()
    if trusted.get(str(path)) != digest:
        trusted[str(path)] = digest
        store = {"format_version": TRUST_FORMAT_VERSION, "files": dict(sorted(trusted.items()))}
        try:
            atomic_write_text(store_path(), json.dumps(store, indent=2) + "\n")
        except SteerableError as err:
            raise SteerableError(f"{err} (the trust store; or set STEERABLE_HOME to a writable folder)")
    return digest


def untrusted_reason(name: str, target: str, recorded: str | None, where: str) -> str | None:
    """Why objective `name`, read from `where` (a statistics file, a model directory) with
    py: `target` and the file hash `recorded` there, may not run here, with the fix; None when
    this machine trusts that very file."""
    origin = f"objective {name!r} from {where} would run code from py:{target}, but"
    path = code_file(target)
    if path is None:  # no flag makes missing code run: say what is missing and how to provide it
        code = target.rpartition(":")[0]
        if code.endswith(".py"):
            return f"{origin} {code} is missing on this machine; put the file back there"
        return (
            f"{origin} module {code} is missing on this machine; install it, or set PYTHONPATH to "
            "the folder that holds it"
        )
    try:  # a broken store or file stops only the scoring: what was read from `where` still loads
        digest, trusted = file_sha256(path), _trusted_files().get(str(path))
    except OSError as err:
        return f"{origin} {path} cannot be read ({err.strerror}); make it readable"
    except SteerableError as err:
        return f"{origin} {err}"
    if trusted is None:
        why = f"{path} is not trusted on this machine (made elsewhere, or before steerable recorded it)"
    elif trusted != digest:
        why = f"{path} changed since it was trusted here"
    elif recorded != digest:
        made = "another version of" if recorded else "no recorded hash of"
        why = f"{where} was made with {made} {path}"
    else:
        return None
    return (
        f"{origin} {why}; if you trust that file, pass --trust-remote-code at the CLI or "
        "trust_remote_code=True in Python, or re-run the scoring on this machine "
        f"(steerable score -o {name}=py:{target}) and train from it"
    )


def _trusted_files() -> dict[str, str]:
    """The store's {file path: sha256}; no store yet is an empty one."""
    path = store_path()
    fix = (
        "delete it: it lists the py: scorer files you ran, and the next `steerable score` "
        "with each records it again"
    )
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise SteerableError(f"trust store {path} cannot be read ({err}); {fix}")
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise SteerableError(f"trust store {path} has no 'files' mapping of path to sha256; {fix}")
    return files

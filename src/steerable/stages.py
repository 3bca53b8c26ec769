"""Resumable stages that record what produced them: one helper for every method.

A stage is a folder ROOT/stages/NAME/ holding its outputs and, once finished, `done.json`.
What produced a stage is its *inputs*: a JSON-able dict of the configuration fields it depends
on (never output paths, so a run can be moved), content digests of the files it reads (so an
input edited in place is noticed), the statistics it uses, and the keys of the stages it builds
on. The stage's key is the hash of its inputs, so a key changes whenever anything upstream does.

    done.json     {"key", "inputs", "info"}: the stage finished with these inputs
    started.json  {"key", "inputs"}: written before the work, so partial work (checkpoints)
                  is resumed only by the same inputs

A finished stage whose inputs differ is refused with the fix (another output directory, or
delete the stage to redo it): silently reusing it would give results that do not match the
configuration recorded beside them. Partial work of other inputs is discarded and redone.
A run that starts a stage after finding others finished says so ("resuming train ric in
runs/ric: offline, sft done, starting round-1"); `running_stage` names the stage under way, for
a command stopped by Ctrl-C to say where it stopped.

A run's folder belongs to the command that made it: ROOT/stages/run.json names it, and a
directory that holds another command's stages or model (a RiC model's steerable.json, a
reward model's reward_model.json, ...) is refused before anything is written, so no command
overwrites what another made. When a command fails, `tidy_on_failure` removes the stage folders
it began that hold no work yet (only started.json): a refused run leaves nothing behind.

Under `accelerate launch` every process calls the same stages: `Stages.run` does a stage's work
on the main process while the others wait, then every process reads its outputs, so no file is
written twice. Training stages (`start` ... `finish`) run on every process, and only the main
one saves.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import json
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from steerable.errors import SteerableError
from steerable.io import atomic_write_text

DONE, STARTED = "done.json", "started.json"
RUN = "run.json"  # ROOT/stages/run.json: {"command": "train ric"}, the command that made the run
EXPORT_RECORD = "steerable_export.json"  # what `steerable export` writes beside a merged model
# What `Stages.start` created inside the running `tidy_on_failure`, undone if the command fails;
# None outside one (the Python API), where nothing would undo it.
_began: contextvars.ContextVar[list[Path] | None] = contextvars.ContextVar("began", default=None)
# The stage begun and not yet finished (its folder), for a command stopped by Ctrl-C to name.
_running: contextvars.ContextVar[Path | None] = contextvars.ContextVar("running", default=None)


def running_stage() -> Path | None:
    """The folder of the stage that started and has not finished, None between stages."""
    return _running.get()


def say(message: str) -> None:
    """One line to the user (standard error) that does not break a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def fingerprint(inputs: object) -> str:
    """A short hash of a JSON-able value (key order does not matter)."""
    return hashlib.sha256(_canonical(inputs).encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and bytes, in order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def changed_fields(old: dict, new: dict) -> list[str]:
    """Top-level keys whose values differ between two input records, as `fingerprint` sees
    them (so 3 and 3.0 differ here as they do there)."""
    return sorted(k for k in set(old) | set(new) if _canonical(old.get(k)) != _canonical(new.get(k)))


def process_state():
    """accelerate's view of the processes (a single process unless launched by `accelerate
    launch` or torchrun). Without a GPU it is the CPU state (gloo), as the trainers' own."""
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    if state.num_processes > 1:
        _leave_group_at_exit()
    return state


@functools.cache
def _leave_group_at_exit() -> None:
    """Destroy the process group before the interpreter exits: left to the exit itself, gloo's
    threads can outlive it and the process aborts ("terminate called without an active
    exception") after its work is done."""
    import atexit

    import torch.distributed as dist

    atexit.register(lambda: dist.destroy_process_group() if dist.is_initialized() else None)


def is_main_process() -> bool:
    return process_state().is_main_process


def wait_for_everyone() -> None:
    process_state().wait_for_everyone()


def _json(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def made_by(root: str | Path) -> list[tuple[str | None, str]]:
    """What a directory holds that a command made, as (the command, what it is) for each sign of
    one; the command is None for what no training command makes (an export, a plain model)."""
    from steerable import methods
    from steerable.policy import MANIFEST
    from steerable.reward_models.multihead import MANIFEST as MOSLIM_RM_MANIFEST
    from steerable.reward_models.pairwise import RECORD

    root = Path(root)
    found = []
    manifest = _json(root / MANIFEST)
    if manifest is not None:
        method = manifest.get("method")
        title = methods.METHODS[method].title if method in methods.METHODS else method
        model = f"a {title} model ({MANIFEST}, method {method})"
        found.append((f"train {method}", model))
    if (root / MOSLIM_RM_MANIFEST).is_file():
        found.append(("train moslim-rm", f"a MOSLIM reward model ({MOSLIM_RM_MANIFEST})"))
    if (root / RECORD).is_file():
        found.append(("train rm", f"a reward model ({RECORD})"))
    elif (root / EXPORT_RECORD).is_file():
        found.append((None, f"a merged model of `steerable export` ({EXPORT_RECORD})"))
    elif (root / "config.json").is_file():
        found.append((None, "a Hugging Face model (config.json)"))
    run = _json(root / "stages" / RUN)  # an unfinished run has only its stages
    if run is not None:
        command = run.get("command")
        found.append((command, f"the stages of a `steerable {command}` run (stages/{RUN})"))
    return found


def check_owner(root: str | Path, command: str) -> None:
    """Refuse a directory that holds what another command made (one line naming it): `command`
    ("train ric", "compare", ...) may only continue its own runs."""
    for owner, what in made_by(root):
        if owner != command:
            option = "--out" if command == "compare" else "--output_dir"
            raise SteerableError(f"{root} holds {what}; choose another {option}")


def _note_began(paths: Iterable[Path]) -> None:
    """Record what a stage start creates, for `tidy_on_failure` to undo (outside one: nothing)."""
    began = _began.get()
    if began is not None:
        began.extend(paths)


@contextlib.contextmanager
def tidy_on_failure() -> Iterator[None]:
    """Run a command; if it fails, remove the stage folders it began that hold no work (only
    started.json), then the run record and folders that leaves empty. Partial work (a
    checkpoint) stays, for a run with the same inputs to resume from."""
    began: list[Path] = []
    token, running = _began.set(began), _running.set(None)
    try:
        yield
    except BaseException:
        for path in reversed(began):
            with contextlib.suppress(OSError):
                if path.name == RUN:
                    if [p.name for p in path.parent.iterdir()] == [RUN]:
                        path.unlink()
                elif path.is_dir() and {p.name for p in path.iterdir()} <= {STARTED}:
                    (path / STARTED).unlink(missing_ok=True)
                    path.rmdir()
        raise
    finally:
        _began.reset(token)
        _running.reset(running)


class Stages:
    """The stages of one run of `command` ("train ric", "compare", ...), under ROOT/stages/.
    A directory that holds another command's run or model is refused here (`check_owner`)."""

    def __init__(self, root: str | Path, command: str):
        self.root = Path(root)
        self.command = command
        # Stages found finished by an earlier run, said when the next one starts; `said`: those
        # said already or finished by this run, which no resume message names.
        self.skipped: dict[str, None] = {}
        self.said: set[str] = set()
        check_owner(self.root, command)

    def path(self, name: str) -> Path:
        return self.root / "stages" / name

    def done(self, name: str, inputs: dict) -> dict | None:
        """The finished stage's info, None when it has not finished; refuses a stage that
        finished with other inputs."""
        marker = self.path(name) / DONE
        if not marker.is_file():
            return None
        try:
            record = json.loads(marker.read_text())
            key, old = record["key"], record["inputs"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SteerableError(f"{marker} is corrupt or from an older steerable; delete {self.path(name)}")
        if key != fingerprint(inputs):
            raise SteerableError(
                f"{self.path(name)} was made with other inputs ({', '.join(changed_fields(old, inputs))} "
                "differ), so its results do not match this run; use another output directory, or "
                f"delete {self.path(name)} (and the stages after it) to redo it"
            )
        if name not in self.said:
            self.skipped.setdefault(name)
        return record["info"]

    def made_with(self, name: str) -> dict | None:
        """The inputs a finished stage was made with; None when it has not finished or its
        record is unreadable (`done` says so)."""
        record = _json(self.path(name) / DONE)
        return record.get("inputs") if record is not None else None

    def start(self, name: str, inputs: dict) -> Path:
        """Prepare the stage's folder for work: keep partial work of the same inputs (to resume
        from), discard partial work of other inputs. Returns the folder."""
        folder = self.path(name)
        marker = folder / STARTED
        key = fingerprint(inputs)
        _running.set(folder)
        if is_main_process():
            if self.skipped:
                done = ", ".join(self.skipped)
                say(f"resuming {self.command} in {self.root}: {done} done, starting {name}")
                self.said.update(self.skipped)
                self.skipped = {}
            _note_began(p for p in (self.root, self.root / "stages") if not p.exists())
            run = self.root / "stages" / RUN
            if not run.is_file():
                _note_began([run])
                atomic_write_text(run, json.dumps({"command": self.command}) + "\n")
            _note_began([folder])
            if folder.is_dir():
                try:
                    previous = json.loads(marker.read_text())["key"] if marker.is_file() else None
                except (json.JSONDecodeError, KeyError, TypeError):
                    previous = None
                if previous != key:
                    if any(p.name != STARTED for p in folder.iterdir()):
                        warnings.warn(
                            f"{folder} holds partial work of other inputs; starting it again", stacklevel=2
                        )
                    shutil.rmtree(folder)
            atomic_write_text(marker, json.dumps({"key": key, "inputs": inputs}, indent=2) + "\n")
        wait_for_everyone()
        return folder

    def finish(self, name: str, inputs: dict, info: dict) -> dict:
        """Mark the stage finished (main process only) with `info` (JSON-able)."""
        if is_main_process():
            record = {"key": fingerprint(inputs), "inputs": inputs, "info": info}
            atomic_write_text(self.path(name) / DONE, json.dumps(record, indent=2) + "\n")
        self.said.add(name)
        _running.set(None)
        wait_for_everyone()
        return info

    def run(self, name: str, inputs: dict, work: Callable[[Path], dict]) -> dict:
        """The stage's info: recorded if it finished, else `work(folder)` on the main process
        (the others wait, then read what it recorded)."""
        info = self.done(name, inputs)
        if info is not None:
            return info
        folder = self.start(name, inputs)
        if is_main_process():
            self.finish(name, inputs, work(folder))
        else:
            wait_for_everyone()
        return self.done(name, inputs)

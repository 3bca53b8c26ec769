"""Presets: ready-made settings for a command, shipped as YAML files beside this module and
named COMMAND-NAME.yaml (`ric-smoke.yaml` is what `steerable train ric --preset smoke` reads).
A preset is read as `--config` would be, so options given on the command line override its
values. Its header comment is the command that runs it, then what the preset is for: the
command prints that when it starts and when it ends, so a run is never mistaken for another.
"""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path

from steerable.errors import SteerableError


def names(command: str) -> list[str]:
    """The presets of `command` (`ric`, `demo`), sorted."""
    prefix, suffix = f"{command}-", ".yaml"
    found = (item.name for item in resources.files(__name__).iterdir())
    return sorted(n[len(prefix) : -len(suffix)] for n in found if n.startswith(prefix) and n.endswith(suffix))


def preset_file(command: str, name: str, prog: str) -> Path:
    """The YAML file of preset `name` for `command`; an unknown name is one error listing the
    choices (`prog`, e.g. `steerable train ric`, names the command in it)."""
    choices = names(command)
    if name not in choices:
        known = f"choose from {choices}" if choices else "it has none"
        raise SteerableError(f"--preset {name!r} unknown for {prog}; {known}")
    return Path(str(resources.files(__name__) / f"{command}-{name}.yaml"))


def preset_note(path: Path) -> str:
    """What a preset is for: the first paragraph of its header comment after the command, as
    one line."""
    header = itertools.takewhile(lambda line: line.startswith("#"), path.read_text().splitlines())
    lines = (line.lstrip("#").strip() for line in list(header)[1:])
    return " ".join(itertools.takewhile(bool, lines))


def with_preset(command: str, args: list[str], prog: str) -> tuple[list[str], str | None]:
    """Command-line `args` with `--preset NAME` (or `--preset=NAME`) replaced by `--config` and
    the preset's file, which TRL's parser reads before the other options, so they override it;
    and the preset's note (None without a preset). A preset value that an option given
    replaces (`REPLACED_BY`) is left out."""
    args = [part for arg in args for part in (arg.split("=", 1) if arg.startswith("--preset=") else [arg])]
    if "--preset" not in args:
        return args, None
    index = args.index("--preset")
    if index + 1 >= len(args) or args[index + 1].startswith("--"):
        raise SteerableError(f"--preset needs a name; choose from {names(command)}")
    if "--config" in args:
        raise SteerableError(
            "--preset and --config both give the settings to start from; give one (a preset's file "
            "is a --config file: copy it from steerable/presets/ to start your own)"
        )
    path = preset_file(command, args[index + 1], prog)
    note, args = preset_note(path), [*args[:index], *args[index + 2 :]]
    given = {arg.split("=", 1)[0] for arg in args if arg.startswith("--")}
    dropped = {key for option, keys in REPLACED_BY.items() if option in given for key in keys}
    return ["--config", str(without_keys(path, dropped) if dropped else path), *args], note


# Preset keys that an option the user gives makes wrong, not merely overridden: given --data (the
# table to train on), a preset's prompt_limit and prompts (which pick the prompts to sample
# for) no longer apply, and the method would refuse the pair as if the user had given both.
REPLACED_BY = {"--data": ("prompt_limit", "prompts")}


def without_keys(path: Path, keys: set[str]) -> Path:
    """A copy of preset `path` without `keys`, in a temporary file removed when the process exits."""
    import atexit
    import os
    import tempfile

    import yaml

    values = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k not in keys}
    handle, name = tempfile.mkstemp(prefix=f"steerable-{path.stem}-", suffix=".yaml")
    with os.fdopen(handle, "w") as file:
        yaml.safe_dump(values, file)
    atexit.register(Path(name).unlink, missing_ok=True)
    return Path(name)

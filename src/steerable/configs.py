"""Method configurations as data: parsed from the command line and YAML with TRL's `TrlParser`
(every dataclass field is an option; `--config FILE.yaml` sets values that flags then
override), type-checked, and every parse error turned into one `SteerableError` line."""

from __future__ import annotations

import types
import typing
from dataclasses import fields
from pathlib import Path

from steerable.errors import SteerableError


def parse_config(config_cls, args: list[str], prog: str):
    """A config dataclass from command-line `args` (and `--config FILE.yaml`, which flags
    override); bad options, values, keys and files raise one SteerableError."""
    import yaml
    from trl import TrlParser

    class Parser(TrlParser):
        def error(self, message):  # argparse calls this for bad options and values
            raise SteerableError(f"{message} (see {prog} --help)")

    args = list(args)
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args) or not Path(args[index + 1]).is_file():
            raise SteerableError("--config needs an existing YAML file")
    try:
        (config,) = Parser(config_cls, prog=prog, allow_abbrev=False).parse_args_and_config(args)
    except yaml.YAMLError as err:
        raise SteerableError(f"--config: not valid YAML ({err})")
    except ValueError as err:  # unknown keys in the YAML or arguments, a YAML that is no mapping
        raise SteerableError(str(err).replace("HfArgumentParser", "steerable"))
    return config


def config_from_dict(config_cls, values: dict, where: str):
    """A config dataclass from a mapping (a YAML section): unknown keys and wrong types are
    errors naming the key."""
    if not isinstance(values, dict):
        raise SteerableError(f"config {where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SteerableError(f"config {where}: unknown key(s) {unknown}; known: {sorted(known)}")
    try:
        return config_cls(**values)
    except SteerableError as err:
        raise SteerableError(f"config {where}: {err}")


def _allowed(annotation) -> tuple[type, ...]:
    """The runtime types a field annotation admits (int counts as a float; a list's items are
    checked separately)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed(arg))
    if annotation is type(None):
        return (type(None),)
    if origin is list:
        return (list,)
    if annotation is float:
        return (float, int)
    return (annotation,)


def check_field_types(config) -> None:
    """Refuse field values of the wrong type (a YAML `num_epochs: abc` or `objectives: 3`)
    before anything runs; bools are not numbers here. An int given for a float field becomes
    a float, so a stage's record does not depend on whether `3` or `3.0` was written."""
    hints = typing.get_type_hints(type(config))
    for item in fields(config):
        value, annotation = getattr(config, item.name), hints[item.name]
        allowed = _allowed(annotation)
        wrong = not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
        if not wrong and isinstance(value, list):
            (item_type,) = typing.get_args(
                next(a for a in _all_args(annotation) if typing.get_origin(a) is list)
            )
            wrong = not all(isinstance(v, item_type) for v in value)
        if wrong:
            expected = annotation.__name__ if isinstance(annotation, type) else str(annotation)
            raise SteerableError(f"{item.name} must be {expected}, got {value!r}")
        declared = set(_all_args(annotation))  # without `_allowed`'s int-for-float widening
        if type(value) is int and float in declared and int not in declared:
            setattr(config, item.name, float(value))


def _all_args(annotation) -> list:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return list(typing.get_args(annotation))
    return [annotation]

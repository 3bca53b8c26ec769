"""Method configurations as data: parsed from the command line and YAML with TRL's `TrlParser`
(every dataclass field is an option; `--config FILE.yaml` sets values that flags then
override), checked, and every parse error turned into one `SteerableError` line.

A field declares what it accepts once, in its metadata, beside its help: `choices` (TRL's key,
which argparse also enforces and `--help` lists) and the bounds `ge`, `gt`, `le`, `lt`
(pydantic's names for >=, >, <=, <), e.g.
`field(default=0.05, metadata={"help": "LoRA dropout.", "ge": 0, "lt": 1})`. `check_config`,
run first by every config's `__post_init__`, refuses any other value before any stage runs.
"""

from __future__ import annotations

import math
import operator
import types
import typing
from dataclasses import fields
from pathlib import Path

from steerable.errors import SteerableError


def parse_config(config_cls, args: list[str], prog: str, epilog: str | None = None):
    """A config dataclass from command-line `args` (and `--config FILE.yaml`, which flags
    override); bad options, values, keys and files raise one SteerableError. `epilog` ends
    `--help` as written (examples stay one command a line)."""
    import argparse

    import yaml
    from trl import TrlParser

    class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Defaults shown (TRL's choice), the epilog left as written."""

    class Parser(TrlParser):
        def error(self, message):  # argparse calls this for bad options and values
            raise SteerableError(f"{message} (see {prog} --help)")

        def add_argument(self, *names, **kwargs):  # a field's bounds are ours, not argparse's
            bounds = {key: kwargs.pop(key) for key in BOUNDS if key in kwargs}
            if bounds:
                kwargs["help"] = f"{kwargs.get('help', '')} ({describe_bounds(bounds)})".strip()
            return super().add_argument(*names, **kwargs)

    args = list(args)
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args) or not Path(args[index + 1]).is_file():
            raise SteerableError("--config needs an existing YAML file")
    parser = Parser(config_cls, prog=prog, allow_abbrev=False, epilog=epilog, formatter_class=HelpFormatter)
    try:
        (config,) = parser.parse_args_and_config(args)
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


# The range of a seed: transformers' set_seed seeds numpy's legacy generator, which takes 0..2**32 - 1.
SEED = {"ge": 0, "le": 2**32 - 1}

# A bound a field's metadata may declare (pydantic's names): how it reads and what it asks.
BOUNDS = {
    "ge": (">=", operator.ge),
    "gt": (">", operator.gt),
    "le": ("<=", operator.le),
    "lt": ("<", operator.lt),
}


def describe_bounds(bounds: dict) -> str:
    """`>= 1` for one bound, `in [0, 1)` for a lower and an upper one."""
    low = next(((key, bounds[key]) for key in ("ge", "gt") if key in bounds), None)
    high = next(((key, bounds[key]) for key in ("le", "lt") if key in bounds), None)
    if low and high:
        return f"in {'[' if low[0] == 'ge' else '('}{low[1]}, {high[1]}{']' if high[0] == 'le' else ')'}"
    key, bound = low or high
    return f"{BOUNDS[key][0]} {bound}"


def check_value(option: str, value, choices=None, **metadata) -> None:
    """Refuse `value` (each item of a list) when it is NaN or infinite, not one of `choices`, or
    outside the bounds in `metadata` (`ge`, `gt`, `le`, `lt`; other keys, such as `help`, are
    ignored): one line naming `option`, e.g. "--batch_size must be >= 1, got 0". None passes."""
    bounds = {key: metadata[key] for key in BOUNDS if key in metadata}
    for item in value if isinstance(value, list) else [value]:
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, float) and not math.isfinite(item):
            raise SteerableError(f"{option} must be a finite number, got {item}")
        if choices is not None and item not in choices:
            raise SteerableError(f"{option} {item!r} unknown; choose from {list(choices)}")
        if not all(BOUNDS[key][1](item, bound) for key, bound in bounds.items()):
            raise SteerableError(f"{option} must be {describe_bounds(bounds)}, got {item}")


def check_config(config) -> None:
    """The one check every config dataclass runs first in its `__post_init__`: the types of its
    fields (`check_field_types`), then each value against its field's metadata (`check_value`),
    so a bad option is refused, naming it, before any stage runs. What depends on several
    fields or on the mode stays in the config's own `__post_init__`."""
    check_field_types(config)
    for item in fields(config):
        check_value(f"--{item.name}", getattr(config, item.name), **item.metadata)


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

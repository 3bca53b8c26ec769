"""`py:` scorers: any Python function ``f(prompts, responses) -> list[float]``."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

from steerable.errors import SteerableError


def load_callable(target: str) -> Callable[[list[str], list[str]], Sequence[float]]:
    """Import ``module.path:function`` or ``path/to/file.py:function``."""
    where, _, attr = target.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise SteerableError(f"py scorer {target!r}: file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"steerable_user_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise SteerableError(f"py scorer {target!r}: cannot import {where!r} ({err})")
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SteerableError(f"py scorer {target!r}: {where} has no function {attr!r}")
    return fn

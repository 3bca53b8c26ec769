"""`py:` scorers: any Python function ``f(prompts, responses) -> list[float]``.

The function is the user's code: whatever goes wrong while importing or calling it (a syntax
error, a failing import inside the module, an exception) is reported as one line naming the
objective, not as a traceback from inside steerable.

A py: objective the user typed runs as given; one read back from a statistics file or a model
directory runs only where this machine trusts its file as it is (`steerable.trust`), or with
--trust-remote-code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from steerable.errors import SteerableError


def load_callable(name: str, target: str) -> Callable[[list[str], list[str]], Sequence[float]]:
    """Import objective `name`'s ``module.path:function`` or ``path/to/file.py:function``."""
    where, _, attr = target.rpartition(":")
    origin = f"objective {name!r} (py:{target})"
    if where.endswith(".py") and not Path(where).is_file():
        raise SteerableError(f"{origin}: file {where} does not exist")
    try:
        module = _import(where)
    except Exception as err:
        raise SteerableError(f"{origin}: cannot import {where!r} ({type(err).__name__}: {err})")
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SteerableError(f"{origin}: {where} has no function {attr!r}")

    @functools.wraps(fn)
    def call(prompts: list[str], responses: list[str]) -> Sequence[float]:
        try:
            return fn(prompts, responses)
        except Exception as err:
            raise SteerableError(f"{origin} raised {type(err).__name__}: {err}; fix the function")

    return call


def _import(where: str):
    if not where.endswith(".py"):
        return importlib.import_module(where)
    path = Path(where).resolve()
    # registered as an import would be (dataclasses and pickle look a module up by name), under a
    # name of its own for each file, so two files both named rewards.py stay two modules
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"steerable_user_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module

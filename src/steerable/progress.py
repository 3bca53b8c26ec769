"""What long work prints: one progress bar per stage, with its ETA, and the libraries' own chatter
kept out of the way.

    quiet_libraries()   the command line's default (`steerable --verbose CMD` keeps it): no
                        dataset-map or weight-loading bars, no info logs, and no FutureWarning /
                        DeprecationWarning raised from transformers, TRL, PEFT, datasets,
                        accelerate or torch. Every other warning prints: the libraries' logged
                        warnings (a reward model with newly initialised weights, say), their
                        UserWarnings, and all of steerable's own

Every trainer steerable runs shows `training.StageBar` in place of transformers' bar (with
--verbose too): the stage's name, steps done and left with an ETA, and the latest loss as its
postfix instead of a printed dict. Sampling, scoring and evaluation show one tqdm bar each
(`stage_bar`); generation moves it at every decoding step, counted in tokens (answers that end
early leave the rest of their max_new_tokens, which the bar skips when their batch ends), so it
moves every few seconds even when one batch of answers takes minutes.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings
from collections.abc import Iterator

LIBRARIES = r"(transformers|trl|peft|datasets|accelerate|torch)(\.|$)"
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' own bars (weight loading) follow it
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # dataset map / tokenising bars
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def quiet_libraries() -> None:
    """Silence the libraries' progress bars and deprecation warnings: environment defaults they
    read when imported (a variable already set wins), and their own switches when they are
    imported already. For the process's lifetime: the command line calls it once."""
    for variable, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(variable, value)
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()


# The bar of the stage that is running, if one is: work inside the stage (a generate call per
# grid point, say) moves it instead of opening a bar of its own, so a stage shows one bar.
_stage_bar: contextvars.ContextVar = contextvars.ContextVar("stage_bar", default=None)


@contextlib.contextmanager
def stage_bar(total: float, desc: str, unit: str, disable: bool = False) -> Iterator:
    """A tqdm bar for one stage, with its ETA, that `generate_texts` inside it moves at every
    decoding step (`active_bar`). Closed when the stage ends."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)
    token = _stage_bar.set(None if disable else bar)
    try:
        yield bar
    finally:
        _stage_bar.reset(token)
        bar.close()


def active_bar():
    """The running stage's bar (`stage_bar`), None outside one."""
    return _stage_bar.get()


def advance_to(bar, n: float) -> None:
    """Move `bar` forward to `n` (never back): where work that ticks as it goes has left it
    short, e.g. a batch whose answers all ended before max_new_tokens."""
    if bar is not None and n > bar.n:
        bar.update(n - bar.n)

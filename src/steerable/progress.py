"""What long work prints: one progress bar per stage, with its ETA, and the libraries' own chatter
kept out of the way.

    quiet_libraries()   the command line's default (`steerable --verbose` keeps it all): no
                        per-step loss dictionaries, no dataset-map or weight-loading bars, no
                        deprecation warnings from transformers / TRL / PEFT / datasets; errors
                        and our own warnings still print

Every trainer steerable runs shows `methods.training.StageBar` in place of transformers' bar: the
stage's name, steps done and left with an ETA, and the latest loss as its postfix instead of a
printed dict. Sampling, scoring and evaluation show one tqdm bar each.
"""

from __future__ import annotations

import os
import sys
import warnings

LIBRARIES = r"(transformers|trl|peft|datasets|accelerate|torch)(\.|$)"
QUIET_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' own bars (weight loading, GGUF) follow it
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",  # dataset map / tokenising bars
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def quiet_libraries() -> None:
    """Silence the libraries' progress bars, info logging and deprecation warnings: environment
    defaults they read when imported (a variable already set wins), and their own switches when
    they are imported already."""
    for variable, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(variable, value)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)
    if "transformers" in sys.modules:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()

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
postfix instead of a printed dict. Sampling, scoring and evaluation show one tqdm bar each.
"""

from __future__ import annotations

import os
import sys
import warnings

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

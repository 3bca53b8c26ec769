"""The generation rates measured on this machine, in `$STEERABLE_HOME/rates.json`: decoded
tokens per second, per model and device, the newest measurement of each. `generate_texts`
records them; `cost.estimate` reads them. Kept apart from `cost` so that generation, which
`cost` builds on, records a rate without importing it back."""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Callable
from pathlib import Path

from steerable.io import atomic_write_text

RATES = "rates.json"
MIN_SECONDS = 1.0  # a shorter generation is mostly start-up, not a rate


def rates_path() -> Path:
    from steerable.trust import steerable_home

    return steerable_home() / RATES


def model_key(name_or_path: str, resolve: Callable[[str], str] = str) -> str:
    """The name a rate is filed under: a directory's or hub id's last part (`tiny-llama`,
    `SmolLM2-135M-Instruct`), so a model measured from its path is found by its name too. A
    steerable model directory is filed as its base model, which is what generates; `resolve`
    maps a name (an alias) to the path it stands for first."""
    name = str(name_or_path)
    try:
        base = json.loads((Path(name) / "steerable.json").read_text())["base_model"]
    except (OSError, ValueError, KeyError, TypeError):
        base = None
    if isinstance(base, str) and base != name:
        return model_key(base, resolve)
    name = resolve(name)
    return Path(name.rstrip("/")).name or name


def read_rates() -> dict:
    try:
        data = json.loads(rates_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_rate(model: str, device: str, tokens: int, seconds: float) -> None:
    """Keep `tokens` decoded in `seconds` as the rate of `model` (a loaded model's path) on
    `device` (atomically, the newest measurement replacing the last). Too short a run is not a
    rate and is skipped; a store that cannot be written is skipped too: measuring must never stop
    a generation."""
    if tokens <= 0 or seconds < MIN_SECONDS:
        return
    rates = read_rates()
    rates[f"{model_key(model)} on {device}"] = {
        "model": model_key(model),
        "device": device,
        "tokens_per_second": tokens / seconds,
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "measured": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):
        atomic_write_text(rates_path(), json.dumps(rates, indent=2, sort_keys=True) + "\n")

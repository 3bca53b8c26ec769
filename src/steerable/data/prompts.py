"""The embedded prompt set: 330 user requests written for this project, with a fixed
held-out split of 66 (every fifth prompt), used by the demo, the benchmarks and the tests."""

from __future__ import annotations

import json
from importlib.resources import files

from steerable.errors import SteerableError

SPLITS = ("train", "heldout", "all")


def load_prompts(split: str = "train", limit: int | None = None) -> list[str]:
    if split not in SPLITS:
        raise SteerableError(f"unknown prompt split {split!r}; choose from {list(SPLITS)}")
    text = files("steerable.data").joinpath("prompts.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    prompts = [r["prompt"] for r in rows if split == "all" or r["split"] == split]
    return prompts[:limit] if limit is not None else prompts

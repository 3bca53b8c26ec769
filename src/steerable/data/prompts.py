"""Prompts: the embedded prompt set, and a user's own prompt file.

The embedded set holds 330 user requests written for this project, with a fixed held-out split
of 66 (every fifth prompt), used by the demo, the benchmarks and the tests.

A prompt file (`--prompts FILE`) is a table (.jsonl, .json, .csv, .parquet or a directory saved
with `datasets.Dataset.save_to_disk`) with a ``prompt`` column and an optional ``split`` column
(``train`` or ``heldout``), or a .txt file with one prompt a line. Without a split column every
prompt serves whichever split is asked for: train on one file and evaluate on another. A prompt
in both splits of one file is refused, and so is an empty one, naming its row.

Training records a digest of each prompt it trained on (`prompt_digests`) in the model's
steerable.json, so evaluation can refuse held-out prompts the model has seen
(`refuse_trained_on`) without the directory keeping the prompts themselves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from steerable.data.loading import read_placed, refuse_bad_rows, text_problem
from steerable.errors import SteerableError

SPLITS = ("train", "heldout", "all")
FILE_SPLITS = ("train", "heldout")  # the values a prompt file's split column may take
# Hex digits kept of each prompt's sha256: 64 bits, so two distinct prompts of a run share a
# digest with odds far below one in a billion, in a steerable.json of 19 bytes a prompt.
DIGEST_CHARS = 16


def load_prompts(split: str = "train", limit: int | None = None, path: str | Path | None = None) -> list[str]:
    """The prompts of `split` (train, heldout or all), the first `limit` of them: from the
    prompt file at `path` (see the module docstring), else from the embedded set."""
    if split not in SPLITS:
        raise SteerableError(f"unknown prompt split {split!r}; choose from {list(SPLITS)}")
    rows = embedded_rows() if path is None else read_prompt_file(path)
    prompts = [r["prompt"] for r in rows if split == "all" or r.get("split", split) == split]
    if not prompts:  # only a file can lack a split: the embedded set has both
        raise SteerableError(
            f"prompt file {path} has no {split} prompts (its split column says train or heldout for each "
            "row); add rows with that split, or drop the split column to use every prompt"
        )
    return prompts[:limit] if limit is not None else prompts


def prompt_source(split: str, path: str | Path | None) -> str:
    """Where prompts came from, as results record and reports show it: the split, of a file."""
    return split if path is None else f"{split} of {Path(path).name}"


def embedded_rows() -> list[dict]:
    text = files("steerable.data").joinpath("prompts.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_prompt_file(path: str | Path) -> list[dict]:
    """The rows of a user's prompt file as {"prompt"} or {"prompt", "split"} dicts, in file
    order. Every bad row is named in one error: an empty or non-text prompt, a split other than
    train or heldout; then a prompt in both splits is refused."""
    path = Path(path)
    if path.suffix.lower() == ".txt" and path.is_file():
        lines = path.read_text().splitlines()
        rows = [{"prompt": line.strip()} for line in lines if line.strip()]
        places = [f"line {n}" for n, line in enumerate(lines, start=1) if line.strip()]
    else:
        rows, places = read_placed(path)
    if not rows:
        raise SteerableError(f"prompt file {path} has no prompts")
    columns = {column for row in rows for column in row}
    if "prompt" not in columns:
        raise SteerableError(f"prompt file {path}: missing column 'prompt' (found {sorted(columns)})")
    has_split = "split" in columns
    bad = [
        (place, text_problem(row, ("prompt",)) or (split_problem(row.get("split")) if has_split else None))
        for row, place in zip(rows, places, strict=True)
    ]
    refuse_bad_rows(path, bad)
    rows = [{"prompt": row["prompt"], **({"split": row["split"]} if has_split else {})} for row in rows]
    if has_split:
        refuse_shared(path, rows, places)
    return rows


def parse_prompt_lines(text: str, where: str) -> list[str]:
    """Prompts typed or piped in (`where` names the source in errors): JSON lines with a
    ``prompt`` each when the first line is a JSON object, else one prompt a line."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise SteerableError(f"{where} has no prompts")
    try:
        first = json.loads(lines[0][1])
    except json.JSONDecodeError:
        first = None
    if not isinstance(first, dict):
        return [line.strip() for _, line in lines]
    rows, bad = [], []
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            row, problem = {}, f"not valid JSON ({err.msg}), as line {lines[0][0]} is"
        else:
            row = row if isinstance(row, dict) else {}
            problem = text_problem(row, ("prompt",))
        rows.append(row)
        bad.append((f"line {n}", problem))
    refuse_bad_rows(where, bad)
    return [row["prompt"] for row in rows]


def split_problem(value: object) -> str | None:
    if value in FILE_SPLITS:
        return None
    return f"split {value!r} is not one of {list(FILE_SPLITS)}"


def refuse_shared(path: Path, rows: list[dict], places: list[str]) -> None:
    """Refuse a file whose train and heldout splits share a prompt (compared as `normalise`d):
    a held-out prompt must be one the model never trained on."""
    first_train = {}
    for row, place in zip(rows, places, strict=True):
        if row["split"] == "train":
            first_train.setdefault(normalise(row["prompt"]), place)
    shared = [
        (place, row["prompt"])
        for row, place in zip(rows, places, strict=True)
        if row["split"] == "heldout" and normalise(row["prompt"]) in first_train
    ]
    if shared:
        place, prompt = shared[0]
        raise SteerableError(
            f"prompt file {path}: {len(shared)} heldout row(s) repeat a train prompt, the first at "
            f"{place} ({prompt[:60]!r}, also at {first_train[normalise(prompt)]}); a held-out prompt "
            "must be one the model never trains on: drop it from one of the splits"
        )


def normalise(prompt: str) -> str:
    """A prompt as overlap checks compare it: whitespace collapsed, case folded."""
    return " ".join(prompt.split()).casefold()


def prompt_digest(prompt: str) -> str:
    return hashlib.sha256(normalise(prompt).encode()).hexdigest()[:DIGEST_CHARS]


def prompt_digests(prompts: Sequence[str]) -> list[str]:
    """The digests of the distinct prompts a model trained on, sorted: what steerable.json's
    training section keeps as `prompt_digests`."""
    return sorted({prompt_digest(p) for p in prompts})


def refuse_trained_on(prompts: Sequence[str], model: str | Path) -> None:
    """Refuse held-out `prompts` that the steerable model directory `model` trained on, by the
    digests its steerable.json records (a directory that records none, or no directory, is not
    checked). One error names how many and the first one."""
    path = Path(model) / "steerable.json"
    if not path.is_file():
        return
    try:
        trained = set(json.loads(path.read_text())["training"]["prompt_digests"])
    except (json.JSONDecodeError, KeyError, TypeError):
        return  # made before digests were recorded; loading it reports a malformed file
    seen = list(dict.fromkeys(p for p in prompts if prompt_digest(p) in trained))
    if seen:
        raise SteerableError(
            f"{len(seen)} of the held-out prompts were among {model}'s training prompts, the first "
            f"{seen[0][:60]!r}; evaluate on prompts it never trained on (e.g. the heldout split of "
            "your --prompts file, with a split column marking them)"
        )

"""Read and write (prompt, response) tables: jsonl, json, csv, parquet, or a directory saved
with `datasets.Dataset.save_to_disk`.

Two layouts are accepted: columns ``prompt`` and ``response``, or the HH-RLHF layout with
``chosen`` and ``rejected`` transcripts (``\\n\\nHuman: ... \\n\\nAssistant: ...``), which is
expanded into two rows per pair tagged ``label`` = chosen / rejected and ``pair`` = row index.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from steerable.errors import SteerableError
from steerable.io import atomic_write

ASSISTANT = "\n\nAssistant:"
FORMATS = (".jsonl", ".json", ".csv", ".parquet")
# Read as text from CSV even when they look like numbers or booleans (an answer "42" is text).
TEXT_COLUMNS = ("prompt", "response", "chosen", "rejected")


def read_table(path: str | Path, split: str | None = None) -> list[dict]:
    """Rows of a table file or saved HF dataset, as dicts. Errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise SteerableError(f"input {path} does not exist")
    if path.is_dir():
        return _read_hf_dataset(path, split)
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl" or suffix == ".json":
            return _read_json_lines(path)
        if suffix == ".csv":
            text = dict.fromkeys(TEXT_COLUMNS, str)
            return pd.read_csv(path, keep_default_na=False, dtype=text).to_dict("records")
        if suffix == ".parquet":
            return pd.read_parquet(path).to_dict("records")
    except (OSError, ValueError) as err:
        if isinstance(err, SteerableError):
            raise
        raise SteerableError(f"cannot read {path}: {err}")
    raise SteerableError(
        f"input {path}: unknown format {suffix!r}; use one of {FORMATS} or a dataset directory"
    )


def _read_json_lines(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise SteerableError(f"{path} is not valid JSON: {err}")
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SteerableError(f"{path}, line {number}: not valid JSON ({err.msg})")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise SteerableError(f"{path}, record {number}: expected a JSON object, got {type(row).__name__}")
    return rows


def _read_hf_dataset(path: Path, split: str | None) -> list[dict]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise SteerableError(f"{path} is not a dataset saved with save_to_disk ({err})")
    if isinstance(data, datasets.DatasetDict):
        if split is None:
            if len(data) != 1:
                raise SteerableError(f"{path} has splits {list(data)}; choose one with --split")
            split = next(iter(data))
        if split not in data:
            raise SteerableError(f"{path} has no split {split!r}; it has {list(data)}")
        data = data[split]
    return data.to_list()


def load_pairs(path: str | Path, split: str | None = None) -> list[dict]:
    """Rows with non-empty string ``prompt`` and ``response`` (other columns are kept)."""
    rows = read_table(path, split)
    if not rows:
        raise SteerableError(f"{path} has no rows")
    columns = set(rows[0])
    if {"prompt", "response"} <= columns:
        pairs = rows
    elif {"chosen", "rejected"} <= columns:
        pairs = _expand_hh(rows, path)
    else:
        raise SteerableError(
            f"{path}: missing columns; need 'prompt' and 'response' (or HH-RLHF 'chosen' and "
            f"'rejected'), found {sorted(columns)}"
        )
    for number, row in enumerate(pairs):
        require_text(row, ("prompt", "response"), number, path)
    return pairs


def require_text(row: dict, columns: Sequence[str], number: int, path: str | Path) -> None:
    """Each of `columns` of row `number` is a non-empty string, else an error naming the row."""
    for column in columns:
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            shown = "missing" if value is None or _is_nan(value) else repr(value)[:40]
            raise SteerableError(
                f"{path}, row {number}: {column!r} is empty or not text ({shown}); fill it in or drop the row"
            )


def split_by_prompt(prompts: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows): round(fraction x distinct prompts) prompts, drawn with
    `seed`, hold out every row that has them, so no held-out prompt is seen in training. A
    fraction above 0 holds out at least one prompt, and leaves at least one for training."""
    distinct = sorted(set(prompts))
    if fraction > 0 and len(distinct) < 2:
        raise SteerableError(
            f"a held-out split by prompt needs rows for at least two distinct prompts; the data has "
            f"{len(distinct)}: add rows for other prompts"
        )
    n_heldout = 0 if fraction == 0 else min(max(1, round(fraction * len(distinct))), len(distinct) - 1)
    chosen = set(np.random.default_rng(seed).permutation(len(distinct))[:n_heldout].tolist())
    heldout = {distinct[i] for i in chosen}
    mask = np.array([p in heldout for p in prompts], dtype=bool)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def split_transcript(text: str) -> tuple[str, str]:
    """Split an HH-RLHF transcript at its last assistant turn: (prompt, response)."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        return text, ""
    return text[: cut + len(ASSISTANT)], text[cut + len(ASSISTANT) :].strip()


def _expand_hh(rows: list[dict], path: str | Path) -> list[dict]:
    pairs = []
    for number, row in enumerate(rows):
        for label in ("chosen", "rejected"):
            if not isinstance(row.get(label), str) or ASSISTANT not in row[label]:
                raise SteerableError(
                    f"{path}, row {number}: {label!r} is not an HH-RLHF transcript "
                    "(no '\\n\\nAssistant:' turn)"
                )
            prompt, response = split_transcript(row[label])
            pairs.append({"prompt": prompt, "response": response, "label": label, "pair": number})
    return pairs


def write_table(path: str | Path, rows: list[dict]) -> Path:
    """Write rows atomically; the format follows the suffix: .jsonl one JSON object a line, .json
    one JSON array, .csv, .parquet."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SteerableError(f"output {path}: unknown format {suffix!r}; use one of {FORMATS}")

    def write(tmp: Path) -> None:
        if suffix == ".jsonl":
            with tmp.open("w") as handle:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif suffix == ".json":  # one JSON document, the array of rows, as json.load expects
            tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
        elif suffix == ".csv":
            pd.DataFrame(rows).to_csv(tmp, index=False)
        else:
            pd.DataFrame(rows).to_parquet(tmp, index=False)

    return atomic_write(path, write)

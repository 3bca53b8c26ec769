"""Read and write (prompt, response) tables: jsonl, json, csv, parquet, or a directory saved
with `datasets.Dataset.save_to_disk`.

Three layouts are accepted: columns ``prompt`` and ``response``; preference pairs, columns
``prompt``, ``chosen`` and ``rejected``; or the HH-RLHF layout with ``chosen`` and ``rejected``
transcripts (``\\n\\nHuman: ... \\n\\nAssistant: ...``). A pair is expanded into two rows tagged
``label`` = chosen / rejected and ``pair`` = its row index.

Errors name a row where a user finds it in the file (`place`): the 1-based line of a .jsonl or
.csv file (the header is line 1), the record of a .json list, the 1-based row of a parquet file
or saved dataset; and they list every bad row at once (up to `MAX_LISTED`).
"""

from __future__ import annotations

import csv
import json
import math
import os
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
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
# Bad rows one error lists before it says "and N more".
MAX_LISTED = 20


def read_table(path: str | Path, split: str | None = None) -> list[dict]:
    """Rows of a table file or saved HF dataset, as dicts. Errors name the file and line."""
    return read_placed(path, split)[0]


def read_placed(path: str | Path, split: str | None = None) -> tuple[list[dict], list[str]]:
    """The rows of `read_table` and the place of each in the file, as every error names it:
    "line N" (.jsonl, .csv), "record N" (.json list) or "row N" (parquet, saved dataset)."""
    path = Path(path)
    if not path.exists():
        raise SteerableError(f"input {path} does not exist")
    if path.is_dir():
        return _numbered(_read_hf_dataset(path, split))
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl" or suffix == ".json":
            return _read_json_lines(path)
        if suffix == ".csv":
            text = dict.fromkeys(TEXT_COLUMNS, str)
            rows = pd.read_csv(path, keep_default_na=False, dtype=text).to_dict("records")
            return rows, _csv_places(path, len(rows))
        if suffix == ".parquet":
            return _numbered(pd.read_parquet(path).to_dict("records"))
    except (OSError, ValueError) as err:
        if isinstance(err, SteerableError):
            raise
        raise SteerableError(f"cannot read {path}: {err}")
    raise SteerableError(
        f"input {path}: unknown format {suffix!r}; use one of {FORMATS} or a dataset directory"
    )


def row_places(count: int, unit: str = "row") -> list[str]:
    """ "row 1" ... "row N": the places of rows that come from no file, or from one whose lines
    are unknown, numbered from 1 as a file's lines are."""
    return [f"{unit} {number}" for number in range(1, count + 1)]


def _numbered(rows: list[dict], unit: str = "row") -> tuple[list[dict], list[str]]:
    return rows, row_places(len(rows), unit)


def _csv_places(path: Path, count: int) -> list[str]:
    """The line each record of a CSV file starts on (a quoted cell may span lines), skipping
    blank lines as pandas does; rows numbered from 1 if the two readers disagree."""
    starts, end = [], 0
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        for record in reader:
            if record:
                starts.append(end + 1)
            end = reader.line_num
    if len(starts) != count + 1:
        return row_places(count)
    return [f"line {line}" for line in starts[1:]]


def _read_json_lines(path: Path) -> tuple[list[dict], list[str]]:
    text = path.read_text()
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows, places = _numbered(json.loads(text), unit="record")
        except json.JSONDecodeError as err:
            raise SteerableError(f"{path} is not valid JSON: {err}")
    else:
        rows, places = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SteerableError(f"{path}, line {number}: not valid JSON ({err.msg})")
            places.append(f"line {number}")
    for row, place in zip(rows, places, strict=True):
        if not isinstance(row, dict):
            raise SteerableError(f"{path}, {place}: expected a JSON object, got {type(row).__name__}")
    return rows, places


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
    """Rows with non-empty string ``prompt`` and ``response`` (other columns are kept); a table
    of preference pairs gives two rows per pair (see the module docstring). Every bad row is
    named in one error."""
    return load_placed_pairs(path, split)[0]


def load_placed_pairs(path: str | Path, split: str | None = None) -> tuple[list[dict], list[str]]:
    """The rows of `load_pairs` and the place in the file of each (`read_placed`), as errors
    about a row name it: both rows of a preference pair are at the pair's place."""
    rows, places = read_placed(path, split)
    if not rows:
        raise SteerableError(f"{path} has no rows")
    columns = set(rows[0])
    if {"prompt", "response"} <= columns:
        bad = [
            (place, text_problem(row, ("prompt", "response")))
            for row, place in zip(rows, places, strict=True)
        ]
        refuse_bad_rows(path, bad)
        return rows, places
    if {"chosen", "rejected"} <= columns:
        hh = "prompt" not in columns
        split_rows = [preference_pair(row, hh) for row in rows]
        refuse_bad_rows(
            path, [(place, problem) for place, (_, problem) in zip(places, split_rows, strict=True)]
        )
        expanded = [
            {
                **_other_columns(row),
                "prompt": pair["prompt"],
                "response": pair[label],
                "label": label,
                "pair": n,
            }
            for n, (row, (pair, _)) in enumerate(zip(rows, split_rows, strict=True))
            for label in ("chosen", "rejected")
        ]
        return expanded, [place for place in places for _ in ("chosen", "rejected")]
    raise SteerableError(
        f"{path}: missing columns; need 'prompt' and 'response', preference pairs ('prompt', 'chosen', "
        f"'rejected'), or HH-RLHF 'chosen' and 'rejected', found {sorted(columns)}"
    )


def _other_columns(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in PAIR_COLUMNS}


def refuse_bad_rows(path: str | Path, bad: Sequence[tuple[str, str | None]], hint: str = "") -> None:
    """One error listing every row with a problem: `bad` holds (place, problem or None) pairs.
    The first `MAX_LISTED` are named, then "and N more"; `hint` adds a way out, e.g. an option
    that drops them."""
    bad = [(place, problem) for place, problem in bad if problem is not None]
    if not bad:
        return
    if len(bad) == 1:
        place, problem = bad[0]
        raise SteerableError(f"{path}, {place}: {problem}; fix or drop the row{hint}")
    listed = "; ".join(f"{place}: {problem}" for place, problem in bad[:MAX_LISTED])
    more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    raise SteerableError(f"{path} has {len(bad)} bad rows: {listed}{more}. Fix or drop them{hint}")


def text_problem(row: dict, columns: Sequence[str]) -> str | None:
    """What is wrong with the text of `columns` in `row` (each a non-empty string), or None."""
    for column in columns:
        value = row.get(column)
        if not isinstance(value, str) or not value.strip():
            shown = "missing" if value is None or _is_nan(value) else repr(value)[:40]
            return f"{column!r} is empty or not text ({shown})"
    return None


def preference_pair(row: dict, hh: bool) -> tuple[dict, str | None]:
    """A row of preference pairs as ({prompt, chosen, rejected}, None), or (what could be read,
    its problem): columns prompt/chosen/rejected as they are, or (`hh`) HH-RLHF transcripts split
    by `split_hh_pair`. Every text must be non-empty."""
    if not hh:
        pair = {k: row.get(k) for k in PAIR_COLUMNS}
        return pair, text_problem(pair, PAIR_COLUMNS)
    for label in ("chosen", "rejected"):
        if not isinstance(row.get(label), str) or ASSISTANT not in row[label]:
            return {}, f"{label!r} is not an HH-RLHF transcript (no '\\n\\nAssistant:' turn)"
    parts = split_hh_pair(row["chosen"], row["rejected"])
    if parts is None:
        return (
            {},
            "chosen and rejected share no conversation up to an assistant turn: they answer no one prompt",
        )
    pair = dict(zip(PAIR_COLUMNS, parts, strict=True))
    return pair, text_problem(pair, PAIR_COLUMNS)


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """HH-RLHF transcripts of one conversation as (prompt, chosen, rejected): the prompt is their
    common start up to and with its last assistant turn, each response the rest. Usually they part
    at the last assistant turn; transcripts that part earlier answer from the turn where they
    part, their later turns being part of the response (TRL's `extract_prompt` takes the common
    start too, but cuts it mid-word). None when they share no assistant turn."""
    cut = os.path.commonprefix([chosen, rejected]).rfind(ASSISTANT)
    if cut < 0:
        return None
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:].strip(), rejected[end:].strip()


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

"""Where MOSLIM's classification labels come from: pure functions from table columns to levels.

A reward model with L levels classifies each (prompt, response) into a level 1..L per
objective. The level of a training row comes from one of two sources, named in `labels`:

    NAME                      quantile bins of the column score_NAME (a `steerable score` output)
    NAME=bins:COLUMN          quantile bins of any numeric column
    NAME=rating:COLUMN:LO-HI  an integer rating on the scale LO..HI (HelpSteer2 0-4,
                              UltraFeedback 1-5): level = value - LO + 1, so HI - LO + 1 = L

Ratings: a value off the scale or not an integer (2.5, "abc") is an error naming the column and
the row. A missing value (None, NaN, an empty CSV cell, an absent key) is no label: that head's
loss skips the row (level MISSING).

Bins: the L - 1 edges are the training split's 1/L, 2/L, ... quantiles (numpy's linear
interpolation); level i holds the scores in [edge_{i-1}, edge_i), so a score equal to an edge
goes to the upper level. Edges are fitted on the training rows only, saved with the model and
reused on held-out rows and at evaluation. Tied scores always share a level (splitting a tie
would label identical scores differently), so with many ties the levels are uneven, and when
more than 1/L of the rows tie, two edges coincide and a level is empty: `bin_edges` warns then.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real

import numpy as np

from steerable.data.loading import row_places
from steerable.errors import SteerableError
from steerable.names import OBJECTIVE_NAME

SOURCES = ("bins", "rating")
MISSING = 0  # the level of a row without a label (levels are 1..L)
_SCALE = re.compile(r"^(-?\d+)-(-?\d+)$")
_LABEL_HELP = "write each label as NAME, NAME=bins:COLUMN or NAME=rating:COLUMN:LO-HI"


@dataclass(frozen=True)
class LabelSource:
    """One head's labels: its name, where they come from, and (bins) the fitted edges."""

    name: str
    source: str  # "bins" or "rating"
    column: str
    scale: tuple[int, int] | None = None  # rating: (LO, HI)
    edges: list[float] | None = field(default=None, compare=False)  # bins, once fitted

    @classmethod
    def parse(cls, text: str, levels: int) -> LabelSource:
        """A `labels` entry; a rating scale must have exactly `levels` values."""
        name, sep, rest = text.partition("=")
        name = name.strip()
        if not OBJECTIVE_NAME.match(name):
            raise SteerableError(
                f"labels: {text!r} names no valid objective (letters, digits and _, starting with a "
                f"letter); {_LABEL_HELP}"
            )
        if not sep:
            return cls(name, "bins", f"score_{name}")
        source, _, column = rest.partition(":")
        if source == "bins" and column:
            return cls(name, "bins", column)
        column, _, scale = column.rpartition(":")
        match = _SCALE.match(scale)
        if source != "rating" or not column or not match:
            raise SteerableError(f"labels: {text!r} is not a label; {_LABEL_HELP}")
        lo, hi = int(match[1]), int(match[2])
        if hi - lo + 1 != levels:
            raise SteerableError(
                f"labels: {text!r} has {hi - lo + 1} rating values ({lo}..{hi}) but levels is "
                f"{levels}; set --levels {hi - lo + 1} or give the rating's real scale"
            )
        return cls(name, "rating", column, (lo, hi))

    def __str__(self) -> str:
        if self.source == "rating":
            return f"{self.name}=rating:{self.column}:{self.scale[0]}-{self.scale[1]}"
        return f"{self.name}=bins:{self.column}"

    def fitted(
        self, rows: list[dict], levels: int, where: str, places: Sequence[str] | None = None
    ) -> LabelSource:
        """The source with its bin edges fitted on `rows` (the training split); a rating as is.
        Errors name a row by its place in `places` (see `raw_values`)."""
        if self.source == "rating":
            return self
        values = raw_values(rows, self.column, where, places)
        return LabelSource(self.name, "bins", self.column, None, bin_edges(values, levels, self.column))

    def levels_of(self, rows: list[dict], where: str, places: Sequence[str] | None = None) -> np.ndarray:
        """Each row's level 1..L, MISSING where it has no label (bins must be fitted). Errors
        name a row by its place in `places` (see `raw_values`)."""
        if self.source == "rating":
            values = [row.get(self.column) for row in rows]
            return rating_levels(values, *self.scale, self.column, where, places)
        if self.edges is None:
            raise ValueError(f"label {self} has no fitted edges")
        return bin_levels(raw_values(rows, self.column, where, places), self.edges)

    def to_dict(self) -> dict:
        data = {"name": self.name, "source": self.source, "column": self.column}
        if self.source == "rating":
            data["scale"] = list(self.scale)
        else:
            data["edges"] = self.edges
        return data

    @classmethod
    def from_dict(cls, data: dict) -> LabelSource:
        if data["source"] == "rating":
            lo, hi = data["scale"]
            return cls(data["name"], "rating", data["column"], (int(lo), int(hi)))
        return cls(data["name"], "bins", data["column"], None, [float(e) for e in data["edges"]])


def check_columns(rows: list[dict], sources: list[LabelSource], where: str) -> None:
    """Every label column exists in the table (in at least one row)."""
    present = set().union(*(row.keys() for row in rows))
    for label in sources:
        if label.column not in present:
            raise SteerableError(
                f"{where}: no column {label.column!r} for label {label}; the columns are {sorted(present)}"
            )


def is_missing(value: object) -> bool:
    """None, NaN or an empty string (an empty CSV cell): no label."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def rating_levels(
    values: list, lo: int, hi: int, column: str, where: str, places: Sequence[str] | None = None
) -> np.ndarray:
    """Integer ratings on the scale lo..hi as levels 1..(hi - lo + 1); MISSING for missing
    values. Integral floats (3.0) and integer strings ("3") are ratings; anything else is an
    error naming the column and the row (see `raw_values`)."""
    places = row_places(len(values)) if places is None else places
    levels = np.full(len(values), MISSING, dtype=np.int64)
    for row, value in enumerate(values):
        if is_missing(value):
            continue
        rating = _as_int(value)
        if rating is None or not lo <= rating <= hi:
            problem = "not an integer" if rating is None else "outside the scale"
            raise SteerableError(
                f"{where}, {places[row]}: column {column!r} holds {value!r}, {problem} rating on the scale "
                f"{lo}-{hi}; fix the value, leave it empty (no label), or declare the real scale"
            )
        levels[row] = rating - lo + 1
    return levels


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def raw_values(rows: list[dict], column: str, where: str, places: Sequence[str] | None = None) -> np.ndarray:
    """A numeric column as floats, NaN where missing; a value that is not a number is an error
    naming the row: by its place in `places` (`read_placed`: "line N" of the file `where`),
    else "row N" from 1."""
    places = row_places(len(rows)) if places is None else places
    values = np.full(len(rows), np.nan)
    for row, record in enumerate(rows):
        value = record.get(column)
        if is_missing(value):
            continue
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise SteerableError(
                f"{where}, {places[row]}: column {column!r} holds {value!r}, not a finite number to bin; "
                "fix the value or leave it empty (no label)"
            )
        values[row] = float(value)
    return values


def bin_edges(values: np.ndarray, levels: int, column: str) -> list[float]:
    """The L - 1 edges at the 1/L, ..., (L-1)/L quantiles of the non-missing values."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        raise SteerableError(f"column {column!r} has no values in the training split to fit bins on")
    edges = np.quantile(values, np.arange(1, levels) / levels)
    counts = np.bincount(np.digitize(values, edges), minlength=levels)
    empty = [int(level) + 1 for level in np.flatnonzero(counts == 0)]
    if empty:
        warnings.warn(
            f"column {column!r}: level(s) {empty} of {levels} hold no training row, because more than "
            f"1/{levels} of the scores tie; tied scores share a level",
            UserWarning,
            stacklevel=2,
        )
    return [float(e) for e in edges]


def bin_levels(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Levels 1..len(edges)+1: level i holds [edge_{i-1}, edge_i); MISSING for NaN."""
    values = np.asarray(values, dtype=float)
    levels = np.digitize(values, np.asarray(edges, dtype=float)) + 1
    return np.where(np.isnan(values), MISSING, levels).astype(np.int64)

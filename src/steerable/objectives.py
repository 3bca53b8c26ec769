"""`Objective` (a named scorer plus its normalisation statistics) and `RewardSet` (K of them).

A `RewardSet` scores (prompt, response) pairs into a float array of shape [n, K], fits the
per-objective statistics on training data and saves/loads them as JSON, so a trained model
directory can carry everything needed to reproduce its steering.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from steerable.data.loading import row_places
from steerable.errors import SteerableError
from steerable.io import atomic_write_text, check_format_version
from steerable.scorers import ScorerSpec, build_scorer
from steerable.trust import record_trust, untrusted_reason

# Quantile levels kept in the stats: every 5%, enough for any lo/hi choice in the RiC mapping.
QUANTILE_LEVELS = tuple(round(q * 0.05, 2) for q in range(21))
STATS_FORMAT_VERSION = 1

Scorer = Callable[[list[str], list[str]], Sequence[float]]


@dataclass(frozen=True)
class ObjectiveStats:
    """Statistics of one objective's raw score over a training set."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float] = field(default_factory=dict)  # level ("0.7") -> value

    @classmethod
    def fit(cls, raw: np.ndarray) -> ObjectiveStats:
        raw = np.asarray(raw, dtype=float)
        if raw.size == 0:
            raise SteerableError("cannot fit statistics on zero scored rows")
        values = np.quantile(raw, QUANTILE_LEVELS)
        return cls(
            count=int(raw.size),
            mean=float(raw.mean()),
            std=float(raw.std()),
            min=float(raw.min()),
            max=float(raw.max()),
            quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILE_LEVELS, values, strict=True)},
        )

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        # A constant objective has std 0; leave it centred instead of dividing by zero.
        scale = self.std if self.std > 0 else 1.0
        return (np.asarray(raw, dtype=float) - self.mean) / scale

    def quantile(self, q: float) -> float:
        """The raw-score q-quantile, interpolated between the stored 5% levels."""
        if not 0.0 <= q <= 1.0:
            raise SteerableError(f"quantile {q} is outside [0, 1]")
        levels = sorted((float(k), v) for k, v in self.quantiles.items())
        return float(np.interp(q, [lv for lv, _ in levels], [v for _, v in levels]))

    @classmethod
    def from_dict(cls, data: dict, where: str) -> ObjectiveStats:
        try:
            stats = cls(
                count=int(data["count"]),
                mean=float(data["mean"]),
                std=float(data["std"]),
                min=float(data["min"]),
                max=float(data["max"]),
                quantiles={str(k): float(v) for k, v in data["quantiles"].items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SteerableError(f"{where}: malformed statistics ({err!r}); re-run `steerable score`")
        numbers = [stats.mean, stats.std, stats.min, stats.max, *stats.quantiles.values()]
        if not all(math.isfinite(x) for x in numbers) or not stats.quantiles:
            raise SteerableError(f"{where}: statistics hold NaN/inf or no quantiles")
        return stats


@dataclass
class Objective:
    """A named reward: a scorer spec (built lazily) and, once fitted, its statistics.

    `sha256` is the hash of a py: scorer's file when the objective was made (kept in the
    statistics and model manifests: which file they were made with). `refusal` says why its
    scorer may not be built here, with the fix: a stats JSON or model directory may come from
    anyone, so a code-running scorer read from one (py: whose file this machine does not trust,
    see `steerable.trust`; hf: with trust_remote_code) refuses to build. The objective still
    loads, so a model directory can generate without ever building its scorers.
    """

    name: str
    spec: ScorerSpec
    stats: ObjectiveStats | None = None
    sha256: str | None = None
    refusal: str | None = None
    _scorer: Scorer | None = field(default=None, repr=False, compare=False)

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            if self.refusal is not None:
                raise SteerableError(self.refusal)
            self._scorer = build_scorer(self.spec)
        return self._scorer

    def score(
        self, prompts: list[str], responses: list[str], places: Sequence[str] | None = None
    ) -> np.ndarray:
        """One finite float per pair. A NaN or infinite score is an error naming the objective,
        the row (by its place in `places`, e.g. "data.jsonl, line 115", else "row N" from 1) and
        its prompt: no method has a sound stand-in for a score the scorer could not give, and the
        mean would train on a made-up reward."""
        scores = self._checked(self.scorer(prompts, responses), len(prompts))
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            i = int(bad[0])
            place = (row_places(len(prompts)) if places is None else places)[i]
            raise SteerableError(
                f"objective {self.name!r} gave {scores[i]} for {place} "
                f"(prompt {prompts[i][:40]!r}; {bad.size} non-finite score(s) in {len(prompts)} rows); "
                "a score must be a finite number: fix the scorer or drop those rows"
            )
        return scores

    def _checked(self, values: object, n: int) -> np.ndarray:
        """The scorer's output as floats; anything but one number per pair is its error."""
        fix = "a scorer must return one float per pair"
        if isinstance(values, Iterable) and not isinstance(values, str | bytes):
            values = list(values)  # generators, tensors, tuples
        try:
            array = np.asarray(values)
        except (TypeError, ValueError):  # e.g. ragged nested lists
            array = np.asarray(None)
        if array.ndim != 1:
            raise SteerableError(
                f"objective {self.name!r} ({self.spec}) returned {repr(values)[:60]}, not a list of "
                f"{n} scores; {fix}"
            )
        if array.size != n:
            raise SteerableError(
                f"objective {self.name!r} ({self.spec}) returned {array.size} scores for {n} pairs; {fix}"
            )
        bad = [] if array.dtype.kind in "biuf" else [v for v in array.tolist() if not isinstance(v, Real)]
        if bad:
            raise SteerableError(
                f"objective {self.name!r} ({self.spec}) returned a score that is not a number "
                f"({bad[0]!r:.40}); {fix}"
            )
        return array.astype(float)


def _what_it_scores(objective: Objective) -> dict:
    """The scorer an objective runs, to tell two objectives that score the same apart from two
    that do not: a moslim: scorer reads the head named like its objective unless ?objective=
    names one, so `mood=moslim:DIR` and `size=moslim:DIR` are two scorers."""
    spec = objective.spec.to_dict()
    if spec["kind"] == "moslim":
        spec["options"] = {"objective": objective.name, **spec["options"]}
    return spec


def _refusal(spec: ScorerSpec, sha256: str | None, where: str) -> str | None:
    """Why a scorer read from `where` may not run here unless the reader trusts the file."""
    if spec.kind == "py":
        return untrusted_reason(spec.name, spec.target, sha256, where)
    if spec.runs_code:
        return (
            f"objective {spec.name!r} from {where} would run code from {spec.kind}:{spec.target}; if "
            "you trust that file, pass --trust-remote-code at the CLI or trust_remote_code=True in Python"
        )
    return None


def scored_stats_path(table: str | Path) -> Path:
    """Where `steerable score` writes the statistics of its scored TABLE unless told another
    path, and where a method reading the table looks for them: TABLE.stats.json."""
    table = Path(table)
    return table.with_name(table.name + ".stats.json")


class RewardSet:
    """An ordered set of objectives scored together."""

    def __init__(self, objectives: Sequence[Objective]):
        names = [o.name for o in objectives]
        if not objectives:
            raise SteerableError("no objectives given; pass at least one --objective")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SteerableError(f"objective name(s) {duplicates} used twice; names must be unique")
        scorers = [_what_it_scores(o) for o in objectives]
        for i, scorer in enumerate(scorers):
            if scorer in scorers[:i]:
                first = objectives[scorers.index(scorer)]
                raise SteerableError(
                    f"objectives {first.name} and {objectives[i].name} are the same scorer "
                    f"({str(first.spec).split('=', 1)[1]}); give each objective once"
                )
        self.objectives = list(objectives)

    @classmethod
    def from_specs(cls, specs: Sequence[str | dict]) -> RewardSet:
        """Build from CLI specs (``"brief=builtin:brevity"``) or YAML dicts. Local targets
        (``hf:./my-rm``, ``py:scorer.py:f``) are made absolute, so the statistics and model
        directories that record them work from any working directory. The user typed these, so
        they run as given, and a py: scorer's file is recorded as trusted on this machine
        (`steerable.trust`)."""
        parsed = [ScorerSpec.parse(s).with_absolute_paths() for s in specs]
        hashes = [record_trust(s.target) if s.kind == "py" else None for s in parsed]
        return cls([Objective(s.name, s, sha256=h) for s, h in zip(parsed, hashes, strict=True)])

    @property
    def refusal(self) -> str | None:
        """Why some objective's scorer may not be built here, with the fix (the first such
        objective's `Objective.refusal`); None when every scorer may run."""
        return next((o.refusal for o in self.objectives if o.refusal is not None), None)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    def __len__(self) -> int:
        return len(self.objectives)

    def __getitem__(self, name: str) -> Objective:
        for objective in self.objectives:
            if objective.name == name:
                return objective
        raise SteerableError(f"unknown objective {name!r}; the objectives are {self.names}")

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        chunk_size: int = 64,
        progress: bool = False,
        places: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Raw scores, shape [n, K]. Each scorer sees chunks of `chunk_size` pairs (it batches
        inside), and the bar moves after each: a reward model on a CPU scores 64 pairs in
        seconds, where 256 took long enough to look stuck. A NaN or infinite score is an error
        naming the objective and the row, by its place in `places` (where the rows came from a
        file) or as "row N" from 1 (`Objective.score`)."""
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise SteerableError(f"{len(prompts)} prompts but {len(responses)} responses")
        places = list(places) if places is not None else row_places(len(prompts))
        out = np.zeros((len(prompts), len(self)), dtype=float)
        for objective in self.objectives:  # before the bar: one that cannot be built is one line
            objective.scorer  # noqa: B018
        bar = tqdm(total=len(prompts) * len(self), desc="scoring", unit="pair", disable=not progress)
        for k, objective in enumerate(self.objectives):
            bar.set_postfix_str(objective.name)
            for start in range(0, len(prompts), chunk_size):
                stop = start + chunk_size
                out[start:stop, k] = objective.score(
                    prompts[start:stop], responses[start:stop], places[start:stop]
                )
                bar.update(len(prompts[start:stop]))
        bar.close()
        return out

    def annotate(
        self,
        rows: list[dict],
        *,
        fit: bool = False,
        progress: bool = False,
        places: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Score each row's ``prompt``/``response`` and write ``score_<name>`` (raw) and
        ``z_<name>`` (normalised) into the row; with `fit`, fit the statistics on these rows
        first. Returns the raw scores [n, K]. Rows are left untouched if scoring fails, whose
        error names the row by its place in `places` (see `score`)."""
        prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
        raw = self.score(prompts, responses, progress=progress, places=places)
        if fit:
            self.fit_stats(raw)
        z = self.normalise(raw)
        for row, raw_row, z_row in zip(rows, raw, z, strict=True):
            for k, name in enumerate(self.names):
                row[f"score_{name}"], row[f"z_{name}"] = float(raw_row[k]), float(z_row[k])
        return raw

    # --- statistics -----------------------------------------------------------------------
    def fit_stats(self, raw: np.ndarray) -> None:
        """Fit each objective's statistics; warns about objectives with zero spread, whose
        normalised score is then 0 for every row, so every preference maps to the same tag."""
        raw = self._check_shape(raw)
        for k, objective in enumerate(self.objectives):
            objective.stats = ObjectiveStats.fit(raw[:, k])
        flat = [o.name for o in self.objectives if o.stats.std == 0]
        if flat:
            warnings.warn(
                f"objective(s) {flat} score the same on all {raw.shape[0]} row(s) (std 0): every "
                "preference will map to the same tags for them; fit the statistics on more varied data",
                UserWarning,
                stacklevel=2,
            )

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        raw = self._check_shape(raw)
        missing = [o.name for o in self.objectives if o.stats is None]
        if missing:
            raise SteerableError(f"objective(s) {missing} have no statistics; fit or load them first")
        return np.stack([o.stats.normalise(raw[:, k]) for k, o in enumerate(self.objectives)], axis=1)

    def _check_shape(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=float)
        if raw.ndim != 2 or raw.shape[1] != len(self):
            raise SteerableError(f"scores have shape {raw.shape}; expected [n, {len(self)}]")
        return raw

    def to_dict(self) -> dict:
        return {
            "format_version": STATS_FORMAT_VERSION,
            "quantile_levels": list(QUANTILE_LEVELS),
            "objectives": [
                {
                    "name": o.name,
                    "spec": o.spec.to_dict(),
                    **({"sha256": o.sha256} if o.sha256 is not None else {}),
                    "stats": asdict(o.stats) if o.stats is not None else None,
                }
                for o in self.objectives
            ],
        }

    @classmethod
    def from_dict(
        cls, data: dict, where: str = "statistics", *, trust_remote_code: bool = False
    ) -> RewardSet:
        """Objectives and statistics as written by `to_dict` (a stats JSON, a manifest's rewards).

        Such data may come from anyone, so unless `trust_remote_code` its py: scorers refuse to
        build, except those whose file this machine trusts with the hash the data records
        (`steerable.trust`), and so do hf: ones with trust_remote_code; see `Objective`.
        """
        if not isinstance(data, dict) or not isinstance(data.get("objectives"), list):
            raise SteerableError(f"{where}: expected a JSON object with an 'objectives' list")
        check_format_version(
            data.get("format_version", STATS_FORMAT_VERSION),
            STATS_FORMAT_VERSION,
            where,
            "re-run `steerable score`",
        )
        objectives = []
        for i, entry in enumerate(data["objectives"]):
            if not isinstance(entry, dict) or "name" not in entry or "spec" not in entry:
                raise SteerableError(f"{where}: objectives[{i}] needs 'name' and 'spec'")
            spec = ScorerSpec.parse({**entry["spec"], "name": entry["name"]})
            stats, sha256 = entry.get("stats"), entry.get("sha256")
            if sha256 is not None and not isinstance(sha256, str):
                raise SteerableError(f"{where}: objectives[{i}].sha256 must be a string; re-run the scoring")
            objectives.append(
                Objective(
                    entry["name"],
                    spec,
                    None if stats is None else ObjectiveStats.from_dict(stats, f"{where}: {entry['name']}"),
                    sha256=sha256,
                    refusal=None if trust_remote_code else _refusal(spec, sha256, where),
                )
            )
        return cls(objectives)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, *, trust_remote_code: bool = False) -> RewardSet:
        """Read a statistics JSON written by `save` (see `from_dict` for `trust_remote_code`)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SteerableError(f"statistics file {path} does not exist; create it with `steerable score`")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SteerableError(f"statistics file {path} is not valid JSON ({err})")
        except OSError as err:
            raise SteerableError(f"statistics file {path} cannot be read ({err.strerror or err})")
        return cls.from_dict(data, where=str(path), trust_remote_code=trust_remote_code)

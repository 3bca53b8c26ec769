"""Level sweeps: MOSLIM's controllability. For every objective and every level 1..L, the
held-out prompts are answered with that objective's tag alone (``<brief 4>``; the others
masked) or, for a policy trained with every objective tagged (tag_sampling "all", which never
saw a tag alone), beside the others' tags at one fixed level (``<brief 4> <positive 3>``);
scored by every objective and, when the policy has a multi-head RM, classified by it. Each level
also gets a check that the answers are still answers: their mean relevance to the question
(`quality`, the built-in MiniLM cosine), which falls when a policy buys its levels with empty
or off-topic text.

Controllability per objective is the Spearman correlation between the requested level and the
achieved mean raw score over the L levels (as the preference sweep's is over the grid points),
and, stricter, over every (level, prompt mean) pair.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr

from steerable.evaluation.sweep import check_samples
from steerable.objectives import RewardSet

GenerateLevels = Callable[[list[str], dict[str, int]], list[str]]
Classify = Callable[[list[str], list[str]], np.ndarray]  # expected levels [n, K]


@dataclass
class LevelPoint:
    """One requested (objective, level): mean raw score of every objective with its standard
    error over prompts, and the RM's mean expected level per head (None without an RM)."""

    objective: str
    level: int
    mean: list[float]
    stderr: list[float]
    rm_level: list[float] | None
    n: int
    samples: int
    seconds: float
    generated_tokens: int
    prompt_means: list[float]  # the requested objective's mean per prompt
    relevance: float | None = None  # mean quality score of the answers (None: not measured)


def level_sweep(
    generate: GenerateLevels,
    rewards: RewardSet,
    prompts: Sequence[str],
    count: int,
    samples: int = 2,
    classify: Classify | None = None,
    count_tokens: Callable[[list[str]], int] = lambda texts: sum(len(t.split()) for t in texts),
    progress: Callable[[], None] | None = None,
    others: int | None = None,
    quality: Callable[[list[str], list[str]], list[float]] | None = None,
) -> list[LevelPoint]:
    """Answer `prompts` (`samples` responses each) at every objective's levels 1..count; the
    other objectives untagged, or all tagged at level `others`; `quality` (prompts, responses)
    -> one score per answer, averaged per level."""
    check_samples(samples)
    prompts = list(prompts)
    repeated = [p for p in prompts for _ in range(samples)]
    points = []
    for k, name in enumerate(rewards.names):
        for level in range(1, count + 1):
            started = time.perf_counter()
            tags = {name: level} if others is None else {n: others for n in rewards.names} | {name: level}
            responses = generate(repeated, tags)
            seconds = time.perf_counter() - started
            per_prompt = rewards.score(repeated, responses).reshape(len(prompts), samples, -1).mean(axis=1)
            rm = None if classify is None else classify(repeated, responses).mean(axis=0).tolist()
            points.append(
                LevelPoint(
                    objective=name,
                    level=level,
                    mean=per_prompt.mean(axis=0).tolist(),
                    stderr=(per_prompt.std(axis=0, ddof=1) / np.sqrt(len(prompts))).tolist()
                    if len(prompts) > 1
                    else [0.0] * len(rewards),
                    rm_level=rm,
                    n=len(repeated),
                    samples=samples,
                    seconds=seconds,
                    generated_tokens=count_tokens(responses),
                    prompt_means=per_prompt[:, k].tolist(),
                    relevance=None if quality is None else float(np.mean(quality(repeated, responses))),
                )
            )
            if progress:
                progress()
    return points


def _spearman(x, y) -> float | None:
    """None (JSON null) where the means are constant and there is no ranking."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(spearmanr(x, y).statistic)
    return rho if np.isfinite(rho) else None


def _cell(rho: float | None, means) -> str:
    """A level Spearman for the report; where it has no value, why."""
    if rho is not None and np.isfinite(rho):
        return f"{rho:+.3f}"
    return f"n/a: constant, every level's mean {means[0]:.4g}" if np.ptp(means) == 0 else "n/a"


def level_controllability(points: Sequence[LevelPoint], names: Sequence[str]) -> dict[str, dict]:
    """Per objective: Spearman of level vs. achieved mean (over levels) and vs. every prompt's
    mean (over levels x prompts), and the achieved means and RM levels by level."""
    out = {}
    for k, name in enumerate(names):
        mine = sorted((p for p in points if p.objective == name), key=lambda p: p.level)
        if not mine:
            continue
        levels = [p.level for p in mine]
        out[name] = {
            "spearman": _spearman(levels, [p.mean[k] for p in mine]),
            "spearman_prompts": _spearman(
                [p.level for p in mine for _ in p.prompt_means], [m for p in mine for m in p.prompt_means]
            ),
            "levels": levels,
            "means": [p.mean[k] for p in mine],
            "stderrs": [p.stderr[k] for p in mine],
            "rm_levels": None if mine[0].rm_level is None else [p.rm_level[k] for p in mine],
            "relevance": None if mine[0].relevance is None else [p.relevance for p in mine],
        }
    return out


def level_record(
    points: Sequence[LevelPoint], names: Sequence[str], count: int, others: int | None = None
) -> dict:
    """What an EvaluationResult stores of a level sweep (`others`: the level the other
    objectives were tagged at; None: untagged)."""
    return {
        "count": count,
        "others": others,
        "points": [asdict(p) for p in points],
        "controllability": level_controllability(points, names),
    }


def level_markdown(method: str, record: dict) -> list[str]:
    """Report lines: per objective, Spearman and the achieved mean (and RM level, relevance) at
    each level."""
    count, others = record["count"], record.get("others")
    beside = "that objective's tag alone" if others is None else f"the others tagged at level {others}"
    lines = [
        f"### {method}: controllability by requested level (1..{count}, {beside})",
        "",
        "| objective | Spearman (levels) | Spearman (prompts) | "
        + " | ".join(f"level {level}" for level in range(1, count + 1))
        + " |",
        "|---|---|---|" + "---|" * count,
    ]
    for name, row in record["controllability"].items():
        cells = []
        for i, mean in enumerate(row["means"]):
            notes = [f"RM {row['rm_levels'][i]:.2f}"] if row["rm_levels"] is not None else []
            if row.get("relevance") is not None:
                notes.append(f"relevance {row['relevance'][i]:.2f}")
            note = f" ({', '.join(notes)})" if notes else ""
            cells.append(f"{mean:.4g} ± {row['stderrs'][i]:.2g}{note}")
        rho = (_cell(row[key], row["means"]) for key in ("spearman", "spearman_prompts"))
        lines.append(f"| {name} | " + " | ".join([*rho, *cells]) + " |")
    return lines

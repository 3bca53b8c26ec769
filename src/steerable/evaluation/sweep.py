"""Preference sweeps: generate on held-out prompts at each point of a preference grid, score,
and summarise each point by the mean raw score of every objective with its standard error."""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr

from steerable.errors import SteerableError
from steerable.objectives import RewardSet


def preference_grid(k: int, resolution: int = 10) -> np.ndarray:
    """All weight vectors on the simplex with coordinates in {0, 1/resolution, ..., 1}.
    For K = 2 and resolution 10: w1 in {0, 0.1, ..., 1}, w2 = 1 - w1 (11 points)."""
    if k < 2:
        raise SteerableError(f"a preference grid needs at least 2 objectives, got {k}")
    if resolution < 1:
        raise SteerableError(f"grid resolution must be >= 1, got {resolution}")
    rows = [c for c in itertools.product(range(resolution + 1), repeat=k - 1) if sum(c) <= resolution]
    grid = np.array([[*c, resolution - sum(c)] for c in rows], dtype=float) / resolution
    order = np.lexsort(grid.T[::-1])  # w1 ascending, then w2, ...
    return grid[order]


@dataclass
class SweepPoint:
    """One grid point: the weights asked for and what the responses achieved. `n` responses,
    `samples` per prompt; `stderr` is over prompts (of each prompt's mean over its samples).
    `requested`: what the weights became, per objective, for a method that turns them into a
    request the model was trained to follow (RiC's target tags, MOSLIM's levels); else None.
    `normalised_mean` / `normalised_stderr`: the same in units of the training statistics (None
    where an objective has none). An image method's point also keeps a `thumbnail` (a base64 PNG
    of a few of its images) and `images`, its grid PNG in the output folder
    (`evaluation.images`)."""

    weights: list[float]
    mean: list[float]
    stderr: list[float]
    n: int
    seconds: float
    generated_tokens: int
    samples: int = 1
    requested: list[float] | None = None
    normalised_mean: list[float] | None = None
    normalised_stderr: list[float] | None = None
    thumbnail: str | None = None
    images: str | None = None


def summarise(rewards: RewardSet, prompts: Sequence[str], samples: int, responses: Sequence) -> dict:
    """The scores of the answers to `prompts` (each repeated `samples` times, in a row), as a
    point records them: mean and standard error per objective, raw and normalised. The standard
    error is over prompts, of each prompt's mean over its samples."""
    repeated = [p for p in prompts for _ in range(samples)]
    per_prompt = rewards.score(repeated, list(responses)).reshape(len(prompts), samples, -1).mean(axis=1)

    def mean_stderr(values: np.ndarray) -> tuple[list[float], list[float]]:
        if len(prompts) < 2:
            return values.mean(axis=0).tolist(), [0.0] * len(rewards)
        return values.mean(axis=0).tolist(), (values.std(axis=0, ddof=1) / np.sqrt(len(prompts))).tolist()

    mean, stderr = mean_stderr(per_prompt)
    normalised = {"normalised_mean": None, "normalised_stderr": None}
    if all(o.stats is not None for o in rewards.objectives):
        normalised = dict(zip(normalised, mean_stderr(rewards.normalise(per_prompt)), strict=True))
    return {"mean": mean, "stderr": stderr, **normalised}


def check_samples(samples: int) -> None:
    if samples < 1:
        raise SteerableError(f"samples per prompt must be >= 1, got {samples}")


def sweep(
    generate: Callable[[list[str], np.ndarray], list[str]],
    rewards: RewardSet,
    prompts: Sequence[str],
    grid: np.ndarray,
    count_tokens: Callable[[list[str]], int] = lambda texts: sum(len(t.split()) for t in texts),
    progress: Callable[[int, int], None] | None = None,
    samples: int = 1,
    requested: Callable[[np.ndarray], Sequence[float]] | None = None,
) -> list[SweepPoint]:
    """Evaluate `generate(prompts, weights) -> responses` at every grid point, with `samples`
    responses per prompt (each prompt repeated in one call): a point's mean is over all of
    them, and more samples make the means, and the controllability, less noisy. With
    `requested(weights) -> [K]` (a `Generator`'s), each point's request is recorded."""
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 2 or grid.shape[1] != len(rewards):
        raise SteerableError(
            f"grid has shape {grid.shape}; expected [points, {len(rewards)}] for {rewards.names}"
        )
    check_samples(samples)
    prompts = list(prompts)
    repeated = [p for p in prompts for _ in range(samples)]
    points = []
    for i, weights in enumerate(grid):
        started = time.perf_counter()
        responses = generate(repeated, weights)
        seconds = time.perf_counter() - started
        points.append(
            SweepPoint(
                weights=weights.tolist(),
                **summarise(rewards, prompts, samples, responses),
                n=len(repeated),
                seconds=seconds,
                generated_tokens=count_tokens(responses),
                samples=samples,
                requested=None if requested is None else [float(v) for v in requested(weights)],
            )
        )
        if progress:
            progress(i + 1, len(grid))
    return points


def mean_inner_product(points: Sequence[SweepPoint]) -> float | None:
    """The mean, over the grid, of each point's weights . its mean normalised rewards (in units
    of the training std): how far each point went where its weights pointed, whatever the
    objectives' scales. None where a point has no weights (a base model's) or no normalised
    means (an objective without statistics)."""
    if not points or any(not p.weights or p.normalised_mean is None for p in points):
        return None
    weights = np.array([p.weights for p in points], dtype=float)  # (points, K)
    achieved = np.array([p.normalised_mean for p in points], dtype=float)  # (points, K)
    return float((weights * achieved).sum(axis=1).mean())


def seconds_per_token(points: Sequence[SweepPoint]) -> float | None:
    """Measured generation cost: the seconds the grid's `generate` calls took over the tokens
    they generated (None where nothing was counted: images)."""
    tokens = sum(p.generated_tokens for p in points)
    return sum(p.seconds for p in points) / tokens if tokens > 0 else None


def controllability(points: Sequence[SweepPoint], names: Sequence[str]) -> dict[str, float | None]:
    """Spearman correlation, per objective, between its requested weight and its achieved mean;
    None where there is no ranking to correlate (`no_ranking` says why)."""
    return _spearman_columns(np.array([p.weights for p in points]), points, names)


def requested_controllability(
    points: Sequence[SweepPoint], names: Sequence[str]
) -> dict[str, float | None] | None:
    """Spearman correlation, per objective, between what the model was asked for (its target tag
    or level) and its achieved mean; None unless every point records its request. Where a
    mapping saturates (linf asks for hi at every w_i >= 0.5) the equal requests share one rank,
    so their order, which no model can get right, does not count against it."""
    if not points or any(p.requested is None for p in points):
        return None
    return _spearman_columns(np.array([p.requested for p in points]), points, names)


def _spearman_columns(
    asked: np.ndarray, points: Sequence[SweepPoint], names: Sequence[str]
) -> dict[str, float | None]:
    means = np.array([p.mean for p in points])
    with warnings.catch_warnings():  # a constant column has no ranking: None (JSON null), not nan
        warnings.simplefilter("ignore")
        rho = [float(spearmanr(asked[:, k], means[:, k]).statistic) for k in range(len(names))]
    return {name: r if np.isfinite(r) else None for name, r in zip(names, rho, strict=True)}


def no_ranking(
    asked: Sequence[float], achieved: Sequence[float], name: str, what: str = "weight"
) -> str | None:
    """Why a Spearman correlation of `asked` (the `what` asked of objective `name` at each
    point) with the `achieved` means has no value, in words; None where it has one. An
    objective whose scorer gives every answer the same score is the usual case."""
    asked, achieved = np.asarray(asked, float), np.asarray(achieved, float)
    if len(achieved) < 2:
        return "one grid point only, no ranking"
    if np.ptp(achieved) == 0:
        return f"constant: every grid point's mean {name} was {achieved[0]:.4g}, no ranking"
    if np.ptp(asked) == 0:
        return f"every grid point asked the same {what} of {name}, no ranking"
    return None


def ranking_notes(
    points: Sequence[SweepPoint], names: Sequence[str], requested: bool = False
) -> dict[str, str]:
    """`no_ranking` for each objective whose controllability (with `requested`: against what the
    model was asked for) has no value."""
    if not points or (requested and any(p.requested is None for p in points)):
        return {}
    asked = np.array([p.requested if requested else p.weights for p in points])
    means = np.array([p.mean for p in points])
    what = "request" if requested else "weight"
    notes = {name: no_ranking(asked[:, k], means[:, k], name, what) for k, name in enumerate(names)}
    return {name: note for name, note in notes.items() if note is not None}


def points_to_rows(points: Sequence[SweepPoint], names: Sequence[str]) -> list[dict]:
    """Flat rows (one per point) for CSV/Markdown."""
    rows = []
    for point in points:
        row = {f"w_{n}": w for n, w in zip(names, point.weights, strict=True)}
        for k, n in enumerate(names):
            row[f"mean_{n}"], row[f"stderr_{n}"] = point.mean[k], point.stderr[k]
        if point.normalised_mean is not None:
            for k, n in enumerate(names):
                row[f"normalised_mean_{n}"] = point.normalised_mean[k]
                row[f"normalised_stderr_{n}"] = point.normalised_stderr[k]
        counts = ("n", "samples", "seconds", "generated_tokens")
        rows.append({**row, **{k: v for k, v in asdict(point).items() if k in counts}})
        if point.images is not None:
            rows[-1]["images"] = point.images
    return rows

"""What controllability can a perfectly tag-following model reach under each mapping?

    python benchmarks/mapping_controllability.py [--trials 4000]

Controllability is the Spearman between an objective's weight on the 11-point grid (K = 2) and
its achieved mean score. Suppose a model whose achieved score is exactly its target tag plus
noise, with no effect of the other objective's tag. Under `linf` (R_i = lo_i + min(2 w_i, 1)
(hi_i - lo_i)) an objective's target stops rising at w_i = 0.5, so six of the eleven points ask
for the same score and their order is noise. This simulates the Spearman such a model gets,
for noise (the standard error of a point's mean) given as a fraction of hi - lo, and prints
its mean and how often it falls below the issue's 0.8 bar, as Markdown; and the same for the
Spearman against the requested level (the target itself), where linf's tied targets share a
rank and their order no longer counts.

    python benchmarks/mapping_controllability.py --sweeps runs/eval/ric12-66:linf ...

prints, for measured sweeps (`steerable evaluate` directories, each with the mapping it used),
each objective's Spearman against its weight (what `steerable evaluate` reports) and against
the level it requested (its target tag; tied where linf saturates, which a tie-aware Spearman
does not penalise).

    python benchmarks/mapping_controllability.py --sweeps runs/eval/ric21-66+runs/eval/ric21-66-seed1:linf

pools sweeps joined by `+` (the same model and grid evaluated with different `--seed`s, each
on the same prompts) by averaging their per-point means, as one sweep of all their samples.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

from steerable.conditioning import MAPPINGS, preference_to_targets
from steerable.evaluation.report import EvaluationResult
from steerable.preferences import Preference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweeps", nargs="*", default=[], metavar="DIR:MAPPING")
    args = parser.parse_args()
    if args.sweeps:
        measured(args.sweeps)
        return
    rng = np.random.default_rng(args.seed)
    grid = np.linspace(0, 1, 11)
    print(
        "| mapping | noise / (hi - lo) | mean Spearman vs weight | P(< 0.8) "
        "| mean Spearman vs requested level | P(< 0.8) |"
    )
    print("|---|---|---|---|---|---|")
    for mapping in MAPPINGS:
        # the first objective's target at each grid point, with lo = 0 and hi = 1
        targets = np.array([target_scale(w, mapping) for w in grid])
        for noise in (0.01, 0.05, 0.1, 0.2):
            achieved = targets + rng.normal(0, noise, (args.trials, grid.size))
            rho = np.array([spearmanr(grid, a)[0] for a in achieved])
            rho_level = np.array([spearmanr(targets, a)[0] for a in achieved])
            print(
                f"| {mapping} | {noise:.2f} | {rho.mean():.3f} | {(rho < 0.8).mean():.1%} "
                f"| {rho_level.mean():.3f} | {(rho_level < 0.8).mean():.1%} |"
            )


def target_scale(w: float, mapping: str) -> float:
    """Where between lo (0) and hi (1) the first of two objectives' target lies at weight w."""
    return preference_to_targets(Preference(("a", "b"), (w, 1 - w)), [0, 0], [1, 1], mapping)["a"]


def measured(sweeps: list[str]) -> None:
    print("| sweep | mapping | objective | Spearman vs weight | Spearman vs requested level |")
    print("|---|---|---|---|---|")
    for item in sweeps:
        directory, _, mapping = item.rpartition(":")
        pooled = [EvaluationResult.load(d) for d in directory.split("+")]
        first = pooled[0]
        if len(first.names) != 2:
            raise SystemExit(f"{directory}: --sweeps handles two objectives, found {first.names}")
        models = {r.model for r in pooled}
        if len(models) > 1 or any(
            [p.weights for p in r.points] != [p.weights for p in first.points] for r in pooled
        ):
            raise SystemExit(
                f"{directory}: pooled sweeps must share one model and grid, got {sorted(models)}"
            )
        weights = np.array([p.weights for p in first.points])
        achieved = np.mean([[p.mean for p in r.points] for r in pooled], axis=0)  # [points, K]
        for k, name in enumerate(first.names):
            level = np.array([target_scale(x, mapping) for x in weights[:, k]])
            print(
                f"| {directory} | {mapping} | {name} | {spearmanr(weights[:, k], achieved[:, k])[0]:+.3f} "
                f"| {spearmanr(level, achieved[:, k])[0]:+.3f} |"
            )


if __name__ == "__main__":
    main()

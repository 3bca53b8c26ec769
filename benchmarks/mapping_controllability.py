"""What controllability can a perfectly tag-following model reach under each mapping?

    python benchmarks/mapping_controllability.py [--trials 4000]

Controllability is the Spearman between an objective's weight on the 11-point grid (K = 2) and
its achieved mean score. Suppose a model whose achieved score is exactly its target tag plus
noise, with no effect of the other objective's tag. Under `linf` (R_i = lo_i + min(2 w_i, 1)
(hi_i - lo_i)) an objective's target stops rising at w_i = 0.5, so six of the eleven points ask
for the same score and their order is noise. This simulates the Spearman such a model gets,
for noise (the standard error of a point's mean) given as a fraction of hi - lo, and prints
its mean and how often it falls below the issue's 0.8 bar, as Markdown.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import spearmanr

from steerable.conditioning import MAPPINGS, preference_to_targets
from steerable.preferences import Preference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    grid = np.linspace(0, 1, 11)
    print("| mapping | noise / (hi - lo) | mean Spearman | P(Spearman < 0.8) |")
    print("|---|---|---|---|")
    for mapping in MAPPINGS:
        # the first objective's target at each grid point, with lo = 0 and hi = 1
        targets = np.array(
            [
                preference_to_targets(Preference(("a", "b"), (w, 1 - w)), [0, 0], [1, 1], mapping)["a"]
                for w in grid
            ]
        )
        for noise in (0.01, 0.05, 0.1, 0.2):
            rho = np.array(
                [
                    spearmanr(grid, targets + rng.normal(0, noise, grid.size))[0]
                    for _ in range(args.trials)
                ]
            )
            print(f"| {mapping} | {noise:.2f} | {rho.mean():.3f} | {(rho < 0.8).mean():.1%} |")


if __name__ == "__main__":
    main()

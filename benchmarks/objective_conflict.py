"""Do the candidate objectives conflict on the base model's own samples?

    steerable sample --split train --n-per-prompt 2 --batch-size 64 --out runs/conflict/samples.jsonl
    python benchmarks/objective_conflict.py runs/conflict/samples.jsonl [--cut-sentences]

Scores every sample with each built-in scorer and prints the Spearman correlation matrix
(with its p-value for the default pair) as Markdown. `--cut-sentences` first cuts each sample
after a random number of whole sentences, as RiC's offline data does (`cuts_per_sample`).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from steerable.data import load_pairs  # noqa: E402
from steerable.data.text import sentence_cuts  # noqa: E402
from steerable.defaults import DEFAULT_OBJECTIVES  # noqa: E402
from steerable.objectives import RewardSet  # noqa: E402
from steerable.scorers import ScorerSpec  # noqa: E402

CANDIDATES = [
    "builtin:brevity",
    "builtin:relevance",
    "builtin:sentiment",
    "builtin:readability",
    "builtin:harmless",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples")
    parser.add_argument("--cut-sentences", action="store_true", help="cut as RiC's offline data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = load_pairs(args.samples)
    if args.cut_sentences:
        rng = np.random.default_rng(args.seed)
        rows = [{**r, "response": sentence_cuts(r["response"], 1, rng)[0]} for r in rows]
    rewards = RewardSet.from_specs(CANDIDATES)
    raw = rewards.score([r["prompt"] for r in rows], [r["response"] for r in rows], progress=True)
    rho = spearmanr(raw).statistic
    names = rewards.names
    print(f"Spearman correlation over {len(rows)} base-model samples\n")
    print("| | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for i, name in enumerate(names):
        print(f"| {name} | " + " | ".join(f"{rho[i, j]:+.3f}" for j in range(len(names))) + " |")
    a, b = (names.index(ScorerSpec.parse(spec).target) for spec in DEFAULT_OBJECTIVES)
    test = spearmanr(raw[:, a], raw[:, b])
    print(f"\ndefault pair {names[a]} vs {names[b]}: rho = {test.statistic:+.3f} (p = {test.pvalue:.2g})")
    print(
        "mean raw scores: " + ", ".join(f"{n}={v:.3f}" for n, v in zip(names, np.mean(raw, 0), strict=True))
    )


if __name__ == "__main__":
    main()

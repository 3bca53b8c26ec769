"""A MOSLIM level sweep alone: each objective's levels 1..L on the held-out prompts, for a
MOSLIM policy (`--method moslim`) or its floor, the base model given the same intensity tags
(`--method tags`, the default) -- the sweep `steerable evaluate --method moslim|tags` runs
after its preference grid; this skips the grid.

    python benchmarks/level_sweep.py runs/moslim1 --out runs/eval/tags-levels.json \
        [--method tags|moslim] [--max-new-tokens 48] [--seed 0] [--samples 2] [--limit N] [--others L]

--others L tags the other objectives at level L (default: the policy's own reading, the middle
level for a policy trained with every objective tagged, else untagged).

Prints the Markdown table of `steerable report` and writes the level record as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from steerable.data import load_prompts  # noqa: E402
from steerable.evaluation.evaluate import answer_relevance  # noqa: E402
from steerable.evaluation.levels import level_markdown, level_record, level_sweep  # noqa: E402
from steerable.generation import SamplingConfig, count_tokens  # noqa: E402
from steerable.methods.moslim.steering import level_steering  # noqa: E402
from steerable.methods.tags.sweep import floor_policy  # noqa: E402
from steerable.policy import SteerablePolicy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--method", choices=("tags", "moslim"), default="tags")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--others", type=int, default=None)
    args = parser.parse_args()
    prompts = load_prompts("heldout", args.limit)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=0.7, seed=args.seed)
    if args.method == "tags":
        policy = floor_policy(args.model, None, None, False)
    else:
        policy = SteerablePolicy.from_pretrained(args.model)
    steering = level_steering(policy, sampling)
    others = args.others if args.others is not None else steering["others"]
    points = level_sweep(
        steering["generate"],
        policy.rewards,
        prompts,
        steering["count"],
        args.samples,
        classify=steering["classify"],
        count_tokens=lambda texts: count_tokens(policy.tokenizer, texts),
        others=others,
        quality=answer_relevance(),
    )
    record = level_record(points, policy.names, steering["count"], others)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("\n".join(level_markdown(args.method, record)))


if __name__ == "__main__":
    main()

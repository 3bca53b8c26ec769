"""Controllability of a trained RiC model: sweep the preference over the 2-objective grid
(w1 in {0, 0.1, ..., 1}) on the held-out prompts; for each objective, the Spearman correlation
between its requested weight and its mean achieved raw score.

    python benchmarks/ric_controllability.py runs/ric [--adapter runs/ric/stages/sft/weights]

Prints a Markdown table and writes JSON next to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from steerable.data import load_prompts  # noqa: E402
from steerable.evaluation.sweep import controllability, preference_grid, sweep  # noqa: E402
from steerable.generation import SamplingConfig  # noqa: E402
from steerable.io import atomic_write_text  # noqa: E402
from steerable.methods.ric import count_tokens  # noqa: E402
from steerable.policy import SteerablePolicy  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--limit", type=int, default=None, help="first N held-out prompts")
    parser.add_argument("--resolution", type=int, default=10)
    parser.add_argument("--mapping", default=None)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args()

    policy = SteerablePolicy.from_pretrained(args.model, adapter=args.adapter)
    names = policy.names
    prompts = load_prompts("heldout", args.limit)
    sampling = SamplingConfig(args.max_new_tokens, args.temperature, 0.95, 64, 0)

    def generate(batch, weights):
        return policy.generate(batch, preference=list(weights), mapping=args.mapping, sampling=sampling)

    started = time.perf_counter()
    points = sweep(
        generate,
        policy.rewards,
        prompts,
        preference_grid(len(names), args.resolution),
        count_tokens=lambda texts: count_tokens(policy.tokenizer, texts),
        progress=lambda i, n: print(f"point {i}/{n}", flush=True),
    )
    ctrl = controllability(points, names)
    print(
        f"\nmodel {args.model} adapter {args.adapter or 'final'}; {len(prompts)} held-out prompts; "
        f"{time.perf_counter() - started:.0f} s\n"
    )
    print(
        "| "
        + " | ".join(f"w_{n}" for n in names)
        + " | "
        + " | ".join(f"{n} (mean ± se)" for n in names)
        + " |"
    )
    print("|" + "---|" * (2 * len(names)))
    for p in points:
        print(
            "| "
            + " | ".join(f"{w:.1f}" for w in p.weights)
            + " | "
            + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in zip(p.mean, p.stderr, strict=True))
            + " |"
        )
    print(
        "\ncontrollability (Spearman, weight vs achieved): "
        + ", ".join(f"{n} {v:+.3f}" for n, v in ctrl.items())
    )
    if args.out:
        atomic_write_text(
            args.out, json.dumps({"points": [p.__dict__ for p in points], "controllability": ctrl}, indent=2)
        )


if __name__ == "__main__":
    main()

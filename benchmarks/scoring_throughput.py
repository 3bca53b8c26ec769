"""Reward-scoring throughput: our batched RewardSet vs. one pair per forward pass (how the RiC
reference code scores), measured in the same run on the same pairs.

    python benchmarks/scoring_throughput.py [--pairs 256]

Scorers: an HF sequence-classification reward model of realistic shape (SmolLM2-135M's
architecture with a 1-logit head, randomly initialised - the weights don't change the cost)
and the MiniLM relevance scorer. Prints a Markdown table of pairs/s and the ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from steerable.data import load_prompts  # noqa: E402
from steerable.defaults import resolve_model  # noqa: E402
from steerable.objectives import RewardSet  # noqa: E402


def build_reward_model(directory: str) -> str:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    base = resolve_model("smollm2")
    config = LlamaConfig.from_pretrained(base, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(base).save_pretrained(directory)
    return directory


def pairs(n: int) -> tuple[list[str], list[str]]:
    prompts = load_prompts("all")[:n]
    # Responses of varied length, like sampled ones (10 to 90 words).
    words = ("the plan works well when you start small and keep notes every day " * 8).split()
    responses = [" ".join(words[: 10 + (i * 7) % 81]) for i in range(len(prompts))]
    return prompts, responses


def pairs_per_second(spec: str, prompts: list[str], responses: list[str], one_at_a_time: bool) -> float:
    objective = RewardSet.from_specs([spec]).objectives[0]
    objective.score(prompts[:2], responses[:2])  # load and warm up outside the timing
    start = time.perf_counter()
    if one_at_a_time:
        for p, r in zip(prompts, responses, strict=True):
            objective.score([p], [r])
    else:
        objective.score(prompts, responses)
    return len(prompts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    args = parser.parse_args()
    prompts, responses = pairs(args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        rm = build_reward_model(tmp)
        cases = {
            "HF reward model (SmolLM2-135M shape)": (
                f"rm=hf:{rm}?input=pair&batch_size=1",
                f"rm=hf:{rm}?input=pair&batch_size=32",
            ),
            "MiniLM relevance": ("rel=builtin:relevance?batch_size=1", "rel=builtin:relevance?batch_size=64"),
        }
        print(f"torch threads: {torch.get_num_threads()}, pairs: {len(prompts)}\n")
        print("| scorer | one pair per pass (pairs/s) | batched (pairs/s) | ratio |")
        print("|---|---|---|---|")
        for name, (single_spec, batched_spec) in cases.items():
            single = pairs_per_second(single_spec, prompts, responses, one_at_a_time=True)
            batched = pairs_per_second(batched_spec, prompts, responses, one_at_a_time=False)
            print(f"| {name} | {single:.1f} | {batched:.1f} | {batched / single:.1f}x |")


if __name__ == "__main__":
    main()

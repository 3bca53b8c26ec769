"""`train rm` batching: pairs in random order (each batch pads to its longest pair, so one long
conversation pads the whole batch) vs. grouped by length (what `train rm` does now), measured
in the same run on the same pairs, model and seed.

    OMP_NUM_THREADS=1 python benchmarks/rm_padding.py [--pairs 64] [--batch_size 4] [--max_length 256]

(transformers sorts by length within mega-batches of min(pairs // (4 x batch_size), 50)
batches, so grouping acts once the data holds 8 batches or more; real data sets are far larger.)

The pairs are synthetic, with a long tail of lengths like real preference data: the embedded
prompts, each grown by a random number of earlier turns (some run past max_length and are cut
from the left), and answers of 5 to 120 words. Each variant trains in a
process of its own (so its peak memory is its own) for one epoch; printed per variant: CPU and
wall seconds of the training (CPU time is the fairer one on a shared machine),
padded and real tokens the model read, peak resident memory, and the ratio old / new.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "I",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
]


def synthetic_pairs(n: int, seed: int = 0) -> list[dict]:
    import numpy as np

    from steerable.data import load_prompts

    rng = np.random.default_rng(seed)
    prompts = load_prompts("all")

    def words(count: int) -> str:
        return " ".join(rng.choice(WORDS, size=count))

    pairs = []
    for i in range(n):
        turns = int(rng.lognormal(mean=0.5, sigma=1.2))  # earlier turns: mostly 0-3, a few dozen
        history = "".join(f"Human: {words(25)}\nAssistant: {words(40)}\n" for _ in range(turns))
        pairs.append(
            {
                "prompt": history + "Human: " + prompts[i % len(prompts)],
                "chosen": words(int(rng.integers(5, 121))),
                "rejected": words(int(rng.integers(5, 121))),
            }
        )
    return pairs


def run_variant(strategy: str, n: int, model: str, max_length: int, batch_size: int) -> dict:
    """Train one epoch with `strategy` as the sampler; what it cost."""
    from trl import RewardTrainer

    from steerable.reward_models.pairwise import (
        RMConfig,
        encode_pairs,
        load_backbone,
        pair_collator,
        reward_args,
    )

    config = RMConfig(model=model, data="synthetic", max_length=max_length, batch_size=batch_size)
    model_, tokenizer = load_backbone(config)
    dataset, truncated = encode_pairs(tokenizer, synthetic_pairs(n), max_length)
    tokens = {"padded": 0, "real": 0}

    def collate(examples: list[dict]) -> dict:
        batch = pair_collator(tokenizer.pad_token_id)(examples)
        tokens["padded"] += batch["attention_mask"].numel()
        tokens["real"] += int(batch["attention_mask"].sum())
        return batch

    with tempfile.TemporaryDirectory() as out:
        args = reward_args(config, out)
        args.train_sampling_strategy = strategy
        args.save_strategy = "no"
        trainer = RewardTrainer(
            model=model_, args=args, data_collator=collate, train_dataset=dataset, processing_class=tokenizer
        )
        started, cpu = time.perf_counter(), time.process_time()
        trainer.train()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "strategy": strategy,
        "seconds": seconds,
        "cpu_seconds": cpu,
        **tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sequences_cut": truncated["prompts"],
        "sequences": truncated["sequences"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # a child process runs one variant
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.pairs, args.model, args.max_length, args.batch_size)))
        return
    results = []
    for strategy in ("random", "group_by_length"):
        command = [sys.executable, __file__, "--variant", strategy, "--pairs", str(args.pairs)]
        command += [
            "--model",
            args.model,
            "--max_length",
            str(args.max_length),
            "--batch_size",
            str(args.batch_size),
        ]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    old, new = results
    print(
        f"{args.pairs} pairs, {args.model}, max_length {args.max_length}, batch_size {args.batch_size}, "
        "one epoch; "
        f"{old['sequences_cut']} of {old['sequences']} sequences had their prompt cut\n"
    )
    print("| batches | CPU s | wall s | tokens read (padded) | real tokens | padding | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("random order (old)", old), ("grouped by length (new)", new)):
        padding = 1 - r["real"] / r["padded"]
        cells = [f"{r['cpu_seconds']:.1f}", f"{r['seconds']:.1f}", r["padded"], r["real"], f"{padding:.0%}"]
        print(f"| {name} | " + " | ".join(map(str, cells)) + f" | {r['peak_rss_mb']:.0f} |")
    ratios = [old[k] / new[k] for k in ("cpu_seconds", "seconds", "padded")]
    print("| old / new | " + " | ".join(f"{x:.2f}x" for x in ratios), end="")
    print(f" | | | {old['peak_rss_mb'] / new['peak_rss_mb']:.2f}x |")


if __name__ == "__main__":
    main()

"""Scoring throughput of MOSLIM's K-head reward model: K objectives read from one model (one
forward pass per chunk of pairs for all K heads) vs. K separate single-head scorers (the same
model loaded K times, one pass per objective), measured in the same run on the same pairs.

    python benchmarks/multihead_scoring.py [--model runs/moslim-rm] [--k K] [--repeats 3]

The pairs are --data (default: runs/ric29/stages/offline/scored.jsonl, 436 pairs).

Both sides go through `RewardSet.from_specs([...]).score(...)` with `moslim:` specs. The
separate scorers are K directories that link to the model's files, so each is loaded as a
model of its own. Each repetition scores the pairs rotated by one, so no repetition finds the
previous one's probabilities in the cache; the two sides alternate, and each side's fastest
repetition (the one least disturbed by other processes) is compared. Prints a Markdown table
of pairs/s and the ratio (target: >= 0.9 x K).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from steerable.data import load_pairs  # noqa: E402
from steerable.objectives import RewardSet  # noqa: E402
from steerable.reward_models.multihead import MANIFEST  # noqa: E402


def separate_copies(model: Path, k: int, folder: Path) -> list[Path]:
    """K directories holding links to the model's files: K distinct models to the scorer."""
    copies = []
    for i in range(k):
        copy = folder / f"copy_{i}"
        copy.mkdir()
        for name in (MANIFEST, "stages"):
            (copy / name).symlink_to((model / name).resolve())
        copies.append(copy)
    return copies


def seconds(rewards: RewardSet, prompts: list[str], responses: list[str]) -> float:
    start = time.perf_counter()
    rewards.score(prompts, responses)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/moslim-rm"))
    parser.add_argument("--data", type=Path, default=Path("runs/ric29/stages/offline/scored.jsonl"))
    parser.add_argument("--k", type=int, default=None, help="objectives (default: the model's heads)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    heads = json.loads((args.model / MANIFEST).read_text())["objectives"]
    k = args.k or len(heads)
    reads = [heads[i % len(heads)] for i in range(k)]  # K > heads reads heads more than once
    rows = load_pairs(args.data)
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        shared = RewardSet.from_specs(
            [f"o{i}=moslim:{args.model}?objective={h}" for i, h in enumerate(reads)]
        )
        separate = [
            RewardSet.from_specs([f"o{i}=moslim:{copy}?objective={h}"])
            for i, (h, copy) in enumerate(zip(reads, separate_copies(args.model, k, Path(tmp)), strict=True))
        ]
        for rewards in (shared, *separate):  # load and warm up outside the timing
            rewards.score(prompts[:2], responses[:2])
        times = {"shared": [], "separate": []}
        for r in range(1, args.repeats + 1):
            p, q = prompts[r:] + prompts[:r], responses[r:] + responses[:r]
            times["shared"].append(seconds(shared, p, q))
            times["separate"].append(sum(seconds(rewards, p, q) for rewards in separate))
    shared_s, separate_s = (min(times[side]) for side in ("shared", "separate"))
    print(
        f"torch threads: {torch.get_num_threads()}, pairs: {len(prompts)}, K: {k}, repeats: {args.repeats}\n"
    )
    print("| scoring K objectives | seconds (fastest) | pairs/s |")
    print("|---|---|---|")
    print(f"| one K-head model, one pass | {shared_s:.2f} | {len(prompts) / shared_s:.1f} |")
    print(f"| K single-head scorers, K passes | {separate_s:.2f} | {len(prompts) / separate_s:.1f} |")
    ratio = separate_s / shared_s
    print(f"\nratio: {ratio:.2f}x for K = {k} (target >= {0.9 * k:.1f}x)")


if __name__ == "__main__":
    main()

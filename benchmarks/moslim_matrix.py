"""Several MOSLIM recipes side by side: train each (`steerable train moslim` with its own flags,
`--jobs` at a time), then run each finished policy's level sweep (`benchmarks/level_sweep.py`,
the held-out prompts, levels 1..L of each objective alone) and print one table of the level
Spearman per objective. Made for a lent GPU, where several small runs share one card
(benchmarks/gpu/: prepare.sh packs what the card needs, run.sh runs this there); on a CPU use
--jobs 1.

    python benchmarks/moslim_matrix.py RECIPES.json --stats STATS --reward_model RM \
        --out runs/matrix [--jobs 8] [--threads 2] [--train-timeout 420] [--sweep-timeout 120] \
        [--samples 2] [--limit N]

RECIPES.json maps a run name to its extra `train moslim` arguments, e.g.
{"mapped-batch": ["--reward", "mapped", "--scale_rewards", "batch", "--max_steps", "120"]}.
A run that outlives --train-timeout (or its sweep --sweep-timeout) is stopped and shows its
exit status (124) in the table instead of Spearman values; its checkpoints stay. OUT/summary.json
is rewritten as each run ends, so a matrix stopped from outside keeps what had ended.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(command: list[str], log: Path, threads: int, timeout: float | None) -> tuple[int, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    with log.open("w") as handle:
        try:
            code = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, time.perf_counter() - started


def train_and_sweep(name: str, extra: list[str], args) -> dict:
    out = args.out / name
    out.mkdir(parents=True, exist_ok=True)
    train = [
        sys.executable,
        "-m",
        "steerable.cli",
        "train",
        "moslim",
        "--stats",
        args.stats,
        "--output_dir",
        str(out),
        *(["--reward_model", args.reward_model] if args.reward_model else []),
        *extra,
    ]
    code, seconds = run(train, out / "train.log", args.threads, args.train_timeout)
    result = {"name": name, "args": extra, "train_exit": code, "train_seconds": round(seconds, 1)}
    if code != 0:
        return result
    record = out / "levels.json"
    sweep = [
        sys.executable,
        str(HERE / "level_sweep.py"),
        str(out),
        "--method",
        "moslim",
        "--out",
        str(record),
        "--samples",
        str(args.samples),
        "--max-new-tokens",
        str(args.max_new_tokens),
        *(["--limit", str(args.limit)] if args.limit else []),
    ]
    code, seconds = run(sweep, out / "sweep.log", args.threads, args.sweep_timeout)
    result.update(sweep_exit=code, sweep_seconds=round(seconds, 1))
    if code == 0:
        levels = json.loads(record.read_text())["controllability"]
        result["spearman"] = {k: v["spearman"] for k, v in levels.items()}
        result["spearman_prompts"] = {k: v["spearman_prompts"] for k, v in levels.items()}
        result["means"] = {k: v["means"] for k, v in levels.items()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", type=Path)
    parser.add_argument("--stats", required=True)
    parser.add_argument("--reward_model", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-timeout", type=float, default=None)
    parser.add_argument("--sweep-timeout", type=float, default=None)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument(
        "--limit", type=int, default=None, help="Held-out prompts in the sweep (default: all)."
    )
    args = parser.parse_args()
    recipes = json.loads(args.recipes.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    results, lock = [], threading.Lock()

    def one(name: str, extra: list[str]) -> None:
        try:
            result = train_and_sweep(name, extra, args)
        except Exception as err:  # one broken run must not lose the others' results
            result = {"name": name, "args": extra, "error": repr(err)}
        with lock:
            results.append(result)
            (args.out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda item: one(*item), recipes.items()))
    print("| run | train s | Spearman (levels) | Spearman (levels x prompts) |")
    print("|---|---|---|---|")
    for r in sorted(results, key=lambda r: list(recipes).index(r["name"])):
        status = r.get("error") or f"exit {r.get('sweep_exit', r.get('train_exit'))}"
        levels = ", ".join(f"{k} {v:+.2f}" for k, v in r.get("spearman", {}).items()) or status
        prompts = ", ".join(f"{k} {v:+.3f}" for k, v in r.get("spearman_prompts", {}).items())
        print(f"| {r['name']} | {r.get('train_seconds', '')} | {levels} | {prompts} |")


if __name__ == "__main__":
    main()

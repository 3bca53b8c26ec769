"""Text throughput of `steerable serve` for experts mixed per request, in one run: the same 32
chat requests, each with its own weights (spread over the simplex) and seed, sent one at a time
and then by 32 concurrent clients, whose rows the server decodes together, for each mixing of
one directory of experts (`soups`, `mod`, `lora-mix`).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/expert_serving.py SOUPS_DIR
        [--requests 32] [--tokens 48] [--methods soups mod lora-mix]

Prints completion tokens/s per mixing and concurrency, the ratio to one at a time, and p50 /
p95 request latency; the server runs in this process on loopback. A request answers the same
alone as in a batch (its own seed), so both runs decode the same tokens.
"""

from __future__ import annotations

import argparse
import statistics

from serving_throughput import run
from steerable.data import load_prompts
from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer


def main() -> None:
    prompts = load_prompts(split="heldout")
    print(f"{ARGS.requests} requests of {ARGS.tokens} tokens, each with its own weights and seed")
    print("| mixing | forwards / token | clients | tokens/s | vs 1 at a time | p50 s | p95 s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method in ARGS.methods:
        model = ServedModel.load(ARGS.model, max_batch=64, method=method)
        server = BackgroundServer(create_app([model]))
        url = server.url + "/v1/chat/completions"
        k = len(model.policy.names)
        bodies = []
        for i in range(ARGS.requests):
            w = (i % 11) / 10
            bodies.append({
                "model": model.id, "max_tokens": ARGS.tokens, "seed": i, "temperature": 0.7,
                "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
                "steering": {"weights": [w, *[(1 - w) / max(k - 1, 1)] * (k - 1)]},
            })  # fmt: skip
        run(url, bodies[:2], 2)  # warm-up (and Soups' first merges)
        rows = []
        for clients in (1, ARGS.requests):
            seconds, tokens, latencies = run(url, bodies, clients)
            q = statistics.quantiles(latencies, n=20)
            rows.append((clients, tokens / seconds, statistics.median(latencies), q[18]))
        base = rows[0][1]
        for clients, rate, p50, p95 in rows:
            print(
                f"| {method} | {model.policy.model.forwards} | {clients} | {rate:.0f} | {rate / base:.2f}x "
                f"| {p50:.1f} | {p95:.1f} |"
            )
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="A Rewarded Soups directory (its experts).")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--methods", nargs="+", default=["soups", "mod", "lora-mix"])
    ARGS = parser.parse_args()
    main()

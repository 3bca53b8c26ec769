"""Throughput and latency of `steerable serve`, in one run: the same 32 requests, each with its own
steering, sent one at a time and then by 8 and by 32 concurrent clients (`--requests 128`: each
of the 32 clients sends 4 in turn, a sustained load rather than one burst).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving_throughput.py MODEL_DIR [--max-tokens 32]
        [--requests 32] [--prefill-rows 8]

MODEL_DIR is any served model directory (RiC, MOSLIM: weights steering; NP-DPO: examples, each
request a different held-out user). Prints completion tokens/s per concurrency, the ratio to one
at a time, and p50 / p95 request latency; the server runs in this process on loopback.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from steerable.data import load_prompts
from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer


def steering_for(model: ServedModel, i: int) -> dict:
    if model.method == "np-dpo":
        from steerable.data.loading import read_table
        from steerable.methods.np_dpo.steering import simulated_examples

        pairs = read_table(Path(ARGS.model) / model.policy.manifest.fewshot["heldout_pairs"])
        w = i / 31
        return {"examples": simulated_examples(pairs, model.policy.rewards, [w, 1 - w], 5, seed=i)}
    w = (i % 11) / 10
    return {"weights": [w, 1 - w]}


def run(url: str, bodies: list[dict], clients: int) -> tuple[float, int, list[float]]:
    """(wall seconds, completion tokens, per-request latencies) with `clients` concurrent clients."""

    def one(body):
        started = time.perf_counter()
        response = httpx.post(url, json=body, timeout=1800)
        response.raise_for_status()
        return time.perf_counter() - started, response.json()["usage"]["completion_tokens"]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, bodies))
    return time.perf_counter() - started, sum(t for _, t in results), [s for s, _ in results]


def main() -> None:
    model = ServedModel.load(ARGS.model, max_batch=32, max_queue=256)
    model.engine.prefill_rows = ARGS.prefill_rows
    server = BackgroundServer(create_app([model], max_tokens_limit=ARGS.max_tokens))
    url = server.url + "/v1/chat/completions"
    heldout = load_prompts("heldout")  # 66; past them the prompts come round again, other seeds
    prompts = [heldout[i % len(heldout)] for i in range(ARGS.requests)]
    bodies = [
        {
            "model": model.id,
            "messages": [{"role": "user", "content": p}],
            "max_tokens": ARGS.max_tokens,
            "temperature": 0.7,
            "seed": i,
            "steering": steering_for(model, i),
        }
        for i, p in enumerate(prompts)
    ]
    run(url, bodies[:2], 2)  # warm-up
    rows = []
    for clients in (1, 8, 32):
        seconds, tokens, latencies = run(url, bodies, clients)
        q = statistics.quantiles(latencies, n=20)
        rows.append((clients, tokens / seconds, statistics.median(latencies), q[18], seconds, tokens))
    base = rows[0][1]
    groups = ARGS.prefill_rows or "all"
    print(f"model {model.id} ({model.method}), {len(bodies)} requests, max_tokens {ARGS.max_tokens}, "
          f"prefill groups of {groups}, largest batch {model.engine.largest_batch}")  # fmt: skip
    print("| clients | completion tok/s | vs 1 at a time | p50 latency s | p95 latency s | wall s | tokens |")
    print("|---|---|---|---|---|---|---|")
    for clients, rate, p50, p95, seconds, tokens in rows:
        cells = [
            clients,
            f"{rate:.1f}",
            f"{rate / base:.2f}x",
            f"{p50:.1f}",
            f"{p95:.1f}",
            f"{seconds:.1f}",
            tokens,
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prefill-rows", type=int, default=8, help="0: a burst is prefilled in one pass")
    ARGS = parser.parse_args()
    main()

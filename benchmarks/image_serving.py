"""Image throughput of `steerable serve` for a RiC image model, in one run: the same 16
requests, each with its own steering (weights from 0 to 1 and back), sent one at a time and
then by 16 concurrent clients, whose rows the server batches together (tags are prompt text).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/image_serving.py MODEL_DIR
        [--requests 16] [--n 4] [--steps 50]

Prints images/s per concurrency, the ratio to one at a time, and p50 / p95 request latency; the
server runs in this process on loopback.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from steerable.data.digits import caption
from steerable.serving.api import ServedModel, create_app
from steerable.serving.local import BackgroundServer


def run(url: str, bodies: list[dict], clients: int) -> tuple[float, int, list[float]]:
    """(wall seconds, images, per-request latencies) with `clients` concurrent clients."""

    def one(body):
        started = time.perf_counter()
        response = httpx.post(url, json=body, timeout=1800)
        response.raise_for_status()
        return time.perf_counter() - started, len(response.json()["data"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, bodies))
    return time.perf_counter() - started, sum(n for _, n in results), [s for s, _ in results]


def main() -> None:
    model = ServedModel.load(ARGS.model, max_batch=128, max_queue=256)
    server = BackgroundServer(create_app([model]))
    url = server.url + "/v1/images/generations"
    size = f"{model.policy.size}x{model.policy.size}"
    bodies = []
    for i in range(ARGS.requests):
        w = abs((i % 20) - 10) / 10
        bodies.append({
            "model": model.id, "prompt": caption(i % 10), "n": ARGS.n, "size": size,
            "response_format": "b64_json", "seed": i, "num_inference_steps": ARGS.steps,
            "steering": {"weights": [w, 1 - w] + [0.0] * (len(model.policy.names) - 2)},
        })  # fmt: skip
    run(url, bodies[:2], 2)  # warm-up
    rows = []
    for clients in (1, ARGS.requests):
        seconds, images, latencies = run(url, bodies, clients)
        q = statistics.quantiles(latencies, n=20)
        rows.append((clients, images / seconds, statistics.median(latencies), q[18], seconds, images))
    base = rows[0][1]
    print(f"model {model.id} ({model.method}), {len(bodies)} requests of {ARGS.n} images, {ARGS.steps} steps")
    print("| clients | images/s | vs 1 at a time | p50 latency s | p95 latency s | wall s | images |")
    print("|---|---|---|---|---|---|---|")
    for clients, rate, p50, p95, seconds, images in rows:
        cells = [
            clients,
            f"{rate:.2f}",
            f"{rate / base:.2f}x",
            f"{p50:.1f}",
            f"{p95:.1f}",
            f"{seconds:.1f}",
            images,
        ]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    ARGS = parser.parse_args()
    main()

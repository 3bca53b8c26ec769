"""The serving engine's per-row sampler, one decode step: the batched inverse-CDF draw
(`steerable.decoding.draw_tokens`) against the per-row loop it replaced (a top-k over the
whole vocabulary, i.e. a full sort, per row), in one run.

    python benchmarks/row_sampler.py [--rows 32] [--vocab 49152] [--repeats 20]

Scores are SmolLM2-sized rows of random logits scaled like a language model's (a few likely
tokens); each row has its own seeded generator, temperature 0.7, top-p 1.0 (the API default)
and 0.9. Prints milliseconds per step and the ratio, as Markdown.
"""

from __future__ import annotations

import argparse
import time

import torch

from steerable.decoding import draw_tokens


def per_row_loop(scores, temperature, top_p, generators):
    """The replaced sampler: each row's top-k over the whole vocabulary (a sort), then top-p."""
    tokens = []
    for row, generator in enumerate(generators):
        top = torch.topk(scores[row].float() / temperature[row], scores.shape[-1])
        probs = torch.softmax(top.values, dim=-1)
        probs = probs.masked_fill(torch.cumsum(probs, dim=-1) - probs >= top_p[row], 0.0)
        tokens.append(top.indices[torch.multinomial(probs, 1, generator=generator)[0]])
    return torch.stack(tokens)


def batched(scores, temperature, top_p, generators):
    uniform = torch.cat([torch.rand(1, generator=g) for g in generators])
    return draw_tokens(scores, temperature, top_p, uniform)


def timed(fn, *args, repeats: int) -> float:
    fn(*args)
    started = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    scores = torch.randn(args.rows, args.vocab) * 3
    scores[:, :8] += 12  # a few likely tokens per row, as a language model's logits have
    temperature = torch.full((args.rows,), 0.7)
    print(f"{args.rows} rows x {args.vocab} tokens, {torch.get_num_threads()} threads\n")
    print("| top_p | per-row loop ms | batched draw ms | speed-up |")
    print("|---|---|---|---|")
    for p in (1.0, 0.9):
        top_p = torch.full((args.rows,), p)
        generators = [torch.Generator().manual_seed(i) for i in range(args.rows)]
        loop = timed(per_row_loop, scores, temperature, top_p, generators, repeats=args.repeats)
        draw = timed(batched, scores, temperature, top_p, generators, repeats=args.repeats)
        print(f"| {p} | {loop:.1f} | {draw:.1f} | {loop / draw:.1f}x |")


if __name__ == "__main__":
    main()

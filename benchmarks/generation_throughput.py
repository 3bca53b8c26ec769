"""Generation throughput: our batched, length-sorted, left-padded generation vs. a batch-size-1
loop (how the RiC reference generates), same model, prompts and settings, in one run.

    python benchmarks/generation_throughput.py [--model smollm2] [--prompts 64] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from steerable.data import load_prompts  # noqa: E402
from steerable.defaults import load_causal_lm  # noqa: E402
from steerable.generation import (  # noqa: E402
    SamplingConfig,
    count_tokens,  # noqa: E402
    format_chat,
    generate_texts,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    model, tokenizer = load_causal_lm(args.model)
    texts = format_chat(tokenizer, load_prompts("heldout") + load_prompts("train"))[: args.prompts]
    results = {}
    for label, batch_size in (("batch size 1 loop", 1), (f"batched ({args.batch_size})", args.batch_size)):
        config = SamplingConfig(args.max_new_tokens, 0.8, 0.95, batch_size, 0)
        started = time.perf_counter()
        responses = generate_texts(model, tokenizer, texts, config, progress=False)
        seconds = time.perf_counter() - started
        tokens = count_tokens(tokenizer, responses)
        results[label] = tokens / seconds
        print(f"{label}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s", flush=True)
    single, batched = results.values()
    print("\n| model | prompts | max new tokens | batch-1 tokens/s | batched tokens/s | ratio |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.model} | {len(texts)} | {args.max_new_tokens} | {single:.1f} | {batched:.1f} | "
        f"{batched / single:.1f}x |"
    )


if __name__ == "__main__":
    main()

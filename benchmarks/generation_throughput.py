"""Generation throughput: our batched generation vs. a batch-size-1 loop, same model, prompts and
sampling settings (temperature 0.8, top-p 0.95, top-k 50), in one run.

Three ways through the same prompts:
    reference   one prompt per `model.generate(do_sample=True, ...)` call, transformers' own
                sampler: how the RiC reference code generates (the issue's baseline)
    ours, 1     `generate_texts` with batch size 1 (our sampler, no batching)
    ours, N     `generate_texts` with batch size N: length-sorted, left-padded batches

    python benchmarks/generation_throughput.py [--model smollm2] [--prompts 64] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from steerable.data import load_prompts  # noqa: E402
from steerable.defaults import load_causal_lm  # noqa: E402
from steerable.generation import SamplingConfig, count_tokens, format_chat, generate_texts  # noqa: E402


@torch.inference_mode()
def reference_loop(model, tokenizer, texts: list[str], config: SamplingConfig) -> list[str]:
    """One sequence per generate call with transformers' sampler (its default top-k is 50)."""
    torch.manual_seed(config.seed)
    responses = []
    for text in texts:
        batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        out = model.generate(
            **batch,
            max_new_tokens=config.max_new_tokens,
            do_sample=True,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = out[0, batch["input_ids"].shape[1] :]
        responses.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return responses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    model, tokenizer = load_causal_lm(args.model)
    texts = format_chat(tokenizer, load_prompts("heldout") + load_prompts("train"))[: args.prompts]

    def config(batch_size: int) -> SamplingConfig:
        return SamplingConfig(
            max_new_tokens=args.max_new_tokens,
            temperature=0.8,
            top_p=0.95,
            batch_size=batch_size,
            seed=0,
            top_k=50,
        )

    runs = {
        "reference (transformers sampler, batch 1 loop)": lambda: reference_loop(
            model, tokenizer, texts, config(1)
        ),
        "ours, batch size 1": lambda: generate_texts(model, tokenizer, texts, config(1), progress=False),
        f"ours, batched ({args.batch_size})": lambda: generate_texts(
            model, tokenizer, texts, config(args.batch_size), progress=False
        ),
    }
    rates = {}
    for label, run in runs.items():
        started = time.perf_counter()
        responses = run()
        seconds = time.perf_counter() - started
        tokens = count_tokens(tokenizer, responses)
        rates[label] = tokens / seconds
        print(f"{label}: {tokens} tokens in {seconds:.1f} s = {rates[label]:.1f} tokens/s", flush=True)
    reference, single, batched = rates.values()
    print(
        "\n| model | prompts | max new tokens | reference batch-1 tokens/s | ours batch-1 tokens/s "
        "| ours batched tokens/s | batched vs reference | batched vs ours batch-1 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.model} | {len(texts)} | {args.max_new_tokens} | {reference:.1f} | {single:.1f} | "
        f"{batched:.1f} | {batched / reference:.1f}x | {batched / single:.1f}x |"
    )


if __name__ == "__main__":
    main()

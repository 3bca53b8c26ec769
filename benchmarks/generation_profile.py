"""Where does batched generation spend its time? One profiled `generate` call, plus one decode step
timed alone.

    python benchmarks/generation_profile.py [--model smollm2] [--prompts 64] [--max-new-tokens 16]

Uses the held-out prompts through the chat template, left-padded into one batch, with the
benchmark's sampling settings (temperature 0.8, top-p 0.95), and prints the total time, the time
of one decode forward of the whole batch, and torch.profiler's table of the costliest operators.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from steerable.data import load_prompts  # noqa: E402
from steerable.defaults import load_causal_lm  # noqa: E402
from steerable.generation import format_chat  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    model, tokenizer = load_causal_lm(args.model)
    tokenizer.padding_side = "left"
    texts = format_chat(tokenizer, load_prompts("heldout"))[: args.prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    n = batch["input_ids"].shape[0]
    print(
        f"attention: {model.config._attn_implementation}, threads: {torch.get_num_threads()}, "
        f"batch: {tuple(batch['input_ids'].shape)}"
    )
    settings = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.inference_mode():
        model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            model.generate(**batch, **settings)
            total = time.perf_counter() - started
        out = model(**batch, use_cache=True)
        cache = out.past_key_values
        step_ids = out.logits[:, -1:].argmax(-1)
        mask = torch.cat([batch["attention_mask"], torch.ones(n, 1, dtype=torch.long)], dim=1)
        started = time.perf_counter()
        model(input_ids=step_ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        step = time.perf_counter() - started
    print(f"generate ({args.max_new_tokens} new tokens, profiled): {total:.1f} s")
    print(f"one decode forward of the batch: {step:.2f} s\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()

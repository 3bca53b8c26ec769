"""Decode throughput of mixing K experts per request, against one expert alone, in one run: the
same prompts (batch 32 by default, greedy, a fixed number of new tokens) decoded by the serving
engine's loop (`decoding.run_batch`, the loop `evaluate` and `serve` use) for

    one expert   expert 0's adapter merged into the base: the cost of one model
    one expert, unmerged   expert 0 as a PEFT adapter beside the base weights (the LoRA
                 path each expert of a mixture runs unmerged too)
    mod          MOD, each expert merged into its own copy of the adapted layers, one forward
                 per copy (K forwards a token; the default layout)
    mod, adapters   MOD on one base holding the K adapters: K copies of every row in one
                 PeftModel mixed-batch forward (K unmerged forwards a token; merge=False)
    lora-mix     every adapter active, outputs weighted per row (one forward, K LoRA paths)
    soups        rows routed to their merged adapter (one forward, one LoRA path of rank sum r_k)
    mod in generate   MOD the other way it could be built: a `LogitsProcessor` inside
                 transformers' `generate`, whose own model (expert 0) still runs its forward
                 every token while the processor runs the K experts on the new token with
                 their own cache (K + 1 forwards a token)

each row with its own weights (spread over the simplex), so nothing is shared but the batch.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/expert_mixing.py SOUPS_DIR
        [--batch 32] [--tokens 48] [--repeats 2]

Prints tokens/s per method (best of the repeats), its ratio to one expert, and the median over
repeats of that ratio within each repeat ("paired"); MOD's floor is 1/K (the K forwards).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from steerable.data import load_prompts
from steerable.decoding import Job, run_batch
from steerable.experts.mixture import RowWeights
from steerable.generation import format_chat
from steerable.policy import SteerablePolicy, load_manifest

METHODS = ("mod", "mod, adapters", "lora-mix", "soups")


def decode(model, tokenizer, texts: list[str], rows: list | None) -> float:
    """Generated tokens per second for `texts` decoded together, every row to `--tokens` (no
    stop token: rows that ended unevenly would leave batches of different sizes)."""
    jobs = [Job(text, ARGS.tokens, temperature=0.0) for text in texts]
    for job, row in zip(jobs, rows or [None] * len(jobs), strict=True):
        job.condition = row
    started = time.perf_counter()
    run_batch(model, tokenizer, jobs, None if rows is None else model.weighted, stops=set())
    return sum(job.completion_tokens for job in jobs) / (time.perf_counter() - started)


class MODProcessor(LogitsProcessor):
    """MOD's scores for `generate`: the mixture's forward on each new token (the whole prompt at
    the first step), with its own KV cache, every row with its own weights."""

    def __init__(self, mixture, mask: torch.Tensor, rows: list):
        self.mixture, self.mask, self.rows, self.cache = mixture, mask, rows, None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.cache is None:
            new, positions = input_ids, (self.mask.cumsum(-1) - 1).clamp(min=0)
        else:
            new = input_ids[:, -1:]
            self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=-1)
            positions = self.mask.sum(-1, keepdim=True) - 1
        with self.mixture.weighted(self.rows):
            out = self.mixture(
                new, attention_mask=self.mask, position_ids=positions, cache=self.cache, logits_to_keep=1
            )
        self.cache = out.cache
        return out.logits[:, -1]


@torch.inference_mode()
def generate_with_processor(single, mixture, tokenizer, texts: list[str], rows: list) -> float:
    """Generated tokens per second of MOD as a processor inside `generate` (greedy, every row to
    `--tokens`)."""
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    processor = MODProcessor(mixture, batch["attention_mask"], rows)
    started = time.perf_counter()
    out = single.generate(
        **batch, max_new_tokens=ARGS.tokens, min_new_tokens=ARGS.tokens, do_sample=False,
        pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([processor]),
    )  # fmt: skip
    return (out.shape[1] - batch["input_ids"].shape[1]) * len(texts) / (time.perf_counter() - started)


def one_expert(directory: str, merged: bool = True):
    """Expert 0 alone: its adapter merged into the base (or not)."""
    from peft import PeftModel

    from steerable.defaults import load_causal_lm

    manifest = load_manifest(directory)
    base, tokenizer = load_causal_lm(manifest.base_model, manifest.dtype)
    model = PeftModel.from_pretrained(base, f"{directory}/{manifest.policies[0]['adapter']}")
    return (model.merge_and_unload() if merged else model).eval(), tokenizer


def main() -> None:
    torch.manual_seed(0)
    prompts = load_prompts(split="heldout")
    prompts = (prompts * (ARGS.batch // len(prompts) + 1))[: ARGS.batch]
    single, tokenizer = one_expert(ARGS.model)
    unmerged, _ = one_expert(ARGS.model, merged=False)
    texts = format_chat(tokenizer, prompts)
    policies = {
        m: SteerablePolicy.from_pretrained(ARGS.model, method=m.split(",")[0], merge=m != "mod, adapters")
        for m in METHODS
    }
    k = len(policies["mod"].names)
    # every row its own weights, spread over the simplex
    rows = [RowWeights((w := (i % 11) / 10, *[(1 - w) / max(k - 1, 1)] * (k - 1))) for i in range(len(texts))]
    names = ("one expert", "unmerged", *METHODS, "mod in generate")
    rates: dict[str, list[float]] = {name: [] for name in names}
    decode(single, tokenizer, texts[:2], None)  # warm-up
    for _ in range(ARGS.repeats):  # interleaved, so drift in the machine's speed hits all alike
        rates["one expert"].append(decode(single, tokenizer, texts, None))
        rates["unmerged"].append(decode(unmerged, tokenizer, texts, None))
        for method, policy in policies.items():
            rates[method].append(decode(policy.model, policy.tokenizer, texts, rows))
        mod = policies["mod"].model
        rates["mod in generate"].append(generate_with_processor(single, mod, tokenizer, texts, rows))
    base, lora = max(rates["one expert"]), max(rates["unmerged"])

    def paired(method: str) -> float:
        """The median over repeats of its rate / one expert's rate in the same repeat (the
        machine's speed drifts between repeats; within one, the two ran minutes apart at most)."""
        return statistics.median(m / one for m, one in zip(rates[method], rates["one expert"], strict=True))

    print(f"K = {k} experts, batch {len(texts)}, {ARGS.tokens} tokens a row, best of {ARGS.repeats}")
    print("| decoding | forwards / token | tokens/s | vs one expert | vs one expert unmerged | paired |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| one expert (merged) | 1 | {base:.0f} | 1.00x | {base / lora:.2f}x | 1.00x |")
    unmerged = f"{lora:.0f} | {lora / base:.2f}x | 1.00x | {paired('unmerged'):.2f}x"
    print(f"| one expert (unmerged adapter) | 1 | {unmerged} |")
    forwards = {**{m: p.model.forwards for m, p in policies.items()}, "mod in generate": k + 1}
    for method, count in forwards.items():
        rate = max(rates[method])
        name = "mod in generate (LogitsProcessor)" if method == "mod in generate" else method
        ratios = f"{rate / base:.2f}x | {rate / lora:.2f}x | {paired(method):.2f}x"
        print(f"| {name} | {count} | {rate:.0f} | {ratios} |")
    best = max(rates["mod"]) * k / base
    print(
        f"MOD (merged) against its floor, one expert's rate / K: best of each {best:.2f}, "
        f"paired {paired('mod') * k:.2f} (1.00: no overhead beyond the K forwards)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="A Rewarded Soups directory (its experts).")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    ARGS = parser.parse_args()
    main()

"""Batched sampling from a causal LM: chat formatting, left padding, length-sorted batches, and a
top-k sampler that draws among the k candidates instead of the whole vocabulary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from steerable.errors import SteerableError


@dataclass
class SamplingConfig:
    """How responses are sampled.

    max_new_tokens: cap on generated tokens per response.
    temperature / top_p: sampling settings; temperature 0 means greedy decoding.
    batch_size: sequences per `generate` call (sequences are sorted by length first).
    seed: torch seed set before sampling, for reproducible runs.
    top_k: sample among the k most likely tokens (transformers' default, 50); 0 = the whole
        vocabulary, through transformers' own sampler.
    """

    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 32
    seed: int | None = 0
    top_k: int = 50

    def __post_init__(self):
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise SteerableError("max_new_tokens and batch_size must be >= 1")
        if not (self.temperature >= 0 and 0 < self.top_p <= 1 and self.top_k >= 0):
            raise SteerableError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")


class TopKSampler(LogitsProcessor):
    """Draws the next token from the temperature-scaled top-k, top-p distribution and returns
    scores that are 0 at the drawn token and -inf elsewhere, so that `generate` run with
    do_sample=False (argmax) emits it.

    The distribution is the one `generate(do_sample=True, temperature, top_k, top_p)` samples
    from; only the work differs. transformers' sampler sorts (for top-p), softmaxes and draws
    over the whole vocabulary even after top-k has left k finite scores: for 64 sequences and
    SmolLM2's 49,152 tokens that is ~90 ms of a ~330 ms decode step on 2 CPU cores. Drawing among
    the k candidates takes ~2 ms (benchmarks/RESULTS.md, generation throughput).
    """

    def __init__(self, temperature: float, top_k: int, top_p: float):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = torch.topk(scores.float() / self.temperature, min(self.top_k, scores.shape[-1]), dim=-1)
        probs = torch.softmax(top.values, dim=-1)  # sorted, most likely first
        # top-p as transformers applies it: keep a token while the mass before it is < top_p
        probs = probs.masked_fill(torch.cumsum(probs, dim=-1) - probs >= self.top_p, 0.0)
        token = top.indices.gather(-1, torch.multinomial(probs, 1))
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """Messages through the model's chat template, ready for generation. A tokenizer without a
    chat template gets the message texts joined by blank lines."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def format_chat(tokenizer, prompts: Sequence[str], system: str | Sequence[str] | None = None) -> list[str]:
    """Plain prompts (optionally with a system text, one for all or one per prompt) rendered."""
    systems = [system] * len(prompts) if system is None or isinstance(system, str) else list(system)
    return [
        render_chat(
            tokenizer,
            ([{"role": "system", "content": sys_text}] if sys_text else [])
            + [{"role": "user", "content": prompt}],
        )
        for prompt, sys_text in zip(prompts, systems, strict=True)
    ]


@torch.inference_mode()
def generate_texts(
    model, tokenizer, texts: Sequence[str], sampling: SamplingConfig, progress: bool = True
) -> list[str]:
    """Continue each already-formatted text; returns only the new text, special tokens dropped."""
    if not texts:
        raise SteerableError("no prompts to generate from")
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    tokenizer.padding_side = "left"
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    outputs = [""] * len(texts)
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    if sampling.temperature <= 0:
        kwargs.update(do_sample=False)
    elif sampling.top_k:
        sampler = TopKSampler(sampling.temperature, sampling.top_k, sampling.top_p)
        kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([sampler]))
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    bar = tqdm(total=len(texts), desc="generating", unit="seq", disable=not progress)
    for start in range(0, len(order), sampling.batch_size):
        idx = order[start : start + sampling.batch_size]
        batch = tokenizer(
            [texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(model.device)
        out = model.generate(**batch, **kwargs)
        new = out[:, batch["input_ids"].shape[1] :]
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
            outputs[i] = text.strip()
        bar.update(len(idx))
    bar.close()
    return outputs


def count_tokens(tokenizer, texts: Sequence[str]) -> int:
    """Tokens in `texts` (no special tokens): the unit of the compute accounting."""
    return sum(len(ids) for ids in tokenizer(list(texts), add_special_tokens=False).input_ids)

"""Batched sampling from a causal LM: chat formatting, left padding, length-sorted batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from steerable.errors import SteerableError


@dataclass
class SamplingConfig:
    """How responses are sampled.

    max_new_tokens: cap on generated tokens per response.
    temperature / top_p: sampling settings; temperature 0 means greedy decoding.
    batch_size: sequences per `generate` call (sequences are sorted by length first).
    seed: torch seed set before sampling, for reproducible runs.
    """

    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95
    batch_size: int = 32
    seed: int | None = 0


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
    greedy = sampling.temperature <= 0
    kwargs = dict(
        max_new_tokens=sampling.max_new_tokens,
        do_sample=not greedy,
        pad_token_id=tokenizer.pad_token_id,
        **({} if greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p}),
    )
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

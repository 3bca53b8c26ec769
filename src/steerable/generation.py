"""Batched sampling from a causal LM: chat formatting, left padding, length-sorted batches, and a
top-k sampler that draws among the k candidates instead of the whole vocabulary.

Chat templates differ by family, and everything here works with any of them: a template without
a system role (Gemma's) gets the system text folded into the user turn (`template_messages`),
generation stops at the template's end of turn where it is not eos_token (`stop_token_ids`), and
a tokenizer without a template is refused with the fix, or given one (`require_chat_template`)."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jinja2 import TemplateError
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from steerable.configs import SEED, check_config
from steerable.errors import SteerableError


@dataclass(kw_only=True)
class SamplingConfig:
    """How responses are sampled: the one set of sampling settings and defaults, shared by
    `steerable sample`, `generate`, `evaluate` and the trainers. Keyword-only, so a call site
    never confuses two numbers.

    max_new_tokens: cap on generated tokens per response.
    temperature / top_p: sampling settings; temperature 0 means greedy decoding.
    batch_size: sequences per `generate` call (sequences are sorted by length first).
    seed: torch seed set before sampling, for reproducible runs (None: not reseeded).
    top_k: sample among the k most likely tokens (transformers' default, 50); 0 = the whole
        vocabulary, through transformers' own sampler.
    """

    max_new_tokens: int = field(default=64, metadata={"ge": 1})
    temperature: float = field(default=0.7, metadata={"ge": 0})
    top_p: float = field(default=0.95, metadata={"gt": 0, "le": 1})
    batch_size: int = field(default=64, metadata={"ge": 1})
    seed: int | None = field(default=0, metadata=SEED)
    top_k: int = field(default=50, metadata={"ge": 0})

    def __post_init__(self):
        check_config(self)


class TopKSampler(LogitsProcessor):
    """Draws the next token from the temperature-scaled top-k, top-p distribution and returns
    scores that are 0 at the drawn token and -inf elsewhere, so that `generate` run with
    do_sample=False (argmax) emits it.

    The distribution is the one `generate(do_sample=True, temperature, top_k, top_p)` samples
    from; only the work differs. transformers' sampler sorts (for top-p), softmaxes and draws
    over the whole vocabulary even after top-k has left k finite scores: with a vocabulary the
    size of SmolLM2's, that is a large share of a decode step on a CPU, while drawing among the k
    candidates costs next to nothing. benchmarks/RESULTS.md (Throughput) measures batched
    generation with this sampler.
    """

    def __init__(self, temperature: float, top_k: int, top_p: float):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        top = torch.topk(scores.float() / self.temperature, min(self.top_k, scores.shape[-1]), dim=-1)
        probs = cut_to_top_p(torch.softmax(top.values, dim=-1), self.top_p)
        token = top.indices.gather(-1, torch.multinomial(probs, 1))
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)


def cut_to_top_p(probs: torch.Tensor, top_p: float | torch.Tensor) -> torch.Tensor:
    """Top-p as transformers applies it, on probabilities sorted most likely first (each row): a
    token is kept while the mass before it is < top_p (a number, or one per row: shape (B, 1));
    the others become 0."""
    return probs.masked_fill(torch.cumsum(probs, dim=-1) - probs >= top_p, 0.0)


def require_chat_template(tokenizer, model: str, chat_template: str | Path | None = None):
    """Make sure `tokenizer` has a chat template before anything trains on or samples chats
    (TRL's SFT fails deep inside with a traceback without one). `chat_template`, as TRL's
    `chat_template_path`, replaces the tokenizer's own: a .jinja (or .j2) file, or a tokenizer
    directory or cached hub id whose template is copied. Special tokens the template names must
    already be in the tokenizer: they are not added, so the embeddings need no resizing.
    Without any template, a SteerableError names the model and the fix. Returns the
    tokenizer."""
    if chat_template is not None:
        tokenizer.chat_template = _read_chat_template(str(chat_template))
    if not getattr(tokenizer, "chat_template", None):
        raise _no_chat_template(model)
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    except TemplateError as err:
        raise SteerableError(
            f"the chat template of {model!r} cannot render a user turn ({err}); fix or replace it"
        )
    return tokenizer


def _no_chat_template(model: str) -> SteerableError:
    return SteerableError(
        f"model {model!r} has no chat template, and steerable speaks to models in chats; set "
        "chat_template_path to a .jinja file or to a model whose template fits this tokenizer, or "
        "use an instruct model"
    )


def _read_chat_template(source: str) -> str:
    if source.endswith((".jinja", ".j2")):
        try:
            return Path(source).read_text()
        except OSError as err:
            raise SteerableError(f"cannot read chat template {source}: {err.strerror or err}")
    from transformers import AutoTokenizer

    try:
        template = AutoTokenizer.from_pretrained(source).chat_template
    except (OSError, ValueError) as err:
        raise SteerableError(
            f"chat template source {source!r} is neither a .jinja file nor a loadable tokenizer ({err})"
        )
    if not template:
        raise SteerableError(f"{source} has no chat template to copy; choose a chat (instruct) model")
    return template


# Whether a tokenizer's template takes a system message, per tokenizer and template text (a
# template can be replaced after loading). Weak keys, so a cached tokenizer can still be freed.
_SYSTEM_ROLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SYSTEM_PROBE = "steerable system probe"


def accepts_system_role(tokenizer) -> bool:
    """True when the chat template renders a system message. Gemma's raises on one, and some
    templates drop it silently; both count as no."""
    template = tokenizer.chat_template
    cached = _SYSTEM_ROLE.get(tokenizer)
    if cached is None or cached[0] != template:
        probe = [{"role": "system", "content": _SYSTEM_PROBE}, {"role": "user", "content": "Hi"}]
        try:
            accepts = _SYSTEM_PROBE in tokenizer.apply_chat_template(probe, tokenize=False)
        except TemplateError:
            accepts = False
        cached = _SYSTEM_ROLE[tokenizer] = (template, accepts)
    return cached[1]


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The chat without system messages: their text opens the next user turn (system text, blank
    line, user text), which is where templates without a system role put it themselves."""
    folded, pending = [], []
    for message in messages:
        if message["role"] == "system":
            pending.append(message["content"])
            continue
        if pending:
            if message["role"] == "user":
                message = {**message, "content": "\n\n".join([*pending, message["content"]])}
            else:
                folded.append({"role": "user", "content": "\n\n".join(pending)})
            pending = []
        folded.append(message)
    if pending:
        folded.append({"role": "user", "content": "\n\n".join(pending)})
    return folded


def template_messages(tokenizer, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """`messages` as the tokenizer's chat template can take them: system messages folded into
    the user turn when the template has no system role. Whatever renders chats, here or in a
    trainer, goes through this, so a model sees its prompts the same way in training and use."""
    if any(m["role"] == "system" for m in messages) and not accepts_system_role(tokenizer):
        return fold_system(messages)
    return messages


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """Messages through the model's chat template (see `template_messages`), ready for
    generation. A tokenizer without a template is refused rather than given the texts joined:
    a model trained or sampled in one format and used in another is silently worse (models are
    loaded through `require_chat_template`, so this only guards other tokenizers)."""
    if not getattr(tokenizer, "chat_template", None):
        raise _no_chat_template(tokenizer.name_or_path)
    return tokenizer.apply_chat_template(
        template_messages(tokenizer, messages), tokenize=False, add_generation_prompt=True
    )


_ANSWER_PROBE = "steerable answer probe"


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (Gemma's
    <end_of_turn>, Llama 3's <|eot_id|>, ChatML's <|im_end|>), None when there is none."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _ANSWER_PROBE}]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False)
    except TemplateError:
        return None
    _, found, after = text.rpartition(_ANSWER_PROBE)
    ids = tokenizer(after.lstrip(), add_special_tokens=False).input_ids if found else []
    if not ids:
        return None
    added = tokenizer.added_tokens_decoder.get(ids[0])
    return ids[0] if (added is not None and added.special) or ids[0] in tokenizer.all_special_ids else None


def stop_token_ids(model, tokenizer) -> list[int]:
    """Every token that ends a response: the model's configured eos ids, the tokenizer's eos and
    the template's end of turn. Many families end a turn with a token that is not eos_token;
    stopping at eos alone would run each answer on to max_new_tokens past its end."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids = [*ids, tokenizer.eos_token_id, end_of_turn_id(tokenizer)]
    return list(dict.fromkeys(i for i in ids if i is not None))


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
    """Continue each already-formatted text; returns only the new text, special tokens dropped.

    With `sampling.seed`, the draws come from that seed and the caller's global RNG state is
    restored afterwards (transformers' sampler draws from the global RNG, so it cannot be handed
    a generator of its own); the tokenizer's padding side is left as it was."""
    if not texts:
        raise SteerableError("no prompts to generate from")
    if sampling.seed is None:
        return _generate(model, tokenizer, texts, sampling, progress)
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(sampling.seed)
        return _generate(model, tokenizer, texts, sampling, progress)


class DecodeTicker(StoppingCriteria):
    """Moves a progress bar at every decoding step, by the batch's rows (one token slot each);
    never stops a sequence. `steps` counts the batch's decoding steps."""

    def __init__(self, bar, rows: int):
        self.bar, self.rows, self.steps = bar, rows, 0

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        self.steps += 1
        self.bar.update(self.rows)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


def _generate(model, tokenizer, texts: Sequence[str], sampling: SamplingConfig, progress: bool) -> list[str]:
    """Batched generation, shown on the running stage's bar (`progress.stage_bar`) or, outside
    one and with `progress`, a bar of its own; both count token slots (rows x max_new_tokens)
    and move at every decoding step. The rate of a shown generation (a command's stage, not a
    served request) goes to `rates.record_rate`."""
    from steerable.progress import active_bar, advance_to, stage_bar
    from steerable.rates import record_rate

    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    outputs = [""] * len(texts)
    kwargs = dict(
        max_new_tokens=sampling.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(model, tokenizer),
    )
    if sampling.temperature <= 0:
        kwargs.update(do_sample=False)
    elif sampling.top_k:
        sampler = TopKSampler(sampling.temperature, sampling.top_k, sampling.top_p)
        kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([sampler]))
    else:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    outer = active_bar()
    shown = (
        contextlib.nullcontext(outer)
        if outer is not None
        else stage_bar(len(texts) * sampling.max_new_tokens, "generating", "tok", disable=not progress)
    )
    with shown as bar:
        base = bar.n
        decoded, started = 0, time.perf_counter()
        for start in range(0, len(order), sampling.batch_size):
            idx = order[start : start + sampling.batch_size]
            batch = tokenizer(
                [texts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                padding_side="left",  # generation continues each row's last token
                add_special_tokens=False,
            ).to(model.device)
            ticker = DecodeTicker(bar, len(idx))
            out = model.generate(**batch, **kwargs, stopping_criteria=StoppingCriteriaList([ticker]))
            new = out[:, batch["input_ids"].shape[1] :]
            for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True), strict=True):
                outputs[i] = text.strip()
            decoded += len(idx) * ticker.steps
            # answers that all ended early leave their batch's slots short
            advance_to(bar, base + (start + len(idx)) * sampling.max_new_tokens)
            if outer is None:  # a stage's bar keeps the stage's own postfix
                bar.set_postfix_str(f"{start + len(idx)}/{len(texts)} answers", refresh=False)
    if progress or outer is not None:  # a command's generation stage, not a served request
        record_rate(
            generation_model_id(model), device_name(model.device), decoded, time.perf_counter() - started
        )
    return outputs


def generation_model_id(model) -> str:
    """What a measured generation rate is filed under: the model's name or path (a PEFT model:
    its base model's)."""
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or getattr(model, "name_or_path", "") or "unknown")


def device_name(device: torch.device) -> str:
    """The device a rate was measured on: the GPU's name, or the CPU with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} x{torch.get_num_threads()} threads"


def count_tokens(tokenizer, texts: Sequence[str]) -> int:
    """Tokens in `texts` (no special tokens): the unit of the compute accounting."""
    return sum(len(ids) for ids in tokenizer(list(texts), add_special_tokens=False).input_ids)

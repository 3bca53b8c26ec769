"""Hugging Face sequence-classification reward models: how every reward model here loads, how it
reads (prompt, response) pairs, and `HFRewardModel`, the batched scorer behind `hf:` objectives
(``NAME=hf:MODEL?opt=value``), which the reward model trainers also measure their models with.

Options (in the spec's ``?opt=value`` part):
    input       pair (default: tokenizer(prompt, response)), response (response only), or
                chat (the model's chat template over a user/assistant exchange); image and
                clip score images instead (`steerable.reward_models.hf_image`, its own options)
    index       which logit is the reward (default 0)
    batch_size  pairs per forward pass (default 16)
    max_length  truncation length in tokens (default 512)
    device      cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)
    dtype       float32 (default), bfloat16 or float16
    trust_remote_code
                true runs modelling code that comes with the model (default false, as in
                transformers)

A tokenizer without a pad token gets a dedicated one: padding with EOS instead would make the
model read its reward before a real trailing EOS (where templates end a turn with it).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from steerable.defaults import DTYPE_NAMES, resolve_model, torch_dtype
from steerable.errors import SteerableError, first_line

INPUTS = ("pair", "response", "chat")
IMAGE_INPUTS = ("image", "clip")  # image scorers: steerable.reward_models.hf_image
# integer option -> its smallest valid value
_INTS = {"index": 0, "batch_size": 1, "max_length": 1}
_CHOICES = {"input": INPUTS + IMAGE_INPUTS, "dtype": DTYPE_NAMES, "trust_remote_code": ("true", "false")}
PAD_TOKEN = "<|steerable_pad|>"
DEVICE = re.compile(r"cpu|cuda(:\d+)?")
# A fast tokenizer's call sets truncation on its backend (a Rust object its copies share) and
# then encodes: pairs are cut under this lock, so two threads cannot swap each other's settings.
_CUTTING = threading.Lock()


def check_hf_options(options: dict[str, str], origin: object) -> None:
    if options.get("input") in IMAGE_INPUTS:
        from steerable.reward_models.hf_image import check_image_options

        return check_image_options(options, origin)
    check_options("hf", options, origin, {**_CHOICES, "device": None}, _INTS)


def check_options(
    kind: str, options: dict[str, str], origin: object, choices: dict, integers: dict[str, int]
) -> None:
    """A scorer spec's options: only known keys (`choices`: key -> allowed values, None for
    any; `integers`: key -> its least value), each one valid, else one line naming it."""
    allowed = [*choices, *integers]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SteerableError(
            f"objective spec {origin!r}: {kind} scorers have no option(s) {unknown}; they accept "
            + ", ".join(allowed)
        )
    for key, values in choices.items():
        if values is not None and key in options and options[key] not in values:
            raise SteerableError(f"objective spec {origin!r}: {key} must be one of {list(values)}")
    for key, least in integers.items():
        if key in options and not (options[key].isdigit() and int(options[key]) >= least):
            article = "a non-negative" if least == 0 else "a positive"
            raise SteerableError(f"objective spec {origin!r}: {key} must be {article} integer")
    if options.get("device") and not DEVICE.fullmatch(options["device"]):
        raise SteerableError(
            f"objective spec {origin!r}: device {options['device']!r} is not a device; "
            "give cpu, cuda or cuda:N"
        )


def scorer_device(options: dict[str, str], origin: object) -> str:
    """The device a scorer runs on: its `device` option, else cuda when there is one, else cpu.
    A CUDA device this machine does not have is refused when the scorer is built (not when its
    spec is read: a spec recorded on another machine still loads)."""
    from steerable.defaults import default_device

    device = options.get("device") or default_device()
    count = torch.cuda.device_count()
    if device.startswith("cuda") and (torch.device(device).index or 0) >= count:
        raise SteerableError(
            f"objective spec {origin!r}: device {device!r}, but this machine has {count} CUDA device(s); "
            "give device=cpu or leave device out"
        )
    return device


def check_max_length(model, max_length: int, what: str) -> None:
    """Refuse a truncation length beyond the positions `model` (a model or its config) reads
    (`what` names it)."""
    positions = getattr(getattr(model, "config", model), "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        raise SteerableError(
            f"max_length {max_length} is longer than {what} reads ({positions} positions); lower max_length"
        )


def ensure_pad_token(model, tokenizer) -> None:
    """Give a tokenizer without a pad token a dedicated one (see the module docstring), and
    the model the embedding row and the pad id for it: what every reward model here reads
    pairs with, in training and in scoring alike."""
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.pad_token_id = tokenizer.pad_token_id


def load_pair_model(
    auto_class,
    name_or_path: str,
    *,
    role: str,
    kind: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    **kwargs,
):
    """(model, tokenizer) of a model that reads (prompt, response) pairs -- an hf: scorer or a
    reward model being trained: `auto_class` (an `AutoModel*` class) from `name_or_path`
    (aliases such as `minilm` resolved) in `dtype`, with `kwargs` for its from_pretrained, and
    a pad token (`ensure_pad_token`). A model that does not load is one error: "`role` NAME could
    not be loaded as `kind` (why); give ..."."""
    from transformers import AutoTokenizer

    path = resolve_model(name_or_path)
    try:
        # The model first: its errors say more about a folder that is not a model.
        model = auto_class.from_pretrained(
            path, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise SteerableError(
            f"{role} {name_or_path!r} could not be loaded as {kind} ({first_line(err)}); give "
            "'minilm', a model directory (with config.json and weights) or a hub id that is in the "
            "local cache (and trust_remote_code for a model that comes with its own code)"
        )
    ensure_pad_token(model, tokenizer)
    return model, tokenizer


def encode_pair_texts(
    tokenizer, prompts: list[str], responses: list[str], max_length: int
) -> tuple[dict[str, list], dict[str, int]]:
    """`tokenizer(prompt, response)` for each pair in at most `max_length` tokens, unpadded, as
    reward models here read pairs in training and scoring alike: the prompt loses its oldest
    tokens first, so a long conversation keeps its last question and the whole answer; only an
    answer too long by itself is cut, at its end, and then no prompt is left (TRL's "keep_end"
    for prompts). Also returns how many prompts and answers were cut."""
    import copy

    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    if budget < 1:
        raise SteerableError(f"max_length {max_length} leaves no token for a response; raise it")
    with _CUTTING:
        answers = [len(ids) for ids in tokenizer(responses, add_special_tokens=False)["input_ids"]]
        asked = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        count = {
            "prompts_cut": sum(p > 0 and p + a > budget for p, a in zip(asked, answers, strict=True)),
            "answers_cut": sum(a > budget for a in answers),
        }
        rows: list[dict] = [{}] * len(prompts)
        # The whole answer and at least one token of the prompt fit: cut the prompt from the left.
        # Else the answer alone, cut at its end. Shallow copies: the caller's tokenizer is unchanged.
        for fits, side, strategy in ((True, "left", "only_first"), (False, "right", "only_second")):
            chosen = [i for i, n in enumerate(answers) if (n < budget) == fits]
            if not chosen:
                continue
            cutting = copy.copy(tokenizer)
            cutting.truncation_side = side
            batch = cutting(
                [prompts[i] if fits else "" for i in chosen],
                [responses[i] for i in chosen],
                truncation=strategy,
                max_length=max_length,
            )
            for j, i in enumerate(chosen):
                rows[i] = {key: values[j] for key, values in batch.items()}
    encoded = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    return encoded, count


@dataclass
class HFRewardModel:
    """A sequence-classification model used as a reward: one logit per (prompt, response)."""

    model: torch.nn.Module
    tokenizer: object
    input: str = "pair"
    index: int = 0
    batch_size: int = 16
    max_length: int = 512

    @classmethod
    def from_options(cls, model_id: str, options: dict[str, str]) -> HFRewardModel:
        from transformers import AutoModelForSequenceClassification

        check_hf_options(options, model_id)
        if Path(model_id).is_dir() and not (Path(model_id) / "config.json").is_file():
            raise SteerableError(
                f"hf scorer {model_id!r} is a folder without config.json, so not a Hugging Face "
                "model; give the directory a model was saved to with save_pretrained"
            )
        device = scorer_device(options, model_id)
        model, tokenizer = load_pair_model(
            AutoModelForSequenceClassification,
            model_id,
            role="hf scorer",
            kind="a sequence-classification model",
            dtype=options.get("dtype", "float32"),
            trust_remote_code=options.get("trust_remote_code") == "true",
        )
        index = int(options.get("index", 0))
        if index >= model.config.num_labels:
            raise SteerableError(
                f"hf scorer {model_id!r}: index {index} but the model has {model.config.num_labels} logit(s)"
            )
        max_length = int(options.get("max_length", 512))
        check_max_length(model, max_length, f"hf scorer {model_id!r}")
        if options.get("input") == "chat" and tokenizer.chat_template is None:
            raise SteerableError(
                f"hf scorer {model_id!r}: input=chat, but its tokenizer has no chat template; "
                "use input=pair or input=response"
            )
        return cls(
            model=model.to(device).eval(),
            tokenizer=tokenizer,
            input=options.get("input", "pair"),
            index=index,
            batch_size=int(options.get("batch_size", 16)),
            max_length=max_length,
        )

    def _encode(self, prompts: list[str], responses: list[str]) -> dict:
        if self.input == "pair":
            encoded, _ = encode_pair_texts(self.tokenizer, prompts, responses, self.max_length)
            return self.tokenizer.pad(encoded, return_tensors="pt")
        common = dict(padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        if self.input == "response":
            return self.tokenizer(responses, **common)
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}], tokenize=False
            )
            for p, r in zip(prompts, responses, strict=True)
        ]
        return self.tokenizer(texts, add_special_tokens=False, **common)

    @torch.inference_mode()
    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        # Sort by length so each batch pads to similar lengths, then restore the order.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
        scores = [0.0] * len(prompts)
        device = self.model.device
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self._encode([prompts[i] for i in idx], [responses[i] for i in idx])
            logits = self.model(**{k: v.to(device) for k, v in batch.items()}).logits
            for i, value in zip(idx, logits[:, self.index].float().tolist(), strict=True):
                scores[i] = value
        return scores

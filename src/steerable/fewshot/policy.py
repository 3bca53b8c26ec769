"""NP-DPO (Kobalczyk et al. 2024): a causal LM steered by a latent z inferred from a few of a user's choices.

    context encoder  the user's (chosen, rejected) pairs, embedded by the frozen pair encoder
                     -> z (`reward_model.ContextEncoder`, the same set encoder as NP-BTL's)
    FiLM             after every decoder block, h <- gamma(z) * h + beta(z), with
                     gamma = 1 + W_g z + b_g and beta = W_b z + b_b; W and b start at zero, so
                     the conditioned model is the base model until training moves them
    policy           LoRA on the base model + FiLM; the reference is the base model alone
                     (no adapter, no FiLM), so it does not depend on z
    loss             DPO on the task's target pairs:
                     -log sigmoid(beta * [(log pi(c|z) - log ref(c)) - (log pi(r|z) - log ref(r))])

FiLM is a forward hook on each block, not a new model class, so it works on any causal LM whose
decoder blocks `decoder_layers` finds, and a LoRA adapter merged into the base leaves it intact.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from steerable.errors import SteerableError
from steerable.fewshot.reward_model import (
    ContextEncoder,
    NPRewardConfig,
    embedding_rows,
    load_module,
    save_module,
)

FEWSHOT_DIR = "fewshot"
FEWSHOT_CONFIG = "fewshot.json"
FEWSHOT_WEIGHTS = "context.pt"
EXAMPLE_FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class ContextConfig:
    """The context path of an NP-DPO policy: what embeds a user's pairs and the encoder's shape.

    encoder: the frozen pair encoder (`fewshot.embeddings`: minilm or lm:MODEL).
    dim: the width of its embeddings.
    hidden / latent_size / heads: the context encoder's width, the size of z, attention heads.
    max_context: the most pairs a user's context holds (more are truncated, with a warning).
    """

    encoder: str = "minilm"
    dim: int = 384
    hidden: int = 256
    latent_size: int = 128
    heads: int = 4
    max_context: int = 10

    def encoder_config(self) -> NPRewardConfig:
        return NPRewardConfig(
            hidden=self.hidden,
            latent_size=self.latent_size,
            heads=self.heads,
            targets=self.max_context + 1,
            max_context=self.max_context,
        )


def decoder_layers(model) -> nn.ModuleList:
    """The decoder blocks of a causal LM (plain, or wrapped by PEFT)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        raise SteerableError(
            f"cannot find the decoder blocks of {type(base).__name__} (no get_decoder().layers); "
            "NP-DPO's FiLM layers need a decoder-only causal LM"
        )
    return layers


class FiLM(nn.Module):
    """One (gamma, beta) per decoder block, linear in z and the identity at initialisation.
    `attach(model)` hooks it into the model's blocks; `conditioned(z)` sets z ((B, Z), or (1, Z)
    for every row) for the forward passes inside it. Outside it (z None) the hooks do nothing."""

    def __init__(self, latent_size: int, hidden_size: int, layers: int):
        super().__init__()
        self.film = nn.ModuleList(nn.Linear(latent_size, 2 * hidden_size) for _ in range(layers))
        for linear in self.film:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)
        self.z: torch.Tensor | None = None
        self.handles = []

    def attach(self, model) -> FiLM:
        blocks = decoder_layers(model)
        if len(blocks) != len(self.film):
            raise SteerableError(f"FiLM built for {len(self.film)} blocks; the model has {len(blocks)}")
        self.detach()
        self.handles = [
            block.register_forward_hook(partial(self._modulate, film))
            for block, film in zip(blocks, self.film, strict=True)
        ]
        return self

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _modulate(self, film: nn.Linear, module, args, output):
        if self.z is None:
            return output
        hidden = output[0] if isinstance(output, tuple) else output  # (B, T, H)
        gamma, beta = film(self.z.to(film.weight.dtype)).chunk(2, dim=-1)  # (B, H) each
        hidden = (1 + gamma[:, None]).to(hidden.dtype) * hidden + beta[:, None].to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    @contextmanager
    def conditioned(self, z: torch.Tensor | None):
        previous, self.z = self.z, z
        try:
            yield
        finally:
            self.z = previous


class ContextPath(nn.Module):
    """What NP-DPO adds to a causal LM: the context encoder and the FiLM layers. Saved on its own
    (`save`, `load`) next to the LoRA adapter."""

    def __init__(self, config: ContextConfig, hidden_size: int, layers: int, types: dict | None = None):
        super().__init__()
        self.config, self.types = config, types
        self.hidden_size, self.layers = hidden_size, layers
        self.context_encoder = ContextEncoder(config.dim, config.encoder_config())
        self.film = FiLM(config.latent_size, hidden_size, layers)

    def latent(self, chosen: torch.Tensor, rejected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z (B, Z) of contexts (B, C, d) x 2 with mask (B, C) (an empty context: C = 0)."""
        return self.context_encoder(chosen, rejected, mask)

    @torch.no_grad()
    def latent_of(self, chosen: np.ndarray, rejected: np.ndarray) -> torch.Tensor:
        """z (1, Z) of one user's context arrays [n, d] x 2 (n may be 0; beyond max_context the
        first max_context pairs, with a warning)."""
        reader = f"this policy's context encoder (encoder {self.config.encoder})"
        chosen, rejected = (
            embedding_rows(a, self.config.dim, f"context {name}", reader)
            for a, name in ((chosen, "chosen"), (rejected, "rejected"))
        )
        if len(chosen) != len(rejected):
            raise SteerableError(f"context: {len(chosen)} chosen but {len(rejected)} rejected embeddings")
        limit = self.config.max_context
        if len(chosen) > limit:
            warnings.warn(
                f"a context of {len(chosen)} pairs, more than the {limit} this policy was trained with; "
                f"using the first {limit}",
                stacklevel=2,
            )
            chosen, rejected = chosen[:limit], rejected[:limit]
        c, r = torch.from_numpy(chosen)[None], torch.from_numpy(rejected)[None]
        device = next(self.parameters()).device
        return self.latent(
            c.to(device), r.to(device), torch.ones(c.shape[:2], dtype=torch.bool, device=device)
        )

    def save(self, directory: str | Path) -> Path:
        record = {
            "context": asdict(self.config),
            "hidden_size": self.hidden_size,
            "layers": self.layers,
            "types": self.types,
        }
        return save_module(self, record, directory, FEWSHOT_CONFIG, FEWSHOT_WEIGHTS)

    @classmethod
    def load(cls, directory: str | Path) -> ContextPath:
        def build(record: dict) -> ContextPath:
            return cls(
                ContextConfig(**record["context"]), record["hidden_size"], record["layers"], record["types"]
            )

        path, _ = load_module(
            directory,
            FEWSHOT_CONFIG,
            FEWSHOT_WEIGHTS,
            build,
            "an NP-DPO context encoder",
            "steerable train np-dpo",
        )
        return path


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per pair: -log sigmoid(beta * [(pi_c - ref_c) - (pi_r - ref_r)]), from sequence log-probs."""
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -nn.functional.logsigmoid(beta * margin)


def completion_logps(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Sum of log p(token) over each row's completion tokens, (N,). Rows are right padded."""
    from trl.trainer.utils import selective_log_softmax

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]  # (N, T-1, V)
    logps = selective_log_softmax(logits, input_ids[:, 1:])  # (N, T-1)
    return (logps * completion_mask[:, 1:].to(logps.dtype)).sum(dim=1)


@dataclass
class Encoded:
    """Token ids of (prompt, completion) sequences, what `pad_sequences` batches."""

    prompt: list[list[int]] = field(default_factory=list)
    completion: list[list[int]] = field(default_factory=list)


def encode_options(
    tokenizer, texts: Sequence[tuple[str, str]], max_completion_length: int, system: str | None = None
) -> Encoded:
    """Each (prompt, response) as the chat-formatted prompt's ids and the response's ids (at most
    `max_completion_length`) closed by the template's end of turn, as the policy generates it."""
    from steerable.generation import format_chat, stop_token_ids

    end = stop_token_ids(None, tokenizer)
    prompts = format_chat(tokenizer, [p for p, _ in texts], system)
    encoded = Encoded()
    for prompt, (_, response) in zip(prompts, texts, strict=True):
        encoded.prompt.append(tokenizer(prompt, add_special_tokens=False).input_ids)
        ids = tokenizer(response, add_special_tokens=False).input_ids[:max_completion_length]
        encoded.completion.append(ids + end[-1:])
    return encoded


def pad_sequences(encoded: Encoded, rows: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and completion_mask (N, T) of the options `rows`, right padded."""
    seqs = [encoded.prompt[i] + encoded.completion[i] for i in rows]
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(seqs), width), dtype=torch.long)
    completion = torch.zeros((len(seqs), width), dtype=torch.long)
    for n, (i, seq) in enumerate(zip(rows, seqs, strict=True)):
        input_ids[n, : len(seq)] = torch.tensor(seq)
        attention[n, : len(seq)] = 1
        completion[n, len(encoded.prompt[i]) : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


def check_examples(
    examples: Sequence[Mapping], where: str = "examples", limit: int | None = None
) -> list[dict]:
    """A user's choices as [{"prompt", "chosen", "rejected"}], every field non-empty text. Beyond
    `limit` (the policy's max_context), the first `limit`, with a warning: cut here, before the
    pair encoder, whose cost grows with every example while the policy reads only `limit`."""
    if isinstance(examples, (Mapping, str)):
        raise SteerableError(f"{where}: give a list of {{'prompt', 'chosen', 'rejected'}} objects")
    out = []
    for number, example in enumerate(examples, start=1):
        if not isinstance(example, Mapping):
            raise SteerableError(f"{where}, example {number}: not an object with {list(EXAMPLE_FIELDS)}")
        for name in EXAMPLE_FIELDS:
            value = example.get(name)
            if not isinstance(value, str) or not value.strip():
                raise SteerableError(f"{where}, example {number}: field {name!r} is missing or empty")
        if example["chosen"] == example["rejected"]:
            raise SteerableError(f"{where}, example {number}: 'chosen' and 'rejected' are the same text")
        out.append({name: example[name] for name in EXAMPLE_FIELDS})
    if limit is not None and len(out) > limit:
        warnings.warn(
            f"{where}: {len(out)} examples, more than the {limit} this policy was trained with; "
            f"using the first {limit}",
            stacklevel=2,
        )
        out = out[:limit]
    return out


def embed_examples(examples: list[dict], encoder: str) -> tuple[np.ndarray, np.ndarray]:
    """The checked examples' chosen and rejected options, [n, d] each, through `encoder` (no
    progress bar: a few examples, per request or generation)."""
    from steerable.fewshot.embeddings import embed_options

    if not examples:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
    texts = [(e["prompt"], e["chosen"]) for e in examples] + [(e["prompt"], e["rejected"]) for e in examples]
    vectors = embed_options(texts, encoder, progress=False)
    return vectors[: len(examples)], vectors[len(examples) :]

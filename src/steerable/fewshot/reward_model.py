"""NP-BTL (Kobalczyk et al. 2024): a Bradley-Terry reward model conditioned on a few of a user's choices,
and the two models it is judged against, all on plain embedding arrays.

    option encoder   h(y) = MLP(e_y)                                    (d -> hidden)
    context encoder  each context pair [e_chosen ; e_rejected] -> MLP -> self-attention over
                     the pairs -> sum -> MLP -> z                       (permutation invariant;
                     an empty context sums to 0, so z is the model's prior guess)
    reward           r(y | context) = MLP([h(y) ; z])
    loss             Bradley-Terry: -log sigmoid(r(chosen) - r(rejected)) over a task's targets

`latent="gaussian"` makes z a Gaussian, trained with the neural-process KL between z given the
context and targets and z given the context alone; the reward then reads its mean.
`context="none"` drops the context path: the plain BTL model on pooled choices, and, fitted on
one type's tasks, that type's oracle BTL model.

The training loop is a short PyTorch loop rather than `transformers.Trainer`: the model is a
few MLPs on cached arrays and a batch is a set of freshly drawn tasks, not rows of a dataset.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from steerable.configs import SEED, check_config
from steerable.errors import SteerableError
from steerable.fewshot.tasks import DEFAULT_MAX_CONTEXT, DEFAULT_TARGETS, TaskBatch, TaskSource
from steerable.io import atomic_write, atomic_write_text

LATENTS = ("deterministic", "gaussian")
CONTEXTS = ("np", "none")
CONFIG_FILE = "np_reward.json"
WEIGHTS_FILE = "model.pt"


@dataclass
class NPRewardConfig:
    """How an NP-BTL (or BTL) reward model is built and trained.

    Architecture: hidden (width of every MLP and of the attention), latent (size of z), heads
    (attention heads), latent (deterministic | gaussian), kl_weight (gaussian only), context
    (np: condition on the context | none: the plain BTL model).
    Training: steps of `tasks_per_batch` tasks, each with `targets` pairs of which a context of
    0..`max_context` (uniform); Adam at `learning_rate`; every `eval_every` steps the accuracy
    on `validation_tasks` fixed validation tasks (targets not in the context) picks the best
    checkpoint, which is what `fit` returns.
    """

    hidden: int = field(default=256, metadata={"help": "Width of every MLP and of the attention.", "ge": 1})
    latent_size: int = field(default=128, metadata={"help": "Size of the latent z.", "ge": 1})
    heads: int = field(default=4, metadata={"help": "Attention heads of the context encoder.", "ge": 1})
    latent: str = field(default="deterministic", metadata={"help": "The latent z.", "choices": LATENTS})
    kl_weight: float = field(
        default=1.0, metadata={"help": "Weight of the KL term (gaussian latent).", "ge": 0}
    )
    context: str = field(default="np", metadata={"help": "np, or none: plain BTL.", "choices": CONTEXTS})
    steps: int = field(default=3000, metadata={"help": "Optimiser steps.", "ge": 1})
    tasks_per_batch: int = field(default=64, metadata={"help": "Tasks per step.", "ge": 1})
    targets: int = field(default=DEFAULT_TARGETS, metadata={"help": "Target pairs per task.", "ge": 1})
    max_context: int = field(
        default=DEFAULT_MAX_CONTEXT, metadata={"help": "Largest context in training.", "ge": 0}
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Adam learning rate.", "gt": 0})
    eval_every: int = field(default=100, metadata={"help": "Steps between validation checks.", "ge": 1})
    validation_tasks: int = field(
        default=1000, metadata={"help": "Validation tasks (best checkpoint).", "ge": 1}
    )
    seed: int = field(default=0, metadata={"help": "Initialisation and task sampling.", **SEED})

    def __post_init__(self):
        check_config(self)
        if self.hidden % self.heads:
            raise SteerableError(f"--hidden ({self.hidden}) must be a multiple of --heads ({self.heads})")
        if not 0 <= self.max_context < self.targets:
            raise SteerableError(
                f"--max_context must be in 0..targets-1 ({self.targets - 1}), got {self.max_context}"
            )


def mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected) over the pairs where `mask` holds."""
    nll = -nn.functional.logsigmoid(chosen - rejected)
    mask = mask.to(nll.dtype)
    return (nll * mask).sum() / mask.sum().clamp_min(1.0)


class ContextEncoder(nn.Module):
    """A set of (chosen, rejected) embedding pairs -> the latent z (or its mean and log-std)."""

    def __init__(self, dim: int, config: NPRewardConfig):
        super().__init__()
        out = config.latent_size * (2 if config.latent == "gaussian" else 1)
        self.pair = mlp([2 * dim, config.hidden, config.hidden])
        self.attention = nn.MultiheadAttention(config.hidden, config.heads, batch_first=True)
        self.head = mlp([config.hidden, config.hidden, out])

    def forward(self, chosen: torch.Tensor, rejected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """chosen, rejected: (B, C, d); mask: (B, C) bool, which context slots hold a pair."""
        # Padding may hold anything (NaN too); zeroed, it cannot leak through 0 * NaN below.
        pairs = torch.where(mask[..., None], torch.cat([chosen, rejected], dim=-1), 0.0)  # (B, C, 2d)
        x = self.pair(pairs)  # (B, C, H)
        if x.shape[1]:
            # A task with no context would mask every key (NaN); let it attend to its padding,
            # whose output the mask then drops from the sum.
            keys_masked = ~mask & mask.any(dim=1, keepdim=True)
            x, _ = self.attention(x, x, x, key_padding_mask=keys_masked, need_weights=False)
        pooled = (x * mask[..., None].to(x.dtype)).sum(dim=1)  # (B, H); 0 for an empty context
        return self.head(pooled)


class NPRewardModel(nn.Module):
    """r(option | context) for options and contexts given as embedding arrays (module docstring)."""

    def __init__(
        self,
        dim: int,
        config: NPRewardConfig,
        types: dict | None = None,
        encoder: str | None = None,
        split: dict | None = None,
    ):
        super().__init__()
        self.dim, self.config = dim, config
        # recorded, so a saved model says what it read and which pairs it never trained on
        self.types, self.encoder, self.split = types, encoder, split
        self.option = mlp([dim, config.hidden, config.hidden])
        if config.context == "np":
            self.context_encoder = ContextEncoder(dim, config)
            self.reward_head = mlp([config.hidden + config.latent_size, config.hidden, 1])
        else:
            self.reward_head = mlp([config.hidden, config.hidden, 1])
        self.validation_accuracy: float | None = None

    # --- the model --------------------------------------------------------------------
    def latent(self, chosen, rejected, mask) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(z mean, z log-std or None) of contexts (B, C, d) x 2 with mask (B, C)."""
        out = self.context_encoder(chosen, rejected, mask)
        if self.config.latent == "gaussian":
            mean, log_std = out.chunk(2, dim=-1)
            return mean, log_std.clamp(-6.0, 3.0)
        return out, None

    def score(self, options: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """options (B, N, d), z (B, Z) or None -> rewards (B, N)."""
        h = self.option(options)  # (B, N, H)
        if z is not None:
            h = torch.cat([h, z[:, None, :].expand(-1, h.shape[1], -1)], dim=-1)  # (B, N, H + Z)
        return self.reward_head(h)[..., 0]

    @torch.no_grad()
    def reward(self, context_chosen, context_rejected, options) -> np.ndarray:
        """Scores [n] of `options` [n, d] for the user whose choices are the context pairs
        (`context_chosen` and `context_rejected`, [n_context, d], n_context may be 0; beyond the
        trained `max_context`, the first max_context pairs, with a warning)."""
        reader = f"this reward model (encoder {self.encoder or 'unknown'})"
        context_chosen, context_rejected, options = (
            embedding_rows(array, self.dim, name, reader)
            for array, name in (
                (context_chosen, "context_chosen"),
                (context_rejected, "context_rejected"),
                (options, "options"),
            )
        )
        if len(context_chosen) != len(context_rejected):
            raise SteerableError(
                f"context: {len(context_chosen)} chosen but {len(context_rejected)} rejected embeddings"
            )
        limit = self.config.max_context
        if len(context_chosen) > limit:
            warnings.warn(
                f"context of {len(context_chosen)} pairs, more than the {limit} this model was trained "
                f"with; using the first {limit}",
                stacklevel=2,
            )
            context_chosen, context_rejected = context_chosen[:limit], context_rejected[:limit]
        self.eval()
        z = None
        if self.config.context == "np":
            c, r = torch.from_numpy(context_chosen)[None], torch.from_numpy(context_rejected)[None]
            z, _ = self.latent(c, r, torch.ones(c.shape[:2], dtype=torch.bool))
        return self.score(torch.from_numpy(options)[None], z)[0].numpy()

    @torch.no_grad()
    def predict(
        self, context_chosen, context_rejected, context_mask, target_a, target_b, target_mask=None
    ) -> np.ndarray:
        """P(a is preferred to b) for many users' target pairs at once, each user's given their own
        context: sigmoid(r(a | context) - r(b | context)).

            context_chosen, context_rejected  [T, C, d]  T users' context pairs, padded to C
            context_mask                      [T, C]     bool: the slots that hold a pair (a row
                                                         of False is an empty context; C may be 0)
            target_a, target_b                [T, N, d]  the pairs to judge, padded to N
            target_mask                       [T, N]     bool: the slots that hold a pair
                                                         (default: every slot)
            returns                           [T, N]     probabilities; NaN where target_mask
                                                         is False

        Numbers match `reward` called user by user. A user with more than the trained
        `max_context` pairs keeps their first max_context, with a warning."""
        c, r, a, b = (
            np.asarray(x, dtype=np.float32) for x in (context_chosen, context_rejected, target_a, target_b)
        )
        context_mask = np.asarray(context_mask, dtype=bool)
        users = len(a)
        if a.ndim != 3 or a.shape[2] != self.dim or b.shape != a.shape:
            raise SteerableError(
                f"target_a {a.shape} and target_b {b.shape}: each must be [T, N, {self.dim}] (users, "
                f"pairs, the encoder's width)"
            )
        if c.size == 0 and context_mask.size == 0:  # no context at all: C = 0
            c = r = np.zeros((users, 0, self.dim), dtype=np.float32)
            context_mask = np.zeros((users, 0), dtype=bool)
        if c.ndim != 3 or c.shape != r.shape or c.shape[0] != users or c.shape[2] != self.dim:
            raise SteerableError(
                f"context_chosen {c.shape} and context_rejected {r.shape}: each must be "
                f"[{users}, C, {self.dim}] (the {users} users of the targets, C context slots)"
            )
        if context_mask.shape != c.shape[:2]:
            raise SteerableError(f"context_mask {context_mask.shape}: must be {c.shape[:2]} (users, slots)")
        target_mask = np.ones(a.shape[:2], dtype=bool) if target_mask is None else np.asarray(target_mask)
        if target_mask.shape != a.shape[:2]:
            raise SteerableError(f"target_mask {target_mask.shape}: must be {a.shape[:2]} (users, pairs)")
        limit = self.config.max_context
        if (context_mask.sum(axis=1) > limit).any():
            warnings.warn(
                f"a context of {int(context_mask.sum(axis=1).max())} pairs, more than the {limit} this "
                f"model was trained with; each user keeps their first {limit}",
                stacklevel=2,
            )
            context_mask = context_mask & (np.cumsum(context_mask, axis=1) <= limit)
        self.eval()
        z = None
        if self.config.context == "np":
            mask = torch.from_numpy(context_mask)
            z, _ = self.latent(*pack_context(torch.from_numpy(c), torch.from_numpy(r), mask))  # (T, Z)
        margin = self.score(torch.from_numpy(a), z) - self.score(torch.from_numpy(b), z)  # (T, N)
        return np.where(target_mask.astype(bool), torch.sigmoid(margin).numpy(), np.nan)

    # --- tasks ------------------------------------------------------------------------
    def task_scores(
        self, embeddings: torch.Tensor, batch: TaskBatch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ...]:
        """(r_chosen, r_rejected) [B, N_T] of a batch's targets given each task's context, and the
        KL term (0 unless gaussian, in training: z is then drawn with `generator`)."""
        chosen, rejected = embeddings[batch.chosen], embeddings[batch.rejected]  # (B, N, d)
        z, kl = None, torch.zeros(())
        if self.config.context == "np":
            context = torch.from_numpy(batch.context)
            c, r, m = pack_context(chosen, rejected, context)
            mean, log_std = self.latent(c, r, m)
            z = mean
            if log_std is not None and self.training:
                everything = torch.ones_like(context)
                full_mean, full_log_std = self.latent(*pack_context(chosen, rejected, everything))
                noise = torch.randn(full_mean.shape, generator=generator, dtype=full_mean.dtype)
                z = full_mean + noise * full_log_std.exp()
                kl = gaussian_kl(full_mean, full_log_std, mean, log_std).mean()
        return self.score(chosen, z), self.score(rejected, z), kl

    @classmethod
    def fit(
        cls, source: TaskSource, config: NPRewardConfig, type_probabilities=None, progress=True
    ) -> NPRewardModel:
        """Train on `source`'s train split (a `TaskSource`, or a `LogSource` of users' own
        choices: no utilities or types needed); return the checkpoint best on its validation
        split. Seeded by `config.seed` alone: torch's global random state is left as it was."""
        from tqdm.auto import tqdm

        rng = np.random.default_rng(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        embeddings = torch.from_numpy(source.embeddings.astype(np.float32))
        with torch.random.fork_rng(devices=[]):  # the layers initialise from the global state
            torch.manual_seed(config.seed)
            types = None if source.types is None else source.types.to_dict()  # logs have none
            model = cls(embeddings.shape[1], config, types, source.encoder, source.split)
        optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        contexts = (0, config.max_context) if config.context == "np" else 0
        validation = source.sample(
            "validation",
            config.validation_tasks,
            np.random.default_rng(config.seed + 1),
            config.targets,
            contexts,
            type_probabilities,
        )
        best, best_state = -1.0, None
        bar = tqdm(
            range(1, config.steps + 1),
            desc="np-rm" if config.context == "np" else "btl",
            disable=not progress,
        )
        for step in bar:
            model.train()
            batch = source.sample(
                "train", config.tasks_per_batch, rng, config.targets, contexts, type_probabilities
            )
            chosen, rejected, kl = model.task_scores(embeddings, batch, generator)
            loss = bradley_terry_loss(chosen, rejected, torch.from_numpy(batch.valid))
            loss = loss + config.kl_weight * kl / config.targets
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % config.eval_every == 0 or step == config.steps:
                accuracy = float(np.mean(model.task_accuracy(embeddings, validation)))
                if accuracy > best:
                    best = accuracy
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{accuracy:.3f}", best=f"{best:.3f}")
        model.load_state_dict(best_state)
        model.validation_accuracy = best
        model.eval()
        return model

    @torch.no_grad()
    def margins(self, embeddings: torch.Tensor, batch: TaskBatch) -> np.ndarray:
        """r(chosen) - r(rejected) [B, N_T] of every target, each task given its own context."""
        self.eval()
        chosen, rejected, _ = self.task_scores(embeddings, batch)
        return (chosen - rejected).numpy()

    def task_accuracy(self, embeddings: torch.Tensor, batch: TaskBatch) -> np.ndarray:
        """Per task: the share of its targets not in its context on which r(chosen) > r(rejected)."""
        return target_accuracy(self.margins(embeddings, batch), batch)

    # --- directory --------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        record = {
            "kind": "np-reward-model",
            "dim": self.dim,
            "config": asdict(self.config),
            "types": self.types,
            "encoder": self.encoder,
            "split": self.split,
            "validation_accuracy": self.validation_accuracy,
        }
        return save_module(self, record, directory, CONFIG_FILE, WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: str | Path) -> NPRewardModel:
        def build(record: dict) -> NPRewardModel:
            if record.get("kind") != "np-reward-model":
                raise KeyError("kind")
            config = NPRewardConfig(**record["config"])
            return cls(record["dim"], config, record["types"], record["encoder"], record.get("split"))

        model, record = load_module(
            directory,
            CONFIG_FILE,
            WEIGHTS_FILE,
            build,
            "an NP reward model directory",
            "steerable train np-rm",
        )
        model.validation_accuracy = record.get("validation_accuracy")
        return model


def embedding_rows(array, dim: int, name: str, reader: str) -> np.ndarray:
    """`array` as float32 [n, dim] embeddings, its shape checked before anything reads it (an
    empty one may come in any shape); any other shape is refused naming `reader`'s width."""
    array = np.asarray(array, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, dim), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != dim:
        raise SteerableError(
            f"{name}: embeddings of shape {tuple(array.shape)}; {reader} reads [n, {dim}]: one row "
            "of the encoder's width per option"
        )
    return array


def save_module(
    module: nn.Module, record: dict, directory: str | Path, record_file: str, weights_file: str
) -> Path:
    """A module as a directory: its weights, then the JSON record that rebuilds it (atomic)."""
    directory = Path(directory)
    atomic_write(directory / weights_file, lambda tmp: torch.save(module.state_dict(), tmp))
    atomic_write_text(directory / record_file, json.dumps(record, indent=2) + "\n")
    return directory


def load_module(directory, record_file: str, weights_file: str, build, what: str, made_by: str):
    """(module in eval mode, its record) from a `save_module` directory; `build(record)` makes
    the empty module. Anything missing or not matching is one error naming the directory."""
    directory = Path(directory)
    try:
        record = json.loads((directory / record_file).read_text())
        module = build(record)
        module.load_state_dict(torch.load(directory / weights_file, weights_only=True))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, RuntimeError) as err:
        raise SteerableError(
            f"{directory} is not {what} ({record_file} + {weights_file} from `{made_by}`): {err}"
        )
    return module.eval(), record


def pack_context(chosen: torch.Tensor, rejected: torch.Tensor, context: torch.Tensor):
    """The context pairs of each task, moved to the front and padded: (B, C, d) x 2 and the
    mask (B, C), C the largest context in the batch."""
    order = torch.argsort((~context).to(torch.int8), dim=1, stable=True)  # context pairs first
    size = int(context.sum(dim=1).max()) if context.numel() else 0
    index = order[:, :size]  # (B, C)
    gather = index[..., None].expand(-1, -1, chosen.shape[-1])
    mask = torch.gather(context, 1, index)
    return torch.gather(chosen, 1, gather), torch.gather(rejected, 1, gather), mask


def gaussian_kl(mean_q, log_std_q, mean_p, log_std_p) -> torch.Tensor:
    """KL(N(mean_q, std_q) || N(mean_p, std_p)) summed over the latent, per row."""
    var_q, var_p = (2 * log_std_q).exp(), (2 * log_std_p).exp()
    return (log_std_p - log_std_q + (var_q + (mean_q - mean_p) ** 2) / (2 * var_p) - 0.5).sum(dim=-1)


def target_accuracy(margins: np.ndarray, batch: TaskBatch) -> np.ndarray:
    """Per task, the share of correct choices among the targets not in its context: margin > 0
    counts 1, a tie (margin 0, a coin flip) 1/2."""
    scored = batch.scored()
    correct = (margins > 0) + 0.5 * (margins == 0)
    return (correct * scored).sum(axis=1) / np.maximum(scored.sum(axis=1), 1)

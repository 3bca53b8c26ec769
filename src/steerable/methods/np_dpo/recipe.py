"""`steerable train np-dpo`: a policy steered by a few of a user's choices (NP-DPO, Kobalczyk et al. 2024),
as one recipe in stages.

1. embeddings   the scored pairs' options through the frozen pair encoder (as `train np-rm`)
2. reference    log ref(option) of every option under the base model, once: the reference is
                the unconditioned base (no adapter, no FiLM), so it never changes
3. policy       LoRA + FiLM + context encoder trained with the DPO loss on tasks: a user type,
                a random context of 0..max_context of its choices, and `lm_targets` of its other
                choices to learn from; checkpointed and resumed (transformers.Trainer)
4. evaluation   implicit-reward accuracy on held-out tasks vs context size, per type (targets
                not in the context), and generations on held-out prompts conditioned on each
                type's held-out choices, scored by the objectives, against the base model

The trainer is transformers' `Trainer` with a small `compute_loss`, not TRL's `DPOTrainer`: a
DPO example here is a task (a context of embedded pairs plus target pairs), and the loss needs
each target's z from its task's context inside the forward pass, which DPOTrainer's tokenised
(prompt, chosen, rejected) rows and collator have no place for. The loss itself is the sigmoid
DPO loss (`fewshot.policy.dpo_loss`), against reference log-probs computed once in stage 2.

Every stage records its inputs and is reused only when they match.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from steerable.configs import SEED, check_config
from steerable.data.loading import read_placed
from steerable.defaults import DEFAULT_MODEL, DTYPE_NAMES, absolute_if_local, load_causal_lm, load_tokenizer
from steerable.errors import SteerableError
from steerable.evaluation.fewshot import CONTEXT_SIZES, context_curve, mean_and_stderr, plot_curve
from steerable.fewshot.embeddings import encoder_id
from steerable.fewshot.policy import (
    FEWSHOT_DIR,
    ContextConfig,
    ContextPath,
    Encoded,
    completion_logps,
    dpo_loss,
    encode_options,
    pad_sequences,
)
from steerable.fewshot.reward_model import NPRewardModel
from steerable.fewshot.tasks import TaskBatch, TaskSource
from steerable.io import atomic_write, atomic_write_text
from steerable.methods.np_rm import TaskConfig, accuracy_table, build_source, split_record, task_inputs
from steerable.methods.np_rm import result as stage_result
from steerable.methods.rl import load_rewards
from steerable.objectives import scored_stats_path
from steerable.stages import Stages, file_digest, fingerprint
from steerable.training import device_args, last_complete_checkpoint, lora_config, stage_bar

RESULT_FILE = "evaluation.json"
HELDOUT_PAIRS = "heldout_pairs.jsonl"
POLICY_WEIGHTS = "stages/policy/weights"


@dataclass
class NPDPOConfig(TaskConfig):
    """TaskConfig (the pairs and user types; task=scored, conflicting by default) and:

    Model:
        model: base policy (`smollm2`, `tiny`, a hub id or a local directory).
        dtype / trust_remote_code: as for the other trainers.
        stats: the objectives and statistics generations are scored with and recorded in
            steerable.json (a stats JSON or a model directory; default: DATA.stats.json, as
            `steerable score` writes it, else stats.json beside DATA, as RiC's offline stage does).
        context_init: an `np-rm` output directory whose NP-BTL context encoder starts this one
            (same encoder and pairs); without it the encoder starts at random. Either way it
            trains jointly with the policy.
        hidden / latent_size / heads: the context encoder's shape (ignored with context_init).
    Training:
        targets: pairs per task; its context is 0..max_context of them (uniform), and the LM
            learns from `lm_targets` of the others (each costs two sequences a step).
        tasks_per_batch / max_steps / learning_rate: the optimisation (one rate for LoRA, FiLM
            and the context encoder).
        beta: the DPO temperature.
        sft_weight: weight of an SFT term, the chosen answers' NLL per token, added to the DPO
            loss (TRL's DPO loss_type ["sigmoid", "sft"], RPO): without it, DPO on a small pool
            can push a type's answers into degenerate text that still scores well (0 turns it off).
        max_completion_length: response tokens kept per option.
        lora_r / lora_alpha: the LoRA shape (no dropout: DPO trains without it, as TRL's does).
        save_steps: steps between checkpoints (an interrupted run resumes from the last).
    Evaluation:
        eval_tasks: held-out tasks per context size for the implicit-reward accuracy.
        eval_prompts: held-out prompts generated for (the embedded heldout split).
        eval_contexts / eval_context_size: contexts per type, pairs in each, for generations.
        max_new_tokens / temperature: sampling of the evaluation generations.
    """

    task: str = field(default="scored", metadata={"help": "Task builder (scored).", "choices": ("scored",)})
    conflicting: bool = field(default=True, metadata={"help": "Keep only pairs the types disagree on."})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Base policy."})
    dtype: str = field(default="float32", metadata={"help": "Dtype of the weights.", "choices": DTYPE_NAMES})
    trust_remote_code: bool = field(default=False, metadata={"help": "Let a hub model run its own code."})
    stats: str | None = field(
        default=None, metadata={"help": "Stats JSON or model dir (default: beside data)."}
    )
    context_init: str | None = field(default=None, metadata={"help": "np-rm run to start the encoder from."})
    hidden: int = field(default=256, metadata={"help": "Context encoder width.", "ge": 1})
    latent_size: int = field(default=128, metadata={"help": "Size of z.", "ge": 1})
    heads: int = field(default=4, metadata={"help": "Attention heads of the context encoder.", "ge": 1})
    targets: int = field(default=20, metadata={"help": "Pairs per task.", "ge": 1})
    max_context: int = field(default=10, metadata={"help": "Largest context in training.", "ge": 0})
    lm_targets: int = field(
        default=2, metadata={"help": "Target pairs per task the LM learns from.", "ge": 1}
    )
    tasks_per_batch: int = field(default=4, metadata={"help": "Tasks per step.", "ge": 1})
    max_steps: int = field(default=120, metadata={"help": "Optimiser steps.", "ge": 1})
    learning_rate: float = field(default=2e-4, metadata={"help": "Learning rate.", "gt": 0})
    beta: float = field(default=0.05, metadata={"help": "DPO beta.", "gt": 0})
    sft_weight: float = field(default=1.0, metadata={"help": "Weight of the chosen answers' NLL.", "ge": 0})
    max_completion_length: int = field(default=48, metadata={"help": "Response tokens per option.", "ge": 1})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank.", "ge": 1})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha.", "ge": 1})
    save_steps: int = field(default=10, metadata={"help": "Steps between checkpoints.", "ge": 1})
    eval_tasks: int = field(default=40, metadata={"help": "Held-out tasks per context size.", "ge": 1})
    eval_prompts: int = field(default=32, metadata={"help": "Held-out prompts for generations.", "ge": 1})
    eval_contexts: int = field(default=4, metadata={"help": "Contexts per type for generations.", "ge": 1})
    eval_context_size: int = field(default=5, metadata={"help": "Pairs per generation context.", "ge": 0})
    max_new_tokens: int = field(default=48, metadata={"help": "Generated tokens (evaluation).", "ge": 1})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (evaluation).", "ge": 0})
    seed: int = field(default=0, metadata={"help": "Random seed.", **SEED})
    output_dir: str = field(default="runs/np-dpo", metadata={"help": "Output directory."})

    def __post_init__(self):
        check_config(self)
        if self.task != "scored":
            raise SteerableError("NP-DPO trains on text: --task must be scored (pairs of responses)")
        super().__post_init__()
        if self.stats is None:
            self.stats = str(stats_beside(Path(self.data)))
        if not 0 <= self.max_context <= self.targets - self.lm_targets:
            raise SteerableError(
                f"--max_context must be in 0..targets - lm_targets ({self.targets - self.lm_targets}), "
                f"got {self.max_context}: a task keeps lm_targets pairs out of its context"
            )
        if not 0 <= self.eval_context_size <= self.max_context:
            raise SteerableError(f"--eval_context_size must be in 0..max_context ({self.max_context})")
        self.model = absolute_if_local(self.model)
        self.stats = str(Path(self.stats).resolve())
        if self.context_init is not None:
            self.context_init = str(Path(self.context_init).resolve())


def stats_beside(data: Path) -> Path:
    """The statistics that came with scored data: DATA.stats.json, as `steerable score` writes
    them, else stats.json beside it, as RiC's offline stage does."""
    scored, offline = scored_stats_path(data), data.with_name("stats.json")
    return offline if offline.is_file() and not scored.is_file() else scored


# --- the model --------------------------------------------------------------------------
class NPDPOModule(nn.Module):
    """The trained parts together, as the Trainer sees them: the LoRA-wrapped LM with the
    context path's FiLM hooked into it. `forward` gives each row's completion log-prob under
    the z of its task's context."""

    def __init__(self, lm, path: ContextPath):
        super().__init__()
        self.lm, self.path = lm, path
        path.film.attach(lm)

    def forward(
        self,
        input_ids,
        attention_mask,
        completion_mask,
        context_chosen,
        context_rejected,
        context_mask,
        task_index,
        **_,
    ):
        z = self.path.latent(context_chosen, context_rejected, context_mask)[task_index]  # (N, Z)
        with self.path.film.conditioned(z):
            return completion_logps(self.lm, input_ids, attention_mask, completion_mask)  # (N,)


def context_path_for(config: NPDPOConfig, source: TaskSource, lm, rm: NPRewardModel | None) -> ContextPath:
    """A new context path for `lm`: the encoder from `rm` (`context_init`'s NP-BTL), or at random."""
    from steerable.fewshot.policy import decoder_layers

    hidden_size = lm.config.get_text_config().hidden_size
    layers = len(decoder_layers(lm))
    dim = int(source.embeddings.shape[1])
    if rm is None:
        shape = ContextConfig(
            config.encoder, dim, config.hidden, config.latent_size, config.heads, config.max_context
        )
        return ContextPath(shape, hidden_size, layers, source.types.to_dict())
    if rm.dim != dim:
        raise SteerableError(
            f"--context_init {config.context_init}: its NP-BTL reads {rm.dim}-d embeddings; this run's "
            f"{source.encoder} embeds {dim}-d"
        )
    shape = ContextConfig(
        config.encoder, dim, rm.config.hidden, rm.config.latent_size, rm.config.heads, config.max_context
    )
    path = ContextPath(shape, hidden_size, layers, source.types.to_dict())
    path.context_encoder.load_state_dict(rm.context_encoder.state_dict())
    return path


def context_init_model(config: NPDPOConfig) -> NPRewardModel:
    """`context_init`'s NP-BTL, refused unless it reads this run's encoder with a deterministic
    latent and was fitted on this run's split: pairs it trained on must not be among the held-out
    pairs this run reports accuracy on and `evaluate` draws its simulated users from."""
    rm = NPRewardModel.load(Path(config.context_init) / "stages" / "np" / "model")
    if rm.config.context != "np" or rm.encoder != encoder_id(config.encoder):
        raise SteerableError(
            f"--context_init {config.context_init}: its NP-BTL reads embeddings of {rm.encoder}; this "
            f"run embeds with {encoder_id(config.encoder)}"
        )
    if rm.config.latent != "deterministic":
        raise SteerableError(f"--context_init {config.context_init}: NP-DPO takes a deterministic latent")
    split = split_record(config)
    if rm.split is None:
        raise SteerableError(
            f"--context_init {config.context_init}: its NP-BTL does not record the split it was fitted "
            f"on (an older steerable made it), so it may have trained on this run's held-out pairs; "
            f"delete {Path(config.context_init) / 'stages' / 'np'} and run train np-rm again"
        )
    if rm.split != split:
        raise SteerableError(
            f"--context_init {config.context_init}: its NP-BTL was fitted on the split "
            f"{split_words(rm.split)} but this run splits {split_words(split)}, so pairs it trained on "
            "would be held out here; train np-rm with this run's --data and --seed, or leave out "
            "--context_init"
        )
    return rm


def split_words(split: dict) -> str:
    """A split record as a reader names it: (data DIGEST, seed N, SHARE of prompts held out)."""
    parts = [f"data {split['data'][:12]}" if "data" in split else split["task"], f"seed {split['seed']}"]
    if "heldout" in split:
        parts.append(f"{split['heldout']:.0%} of prompts held out")
    return "(" + ", ".join(parts) + ")"


# --- data -------------------------------------------------------------------------------
def training_tasks(config: NPDPOConfig, source: TaskSource) -> list[dict]:
    """max_steps x tasks_per_batch tasks from the train split: a type, a context, and lm_targets
    target pairs outside it (option indices)."""
    rng = np.random.default_rng(config.seed)
    batch = source.sample(
        "train", config.max_steps * config.tasks_per_batch, rng, config.targets, (0, config.max_context)
    )
    tasks = []
    for b in range(len(batch)):
        outside = np.flatnonzero(~batch.context[b])
        learn = rng.choice(outside, size=config.lm_targets, replace=False)
        inside = np.flatnonzero(batch.context[b])
        tasks.append(
            {
                "type": int(batch.types[b]),
                "context_chosen": batch.chosen[b, inside].tolist(),
                "context_rejected": batch.rejected[b, inside].tolist(),
                "chosen": batch.chosen[b, learn].tolist(),
                "rejected": batch.rejected[b, learn].tolist(),
            }
        )
    return tasks


def trained_tokens(tasks: list[dict], encoded: Encoded) -> int:
    """Tokens the policy trained on: every target option's prompt and completion, each step."""
    rows = [o for t in tasks for o in t["chosen"] + t["rejected"]]
    return sum(len(encoded.prompt[o]) + len(encoded.completion[o]) for o in rows)


class TaskCollator:
    """Tasks -> one batch: the padded contexts' embeddings (B, C, d), the target options'
    sequences (chosen rows, then rejected rows), each row's task and reference log-prob."""

    def __init__(self, embeddings: np.ndarray, encoded: Encoded, reference: np.ndarray, pad_id: int):
        self.embeddings = torch.from_numpy(embeddings)
        self.encoded, self.reference, self.pad_id = encoded, torch.from_numpy(reference), pad_id

    def __call__(self, tasks: list[dict]) -> dict[str, torch.Tensor]:
        size = max(len(t["context_chosen"]) for t in tasks)
        dim = self.embeddings.shape[1]
        chosen = torch.zeros((len(tasks), size, dim))
        rejected = torch.zeros((len(tasks), size, dim))
        mask = torch.zeros((len(tasks), size), dtype=torch.bool)
        for b, task in enumerate(tasks):
            n = len(task["context_chosen"])
            chosen[b, :n] = self.embeddings[task["context_chosen"]]
            rejected[b, :n] = self.embeddings[task["context_rejected"]]
            mask[b, :n] = True
        rows = [o for t in tasks for o in t["chosen"]] + [o for t in tasks for o in t["rejected"]]
        task_index = [b for b, t in enumerate(tasks) for _ in t["chosen"]]
        return {
            **pad_sequences(self.encoded, rows, self.pad_id),
            "context_chosen": chosen,
            "context_rejected": rejected,
            "context_mask": mask,
            "task_index": torch.tensor(task_index + task_index),
            "reference": self.reference[rows],
        }


def sft_loss(chosen_logps: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The chosen answers' negative log-likelihood per token (TRL DPO's 'sft' loss term)."""
    return -chosen_logps.sum() / tokens.clamp_min(1)


def dpo_trainer_class():
    """transformers.Trainer with the NP-DPO loss, checkpoints holding only the trained weights
    (the base model's are not ours to copy; resuming loads these non-strictly into the model)."""
    from transformers import Trainer

    class NPDPOTrainer(Trainer):
        def __init__(self, *args, beta: float, sft_weight: float, **kwargs):
            super().__init__(*args, **kwargs)
            self.beta, self.sft_weight = beta, sft_weight

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            reference = inputs.pop("reference")
            logps = model(**inputs)  # (2P,)
            half = len(logps) // 2
            loss = dpo_loss(logps[:half], logps[half:], reference[:half], reference[half:], self.beta).mean()
            if self.sft_weight:
                tokens = inputs["completion_mask"][:half, 1:].sum()
                loss = loss + self.sft_weight * sft_loss(logps[:half], tokens)
            return (loss, logps) if return_outputs else loss

        def _issue_warnings_after_load(self, load_result):
            # a checkpoint holds the trained weights only, so the frozen base's are "missing"
            trained = {n for n, p in self.model.named_parameters() if p.requires_grad}
            missing = sorted(trained & set(load_result.missing_keys))
            if missing or load_result.unexpected_keys:
                raise SteerableError(
                    f"the checkpoint in {self.args.output_dir} does not fit this model (missing "
                    f"{missing[:3]}, unexpected {load_result.unexpected_keys[:3]}); delete that folder "
                    "to start the stage again"
                )

        def _save(self, output_dir=None, state_dict=None):
            trained = {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}
            super()._save(output_dir, state_dict=trained)

    return NPDPOTrainer


# --- stages -----------------------------------------------------------------------------
@torch.no_grad()
def option_logps(
    lm,
    encoded: Encoded,
    rows: list[int],
    pad_id: int,
    z: torch.Tensor | None = None,
    path: ContextPath | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """log pi(option | prompt) of `rows`, under z when given (FiLM of `path`), else plain."""
    out = []
    for start in range(0, len(rows), batch_size):
        batch = pad_sequences(encoded, rows[start : start + batch_size], pad_id)
        batch = {k: v.to(lm.device) for k, v in batch.items()}
        if z is None:
            out.append(completion_logps(lm, **batch))
        else:
            with path.film.conditioned(z[start : start + batch_size]):
                out.append(completion_logps(lm, **batch))
    return torch.cat(out).float().cpu().numpy() if out else np.zeros(0, dtype=np.float32)


def reference_stage(
    config: NPDPOConfig, stages: Stages, inputs: dict, encoded: Encoded, pad_id: int
) -> np.ndarray:
    def work(folder: Path) -> dict:
        lm, _ = load_causal_lm(config.model, config.dtype, trust_remote_code=config.trust_remote_code)
        values = option_logps(lm, encoded, list(range(len(encoded.prompt))), pad_id)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, values.astype(np.float32))

        atomic_write(folder / "reference.npy", write)
        return {"options": len(values)}

    stages.run("reference", inputs, work)
    return np.load(stages.path("reference") / "reference.npy")


def policy_stage(config, stages, inputs, source, tasks, encoded, reference, tokenizer, context) -> dict:
    """Train (or resume) the policy into stages/policy/weights: adapter + fewshot/, its context
    encoder started from `context` (`context_init_model`) where it is not None."""
    from peft import get_peft_model
    from transformers import TrainingArguments
    from trl.trainer.utils import disable_dropout_in_model

    info = stages.done("policy", inputs)
    if info is not None:
        return info
    started = time.perf_counter()
    stage = stages.start("policy", inputs)
    torch.manual_seed(config.seed)
    lm, _ = load_causal_lm(config.model, config.dtype, trust_remote_code=config.trust_remote_code)
    lm = get_peft_model(lm, lora_config(config.lora_r, config.lora_alpha, 0.0))
    module = NPDPOModule(lm, context_path_for(config, source, lm, context))
    # DPO trains without dropout, LoRA's and the base model's, as TRL's DPOTrainer does
    # (`disable_dropout`): a dropped input would make the log-probs it compares noisy
    disable_dropout_in_model(module)
    args = TrainingArguments(
        output_dir=str(stage / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.tasks_per_batch,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(10, config.max_steps // 10),
        logging_steps=5,
        save_steps=config.save_steps,
        save_total_limit=2,
        remove_unused_columns=False,
        seed=config.seed,
        dataloader_num_workers=0,
        label_names=[],
        **{k: v for k, v in device_args().items() if k != "include_num_input_tokens_seen"},
    )
    trainer = dpo_trainer_class()(
        model=module,
        args=args,
        train_dataset=tasks,
        data_collator=TaskCollator(source.embeddings, encoded, reference, tokenizer.pad_token_id),
        beta=config.beta,
        sft_weight=config.sft_weight,
    )
    stage_bar(trainer, "NP-DPO policy").train(
        resume_from_checkpoint=last_complete_checkpoint(args.output_dir)
    )
    weights = stage / "weights"
    lm.save_pretrained(weights)
    module.path.save(weights / FEWSHOT_DIR)
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    info = {
        "seconds": time.perf_counter() - started,
        "steps": trainer.state.global_step,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
    }
    return stages.finish("policy", inputs, info)


def train_np_dpo(config: NPDPOConfig) -> Path:
    """Run the recipe (module docstring) and write steerable.json; returns the output directory."""
    from steerable.policy import MANIFEST, PolicyManifest

    rewards = load_rewards(config.stats, config.trust_remote_code)
    out = Path(config.output_dir)
    stages = Stages(out, "train np-dpo")
    base = {
        "tasks": task_inputs(config),
        "model": config.model,
        "dtype": config.dtype,
        "max_completion_length": config.max_completion_length,
    }
    settings = {
        k: v
        for k, v in asdict(config).items()
        if k
        not in (
            "output_dir",
            "stats",
            "eval_tasks",
            "eval_prompts",
            "eval_contexts",
            "eval_context_size",
            "max_new_tokens",
            "temperature",
        )
    }
    policy_inputs = {
        **base,
        "settings": settings,
        "context_init": None
        if config.context_init is None
        else file_digest(Path(config.context_init) / "stages" / "np" / "model" / "model.pt"),
    }
    trained = stages.done("policy", policy_inputs) is not None
    # the NP-BTL that starts the policy, refused before any work; a trained policy needs none
    context = None if config.context_init is None or trained else context_init_model(config)
    source = build_source(config, stages)
    needs = {"train": config.targets, "test": max(config.targets, max(eval_sizes(config)) + 1)}
    for split, count in needs.items():
        if len(source.pool.split_indices(split)) < count:
            raise SteerableError(
                f"the {split} split has {len(source.pool.split_indices(split))} usable pairs, fewer than "
                f"the {count} a task needs; use more data, fewer --targets, or --conflicting false"
            )
    missing = [o for o in source.types.objectives if o not in rewards.names]
    if missing:
        raise SteerableError(
            f"--stats {config.stats} has no objective(s) {missing} that the types care about"
        )
    heldout = heldout_pairs(config, source, rewards.names)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    encoded = encode_options(tokenizer, source.pool.texts, config.max_completion_length)
    reference = reference_stage(config, stages, base, encoded, tokenizer.pad_token_id)
    if not trained:
        (out / MANIFEST).unlink(missing_ok=True)  # written again once the policy is trained
    tasks = training_tasks(config, source)
    info = policy_stage(config, stages, policy_inputs, source, tasks, encoded, reference, tokenizer, context)
    tokenizer.save_pretrained(out)
    atomic_write_text(out / HELDOUT_PAIRS, heldout)
    manifest = PolicyManifest(
        method="np-dpo",
        base_model=config.model,
        rewards=rewards.to_dict(),
        policies=[{"adapter": POLICY_WEIGHTS}],
        dtype=config.dtype,
        fewshot={
            "context": f"{POLICY_WEIGHTS}/{FEWSHOT_DIR}",
            "beta": config.beta,
            "types": source.types.to_dict(),
            "heldout_pairs": HELDOUT_PAIRS,
        },
        training={
            "config": asdict(config),
            "stages": {"policy": fingerprint(policy_inputs)},
            "compute": {
                "seconds": {"policy": info["seconds"]},
                "trained_tokens": trained_tokens(tasks, encoded),
                "generated_tokens": 0,
            },
        },
    )
    atomic_write_text(out / MANIFEST, json.dumps(asdict(manifest), indent=2) + "\n")
    evaluate_np_dpo(
        config, stages, {**policy_inputs, "policy": fingerprint(info)}, source, encoded, reference
    )
    return out


def heldout_pairs(config: NPDPOConfig, source: TaskSource, names: list[str]) -> str:
    """The test split's pairs with their raw scores of every objective in `names` (the policy's,
    which `evaluate` sweeps), as JSON Lines kept with the policy: what a simulated user chooses
    from when `steerable evaluate`/`compare` turn a preference into examples."""
    from steerable.reward_models.labels import raw_values

    rows, places = read_placed(config.data)
    scores = {n: raw_values(rows, f"score_{n}", config.data, places) for n in names}  # (M,) per objective
    lines = []
    for a, b in source.pool.pairs[source.pool.split_indices("test")]:
        for row in (a, b):
            unscored = [n for n in names if np.isnan(scores[n][row])]
            if unscored:
                raise SteerableError(
                    f"{config.data}, {places[row]}: no score_{unscored[0]}; the held-out pairs keep a score "
                    f"of every --stats objective ({', '.join(names)}) for `evaluate`'s simulated users: "
                    "score the data with them, or give --stats of the types' objectives"
                )
        pair = {"prompt": rows[a]["prompt"], "a": rows[a]["response"], "b": rows[b]["response"]}
        pair["scores_a"] = {n: float(scores[n][a]) for n in names}
        pair["scores_b"] = {n: float(scores[n][b]) for n in names}
        lines.append(json.dumps(pair) + "\n")
    return "".join(lines)


# --- evaluation -------------------------------------------------------------------------
def eval_sizes(config: NPDPOConfig) -> list[int]:
    return [s for s in CONTEXT_SIZES if s <= config.max_context]


def implicit_margins(policy, encoded: Encoded, reference: np.ndarray, beta: float):
    """The policy's implicit reward margin beta * [(pi_c - ref_c) - (pi_r - ref_r)] of every
    target not in its task's context (others 0: they are not scored), as context_curve reads."""
    pad_id = policy.tokenizer.pad_token_id

    @torch.no_grad()
    def margins(embeddings: torch.Tensor, batch: TaskBatch) -> np.ndarray:
        out = np.zeros(batch.chosen.shape)
        for b in range(len(batch)):
            inside, scored = np.flatnonzero(batch.context[b]), np.flatnonzero(~batch.context[b])
            z = policy.fewshot.latent_of(
                embeddings[batch.chosen[b, inside]].numpy(), embeddings[batch.rejected[b, inside]].numpy()
            )
            rows = batch.chosen[b, scored].tolist() + batch.rejected[b, scored].tolist()
            logps = option_logps(policy.model, encoded, rows, pad_id, z.expand(len(rows), -1), policy.fewshot)
            implicit = beta * (logps - reference[rows])
            out[b, scored] = implicit[: len(scored)] - implicit[len(scored) :]
        return out

    return margins


def generation_effects(config: NPDPOConfig, policy, base, source: TaskSource) -> dict:
    """Held-out prompts answered under contexts of each type's held-out choices, and by the base
    model; per type, the mean change in each objective's normalised score (mean +- s.e. over
    prompts, each prompt's answers averaged first)."""
    from steerable.data import load_prompts
    from steerable.generation import SamplingConfig, format_chat, generate_texts

    prompts = load_prompts("heldout", config.eval_prompts)
    names = policy.names
    rng = np.random.default_rng([config.seed, 7])
    sampling = SamplingConfig(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed
    )
    texts = format_chat(policy.tokenizer, prompts)

    answers_of: dict[str, list[str]] = {}

    def scores(answers: list[str], kind: str) -> np.ndarray:
        answers_of.setdefault(kind, []).extend(answers)
        return policy.rewards.normalise(policy.rewards.score(prompts, answers))  # (n, K)

    runs = {"base": [], "no context": []}
    prior = policy.latent_for([])  # z of an empty context
    for r in range(config.eval_contexts):
        sampling.seed = config.seed + r
        runs["base"].append(scores(generate_texts(base, policy.tokenizer, texts, sampling, False), "base"))
        with policy.fewshot.film.conditioned(prior):
            answers = generate_texts(policy.model, policy.tokenizer, texts, sampling, False)
            runs["no context"].append(scores(answers, "no context"))
    for t, kind in enumerate(source.types.names):
        runs[kind] = []
        for r in range(config.eval_contexts):
            batch = source.sample(
                "test",
                1,
                rng,
                config.targets,
                config.eval_context_size,
                type_probabilities=np.eye(len(source.types.names))[t],
            )
            inside = np.flatnonzero(batch.context[0])
            z = policy.fewshot.latent_of(
                source.embeddings[batch.chosen[0, inside]], source.embeddings[batch.rejected[0, inside]]
            )
            sampling.seed = config.seed + r
            with policy.fewshot.film.conditioned(z):
                answers = generate_texts(policy.model, policy.tokenizer, texts, sampling, progress=False)
            runs[kind].append(scores(answers, kind))
    means = {kind: np.mean(values, axis=0) for kind, values in runs.items()}  # (n, K) per run kind
    effects = []
    # each type against the base model, the policy's own prior (no context) and the other types
    contrasts = [("no context", "base")]
    contrasts += [(kind, vs) for kind in source.types.names for vs in ("base", "no context")]
    contrasts += [
        (kind, other) for kind in source.types.names for other in source.types.names if other != kind
    ]
    for kind, vs in contrasts:
        for k, name in enumerate(names):
            mean, stderr = mean_and_stderr(means[kind][:, k] - means[vs][:, k])
            effects.append({"condition": kind, "objective": name, "vs": vs, "effect": mean, "stderr": stderr})
    levels = {kind: {n: float(means[kind][:, k].mean()) for k, n in enumerate(names)} for kind in means}
    return {
        "prompts": len(prompts),
        "contexts": config.eval_contexts,
        "context_size": config.eval_context_size,
        "mean_scores": levels,
        "effects": effects,
        # a score can be won with degenerate text: how often an answer holds a 25+ character
        # run without a space (not a word), and the first answers of each condition to read
        "run_on_share": {kind: run_on_share(a) for kind, a in answers_of.items()},
        "per_prompt": {kind: m.tolist() for kind, m in means.items()},  # [prompt][objective]
        "samples": {
            kind: [{"prompt": p, "answer": a} for p, a in zip(prompts[:3], answers[:3], strict=False)]
            for kind, answers in answers_of.items()
        },  # fmt: skip
    }


def run_on_share(answers: list[str], length: int = 25) -> float:
    """The share of answers with a run of `length` or more non-space characters (no word is that
    long: it flags token soup that a word-count objective would score as brief)."""
    return float(np.mean([any(len(w) >= length for w in a.split()) for a in answers])) if answers else 0.0


def evaluate_np_dpo(
    config, stages: Stages, inputs: dict, source: TaskSource, encoded: Encoded, reference: np.ndarray
) -> dict:
    from steerable.policy import SteerablePolicy

    eval_inputs = {
        **inputs,
        "eval": [
            config.eval_tasks,
            config.eval_prompts,
            config.eval_contexts,
            config.eval_context_size,
            config.max_new_tokens,
            config.temperature,
        ],
        "sizes": list(CONTEXT_SIZES),
    }

    def work(folder: Path) -> dict:
        policy = SteerablePolicy.from_pretrained(
            config.output_dir, trust_remote_code=config.trust_remote_code
        )
        base, _ = load_causal_lm(config.model, config.dtype, trust_remote_code=config.trust_remote_code)
        sizes = eval_sizes(config)
        targets = max(sizes) + 1  # the largest context leaves one target to score
        margins = implicit_margins(policy, encoded, reference, config.beta)
        points = context_curve(
            {"NP-DPO": margins}, source, "test", sizes, config.eval_tasks, targets, config.seed
        )
        record = {
            "types": source.types.names,
            "curve": [asdict(p) for p in points],
            "generations": generation_effects(config, policy, base, source),
        }
        atomic_write_text(folder / RESULT_FILE, json.dumps(record, indent=2) + "\n")
        plot_curve(points, folder / "implicit_accuracy.png", title="NP-DPO implicit reward, held-out targets")
        return {"file": RESULT_FILE}

    stages.run("evaluation", eval_inputs, work)
    return result(config.output_dir)


def result(out: str | Path) -> dict:
    return stage_result(out, RESULT_FILE)


def effects_table(data: dict):
    """Rich tables: the implicit-reward accuracy curve per type, and the generation effects."""
    from rich.table import Table

    table = accuracy_table(data)
    table.title = "NP-DPO implicit-reward accuracy (held-out targets not in the context), mean ± s.e."
    gen = data["generations"]
    effects = Table(
        title=f"generations: change in normalised score, mean ± s.e. over {gen['prompts']} held-out prompts "
        f"({gen['contexts']} contexts of {gen['context_size']} pairs per type)"
    )
    for column in ("conditioned on", "vs", "objective", "effect"):
        effects.add_column(column, justify="right" if column == "effect" else "left")
    for row in gen["effects"]:
        effects.add_row(
            row["condition"], row["vs"], row["objective"], f"{row['effect']:+.3f}±{row['stderr']:.3f}"
        )
    return table, effects

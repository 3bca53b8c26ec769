"""`steerable train np-dpo`: a policy steered by a few of a user's choices (NP-DPO, Kobalczyk et al. 2024),
as one recipe in stages.

1. embeddings   the scored pairs' options through the frozen pair encoder (as `train np-rm`)
2. reference    log ref(option) of every option under the base model, once: the reference is
                the unconditioned base (no adapter, no FiLM), so it never changes
3. policy       LoRA + FiLM + context encoder trained with the DPO loss on tasks: a user type,
                a random context of 0..max_context of its choices, and `lm_targets` of its other
                choices to learn from; checkpointed and resumed (transformers.Trainer)

Tasks come from scored pairs with user types (`--task scored`) or from real users' logs
(`--task logs`: each user a task, their own choices, no types). The evaluation (implicit-reward
accuracy on held-out tasks, and generations steered by each type's held-out choices) is
`evaluation.fewshot.evaluate_np_dpo`; `evaluation.fewshot.run_np_dpo` runs both, as the
command does.

The trainer is transformers' `Trainer` with a small `compute_loss`, not TRL's `DPOTrainer`: a
DPO example here is a task (a context of embedded pairs plus target pairs), and the loss needs
each target's z from its task's context inside the forward pass, which DPOTrainer's tokenised
(prompt, chosen, rejected) rows and collator have no place for. The loss itself is the sigmoid
DPO loss (`fewshot.policy.dpo_loss`), against reference log-probs computed once in stage 2.

Every stage records its inputs and is reused only when they match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from steerable.configs import SEED, check_config
from steerable.data.loading import read_placed
from steerable.defaults import absolute_if_local, load_causal_lm, load_tokenizer
from steerable.errors import SteerableError
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
from steerable.fewshot.tasks import CONTEXT_SIZES, LogSource, TaskSource
from steerable.io import atomic_write
from steerable.manifest import MANIFEST, PolicyManifest, training_record, write_model_directory
from steerable.methods.np_rm import TaskConfig, build_source, split_record, task_inputs
from steerable.methods.rl import load_rewards
from steerable.objectives import scored_stats_path
from steerable.stages import Stages, file_digest, fingerprint
from steerable.training import (
    LoraArguments,
    ModelArguments,
    check_rungs,
    config_inputs,
    device_args,
    lora_config,
    train_stage,
    with_default,
)

HELDOUT_PAIRS = "heldout_pairs.jsonl"
POLICY_WEIGHTS = "stages/policy/weights"


@dataclass
class NPDPOConfig(TaskConfig, ModelArguments):
    """TaskConfig (the pairs and user types, task=scored, conflicting by default; or users' own
    choices, task=logs) and:

    Model:
        model / dtype / trust_remote_code: the base policy (`ModelArguments`).
        stats: the objectives and statistics generations are scored with and recorded in
            steerable.json (a stats JSON or a model directory; default: DATA.stats.json, as
            `steerable score` writes it, else stats.json beside DATA, as RiC's offline stage does;
            logs carry no scores, so with task=logs it is required unless one lies beside DATA).
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
        lora_r / lora_alpha: the LoRA shape (`LoraArguments`; 16 / 32, and no dropout: DPO
            trains without it, as TRL's does).
        save_steps: steps between checkpoints (an interrupted run resumes from the last).
        rungs: steps at which the policy (adapter and context encoder) is also saved, with the
            compute spent so far (stages/policy/rungs/step-N: a budget ladder's rungs; the
            tokens trained on so far estimated as the run's in proportion to its steps). Not
            part of the stage's inputs.
    Evaluation:
        eval_tasks: held-out tasks per context size for the implicit-reward accuracy.
        eval_prompts: held-out prompts generated for (the embedded heldout split).
        eval_contexts / eval_context_size: contexts per type, pairs in each, for generations.
        max_new_tokens / temperature: sampling of the evaluation generations.
    """

    task: str = field(
        default="scored", metadata={"help": "Task builder (scored or logs).", "choices": ("scored", "logs")}
    )
    conflicting: bool = field(default=True, metadata={"help": "Keep only pairs the types disagree on."})
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
    lora_r: int = with_default(LoraArguments, "lora_r", 16)
    lora_alpha: int = with_default(LoraArguments, "lora_alpha", 32)
    save_steps: int = field(default=10, metadata={"help": "Steps between checkpoints.", "ge": 1})
    rungs: list[int] = field(
        default_factory=list,
        metadata={"help": "Steps at which the policy is also saved (a budget ladder's rungs).", "ge": 1},
    )
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
        if self.task not in ("scored", "logs"):
            raise SteerableError("NP-DPO trains on text: --task must be scored or logs (pairs of responses)")
        super().__post_init__()
        if self.stats is None:
            self.stats = str(stats_beside(Path(self.data)))
            if self.task == "logs" and not Path(self.stats).exists():
                raise SteerableError(
                    "--stats is required with --task logs: the objectives the model directory scores "
                    "answers with (a `steerable score` stats JSON or a model directory); users' logs "
                    "carry no scores"
                )
        if not 0 <= self.max_context <= self.targets - self.lm_targets:
            raise SteerableError(
                f"--max_context must be in 0..targets - lm_targets ({self.targets - self.lm_targets}), "
                f"got {self.max_context}: a task keeps lm_targets pairs out of its context"
            )
        if not 0 <= self.eval_context_size <= self.max_context:
            raise SteerableError(f"--eval_context_size must be in 0..max_context ({self.max_context})")
        check_rungs(self.rungs, self.max_steps)
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


def types_record(source: TaskSource | LogSource) -> dict | None:
    """The user types a model records (None for logs: users, not types)."""
    return None if source.types is None else source.types.to_dict()


def context_path_for(
    config: NPDPOConfig, source: TaskSource | LogSource, lm, rm: NPRewardModel | None
) -> ContextPath:
    """A new context path for `lm`: the encoder from `rm` (`context_init`'s NP-BTL), or at random."""
    from steerable.fewshot.policy import decoder_layers

    hidden_size = lm.config.get_text_config().hidden_size
    layers = len(decoder_layers(lm))
    dim = int(source.embeddings.shape[1])
    if rm is None:
        shape = ContextConfig(
            config.encoder, dim, config.hidden, config.latent_size, config.heads, config.max_context
        )
        return ContextPath(shape, hidden_size, layers, types_record(source))
    if rm.dim != dim:
        raise SteerableError(
            f"--context_init {config.context_init}: its NP-BTL reads {rm.dim}-d embeddings; this run's "
            f"{source.encoder} embeds {dim}-d"
        )
    shape = ContextConfig(
        config.encoder, dim, rm.config.hidden, rm.config.latent_size, rm.config.heads, config.max_context
    )
    path = ContextPath(shape, hidden_size, layers, types_record(source))
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
        held = "users" if split["task"] == "logs" else "prompts"
        parts.append(f"{split['heldout']:.0%} of {held} held out")
    return "(" + ", ".join(parts) + ")"


# --- data -------------------------------------------------------------------------------
def training_tasks(config: NPDPOConfig, source: TaskSource | LogSource) -> list[dict]:
    """max_steps x tasks_per_batch tasks from the train split: a type (or a user of logs), a
    context, and lm_targets target pairs outside it (fewer if a user has no more; option
    indices)."""
    rng = np.random.default_rng(config.seed)
    batch = source.sample(
        "train", config.max_steps * config.tasks_per_batch, rng, config.targets, (0, config.max_context)
    )
    tasks = []
    for b in range(len(batch)):
        outside = np.flatnonzero(batch.scored()[b])
        learn = rng.choice(outside, size=min(config.lm_targets, len(outside)), replace=False)
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
    made = {}

    def trainer_for(stage: Path):
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
        made["trainer"] = dpo_trainer_class()(
            model=module,
            args=args,
            train_dataset=tasks,
            data_collator=TaskCollator(source.embeddings, encoded, reference, tokenizer.pad_token_id),
            beta=config.beta,
            sft_weight=config.sft_weight,
        )
        return made["trainer"]

    def describe(trainer, result) -> dict:
        losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
        return {
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            # the collator builds each task's rows, so the Trainer counts no tokens: they are counted here
            "trained_tokens": trained_tokens(tasks, encoded),
        }

    def save_policy(module, folder: Path) -> None:
        """The adapter, and the context encoder beside it."""
        module.lm.save_pretrained(folder)
        module.path.save(folder / FEWSHOT_DIR)

    def save(trainer, stage: Path, info: dict) -> None:
        save_policy(trainer.model, stage / "weights")

    def counts() -> dict:  # the collator builds the rows: the tokens so far, as the run's share
        step = made["trainer"].state.global_step
        return {"trained_tokens": round(trained_tokens(tasks, encoded) * step / config.max_steps)}

    return train_stage(
        stages, "policy", inputs, trainer_for, "NP-DPO policy", describe, save,
        rungs=config.rungs, counts=counts, save_rung=save_policy,
    )[1]  # fmt: skip


def run_inputs(config: NPDPOConfig) -> tuple[dict, dict]:
    """(what the reference stage depends on, what the policy stage depends on)."""
    base = {
        "tasks": task_inputs(config),
        "model": config.model,
        "dtype": config.dtype,
        "max_completion_length": config.max_completion_length,
    }
    evaluation_only = (
        "output_dir",
        "rungs",
        "stats",
        "eval_tasks",
        "eval_prompts",
        "eval_contexts",
        "eval_context_size",
        "max_new_tokens",
        "temperature",
    )
    policy_inputs = {
        **base,
        "settings": config_inputs(config, exclude=evaluation_only),
        "context_init": None
        if config.context_init is None
        else file_digest(Path(config.context_init) / "stages" / "np" / "model" / "model.pt"),
    }
    return base, policy_inputs


def eval_sizes(config: NPDPOConfig) -> list[int]:
    """The context sizes the evaluation reports (CONTEXT_SIZES up to max_context)."""
    return [s for s in CONTEXT_SIZES if s <= config.max_context]


def train_np_dpo(config: NPDPOConfig) -> Path:
    """Run the recipe's training stages (module docstring) and write steerable.json; returns the
    output directory."""
    rewards = load_rewards(config.stats, config.trust_remote_code)
    out = Path(config.output_dir)
    stages = Stages(out, "train np-dpo")
    base, policy_inputs = run_inputs(config)
    trained = stages.done("policy", policy_inputs) is not None
    # the NP-BTL that starts the policy, refused before any work; a trained policy needs none
    context = None if config.context_init is None or trained else context_init_model(config)
    source = build_source(config, stages)
    if source.types is not None:
        needs = {"train": config.targets, "test": max(config.targets, max(eval_sizes(config)) + 1)}
        for split, count in needs.items():
            if source.pair_counts()[split] < count:
                raise SteerableError(
                    f"the {split} split has {source.pair_counts()[split]} usable pairs, fewer than "
                    f"the {count} a task needs; use more data, fewer --targets, or --conflicting false"
                )
        missing = [o for o in source.types.objectives if o not in rewards.names]
        if missing:
            raise SteerableError(
                f"--stats {config.stats} has no objective(s) {missing} that the types care about"
            )
    heldout = heldout_pairs(config, source, rewards.names)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    encoded = encode_options(tokenizer, source.texts, config.max_completion_length)
    reference = reference_stage(config, stages, base, encoded, tokenizer.pad_token_id)
    if not trained:
        (out / MANIFEST).unlink(missing_ok=True)  # written again once the policy is trained
    tasks = training_tasks(config, source)
    info = policy_stage(config, stages, policy_inputs, source, tasks, encoded, reference, tokenizer, context)
    # counted here too: a stage finished by an earlier version does not record them
    compute = {**info, "trained_tokens": trained_tokens(tasks, encoded)}
    manifest = PolicyManifest(
        method="np-dpo",
        base_model=config.model,
        rewards=rewards.to_dict(),
        policies=[{"adapter": POLICY_WEIGHTS}],
        dtype=config.dtype,
        fewshot={
            "context": f"{POLICY_WEIGHTS}/{FEWSHOT_DIR}",
            "beta": config.beta,
            "types": types_record(source),
            "heldout_pairs": HELDOUT_PAIRS,
        },
        training=training_record(config, {"policy": fingerprint(policy_inputs)}, {"policy": compute}),
    )
    return write_model_directory(out, manifest, tokenizer, {HELDOUT_PAIRS: heldout})


def heldout_pairs(config: NPDPOConfig, source: TaskSource | LogSource, names: list[str]) -> str:
    """The test split's pairs with their raw scores of every objective in `names` (the policy's,
    which `evaluate` sweeps), as JSON Lines kept with the policy: what a simulated user chooses
    from when `steerable evaluate`/`compare` turn a preference into examples. Logs have no
    scores: their held-out users' own choices are kept, {"user", "prompt", "chosen", "rejected"}."""
    from steerable.reward_models.labels import raw_values

    if source.types is None:
        log = source.log
        held = np.flatnonzero(np.isin(log.user, log.users_in("test")))
        return "".join(
            json.dumps(
                {
                    "user": log.users[log.user[p]],
                    "prompt": log.texts[log.pairs[p, 0]][0],
                    "chosen": log.texts[log.pairs[p, 0]][1],
                    "rejected": log.texts[log.pairs[p, 1]][1],
                }
            )
            + "\n"
            for p in held
        )
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

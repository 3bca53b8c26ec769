"""One RL policy on a weighted sum of normalised objectives, with TRL's GRPOTrainer and LoRA.
Shared by MORLHF (one policy per weight vector) and Rewarded Soups (one per objective).

TRL gets one reward function per objective (each returns that objective's normalised score
z_k) and `reward_weights` = the preference, so the scalar reward is sum_k w_k z_k and TRL
logs every objective separately.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from steerable.configs import SEED, check_config
from steerable.data import load_prompts
from steerable.data.prompts import SPLITS
from steerable.defaults import (
    absolute_if_local,
    load_causal_lm,
    load_tokenizer,
)
from steerable.errors import SteerableError
from steerable.manifest import MANIFEST, PolicyManifest, load_manifest, training_record, write_model_directory
from steerable.objectives import RewardSet
from steerable.stages import Stages, fingerprint, is_main_process
from steerable.training import (
    CheckpointedState,
    LoraArguments,
    ModelArguments,
    check_rungs,
    checkpoint_args,
    config_inputs,
    device_args,
    last_complete_checkpoint,
    lora_config,
    saved_callback_state,
    summed_over_processes,
    train_stage,
    with_default,
)

# GRPO settings the baselines rely on, pinned (TRL's defaults have changed between releases)
# and recorded with every policy: the DAPO token-level loss; rewards scaled by the group's
# standard deviation (GRPO as published) unless `scale_rewards` says otherwise.
GRPO_LOSS_TYPE = "dapo"
SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class RLConfig(LoraArguments, ModelArguments):
    """Configuration shared by the RL baselines (MORLHF, Rewarded Soups).

    model / dtype / trust_remote_code: the base policy (`ModelArguments`); trust_remote_code
        also lets the py: scorers named in `stats` run (off unless you trust their author).
    output_dir: where the policies (LoRA adapters) and steerable.json are written.
    stats: objectives + normalisation statistics to optimise and to be compared under: a stats
        JSON (`steerable score`) or a steerable model directory (e.g. the RiC model).
    prompts: your prompt file RL trains on (a `prompt` column, an optional `split` column;
        `steerable.data.prompts`); unset: the embedded prompt set.
    prompt_split / prompt_limit: which of the prompts RL trains on.
    max_steps: GRPO optimisation steps per policy.
    num_generations: completions sampled per prompt (the GRPO group).
    batch_size: completions per step (a multiple of num_generations).
    max_completion_length / temperature: sampling during RL.
    learning_rate / beta: GRPO learning rate and KL coefficient (TRL's default beta is 0).
    scale_rewards: what divides the group-centred rewards (TRL's option): group (each group's
        std, GRPO as published), batch (the whole batch's std, so a group whose rewards hardly
        differ gets small advantages instead of amplified noise) or none.
    rungs: steps at which each policy is also saved, with the compute spent so far
        (stages/policy_I/rungs/step-N): a budget ladder's rungs, evaluated by `steerable compare`
        without training again. Not part of a stage's inputs: a finished stage is not trained
        again for them.
    lora_r / lora_alpha / lora_dropout: LoRA shape of each policy (`LoraArguments`; 16 / 32 / 0.05).
    seed: random seed.
    """

    output_dir: str = field(default="runs/rl", metadata={"help": "Output directory."})
    stats: str | None = field(
        default=None, metadata={"help": "Stats JSON or steerable model dir (required)."}
    )
    prompts: str | None = field(
        default=None, metadata={"help": "Prompt file to train on; unset = the embedded prompts."}
    )
    prompt_split: str = field(default="train", metadata={"help": "Prompt split.", "choices": SPLITS})
    prompt_limit: int | None = field(
        default=None, metadata={"help": "Use only the first N prompts.", "ge": 1}
    )
    max_steps: int = field(default=30, metadata={"help": "GRPO steps per policy.", "ge": 1})
    num_generations: int = field(
        default=4, metadata={"help": "Completions per prompt (GRPO group).", "ge": 2}
    )
    batch_size: int = field(default=8, metadata={"help": "Completions per step.", "ge": 1})
    max_completion_length: int = field(
        default=64, metadata={"help": "Generated tokens per completion.", "ge": 1}
    )
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature.", "gt": 0})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate.", "gt": 0})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient.", "ge": 0})
    scale_rewards: str = field(
        default="group", metadata={"help": "Std that scales the advantages.", "choices": SCALE_REWARDS}
    )
    rungs: list[int] = field(
        default_factory=list,
        metadata={"help": "Steps at which each policy is also saved (a budget ladder's rungs).", "ge": 1},
    )
    # Settings added after stages were first recorded, with their defaults: left out of a stage's
    # inputs while at them, so a stage trained before they existed still matches (scale_rewards
    # is in the inputs' "grpo" entry anyway). A recipe's config adds its own.
    later_fields: ClassVar[dict] = {"scale_rewards": "group", "prompts": None}
    lora_r: int = with_default(LoraArguments, "lora_r", 16)
    lora_alpha: int = with_default(LoraArguments, "lora_alpha", 32)
    seed: int = field(default=0, metadata={"help": "Random seed.", **SEED})

    def __post_init__(self):
        check_config(self)
        if self.stats is None:
            raise SteerableError(
                "--stats is required: the objectives and statistics to optimise, shared with the "
                "methods this baseline is compared with (a stats JSON or a steerable model directory)"
            )
        check_rungs(self.rungs, self.max_steps)
        if self.grpo and self.batch_size % self.num_generations:
            raise SteerableError(
                f"--batch_size ({self.batch_size}) must be a multiple of --num_generations "
                f"({self.num_generations}): GRPO samples whole groups"
            )
        self.model = absolute_if_local(self.model)
        self.stats = str(Path(self.stats).resolve())
        self.prompts = None if self.prompts is None else str(Path(self.prompts).resolve())

    @property
    def grpo(self) -> bool:
        """Whether GRPO trains the policies, sampling `num_generations` answers a prompt: always
        for the baselines (MOSLIM may train by DPO instead)."""
        return True


def count_completions(counter: dict, tokenizer, texts: list[str]) -> None:
    """Add a batch of completions to the run's generated counts (one reward function per run
    calls it, so every completion is counted once)."""
    counter["completions"] += len(texts)
    counter["tokens"] += sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids)


def completion_texts(prompts: list, completions: list) -> tuple[list[str], list[str]]:
    """(user prompts, completion texts) from TRL's conversational or plain reward inputs."""
    users = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return users, texts


def reward_functions(rewards: RewardSet, counter: dict, tokenizer) -> list:
    """One TRL reward function per objective, returning normalised scores (the first one also
    counts the generated tokens)."""

    def make(k: int, objective):
        def reward(prompts, completions, **_):
            users, texts = completion_texts(prompts, completions)
            if k == 0:
                count_completions(counter, tokenizer, texts)
            raw = objective.score(users, texts)
            return objective.stats.normalise(raw).tolist()  # raw is finite: Objective.score checks

        reward.__name__ = objective.name
        return reward

    return [make(k, o) for k, o in enumerate(rewards.objectives)]


def load_rewards(stats: str | Path, trust_remote_code: bool = False) -> RewardSet:
    """Objectives + statistics from a stats JSON or a steerable model directory."""
    path = Path(stats)
    if path.is_dir():
        manifest = load_manifest(path)
        return RewardSet.from_dict(manifest.rewards, where=str(path), trust_remote_code=trust_remote_code)
    return RewardSet.load(path, trust_remote_code=trust_remote_code)


def train_policies(config: RLConfig, method: str, vectors: list[list[float]]) -> Path:
    """Train one GRPO policy per weight vector (a stage each: OUT/stages/policy_I) and write the
    method's steerable.json once every policy is trained (`write_policies`)."""
    rewards = load_rewards(config.stats, config.trust_remote_code)
    for weights in vectors:
        if len(weights) != len(rewards):
            raise SteerableError(
                f"weight vector {weights} has {len(weights)} values; objectives are {rewards.names}"
            )
    prompts = training_prompts(config)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    plan = {f"policy_{i}": policy_inputs(config, rewards, weights) for i, weights in enumerate(vectors)}

    def train(stages: Stages, name: str, inputs: dict, weights: list[float]) -> dict:
        return train_rl_policy(config, rewards, weights, stages, name, inputs, tokenizer)

    grpo = {"loss_type": GRPO_LOSS_TYPE, "scale_rewards": config.scale_rewards}
    return write_policies(config, method, rewards, vectors, plan, train, prompts, tokenizer, grpo=grpo)


def write_policies(
    config,
    method: str,
    rewards: RewardSet,
    vectors: list[list[float]],
    plan: dict[str, dict],
    train: Callable[[Stages, str, dict, list[float]], dict],
    prompts: Sequence[str],
    tokenizer,
    **recipe,
) -> Path:
    """The directory of a method with one policy per weight vector: `plan` names each policy's
    stage (in `vectors`' order) with its inputs; every stage is checked first (a stale one is
    refused before any trains), then `train(stages, name, inputs, weights)` trains each (or
    returns the finished stage's info), and steerable.json lists the policies once all are
    trained, with the `recipe` pinned (e.g. grpo=..., dpo=...) in its training record, beside the
    tokenizer (a `SteerablePolicy` loads it from the directory)."""
    out = Path(config.output_dir)
    stages = Stages(out, f"train {method}")
    for name, inputs in plan.items():
        stages.done(name, inputs)  # refuse a stale policy before training any
    if is_main_process():
        (out / MANIFEST).unlink(missing_ok=True)  # written again once every policy is trained
    infos = {
        name: train(stages, name, inputs, weights)
        for (name, inputs), weights in zip(plan.items(), vectors, strict=True)
    }
    manifest = PolicyManifest(
        method=method,
        base_model=config.model,
        rewards=rewards.to_dict(),
        policies=[
            {"weights": list(weights), "adapter": f"stages/{name}/weights"}
            for name, weights in zip(plan, vectors, strict=True)
        ],
        dtype=config.dtype,
        training=training_record(
            config, {name: fingerprint(inputs) for name, inputs in plan.items()}, infos, prompts, **recipe
        ),
    )
    return write_model_directory(out, manifest, tokenizer)


def stage_settings(config: RLConfig, exclude: Sequence[str]) -> dict:
    """The settings of `config` a stage depends on (`config_inputs`): every field but `exclude`,
    its `later_fields` only where they differ from their default, the prompt file by content.
    The rungs are left out: saving the policy on the way does not change it (a stage finished
    without a rung asked for now lacks that save, which the ladder reports)."""
    return config_inputs(config, exclude=(*exclude, "rungs"), files=("prompts",), later=config.later_fields)


def training_prompts(config: RLConfig) -> list[str]:
    """The prompts a policy trains on (refused here, before any training, if the file is bad)."""
    return load_prompts(config.prompt_split, config.prompt_limit, config.prompts)


def policy_inputs(config: RLConfig, rewards: RewardSet, weights: list[float]) -> dict:
    """What one policy depends on: every setting but where it goes, the objectives with their
    statistics (by content), its weights and the pinned GRPO settings."""
    return {
        **stage_settings(config, ("output_dir", "stats", "weight_vectors")),
        "rewards": fingerprint(rewards.to_dict()),
        "weights": list(weights),
        "grpo": [GRPO_LOSS_TYPE, config.scale_rewards],
    }


def train_rl_policy(
    config: RLConfig,
    rewards: RewardSet,
    weights: list[float],
    stages: Stages,
    name: str,
    inputs: dict,
    tokenizer,
) -> dict:
    """Train one LoRA policy on sum_k w_k z_k into stages/NAME/weights, unless that stage is
    done; an interrupted one resumes from its last complete checkpoint."""
    done = stages.done(name, inputs)
    if done is not None:
        return done
    prompts = training_prompts(config)
    rows = [{"prompt": [{"role": "user", "content": p}]} for p in prompts]
    counter = {"completions": 0, "tokens": 0}
    reward_funcs = reward_functions(rewards, counter, tokenizer)
    info = train_grpo(config, stages, name, inputs, tokenizer, rows, reward_funcs, weights, counter)
    return stages.finish(name, inputs, {"weights": list(weights), **info})


def train_grpo(
    config: RLConfig,
    stages: Stages,
    name: str,
    inputs: dict,
    tokenizer,
    rows: list[dict],
    reward_funcs: list,
    reward_weights: list[float],
    counter: dict,
    callbacks: Sequence = (),
    shuffle: bool = True,
) -> dict:
    """The GRPO run every RL recipe shares: a LoRA policy on `config.model` trained on `rows`
    (TRL dataset rows: a `prompt` and any columns the reward functions read) with
    `reward_funcs` weighted by `reward_weights`, into stages/NAME/weights (`train_stage`).
    Returns the compute record; the caller finishes the stage (`counter` is the one its reward
    functions fill through `count_completions`). shuffle=False keeps the rows in order, so each
    step takes the next batch_size / num_generations rows."""
    from datasets import Dataset
    from trl import GRPOTrainer

    generated = None

    def trainer_for(stage: Path):
        nonlocal generated
        model, _ = load_causal_lm(config.model, config.dtype, trust_remote_code=config.trust_remote_code)
        args = grpo_args(config, reward_weights, stage / "checkpoints", shuffle)
        generated = generated_counts(counter, last_complete_checkpoint(args.output_dir))
        return GRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(config.lora_r, config.lora_alpha, config.lora_dropout),
            callbacks=[*callbacks, generated],
        )

    def describe(trainer, result) -> dict:
        # summed over the processes before saving, so nothing of the stage is written until
        # every step that needs all processes has passed
        completions, tokens = generated.total()
        return {"generated_completions": int(completions), "generated_tokens": int(tokens)}

    def counts() -> dict:
        return describe(None, None)

    label, rungs = f"{name} GRPO", config.rungs
    return train_stage(
        stages, name, inputs, trainer_for, label, describe, finish=False, rungs=rungs, counts=counts
    )[1]


def generated_counts(counter: dict, checkpoint: str | None):
    """A callback that keeps the run's generated (completions, tokens) in every checkpoint (a
    CheckpointedState, as MOSLIM keeps its statistics): each process counts its own completions in
    `counter`, the checkpoint holds their sum over processes plus what the run resumed from had,
    so a stage resumed from a checkpoint reports the whole run's generations, not the resumed
    part's. `total()` gives them at the end (every process must call it)."""

    class GeneratedCounts(CheckpointedState):
        def __init__(self):
            self.totals = before

        def total(self) -> list[int]:
            mine = np.array([counter["completions"], counter["tokens"]], dtype=float)
            return [int(v) for v in before + summed_over_processes(mine)]

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:  # on every process, before the checkpoint is written
                self.totals = self.total()

        def state(self) -> dict:
            completions, tokens = self.totals
            return {"args": {}, "attributes": {"completions": int(completions), "tokens": int(tokens)}}

    before = np.zeros(2)
    saved = None if checkpoint is None else saved_callback_state(checkpoint, GeneratedCounts.__name__)
    if saved is not None:
        before = np.array([saved["completions"], saved["tokens"]], dtype=float)
    elif checkpoint is not None:
        warnings.warn(
            f"{checkpoint} does not record the completions generated before it (an older "
            "steerable wrote it); the stage's record counts only those generated from here",
            stacklevel=2,
        )
    return GeneratedCounts()


def grpo_args(config: RLConfig, weights: list[float], output_dir: Path, shuffle: bool = True):
    """TRL's GRPOConfig for one policy: reward = sum_k w_k r_k over its reward functions, the
    pinned GRPO settings."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        beta=config.beta,
        loss_type=GRPO_LOSS_TYPE,
        scale_rewards=config.scale_rewards,
        reward_weights=list(weights),
        seed=config.seed,
        shuffle_dataset=shuffle,
        activation_checkpointing=False,
        **checkpoint_args(),
        **device_args(),
    )

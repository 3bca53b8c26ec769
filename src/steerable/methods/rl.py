"""One RL policy on a weighted sum of normalised objectives, with TRL's GRPOTrainer and LoRA.
Shared by MORLHF (one policy per weight vector) and Rewarded Soups (one per objective).

TRL gets one reward function per objective (each returns that objective's normalised score
z_k) and `reward_weights` = the preference, so the scalar reward is sum_k w_k z_k and TRL
logs every objective separately.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from steerable.data import load_prompts
from steerable.defaults import DEFAULT_MODEL, load_causal_lm
from steerable.errors import SteerableError
from steerable.io import atomic_write_text
from steerable.methods.training import device_args, lora_config
from steerable.objectives import RewardSet


@dataclass
class RLConfig:
    """Configuration shared by the RL baselines (MORLHF, Rewarded Soups).

    model: base policy (`smollm2`, `tiny`, a hub id or a local directory).
    output_dir: where the policies (LoRA adapters) and steerable.json are written.
    stats: objectives + normalisation statistics to optimise and to be compared under: a stats
        JSON (`steerable score`) or a steerable model directory (e.g. the RiC model).
    prompt_split / prompt_limit: the embedded prompts RL trains on.
    max_steps: GRPO optimisation steps per policy.
    num_generations: completions sampled per prompt (the GRPO group).
    batch_size: completions per step (a multiple of num_generations).
    max_completion_length / temperature: sampling during RL.
    learning_rate / beta: GRPO learning rate and KL coefficient (TRL's default beta is 0).
    lora_r / lora_alpha / lora_dropout: LoRA shape of each policy.
    seed: random seed.
    """

    model: str = field(default=DEFAULT_MODEL, metadata={"help": "Base policy."})
    output_dir: str = field(default="runs/rl", metadata={"help": "Output directory."})
    stats: str | None = field(
        default=None, metadata={"help": "Stats JSON or steerable model dir (required)."}
    )
    prompt_split: str = field(default="train", metadata={"help": "Embedded prompt split."})
    prompt_limit: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    max_steps: int = field(default=30, metadata={"help": "GRPO steps per policy."})
    num_generations: int = field(default=4, metadata={"help": "Completions per prompt (GRPO group)."})
    batch_size: int = field(default=8, metadata={"help": "Completions per step."})
    max_completion_length: int = field(default=64, metadata={"help": "Generated tokens per completion."})
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate."})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    seed: int = field(default=0, metadata={"help": "Random seed."})

    def __post_init__(self):
        if self.stats is None:
            raise SteerableError(
                "--stats is required: the objectives and statistics to optimise, shared with the "
                "methods this baseline is compared with (a stats JSON or a steerable model directory)"
            )
        if self.batch_size % self.num_generations:
            raise SteerableError("batch_size must be a multiple of num_generations")


def reward_functions(rewards: RewardSet, counter: dict, tokenizer) -> list:
    """One TRL reward function per objective, returning normalised scores (the first one also
    counts the generated tokens)."""

    def make(k: int, objective):
        def reward(prompts, completions, **_):
            users = [p[-1]["content"] if isinstance(p, list) else p for p in prompts]
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            if k == 0:
                counter["completions"] += len(texts)
                counter["tokens"] += sum(
                    len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids
                )
            raw = objective.score(users, texts)
            return objective.stats.normalise(np.nan_to_num(raw, nan=objective.stats.mean)).tolist()

        reward.__name__ = objective.name
        return reward

    return [make(k, o) for k, o in enumerate(rewards.objectives)]


def load_rewards(stats: str | Path) -> RewardSet:
    """Objectives + statistics from a stats JSON or a steerable model directory."""
    path = Path(stats)
    if path.is_dir():
        manifest = path / "steerable.json"
        if not manifest.is_file():
            raise SteerableError(f"{path} has no steerable.json; pass a model directory or a stats JSON")
        return RewardSet.from_dict(json.loads(manifest.read_text())["rewards"], where=str(manifest))
    return RewardSet.load(path)


def train_policies(config: RLConfig, method: str, vectors: list[list[float]]) -> Path:
    """Train one policy per weight vector and write the method's steerable.json."""
    from dataclasses import asdict

    from steerable.policy import PolicyManifest

    rewards = load_rewards(config.stats)
    out = Path(config.output_dir)
    policies, infos = [], []
    for i, weights in enumerate(vectors):
        if len(weights) != len(rewards):
            raise SteerableError(
                f"weight vector {weights} has {len(weights)} values; objectives are {rewards.names}"
            )
        infos.append(train_rl_policy(config, rewards, weights, out / "policies" / str(i)))
        policies.append({"weights": list(weights), "adapter": f"policies/{i}/adapter"})
    manifest = PolicyManifest(
        method=method,
        base_model=config.model,
        rewards=rewards.to_dict(),
        policies=policies,
        training={
            "config": asdict(config),
            "compute": {
                "seconds": {f"policy_{i}": info["seconds"] for i, info in enumerate(infos)},
                "trained_tokens": sum(info["trained_tokens"] for info in infos),
                "generated_tokens": sum(info["generated_tokens"] for info in infos),
            },
        },
    )
    atomic_write_text(out / "steerable.json", json.dumps(asdict(manifest), indent=2) + "\n")
    return out


def train_rl_policy(config: RLConfig, rewards: RewardSet, weights: list[float], directory: Path) -> dict:
    """Train one LoRA policy on sum_k w_k z_k; save its adapter to `directory`. Skips a finished
    policy (directory/done.json) and resumes an interrupted one from its last checkpoint."""
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    marker = directory / "done.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    model, tokenizer = load_causal_lm(config.model)
    tokenizer.padding_side = "left"
    prompts = load_prompts(config.prompt_split, config.prompt_limit)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in prompts])
    args = GRPOConfig(
        output_dir=str(directory / "checkpoints"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        beta=config.beta,
        reward_weights=list(weights),
        logging_steps=5,
        save_strategy="steps",
        save_steps=10,
        save_total_limit=1,
        seed=config.seed,
        gradient_checkpointing=False,
        **device_args(),
    )
    counter = {"completions": 0, "tokens": 0}
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_functions(rewards, counter, tokenizer),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config.lora_r, config.lora_alpha, config.lora_dropout),
    )
    started = time.perf_counter()
    checkpoint = get_last_checkpoint(args.output_dir) if Path(args.output_dir).is_dir() else None
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.model.save_pretrained(directory / "adapter")
    info = {
        "weights": list(weights),
        "seconds": time.perf_counter() - started,
        "steps": trainer.state.global_step,
        "trained_tokens": int(trainer.state.num_input_tokens_seen),
        "generated_completions": counter["completions"],
        "generated_tokens": counter["tokens"],
    }
    atomic_write_text(marker, json.dumps(info, indent=2) + "\n")
    return info

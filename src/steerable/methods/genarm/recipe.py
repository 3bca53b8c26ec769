"""GenARM's autoregressive reward models (Xu et al., ICLR 2025): for each objective k, a LoRA on
the base model trained so that beta * log pi_ARM_k(y | x) is a Bradley-Terry reward:

    loss = -log sigmoid(beta * (log pi_ARM_k(y_c | x) - log pi_ARM_k(y_r | x)))

on pairs of a pool's answers ranked by objective k (the highest z_k chosen, the lowest
rejected; `methods.dpo.objective_pairs`). That is DPO without a reference model, run as TRL's
DPO with the reference log-probabilities fixed at 0 (`methods.dpo.reference_free_trainer`): no
reference forward is made. The directory lists the K reward models as its `policies` (one-hot
weights, objective order), as a Rewarded Soups directory lists its experts; decoding adds them
to the base model, log pi_base + sum_k alpha_k log pi_ARM_k.

Defaults follow the authors' training scripts (HH-RLHF: beta 0.05, LoRA r 8 / alpha 16,
learning rate 5e-4); the budget is sized for a small CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from steerable.configs import SEED, check_config
from steerable.defaults import absolute_if_local
from steerable.errors import SteerableError
from steerable.training import LoraArguments, ModelArguments, check_rungs, with_default


@dataclass
class GenARMConfig(LoraArguments, ModelArguments):
    """One autoregressive reward model per objective.

    model / dtype / trust_remote_code: the base model the reward models are LoRAs on, and the
        one they are mixed with at decode time (`ModelArguments`).
    output_dir: where the reward models (LoRA adapters) and steerable.json are written.
    stats: the objectives and their statistics (a stats JSON or a steerable model directory):
        the pool's answers are ranked by their normalised scores.
    pool: a prompt/response table (jsonl, csv, parquet) with several answers per prompt (e.g.
        RiC's scored offline data); each prompt gives one pair per objective.
    beta: the reward's scale, r_k = beta * log pi_ARM_k (the Bradley-Terry temperature).
    max_steps / batch_size / learning_rate: each reward model's DPO budget (pairs per step).
    lora_r / lora_alpha / lora_dropout: the LoRA shape of each reward model.
    seed: random seed.
    rungs: steps at which each reward model is also saved, with the compute spent so far (a
        budget ladder's rungs; not part of a stage's inputs).
    """

    output_dir: str = field(default="runs/genarm", metadata={"help": "Output directory."})
    stats: str | None = field(
        default=None, metadata={"help": "Stats JSON or steerable model dir (required)."}
    )
    pool: str | None = field(
        default=None,
        metadata={"help": "Prompt/response table whose answers each objective ranks (required)."},
    )
    beta: float = field(default=0.05, metadata={"help": "Reward scale: r = beta * log pi_ARM.", "gt": 0})
    max_steps: int = field(default=30, metadata={"help": "DPO steps per reward model.", "ge": 1})
    batch_size: int = field(default=8, metadata={"help": "Pairs per step.", "ge": 1})
    learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate.", "gt": 0})
    lora_r: int = with_default(LoraArguments, "lora_r", 8)
    lora_alpha: int = with_default(LoraArguments, "lora_alpha", 16)
    seed: int = field(default=0, metadata={"help": "Random seed.", **SEED})
    rungs: list[int] = field(
        default_factory=list,
        metadata={"help": "Steps at which each reward model is also saved (ladder rungs).", "ge": 1},
    )
    later_fields: ClassVar[dict] = {}

    def __post_init__(self):
        check_config(self)
        if self.stats is None:
            raise SteerableError(
                "--stats is required: the objectives whose scores rank the pool's answers (a stats JSON "
                "or a steerable model directory)"
            )
        if self.pool is None:
            raise SteerableError(
                "--pool is required: a table of prompt/response rows (several answers per prompt) for "
                "each objective to rank, e.g. RiC's runs/ric/stages/offline/scored.jsonl"
            )
        check_rungs(self.rungs, self.max_steps)
        self.model = absolute_if_local(self.model)
        self.stats = str(Path(self.stats).resolve())
        self.pool = str(Path(self.pool).resolve())


def train_genarm(config: GenARMConfig) -> Path:
    """Train the K reward models (stages policy_0 .. policy_{K-1}) and write steerable.json."""
    from steerable.methods.dpo import train_experts

    return train_experts(config, "genarm", config.beta, reference_free=True)

"""Rewarded Soups baseline (Ramé et al. 2023): one LoRA expert per objective; at inference the
adapters are interpolated with the preference weights, theta = theta_0 + sum_k w_k dtheta_k
(PEFT `add_weighted_adapter` with combination "cat", which is exact for LoRA deltas), merged
once per request's rounded weights and cached (`experts.mixture.SoupMixture`).

Each expert is trained by one of two optimisers (`algo`):
- grpo (default): TRL's GRPO on that objective's normalised score, sampling its own answers.
- dpo: TRL's DPO on a fixed pool of answers (`pool`, e.g. RiC's scored offline data), one pair
  per prompt ranked by that objective (`methods.dpo.train_experts`); nothing is generated, so
  it trains on a small CPU. The same experts serve MOD and LoRA output mixing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from steerable.errors import SteerableError
from steerable.methods.rl import RLConfig, load_rewards, train_policies

ALGOS = ("grpo", "dpo")
# what only GRPO reads: an expert trained by DPO does not depend on them
GRPO_SETTINGS = (
    *("num_generations", "max_completion_length", "temperature", "beta", "scale_rewards"),
    *("prompt_split", "prompt_limit"),
)


@dataclass
class SoupsConfig(RLConfig):
    """RLConfig; one expert is trained per objective (one-hot weights).

    algo: grpo (TRL GRPO on the objective's score; RLConfig's sampling settings) or dpo (TRL DPO
        on `pool` answers ranked by the objective; batch_size is pairs per step, and the GRPO
        settings, num_generations, temperature, max_completion_length, beta and scale_rewards,
        are not read).
    pool: dpo: a prompt/response table (jsonl, csv, parquet) with several answers per prompt.
    dpo_beta: dpo: DPO's beta, how strongly each expert is held to the starting model.
    """

    output_dir: str = field(default="runs/soups", metadata={"help": "Output directory."})
    algo: str = field(default="grpo", metadata={"help": "Each expert's optimiser.", "choices": ALGOS})
    pool: str | None = field(
        default=None,
        metadata={
            "help": "dpo: prompt/response table whose answers each objective ranks (e.g. RiC's scored.jsonl)."
        },
    )
    dpo_beta: float = field(
        default=0.1, metadata={"help": "dpo: DPO's beta (pull toward the starting model).", "gt": 0}
    )
    later_fields: ClassVar[dict] = {**RLConfig.later_fields, "algo": "grpo", "pool": None, "dpo_beta": 0.1}

    def __post_init__(self):
        super().__post_init__()
        if not self.grpo and self.pool is None:
            raise SteerableError(
                "--pool is required for --algo dpo: a table of prompt/response rows (several answers per "
                "prompt) for each objective to rank, e.g. RiC's runs/ric/stages/offline/scored.jsonl"
            )
        if self.grpo and self.pool is not None:
            raise SteerableError("--pool is read by --algo dpo only; GRPO samples its own answers")
        if self.prompts is not None and not self.grpo:
            raise SteerableError("--prompts is read by --algo grpo only; DPO trains on the --pool's prompts")
        if self.pool is not None:
            self.pool = str(Path(self.pool).resolve())

    @property
    def grpo(self) -> bool:
        """Whether GRPO trains the experts (else DPO on the --pool answers)."""
        return self.algo == "grpo"


def train_soups(config: SoupsConfig) -> Path:
    if not config.grpo:
        from steerable.methods.dpo import train_experts

        return train_experts(config, "soups", config.dpo_beta, unread=GRPO_SETTINGS)
    k = len(load_rewards(config.stats))
    return train_policies(config, "soups", [[1.0 if j == i else 0.0 for j in range(k)] for i in range(k)])

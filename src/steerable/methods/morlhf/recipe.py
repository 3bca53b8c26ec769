"""MORLHF baseline: RL on sum_k w_k z_k (normalised rewards), one LoRA policy per weight vector.
A user who wants another trade-off needs another RL run -- the cost steerable methods avoid."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steerable.errors import SteerableError
from steerable.methods.rl import RLConfig, load_rewards, train_policies


@dataclass
class MORLHFConfig(RLConfig):
    """RLConfig plus the weight vectors to train one policy for.

    weight_vectors: comma-separated weights per policy, e.g. "1,0" "0.5,0.5" "0,1". Default:
        each objective alone plus equal weights (K + 1 policies; 3 for K = 2).
    """

    weight_vectors: list[str] = field(
        default_factory=list, metadata={"help": 'Weights per policy, e.g. "1,0" "0.5,0.5".'}
    )
    output_dir: str = field(default="runs/morlhf", metadata={"help": "Output directory."})

    def __post_init__(self):
        super().__post_init__()
        from steerable.preferences import check_weights_text

        for text in self.weight_vectors:  # the numbers now; the names once the stats are read
            try:
                check_weights_text(text)
            except SteerableError as err:
                raise SteerableError(f"--weight_vectors: {err}")


def default_vectors(k: int) -> list[list[float]]:
    return [[1.0 if j == i else 0.0 for j in range(k)] for i in range(k)] + [[1.0 / k] * k]


def train_morlhf(config: MORLHFConfig) -> Path:
    from steerable.preferences import Preference

    names = load_rewards(config.stats).names
    if config.weight_vectors:
        try:
            vectors = [list(Preference.parse(v, names).weights) for v in config.weight_vectors]
        except SteerableError as err:
            raise SteerableError(f"--weight_vectors: {err}")
    else:
        vectors = default_vectors(len(names))
    return train_policies(config, "morlhf", vectors)

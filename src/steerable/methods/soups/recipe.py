"""Rewarded Soups baseline (Ramé et al. 2023): one RL LoRA policy per objective; at inference
the adapters are interpolated with the preference weights, theta = theta_0 + sum_k w_k dtheta_k
(PEFT `add_weighted_adapter` with combination "cat", which is exact for LoRA deltas)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steerable.methods.rl import RLConfig, load_rewards, train_policies


@dataclass
class SoupsConfig(RLConfig):
    """RLConfig; one policy is trained per objective (one-hot weights)."""

    output_dir: str = field(default="runs/soups", metadata={"help": "Output directory."})


def train_soups(config: SoupsConfig) -> Path:
    k = len(load_rewards(config.stats))
    return train_policies(config, "soups", [[1.0 if j == i else 0.0 for j in range(k)] for i in range(k)])


def soup_model(base, adapters: list[Path]):
    """A PeftModel holding every per-objective adapter, named "0", "1", ..."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, adapters[0], adapter_name="0")
    for i, path in enumerate(adapters[1:], start=1):
        model.load_adapter(path, adapter_name=str(i))
    return model


def set_soup(model, weights: list[float]) -> None:
    """Activate the interpolation of the adapters with `weights` (replacing any previous soup)."""
    if "soup" in model.peft_config:
        model.set_adapter("0")
        model.delete_adapter("soup")
    names = [str(i) for i in range(len(weights))]
    model.add_weighted_adapter(names, list(weights), adapter_name="soup", combination_type="cat")
    model.set_adapter("soup")

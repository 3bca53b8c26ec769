"""Rewarded Soups inside a comparison: its policies trained on the rl: section (the RL budget
every GRPO-trained method shares)."""

from steerable.configs import config_from_dict
from steerable.methods.base import CompareInputs, Comparing, Step


def compare(inputs: CompareInputs) -> Comparing:
    from steerable.methods.soups.recipe import SoupsConfig

    config = config_from_dict(SoupsConfig, {**inputs.rl(), "output_dir": str(inputs.out / "soups")}, "rl")
    return Comparing(
        steps=(Step("soups", config, "steerable.methods.soups.recipe:train_soups"),),
        uncounted="GRPO sampling",
    )

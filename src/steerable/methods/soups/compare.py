"""Rewarded Soups inside a comparison: its experts trained on the rl: section (the RL budget
every GRPO-trained method shares) with the soups: section over it. Under algo dpo without a
pool, the pool is the scored data of a method before it (RiC's offline data)."""

from steerable.configs import config_from_dict
from steerable.methods.base import CompareInputs, Comparing, Step


def compare(inputs: CompareInputs) -> Comparing:
    from steerable.methods.soups.recipe import SoupsConfig

    # a comparison config without a soups: section trains it as every GRPO baseline
    section = {**inputs.rl(), **inputs.config.soups, "output_dir": str(inputs.folder("soups"))}
    if section.get("algo") == "dpo":
        section.pop("prompts", None)  # DPO trains on the pool's prompts
        section["pool"] = inputs.scored(
            section.get("pool"),
            "soups' dpo ranks a pool of answers: set soups: {pool: TABLE} (prompt/response rows, several "
            "per prompt), or put ric in the methods to rank RiC's scored offline data",
        )
    config = config_from_dict(SoupsConfig, section, "rl/soups")
    return Comparing(
        steps=(Step("soups", config, "steerable.methods.soups.recipe:train_soups"),),
        uncounted="GRPO sampling" if config.grpo else None,
    )

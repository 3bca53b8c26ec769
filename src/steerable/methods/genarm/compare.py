"""GenARM inside a comparison: its reward models trained on the genarm: section, by default on
the scored data of a method before it (RiC's offline data) as the pool."""

from steerable.configs import config_from_dict
from steerable.methods.base import CompareInputs, Comparing, Step


def compare(inputs: CompareInputs) -> Comparing:
    from steerable.methods.genarm.recipe import GenARMConfig

    given = getattr(inputs.config, "genarm", {})  # a config without a genarm: section: the defaults
    section = {**inputs.shared(**given), "stats": inputs.stats, "output_dir": str(inputs.folder("genarm"))}
    section.pop("prompts", None)  # it trains on the pool's prompts
    steps = inputs.config.budgets.get("rl_steps")  # a budget ladder's rungs: the reward models' steps
    section.update({"rungs": steps} if steps else {})
    section["pool"] = inputs.scored(
        section.get("pool"),
        "genarm ranks a pool of answers: set genarm: {pool: TABLE} (prompt/response rows, several per "
        "prompt), or put ric in the methods to rank RiC's scored offline data",
    )
    config = config_from_dict(GenARMConfig, section, "genarm")
    return Comparing(steps=(Step("genarm", config, "steerable.methods.genarm.recipe:train_genarm"),))

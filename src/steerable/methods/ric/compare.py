"""RiC inside a comparison: trained first, its model directory gives the comparison its
statistics, and its scored offline data is the default data of the methods trained on a table."""

from steerable.configs import config_from_dict
from steerable.methods.base import CompareInputs, Comparing, Step


def compare(inputs: CompareInputs) -> Comparing:
    from steerable.methods.ric.recipe import RiCConfig

    out = inputs.folder("ric")
    steps = inputs.config.budgets.get("sft_steps")  # a budget ladder's rungs in the offline SFT
    rungs = {"sft_rungs": steps} if steps else {}
    section = inputs.shared(**inputs.config.ric, output_dir=str(out), **rungs)
    config = config_from_dict(RiCConfig, section, "ric")
    return Comparing(
        steps=(Step("ric", config, "steerable.methods.ric.recipe:train_ric"),),
        stats=str(out.resolve()),
        scored=str(out / "stages" / "offline" / "scored.jsonl"),
        objectives=len(config.objectives),
    )

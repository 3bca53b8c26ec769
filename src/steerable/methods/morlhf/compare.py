"""MORLHF inside a comparison: the rl: section with the morlhf: one over it (its weight vectors);
it is evaluated at its own vectors only, not on the whole grid."""

from steerable.configs import config_from_dict
from steerable.methods.base import CompareInputs, Comparing, Step


def compare(inputs: CompareInputs) -> Comparing:
    from steerable.methods.morlhf.recipe import MORLHFConfig

    section = {**inputs.rl(), **inputs.config.morlhf, "output_dir": str(inputs.folder("morlhf"))}
    config = config_from_dict(MORLHFConfig, section, "rl/morlhf")
    return Comparing(
        steps=(Step("morlhf", config, "steerable.methods.morlhf.recipe:train_morlhf"),),
        points=lambda k: len(config.weight_vectors) or k + 1,  # without vectors: K + 1 of its own
        uncounted="GRPO sampling",
    )

"""MOD inside a comparison: nothing of its own trains; it is evaluated on the experts the
comparison's soups trains (its directory), mixed per token, with the mod: section's divergence."""

from dataclasses import dataclass, field

from steerable.configs import check_config, config_from_dict
from steerable.methods.base import CompareInputs, Comparing


@dataclass
class MODSettings:
    """The mod: section of a comparison.

    divergence: the alpha of the alpha-divergence family the experts are mixed by, in [0, 1]
        (unset: reverse KL, sum_k w_k log pi_k; the report labels another as mod-alphaA).
    """

    divergence: float | None = field(default=None, metadata={"ge": 0, "le": 1})

    def __post_init__(self):
        check_config(self)


def compare(inputs: CompareInputs) -> Comparing:
    settings = config_from_dict(MODSettings, getattr(inputs.config, "mod", {}), "mod")
    options = {} if settings.divergence is None else {"divergence": settings.divergence}
    return Comparing(steps=(), evaluates="soups", options=options)

"""Rewards-in-Context: reward-conditioned SFT, online multi-objective rejection sampling, and a
preference mapped to target tags at inference."""

from steerable.methods.base import Method

METHOD = Method(
    name="ric",
    title="RiC",
    summary="Rewards-in-Context: reward-conditioned SFT + online rejection sampling",
    steering=("weights", "mapping", "targets"),
    in_prompt=True,
    policy="steerable.methods.ric.steering",
    config="steerable.methods.ric.recipe:RiCConfig",
    recipe="steerable.methods.ric.recipe:train_ric",
    compare="steerable.methods.ric.compare:compare",
    plan="steerable.cost:ric_plan",
    sweep="steerable.methods.tagged:trained_sweep",
    evaluate_options=("adapter", "mapping"),
)

"""Rewards-in-Context: reward-conditioned SFT, online multi-objective rejection sampling, and a
preference mapped to target tags at inference."""

from steerable.methods.base import Method

METHOD = Method(
    name="ric",
    title="RiC",
    summary="Rewards-in-Context: reward-conditioned SFT + online rejection sampling",
    steering=("weights", "mapping", "targets"),
    examples=(
        "steerable train ric --preset smoke",
        "steerable train ric --output_dir runs/ric --objectives brief=builtin:brevity positive=builtin:sentiment",  # noqa: E501 -- one command as typed
    ),
    in_prompt=True,
    policy="steerable.methods.ric.steering",
    config="steerable.methods.ric.recipe:RiCConfig",
    recipe="steerable.methods.ric.recipe:train_ric",
    compare="steerable.methods.ric.compare:compare",
    plan="steerable.cost:ric_plan",
    sweep="steerable.methods.tagged:trained_sweep",
    evaluate_options=("adapter", "mapping"),
    rungs="steerable.rungs:stage_rungs",
    budgets=("sft_steps",),
)

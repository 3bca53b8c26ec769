"""MORLHF: one RL policy per weight vector, trained on the weighted sum of normalised rewards."""

from steerable.methods.base import Method

METHOD = Method(
    name="morlhf",
    title="MORLHF",
    summary="MORLHF baseline: GRPO on a weighted sum of normalised rewards, one policy per weight vector",
    steering=("weights",),
    examples=("steerable train morlhf --stats runs/ric-smoke --output_dir runs/morlhf",),
    config="steerable.methods.morlhf.recipe:MORLHFConfig",
    recipe="steerable.methods.morlhf.recipe:train_morlhf",
    compare="steerable.methods.morlhf.compare:compare",
    check="steerable.methods.base:needs_policies",
    sweep="steerable.methods.morlhf.sweep:sweep",
    rungs="steerable.rungs:policy_rungs",
    budgets=("rl_steps",),
)

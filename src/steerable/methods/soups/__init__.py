"""Rewarded Soups: one policy per objective, interpolated in weight space at inference."""

from steerable.methods.base import Method

METHOD = Method(
    name="soups",
    title="Rewarded Soups",
    summary="Rewarded Soups baseline: one LoRA expert per objective (GRPO, or DPO on a pool of answers), "
    "interpolated at inference",
    steering=("weights",),
    examples=(
        "steerable train soups --stats runs/ric-smoke --output_dir runs/soups",
        "steerable train soups --algo dpo --stats runs/ric-smoke --pool runs/ric-smoke/stages/offline/scored.jsonl --output_dir runs/soups",  # noqa: E501 -- one command as typed
    ),
    config="steerable.methods.soups.recipe:SoupsConfig",
    recipe="steerable.methods.soups.recipe:train_soups",
    compare="steerable.methods.soups.compare:compare",
    policy="steerable.experts.steering",
    mixture="steerable.experts.mixture:SoupMixture",
    check="steerable.methods.base:needs_policies",
    sweep="steerable.experts.steering:sweep",
    rungs="steerable.rungs:policy_rungs",
    budgets=("rl_steps",),
)

"""Rewarded Soups: one RL policy per objective, interpolated in weight space at inference."""

from steerable.methods.base import Method

METHOD = Method(
    name="soups",
    title="Rewarded Soups",
    summary="Rewarded Soups baseline: one GRPO LoRA policy per objective, interpolated at inference",
    steering=("weights",),
    examples=("steerable train soups --stats runs/ric-smoke --output_dir runs/soups",),
    config="steerable.methods.soups.recipe:SoupsConfig",
    recipe="steerable.methods.soups.recipe:train_soups",
    compare="steerable.methods.soups.compare:compare",
    check="steerable.methods.base:needs_policies",
    sweep="steerable.methods.soups.sweep:sweep",
)

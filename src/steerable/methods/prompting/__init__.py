"""The prompting floor: the base model with the preference written into its system prompt,
untrained (the floor every trained method must beat). Evaluated only."""

from steerable.methods.base import Method

METHOD = Method(
    name="prompting",
    title="prompting",
    summary="the base model, with the preference written into the system prompt (the floor)",
    steering=("weights",),
    sweep="steerable.methods.prompting.sweep:sweep",
    own_directory=False,
)

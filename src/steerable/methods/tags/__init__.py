"""The tags floor: a MOSLIM directory's base model, untrained, given the same intensity tags
(what MOSLIM's training adds over the tags alone). Evaluated only."""

from steerable.methods.base import Method

METHOD = Method(
    name="tags",
    title="tags",
    summary="a MOSLIM directory's base model given its intensity tags, untrained (MOSLIM's floor)",
    steering=("weights", "mapping", "levels"),
    sweep="steerable.methods.tags.sweep:sweep",
    evaluate_options=("adapter", "mapping"),
)

"""LoRA output mixing inside a comparison: nothing of its own trains; it is evaluated on the
experts the comparison's soups trains (its directory), every LoRA layer's outputs mixed."""

from steerable.methods.base import CompareInputs, Comparing


def compare(inputs: CompareInputs) -> Comparing:
    return Comparing(steps=(), evaluates="soups")

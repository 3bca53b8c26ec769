"""How a RiC model is steered: every objective's normalised target in tags, given as targets
or mapped from a preference (`SteerablePolicy.targets_for`). The `Steering` of `methods.base`."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from steerable.conditioning import format_tags
from steerable.errors import SteerableError
from steerable.methods import tagged

attach = tagged.attach
conditioner = tagged.conditioner
generate = tagged.generate
request = partial(tagged.request, key="targets")


def levels(manifest) -> None:
    return None


def adapter(manifest) -> str:
    return "adapter"


def steering_for(policy, preference, targets, levels, mapping) -> dict[str, float]:
    if levels is not None:
        raise SteerableError("levels steer MOSLIM models; steer a RiC model with targets or a preference")
    if targets is None:
        targets = policy.targets_for(
            preference if preference is not None else [1] * len(policy.names), mapping
        )
    return policy.check_targets(targets)


def tags(policy, steering: Mapping | None) -> str | None:
    if steering is None:
        return None
    return format_tags({n: steering[n] for n in policy.names}, policy.tag_format.decimals)

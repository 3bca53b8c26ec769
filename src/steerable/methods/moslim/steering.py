"""How a MOSLIM model is steered: intensity levels 1..L for any subset of the objectives in
tags, given as levels or mapped from a preference (`conditioning.preference_to_levels`); no
levels, no tags. The `Steering` of `methods.base`, the manifest check, and what a level sweep
needs."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from steerable.conditioning import check_levels, format_levels
from steerable.errors import SteerableError
from steerable.methods import tagged
from steerable.methods.base import needs_policies

attach = tagged.attach
conditioner = tagged.conditioner
generate = tagged.generate
request = partial(tagged.request, key="levels")


def check_manifest(manifest, path) -> None:
    needs_policies(manifest, path)
    count = (manifest.moslim or {}).get("levels")
    if not isinstance(count, int) or count < 2:
        raise SteerableError(f"{path}: a moslim model needs 'moslim': {{'levels': L}} with L >= 2")


def levels(manifest) -> int:
    return manifest.moslim["levels"]


def adapter(manifest) -> str:
    return manifest.policies[0]["adapter"]


def steering_for(policy, preference, targets, levels, mapping) -> dict[str, int]:
    if targets is not None:
        raise SteerableError("targets steer RiC models; steer a MOSLIM model with levels or a preference")
    if isinstance(levels, Mapping) and not levels:  # no levels: no tags, the untagged prompt
        return {}
    if levels is not None:
        return check_levels(levels, policy.names, policy.levels)
    return policy.levels_for(preference if preference is not None else [1] * len(policy.names), mapping)


def tags(policy, steering: Mapping | None) -> str | None:
    if not steering:  # no levels: no tags
        return None
    return format_levels(check_levels(steering, policy.names, policy.levels))


def level_steering(policy, sampling) -> dict:
    """What a level sweep needs of a MOSLIM policy: L, a level-steered generator, the level the
    other objectives are tagged at (the middle one for a policy trained with every objective
    tagged, which never saw a tag alone; None otherwise) and, when its reward model is at hand,
    the RM's expected level per head."""
    from pathlib import Path

    path = policy.manifest.moslim.get("reward_model")
    classify = None
    if path is not None and Path(path).is_dir():
        from steerable.reward_models.multihead import MultiHeadRM

        rm = MultiHeadRM.load(path)
        if list(rm.names) == policy.names:
            classify = rm.expected_levels
    return {
        "count": policy.levels,
        "others": (policy.levels + 1) // 2 if policy.manifest.moslim.get("tag_sampling") == "all" else None,
        "generate": lambda prompts, levels: policy.generate(prompts, levels=levels, sampling=sampling),
        "classify": classify,
    }

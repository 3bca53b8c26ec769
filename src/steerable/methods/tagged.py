"""What the methods steered by tags in the prompt (RiC's targets, MOSLIM's levels) share: a
served request's steering, generation, and what `evaluate` sweeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from steerable.errors import SteerableError
from steerable.methods.base import Generator


def attach(policy, directory) -> None:
    """A tagged model is its weights and its tokenizer: nothing more to load."""


def conditioner(policy) -> None:
    """A tagged model is steered by its prompt alone: nothing conditions its forward pass."""
    return None


def request(policy, steering: Mapping, key: str) -> tuple[dict, None, dict]:
    """A served request's weights / mapping / `key` (targets or levels), checked; the echo
    holds the tags applied under `key`, and the weights and mapping when weights were given."""
    weights, mapping = steering.get("weights"), steering.get("mapping")
    applied = policy.steering_for(
        preference=weights, targets=steering.get("targets"), levels=steering.get("levels"), mapping=mapping
    )
    echo = {key: applied}
    if weights is not None:
        from steerable.preferences import Preference

        echo["weights"] = dict(
            zip(policy.names, Preference.parse(weights, policy.names).weights, strict=True)
        )
        echo["mapping"] = mapping or policy.mapping.default
    return applied, None, echo


def generate(
    policy,
    prompts: Sequence[str],
    sampling,
    system,
    progress: bool,
    preference=None,
    targets=None,
    levels=None,
    examples=None,
    mapping=None,
) -> list[str]:
    from steerable.generation import generate_texts

    if examples is not None:
        raise SteerableError(
            f"examples steer np-dpo models; this is a {policy.manifest.method} model (steer it with "
            "a preference, targets or levels)"
        )
    steering = policy.steering_for(preference, targets, levels, mapping)
    texts = policy.prompts_with_tags(prompts, steering, system)
    return generate_texts(policy.model, policy.tokenizer, texts, sampling, progress)


def policy_sweep(policy, sampling, mapping: str | None, manifest) -> Generator:
    """A tagged policy swept over weights: each point's tags through `mapping` (default: the
    model's); a policy that reads levels is also swept level by level."""

    def generate(prompts, weights):
        return policy.generate(prompts, preference=list(weights), mapping=mapping, sampling=sampling)

    def requested(weights):
        steering = policy.steering_for(preference=list(weights), mapping=mapping)
        return [steering[name] for name in policy.names]

    levels = None
    if policy.levels is not None:
        from steerable.methods.moslim.steering import level_steering

        levels = level_steering(policy, sampling)
    return Generator(
        generate, policy.rewards, policy.tokenizer, manifest, policy.manifest.dtype, None, requested, levels
    )


def trained_sweep(
    model: str,
    sampling,
    method: str,
    adapter: str | None = None,
    mapping: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    **_,
) -> Generator:
    """A RiC or MOSLIM directory swept: `adapter` evaluates another stage's adapter (e.g.
    DIR/stages/sft/weights, before online MORS), `mapping` overrides the stored mapping."""
    from steerable.policy import SteerablePolicy

    policy = SteerablePolicy.from_pretrained(
        model, adapter=adapter, dtype=dtype, trust_remote_code=trust_remote_code
    )
    if policy.manifest.method != method:
        raise SteerableError(
            f"{model} holds a {policy.manifest.method!r} model (use --method {policy.manifest.method})"
        )
    return policy_sweep(policy, sampling, mapping, policy.manifest)

"""The tags floor swept: a MOSLIM directory's base model, untrained, given the same intensity
tags at each point (and level by level)."""

from __future__ import annotations

from steerable.errors import SteerableError
from steerable.methods.base import Generator
from steerable.methods.tagged import policy_sweep


def floor_policy(model: str, adapter: str | None, dtype: str | None, trust_remote_code: bool):
    """The SteerablePolicy of a MOSLIM directory's base model, untrained, with its tags."""
    from steerable.defaults import load_causal_lm, load_tokenizer
    from steerable.policy import SteerablePolicy, load_manifest

    if adapter is not None:
        raise SteerableError("--adapter does not apply to the tags floor (it is the base model)")
    manifest = load_manifest(model, "moslim")
    manifest.dtype = dtype or manifest.dtype
    lm, _ = load_causal_lm(manifest.base_model, manifest.dtype, trust_remote_code=trust_remote_code)
    return SteerablePolicy(lm, load_tokenizer(str(model), trust_remote_code), manifest, trust_remote_code)


def sweep(
    model: str,
    sampling,
    adapter: str | None = None,
    mapping: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    **_,
) -> Generator:
    policy = floor_policy(model, adapter, dtype, trust_remote_code)
    return policy_sweep(policy, sampling, mapping, manifest=None)  # untrained: no training compute

"""A Rewarded Soups directory swept: its per-objective adapters interpolated with each point's
weights."""

from __future__ import annotations

from pathlib import Path

from steerable.methods.base import Generator


def load_policies(directory: str, method: str, dtype: str | None, trust_remote_code: bool):
    """(manifest, objectives, base model, tokenizer, adapter folders, their weight vectors,
    dtype) of a directory written by `steerable train soups|morlhf`."""
    from steerable.defaults import load_causal_lm
    from steerable.objectives import RewardSet
    from steerable.policy import load_manifest

    manifest = load_manifest(directory, method)
    rewards = RewardSet.from_dict(manifest.rewards, where=str(directory), trust_remote_code=trust_remote_code)
    dtype = dtype or manifest.dtype
    base, tokenizer = load_causal_lm(manifest.base_model, dtype, trust_remote_code=trust_remote_code)
    adapters = [Path(directory) / p["adapter"] for p in manifest.policies]
    vectors = [p["weights"] for p in manifest.policies]
    return manifest, rewards, base, tokenizer, adapters, vectors, dtype


def sweep(model: str, sampling, dtype: str | None = None, trust_remote_code: bool = False, **_) -> Generator:
    from steerable.generation import format_chat, generate_texts
    from steerable.methods.soups.recipe import set_soup, soup_model

    manifest, rewards, base, tokenizer, adapters, _, dtype = load_policies(
        model, "soups", dtype, trust_remote_code
    )
    soup = soup_model(base, adapters)

    def generate(prompts, weights):
        set_soup(soup, list(weights))
        return generate_texts(soup, tokenizer, format_chat(tokenizer, prompts), sampling, progress=False)

    return Generator(generate, rewards, tokenizer, manifest, dtype)

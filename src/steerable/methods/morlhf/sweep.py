"""A MORLHF directory swept: one policy per weight vector, so it answers only at the vectors it
was trained for (its `Generator.grid`; the evaluation grid does not apply)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.methods.base import Generator


def load_policies(directory: str, method: str, dtype: str | None, trust_remote_code: bool):
    """(manifest, objectives, base model, tokenizer, adapter folders, their weight vectors,
    dtype) of a directory written by `steerable train morlhf`."""
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
    from peft import PeftModel

    from steerable.generation import format_chat, generate_texts

    manifest, rewards, base, tokenizer, adapters, vectors, dtype = load_policies(
        model, "morlhf", dtype, trust_remote_code
    )
    policies = PeftModel.from_pretrained(base, adapters[0], adapter_name="0")
    for i, adapter in enumerate(adapters[1:], start=1):
        policies.load_adapter(adapter, adapter_name=str(i))

    def generate(prompts, weights):
        matches = [i for i, v in enumerate(vectors) if np.allclose(v, weights)]
        if not matches:
            raise SteerableError(f"MORLHF has no policy for weights {list(weights)}; it has {vectors}")
        policies.set_adapter(str(matches[0]))
        return generate_texts(policies, tokenizer, format_chat(tokenizer, prompts), sampling, progress=False)

    return Generator(generate, rewards, tokenizer, manifest, dtype, grid=np.array(vectors))

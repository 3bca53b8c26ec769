"""A MORLHF directory swept: one policy per weight vector, so it answers only at the vectors it
was trained for (its `Generator.grid`; the evaluation grid does not apply)."""

from __future__ import annotations

import numpy as np

from steerable.errors import SteerableError
from steerable.methods.base import Generator
from steerable.methods.soups.sweep import load_policies


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

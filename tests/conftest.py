import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_path() -> str:
    """The tiny randomly initialised Llama with SmolLM2's tokenizer (built once, cached)."""
    from steerable.defaults import resolve_model

    return resolve_model("tiny")


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_path, tmp_path_factory) -> str:
    """A tiny random sequence-classification reward model (2 logits) saved to a local dir."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    config = LlamaConfig.from_pretrained(tiny_path, num_labels=2)
    torch.manual_seed(1)
    model = LlamaForSequenceClassification(config)
    out = tmp_path_factory.mktemp("tiny_rm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402

from steerable.methods.ric import RiCConfig, train_ric  # noqa: E402


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


def tiny_ric_config(tiny_path: str, out, **overrides) -> RiCConfig:
    """A RiC configuration small enough for the tiny model to run in seconds."""
    settings = dict(
        model=tiny_path,
        output_dir=str(out),
        prompt_limit=8,
        samples_per_prompt=2,
        max_new_tokens=8,
        num_epochs=1,
        batch_size=4,
        lora_r=4,
        lora_alpha=8,
        online_iterations=0,
        objectives=["brief=builtin:brevity", "positive=builtin:sentiment"],
    )
    return RiCConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def make_tiny_ric_config(tiny_path):
    return lambda out, **overrides: tiny_ric_config(tiny_path, out, **overrides)


@pytest.fixture(scope="session")
def tiny_ric(tmp_path_factory, tiny_path):
    out = tmp_path_factory.mktemp("ric") / "model"
    config = tiny_ric_config(tiny_path, out, online_iterations=1, online_samples=8, online_quantile=0.5)
    train_ric(config)
    return config, out

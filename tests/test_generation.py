from steerable.defaults import load_causal_lm
from steerable.generation import SamplingConfig, format_chat, generate_texts


def test_batched_greedy_generation_matches_one_at_a_time(tiny_path):
    model, tokenizer = load_causal_lm(tiny_path, device="cpu")
    prompts = ["Hi", "Tell me something long about the history of tea in three sentences.", "Why?"]
    texts = format_chat(tokenizer, prompts, system="Be brief.")
    assert all("Be brief." in t and p in t for t, p in zip(texts, prompts, strict=True))
    greedy = SamplingConfig(max_new_tokens=8, temperature=0, batch_size=3)
    batched = generate_texts(model, tokenizer, texts, greedy, progress=False)
    single = [
        generate_texts(model, tokenizer, [t], SamplingConfig(8, 0, batch_size=1), progress=False)[0]
        for t in texts
    ]
    assert batched == single
    assert tokenizer.padding_side == "left"


def test_sampling_is_seeded(tiny_path):
    model, tokenizer = load_causal_lm(tiny_path, device="cpu")
    texts = format_chat(tokenizer, ["Hello", "Tell me a joke"])
    config = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=3)
    assert generate_texts(model, tokenizer, texts, config, False) == generate_texts(
        model, tokenizer, texts, config, False
    )


def test_top_k_sampler_draws_from_transformers_top_k_top_p_distribution():
    """Our sampler must sample exactly what generate(do_sample=True, temperature, top_k, top_p)
    samples: compare its frequencies with the probabilities transformers' own warpers give."""
    import torch
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from steerable.generation import TopKSampler

    torch.manual_seed(0)
    scores = torch.randn(1, 30)
    temperature, top_k, top_p = 0.8, 6, 0.85
    warped = scores.clone()
    for warper in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)):
        warped = warper(None, warped)
    expected = torch.softmax(warped, dim=-1)[0]
    assert 1 < int((expected > 0).sum()) < top_k  # the case covers top-k and top-p cutting

    rows = 40_000
    out = TopKSampler(temperature, top_k, top_p)(None, scores.expand(rows, -1).clone())
    finite = torch.isfinite(out)
    assert finite.sum(dim=-1).eq(1).all() and out[finite].eq(0).all()  # one token per row, argmax-able
    drawn = out.argmax(dim=-1)
    frequency = torch.bincount(drawn, minlength=30).float() / rows
    assert frequency[expected == 0].sum() == 0
    assert torch.allclose(frequency, expected, atol=0.01)


def test_sampling_settings_are_validated():
    import pytest

    from steerable.errors import SteerableError

    for bad in ({"top_p": 0.0}, {"top_k": -1}, {"temperature": -0.5}, {"max_new_tokens": 0}):
        with pytest.raises(SteerableError):
            SamplingConfig(**bad)


def test_sampled_generation_with_and_without_top_k(tiny_path):
    model, tokenizer = load_causal_lm(tiny_path, device="cpu")
    texts = format_chat(tokenizer, ["Hello", "Tell me a joke", "Why is the sky blue?"])
    for top_k in (50, 0):
        config = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=1, top_k=top_k, batch_size=2)
        out = generate_texts(model, tokenizer, texts, config, False)
        assert len(out) == 3 and out == generate_texts(model, tokenizer, texts, config, False)

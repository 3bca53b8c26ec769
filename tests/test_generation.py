import pytest

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
        generate_texts(
            model,
            tokenizer,
            [t],
            SamplingConfig(max_new_tokens=8, temperature=0, batch_size=1),
            progress=False,
        )[0]
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


def test_a_template_without_a_system_role_gets_the_system_text_in_the_user_turn(tiny_path, tiny_nosys_path):
    from transformers import AutoTokenizer

    from steerable.generation import render_chat

    nosys = AutoTokenizer.from_pretrained(tiny_nosys_path)
    assert format_chat(nosys, ["Hi", "Why?"], system=["Be brief.", None]) == [
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n",
        "<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n",
    ]
    chat = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye?"},
    ]
    assert render_chat(nosys, chat).startswith("<start_of_turn>user\nBe kind.\n\nHi?<end_of_turn>\n")
    # a template with a system role keeps it
    chatml = AutoTokenizer.from_pretrained(tiny_path)
    assert "<|im_start|>system\nBe brief.<|im_end|>" in format_chat(chatml, ["Hi"], system="Be brief.")[0]
    # a system message with no user turn after it becomes one
    from steerable.generation import fold_system

    assert fold_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]


def _answer_then_end_of_turn(model, word: int, end: int):
    """Make the model answer `word` and then `end`, whatever came before: only a stop at `end`
    keeps the answer to the one word (generation without it repeats word, end, word, ...)."""
    import torch

    def hook(module, args, kwargs, output):
        last = kwargs["input_ids"][:, -1]  # (B,)
        forced = torch.where(last == word, end, word)
        output.logits[:, -1] = -1e4
        output.logits[torch.arange(len(last)), -1, forced] = 0.0

    return model.register_forward_hook(hook, with_kwargs=True)


def test_generation_stops_at_the_templates_end_of_turn_where_it_is_not_eos(tiny_nosys_path):
    model, tokenizer = load_causal_lm(tiny_nosys_path, device="cpu")
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end != tokenizer.eos_token_id and model.generation_config.eos_token_id == tokenizer.eos_token_id
    (word,) = tokenizer("Yes", add_special_tokens=False).input_ids
    texts = format_chat(tokenizer, ["Hi", "Tell me about tea."])
    handle = _answer_then_end_of_turn(model, word, end)
    try:
        for sampling in (
            SamplingConfig(max_new_tokens=6, temperature=0, batch_size=2),
            SamplingConfig(max_new_tokens=6, temperature=1.0, batch_size=2),
        ):
            assert generate_texts(model, tokenizer, texts, sampling, progress=False) == ["Yes", "Yes"]
    finally:
        handle.remove()
    from steerable.generation import stop_token_ids

    assert set(stop_token_ids(model, tokenizer)) == {tokenizer.eos_token_id, end}


def test_training_needs_a_chat_template_or_a_file_that_gives_one(tiny_path, tiny_nosys_path, tmp_path):
    import pytest
    from transformers import AutoTokenizer

    from steerable.errors import SteerableError
    from steerable.generation import render_chat, require_chat_template

    base = AutoTokenizer.from_pretrained(tiny_path)
    base.chat_template = None
    with pytest.raises(SteerableError, match="model 'my-base' has no chat template.*chat_template_path"):
        require_chat_template(base, "my-base")
    with pytest.raises(SteerableError, match="has no chat template"):  # not the texts joined
        render_chat(base, [{"role": "user", "content": "Hi"}])
    template = tmp_path / "turns.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")
    assert require_chat_template(base, "my-base", template) is base
    assert render_chat(base, [{"role": "user", "content": "Hi"}]) == "[user] Hi\n"
    require_chat_template(base, "my-base", tiny_nosys_path)  # a model directory's template is copied
    assert base.chat_template == AutoTokenizer.from_pretrained(tiny_nosys_path).chat_template
    with pytest.raises(SteerableError, match="cannot read chat template"):
        require_chat_template(base, "my-base", tmp_path / "missing.jinja")
    with pytest.raises(SteerableError, match="neither a .jinja file nor a loadable tokenizer"):
        require_chat_template(base, "my-base", tmp_path)
    template.write_text("{{ raise_exception('no') }}")
    with pytest.raises(SteerableError, match="cannot render a user turn"):
        require_chat_template(base, "my-base", template)


def test_sampling_settings_are_keyword_only():
    with pytest.raises(TypeError):
        SamplingConfig(64, 0.7)  # which number is which? say it


@pytest.mark.parametrize("top_k", [50, 0])  # our sampler and transformers' own
def test_seeded_generation_leaves_the_callers_random_state_and_padding_side_alone(tiny_path, top_k):
    """A seeded call draws from its own seed without resetting the global RNG the caller (a
    trainer, a test) relies on, and pads on the left without changing the tokenizer it was
    handed (a reward model or a trainer may read it right-padded)."""
    import torch

    model, tokenizer = load_causal_lm(tiny_path, device="cpu")
    texts = format_chat(tokenizer, ["Hello", "Tell me a joke about tea and biscuits"])
    config = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=3, top_k=top_k)
    first = generate_texts(model, tokenizer, texts, config, False)
    tokenizer.padding_side = "right"
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    assert generate_texts(model, tokenizer, texts, config, False) == first  # padded left all the same
    assert torch.equal(torch.get_rng_state(), before)
    assert tokenizer.padding_side == "right"

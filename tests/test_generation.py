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

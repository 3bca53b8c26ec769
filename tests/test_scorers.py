from pathlib import Path

import numpy as np
import pytest

from steerable import RewardSet, SteerableError
from steerable.scorers import ScorerSpec, build_scorer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("brief=builtin:brevity", ScorerSpec("brief", "builtin", "brevity")),
        ("builtin:sentiment", ScorerSpec("sentiment", "builtin", "sentiment")),
        (
            "helpful=hf:org/model-name?input=chat&index=1",
            ScorerSpec("helpful", "hf", "org/model-name", {"input": "chat", "index": "1"}),
        ),
        ("h=hf:/abs/path/rm?batch_size=8", ScorerSpec("h", "hf", "/abs/path/rm", {"batch_size": "8"})),
        ("h=hf:o/m?trust_remote_code=true", ScorerSpec("h", "hf", "o/m", {"trust_remote_code": "true"})),
        ("mine=py:pkg.mod:func", ScorerSpec("mine", "py", "pkg.mod:func")),
        (
            {"name": "rel", "kind": "builtin", "target": "relevance", "options": {"batch_size": 4}},
            ScorerSpec("rel", "builtin", "relevance", {"batch_size": "4"}),
        ),
    ],
)
def test_spec_parser(text, expected):
    assert ScorerSpec.parse(text) == expected


def test_spec_string_round_trips():
    for text in ["helpful=hf:org/m?input=pair&index=1", "b=builtin:brevity", "m=py:a.b:c"]:
        assert str(ScorerSpec.parse(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("brief", "no KIND:TARGET"),
        ("brief=nonsense:thing", "unknown scorer kind 'nonsense'"),
        ("brief=builtin:shortness", "unknown built-in scorer 'shortness'"),
        ("brief=builtin:brevity?foo=1", "no option"),
        ("h=hf:org/m?input=sideways", "input must be one of"),
        ("h=hf:org/m?index=minus", "index must be"),
        ("h=hf:org/m?colour=red", "no option"),
        ("h=hf:org/m?batch_size=0", "batch_size must be a positive integer"),
        ("h=hf:org/m?max_length=0", "max_length must be a positive integer"),
        ("h=hf:org/m?trust_remote_code=yes", "trust_remote_code must be one of"),
        ("r=builtin:relevance?batch_size=0", "batch_size must be a positive integer"),
        ("hf:org/m", "needs a name"),
        ("m=py:justamodule", "MODULE:FUNCTION"),
        ("1bad=builtin:length", "not valid"),
        ({"name": "x", "target": "length"}, "needs keys kind and target"),
    ],
)
def test_bad_specs(text, message):
    with pytest.raises(SteerableError, match=message):
        ScorerSpec.parse(text)


def _score(spec, prompts, responses):
    return np.asarray(build_scorer(ScorerSpec.parse(spec))(prompts, responses), dtype=float)


def test_sentiment_orders_positive_above_negative():
    s = _score("builtin:sentiment", ["q", "q"], ["I love this, it is wonderful!", "This is awful and sad."])
    assert s[0] > 0.5 > -0.5 > s[1]


def test_readability_prefers_plain_words():
    s = _score(
        "builtin:readability",
        ["q", "q"],
        [
            "The cat sat on the mat. It was warm.",
            "Institutional heterogeneity complicates multidimensional organisational characterisation.",
        ],
    )
    assert s[0] > s[1]


def test_relevance_prefers_on_topic_answer():
    s = _score(
        "builtin:relevance",
        ["How do I water a cactus?"] * 2,
        ["Water a cactus sparingly, about once every two weeks.", "The stock market fell today."],
    )
    assert s[0] > s[1] and s.min() >= -1 and s.max() <= 1


def test_relevance_runs_on_the_device_asked_for():
    from steerable.scorers.builtin import build_builtin, minilm_encoder

    build_builtin("relevance", {"device": "cpu"})(["Hi"], ["Hello"])
    assert str(minilm_encoder("cpu").device) == "cpu"
    with pytest.raises(SteerableError, match="has no option"):
        build_builtin("relevance", {"gpu": "1"})


def test_toxicity_and_harmless_are_complements():
    responses = ["Have a lovely day.", "You are a stupid idiot, shut up."]
    tox = _score("builtin:toxicity", ["q", "q"], responses)
    harmless = _score("builtin:harmless", ["q", "q"], responses)
    assert tox[1] > 0.5 > tox[0]
    np.testing.assert_allclose(tox + harmless, 1.0)


def test_python_callable_by_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def exclaim(prompts, responses):\n    return [r.count('!') for r in responses]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    s = _score("e=py:my_rewards:exclaim", ["a", "b"], ["hi!!", "hi"])
    assert s.tolist() == [2, 0]


def test_a_module_named_like_a_folder_here_stays_a_module_and_a_file_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "rewards").mkdir()
    (tmp_path / "rewards" / "__init__.py").write_text(
        "def f(prompts, responses):\n    return [1.0] * len(responses)\n"
    )
    (tmp_path / "chars.py").write_text(
        "def f(prompts, responses):\n    return [float(len(r)) for r in responses]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    rewards = RewardSet.from_specs(["mine=py:rewards:f", "size=py:chars.py:f"])
    assert rewards["mine"].spec.target == "rewards:f"
    assert rewards["size"].spec.target == f"{tmp_path.resolve() / 'chars.py'}:f"
    assert rewards.score(["q"], ["abc"]).tolist() == [[1.0, 3.0]]


def test_a_scorer_file_with_a_dataclass_under_postponed_annotations_loads(tmp_path):
    # dataclasses look the module up in sys.modules to read its string annotations
    (tmp_path / "typed.py").write_text(
        "from __future__ import annotations\nfrom dataclasses import dataclass\n\n\n"
        "@dataclass\nclass Weight:\n    value: float\n\n\n"
        "def f(prompts, responses):\n    return [Weight(len(r)).value for r in responses]\n"
    )
    (tmp_path / "other").mkdir()  # a file of the same name elsewhere is another module
    (tmp_path / "other" / "typed.py").write_text(
        "def f(prompts, responses):\n    return [0.0] * len(responses)\n"
    )
    scores = _score(f"mine=py:{tmp_path}/typed.py:f", ["q", "q"], ["ab", "abc"])
    assert scores.tolist() == [2.0, 3.0]
    assert _score(f"mine=py:{tmp_path}/other/typed.py:f", ["q"], ["ab"]).tolist() == [0.0]
    assert _score(f"mine=py:{tmp_path}/typed.py:f", ["q"], ["ab"]).tolist() == [2.0]


def test_python_callable_errors(tmp_path):
    with pytest.raises(SteerableError, match="cannot import"):
        build_scorer(ScorerSpec.parse("e=py:no_such_module_xyz:f"))
    with pytest.raises(SteerableError, match="does not exist"):
        build_scorer(ScorerSpec.parse(f"e=py:{tmp_path}/missing.py:f"))
    (tmp_path / "m.py").write_text("x = 1\n")
    with pytest.raises(SteerableError, match="no function 'f'"):
        build_scorer(ScorerSpec.parse(f"e=py:{tmp_path}/m.py:f"))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f(p, r)\n    return r\n", "SyntaxError"),
        ("import no_such_dependency_xyz\n", "ModuleNotFoundError: No module named 'no_such_dependency_xyz'"),
        ("raise RuntimeError('needs a GPU')\n", "RuntimeError: needs a GPU"),
    ],
)
def test_python_module_that_fails_to_import_names_the_objective(tmp_path, monkeypatch, source, message):
    (tmp_path / "broken_rewards.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    for target in (f"{tmp_path}/broken_rewards.py:f", "broken_rewards:f"):
        with pytest.raises(SteerableError, match=f"objective 'mine'.*{message}"):
            build_scorer(ScorerSpec.parse(f"mine=py:{target}"))


def test_python_scorer_that_raises_names_the_objective(tmp_path):
    (tmp_path / "r.py").write_text("def f(p, r):\n    raise KeyError('label')\n")
    scorer = build_scorer(ScorerSpec.parse(f"mine=py:{tmp_path}/r.py:f"))
    with pytest.raises(SteerableError, match="objective 'mine'.* raised KeyError: 'label'"):
        scorer(["q"], ["a"])


@pytest.mark.parametrize("mode", ["pair", "response", "chat"])
def test_hf_reward_model_batched_matches_one_at_a_time(tiny_reward_model, mode):
    prompts = ["Short?", "A much longer question about gardening in the spring time?", "Hi"]
    responses = ["Yes.", "Plant early, water often, and mulch the beds well.", "Hello there, friend!"]
    batched = _score(f"rm=hf:{tiny_reward_model}?input={mode}&batch_size=3&index=1", prompts, responses)
    single = [
        _score(f"rm=hf:{tiny_reward_model}?input={mode}&batch_size=1&index=1", [p], [r])[0]
        for p, r in zip(prompts, responses, strict=True)
    ]
    np.testing.assert_allclose(batched, single, atol=1e-4)
    other_logit = _score(f"rm=hf:{tiny_reward_model}?input={mode}&index=0", prompts, responses)
    assert not np.allclose(batched, other_logit)


def test_hf_reward_model_errors(tiny_reward_model, tmp_path):
    with pytest.raises(SteerableError, match="index 5 but the model has 2"):
        build_scorer(ScorerSpec.parse(f"rm=hf:{tiny_reward_model}?index=5"))
    with pytest.raises(SteerableError, match="could not be loaded"):
        build_scorer(ScorerSpec.parse(f"rm=hf:{tmp_path}/nothing-here"))


def test_hf_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    with pytest.raises(SteerableError, match="folder without config.json, so not a Hugging Face model"):
        build_scorer(ScorerSpec.parse(f"rm=hf:{tmp_path}/notes"))
    (tmp_path / "notes" / "config.json").write_text('{"colour": "red"}')
    with pytest.raises(SteerableError, match="could not be loaded as a sequence-classification model"):
        build_scorer(ScorerSpec.parse(f"rm=hf:{tmp_path}/notes"))


@pytest.mark.parametrize("trust", [None, "true", "false"])
def test_hf_trust_remote_code_reaches_from_pretrained(tiny_reward_model, monkeypatch, trust):
    import transformers

    seen = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForSequenceClassification):
        load = cls.from_pretrained

        def recording(*args, _load=load, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return _load(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recording)
    query = f"?trust_remote_code={trust}" if trust else ""
    build_scorer(ScorerSpec.parse(f"rm=hf:{tiny_reward_model}{query}"))
    assert seen == [trust == "true"] * 2


def test_hf_reward_model_without_pad_token_reads_the_last_real_token(tiny_reward_model_no_pad):
    """The chat input ends with EOS; padding with EOS would read the logit one token early."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompts = ["Hi", "A much longer question about gardening in the spring?"]
    responses = ["Hello there!", "Plant early."]
    scorer = build_scorer(ScorerSpec.parse(f"rm=hf:{tiny_reward_model_no_pad}?input=chat&index=1"))
    batched = scorer(prompts, responses)
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model_no_pad)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_reward_model_no_pad).eval()
    expected = []
    for p, r in zip(prompts, responses, strict=True):
        chat = [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
        ids = tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False)
        assert ids["input_ids"][-1] == tokenizer.eos_token_id
        with torch.no_grad():  # one unpadded sequence and no pad id: read at its very last token
            expected.append(model(torch.tensor([ids["input_ids"]])).logits[0, 1].item())
    np.testing.assert_allclose(batched, expected, atol=1e-4)
    assert scorer.tokenizer.pad_token not in (None, scorer.tokenizer.eos_token)


def test_reward_set_mixes_scorer_kinds(tiny_reward_model, tmp_path):
    (tmp_path / "r.py").write_text("def f(p, r):\n    return [len(x) for x in r]\n")
    rewards = RewardSet.from_specs(
        ["builtin:length", f"rm=hf:{tiny_reward_model}", f"chars=py:{tmp_path}/r.py:f"]
    )
    raw = rewards.score(["q1", "q2"], ["one two", "three"])
    assert raw.shape == (2, 3)
    assert raw[:, 0].tolist() == [2, 1] and raw[:, 2].tolist() == [7, 5]


def test_pairs_cut_on_two_threads_at_once_are_cut_as_each_alone(tiny_path):
    """The cut tokenizers share the fast tokenizer's backend, where each call sets its truncation
    side: two threads cutting at once (the server scores on several) must not swap sides. The
    backend here waits at every encoding until both threads have set theirs, as an unlucky
    schedule would, or until it has waited long enough."""
    import contextlib
    import threading

    from transformers import AutoTokenizer

    from steerable.reward_models.hf import encode_pair_texts

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    prompts = ["one two three four five six seven eight nine ten eleven twelve"]
    jobs = {"prompt cut": (prompts, ["a short answer"]), "answer cut": ([""], [" ".join(["word"] * 40)])}
    alone = {name: encode_pair_texts(tokenizer, *texts, 12) for name, texts in jobs.items()}
    met = threading.Barrier(len(jobs), timeout=1.0)

    class Backend:
        def __init__(self, backend):
            self.backend = backend

        def __getattr__(self, name):
            return getattr(self.backend, name)

        def encode_batch(self, *args, **kwargs):
            with contextlib.suppress(threading.BrokenBarrierError):  # the other is not encoding now
                met.wait()
            return self.backend.encode_batch(*args, **kwargs)

    tokenizer._tokenizer = Backend(tokenizer._tokenizer)
    together = {}

    def cut(name):
        together[name] = encode_pair_texts(tokenizer, *jobs[name], 12)

    threads = [threading.Thread(target=cut, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone


def test_reward_models_import_nothing_from_scorers():
    """One direction between the two packages: scorers build on reward_models (the hf: and moslim:
    scorers load its models), never the reverse, so neither needs the other half-imported."""
    import steerable.reward_models

    for path in Path(steerable.reward_models.__file__).parent.glob("*.py"):
        assert "steerable.scorers" not in path.read_text(), path.name

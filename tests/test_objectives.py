import json

import numpy as np
import pytest

from steerable import ObjectiveStats, RewardSet, SteerableError
from steerable.trust import store_path

PROMPTS = ["Tell me about cats.", "How do I boil an egg?", "Name a colour."]
RESPONSES = ["Cats are small, curious animals that many people love.", "Boil it.", "Blue."]


def test_score_shape_and_values():
    rewards = RewardSet.from_specs(["brief=builtin:brevity", "builtin:length"])
    raw = rewards.score(PROMPTS, RESPONSES)
    assert raw.shape == (3, 2)
    assert raw[:, 1].tolist() == [9, 2, 1]
    assert raw[:, 0].tolist() == [-9, -2, -1]
    assert rewards.names == ["brief", "length"]


def test_stats_fit_values():
    stats = ObjectiveStats.fit(np.arange(101.0))
    assert stats.mean == 50 and stats.min == 0 and stats.max == 100 and stats.count == 101
    assert stats.quantile(0.7) == pytest.approx(70)
    assert stats.quantile(0.72) == pytest.approx(72)  # interpolated between 0.7 and 0.75
    assert stats.normalise(np.array([50.0]))[0] == 0


def test_constant_objective_normalises_without_dividing_by_zero():
    stats = ObjectiveStats.fit(np.full(5, 3.0))
    assert stats.normalise(np.array([3.0, 4.0])).tolist() == [0.0, 1.0]


def test_stats_round_trip(tmp_path):
    rewards = RewardSet.from_specs(["brief=builtin:brevity", "positive=builtin:sentiment"])
    raw = rewards.score(PROMPTS, RESPONSES)
    rewards.fit_stats(raw)
    path = tmp_path / "stats.json"
    rewards.save(path)
    loaded = RewardSet.load(path)
    assert loaded.names == rewards.names
    assert [o.spec for o in loaded.objectives] == [o.spec for o in rewards.objectives]
    assert [o.stats for o in loaded.objectives] == [o.stats for o in rewards.objectives]
    np.testing.assert_allclose(loaded.normalise(raw), rewards.normalise(raw))
    np.testing.assert_allclose(loaded.score(PROMPTS, RESPONSES), raw)
    assert [p.name for p in tmp_path.iterdir()] == ["stats.json"]  # no temp files left


def test_normalise_without_stats_is_an_error():
    rewards = RewardSet.from_specs(["builtin:length"])
    with pytest.raises(SteerableError, match="no statistics"):
        rewards.normalise(np.zeros((2, 1)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"objectives": 3}', "'objectives' list"),
        ('{"objectives": [{"name": "a"}]}', "needs 'name' and 'spec'"),
        (
            '{"objectives": [{"name": "a", "spec": {"kind": "builtin", "target": "length"},'
            ' "stats": {"mean": 1}}]}',
            "malformed statistics",
        ),
    ],
)
def test_malformed_stats_file(tmp_path, content, message):
    path = tmp_path / "stats.json"
    path.write_text(content)
    with pytest.raises(SteerableError, match=message):
        RewardSet.load(path)


def test_missing_stats_file(tmp_path):
    with pytest.raises(SteerableError, match="does not exist"):
        RewardSet.load(tmp_path / "nope.json")


def test_nan_score_names_objective_and_row(tmp_path, monkeypatch):
    module = tmp_path / "rewards_nan.py"
    module.write_text(
        "def f(prompts, responses):\n    return [float('nan') if r == 'Blue.' else 1.0 for r in responses]\n"
    )
    rewards = RewardSet.from_specs([f"bad=py:{module}:f"])
    with pytest.raises(SteerableError, match=r"'bad' gave nan for row 3"):
        rewards.score(PROMPTS, RESPONSES)


def test_scorer_returning_wrong_count(tmp_path):
    module = tmp_path / "rewards_short.py"
    module.write_text("def f(prompts, responses):\n    return [1.0]\n")
    rewards = RewardSet.from_specs([f"short=py:{module}:f"])
    with pytest.raises(SteerableError, match="returned 1 scores for 3 pairs"):
        rewards.score(PROMPTS, RESPONSES)


def test_duplicate_objective_names():
    with pytest.raises(SteerableError, match="used twice"):
        RewardSet.from_specs(["a=builtin:length", "a=builtin:brevity"])


def test_stats_json_is_self_describing(tmp_path):
    rewards = RewardSet.from_specs(["brief=builtin:brevity"])
    rewards.fit_stats(rewards.score(PROMPTS, RESPONSES))
    rewards.save(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    entry = data["objectives"][0]
    assert entry["spec"] == {"kind": "builtin", "target": "brevity", "options": {}}
    assert set(entry["stats"]) == {"count", "mean", "std", "min", "max", "quantiles"}
    assert entry["stats"]["quantiles"]["0.7"] == pytest.approx(np.quantile([-9, -2, -1], 0.7))


def test_annotate_writes_raw_and_normalised_columns():
    rows = [
        {"prompt": p, "response": r, "id": i} for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True))
    ]
    rewards = RewardSet.from_specs(["brief=builtin:brevity", "builtin:length"])
    raw = rewards.annotate(rows, fit=True)
    assert raw.tolist() == [[-9, 9], [-2, 2], [-1, 1]]
    assert [r["score_length"] for r in rows] == [9, 2, 1] and [r["id"] for r in rows] == [0, 1, 2]
    z = np.array([[r["z_brief"], r["z_length"]] for r in rows])
    np.testing.assert_allclose(z, rewards.normalise(raw))
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    held = [{"prompt": "q", "response": "one two"}]
    rewards.annotate(held)  # normalised with the statistics fitted above
    assert held[0]["z_length"] == pytest.approx((2 - 4) / rewards["length"].stats.std)


def test_annotate_without_statistics_leaves_rows_untouched():
    rows = [{"prompt": "q", "response": "a b"}]
    with pytest.raises(SteerableError, match="no statistics"):
        RewardSet.from_specs(["builtin:length"]).annotate(rows)
    assert rows == [{"prompt": "q", "response": "a b"}]


def test_fitting_on_one_row_warns_that_every_preference_maps_to_the_same_tags():
    rewards = RewardSet.from_specs(["brief=builtin:brevity", "builtin:length"])
    with pytest.warns(UserWarning, match=r"\['brief', 'length'\].*1 row.*same tags"):
        rewards.fit_stats(rewards.score(PROMPTS[:1], RESPONSES[:1]))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("return ['high'] * len(r)", r"not a number \('high'\)"),
        ("return [str(len(x)) for x in r]", r"not a number \('54'\)"),  # not even numeric strings
        ("return [None] * len(r)", r"not a number \(None\)"),
        ("return None", "returned None, not a list of 3 scores"),
        ("return 1.0", "returned 1.0, not a list of 3 scores"),
        ("return [[1.0]] * len(r)", "not a list of 3 scores"),
        ("raise ValueError('boom')", "raised ValueError: boom"),
    ],
)
def test_scorer_returning_something_else_names_the_objective(tmp_path, body, message):
    module = tmp_path / "rewards_odd.py"
    module.write_text(f"def f(p, r):\n    {body}\n")
    rewards = RewardSet.from_specs([f"odd=py:{module}:f"])
    with pytest.raises(SteerableError, match=f"'odd'.*{message}"):
        rewards.score(PROMPTS, RESPONSES)


def test_scorer_may_return_any_sequence_of_numbers(tmp_path):
    module = tmp_path / "rewards_gen.py"
    module.write_text("import numpy as np\ndef f(p, r):\n    return (n for n in np.arange(len(r)))\n")
    assert RewardSet.from_specs([f"g=py:{module}:f"]).score(PROMPTS, RESPONSES)[:, 0].tolist() == [0, 1, 2]


def _saved_with_code(tmp_path) -> tuple:
    """A stats JSON naming a py: scorer whose module leaves a marker file when imported."""
    marker = tmp_path / "imported"
    module = tmp_path / "rewards_marker.py"
    module.write_text(
        f"open({str(marker)!r}, 'w').close()\ndef f(p, r):\n    return [float(len(x)) for x in r]\n"
    )
    rewards = RewardSet.from_specs([f"chars=py:{module}:f", "builtin:length"])
    rewards.fit_stats(rewards.score(PROMPTS, RESPONSES))
    marker.unlink()
    rewards.save(tmp_path / "stats.json")
    store_path().unlink()  # as on another machine: nothing trusted there
    return tmp_path / "stats.json", marker, module


def test_code_named_in_a_stats_file_from_elsewhere_runs_only_when_trusted(tmp_path):
    path, marker, module = _saved_with_code(tmp_path)
    loaded = RewardSet.load(path)  # loading alone is fine: a model directory must still load
    assert loaded.names == ["chars", "length"] and loaded["chars"].stats is not None
    assert loaded["length"].score(PROMPTS, RESPONSES).tolist() == [9, 2, 1]  # builtins still run
    with pytest.raises(SteerableError) as refused:
        loaded.score(PROMPTS, RESPONSES)
    for part in ("'chars'", str(path), f"py:{module}:f", "--trust-remote-code", "trust_remote_code=True"):
        assert part in str(refused.value)
    assert not marker.exists()
    data = json.loads(path.read_text())
    with pytest.raises(SteerableError, match="--trust-remote-code"):
        RewardSet.from_dict(data).score(PROMPTS, RESPONSES)
    assert not marker.exists()
    trusted = RewardSet.load(path, trust_remote_code=True).score(PROMPTS, RESPONSES)
    assert trusted[:, 0].tolist() == [float(len(r)) for r in RESPONSES] and marker.exists()
    assert RewardSet.from_dict(data, trust_remote_code=True).score(PROMPTS, RESPONSES).shape == (3, 2)


def test_hf_remote_code_named_in_a_file_is_refused_before_loading_anything():
    rewards = RewardSet.from_specs(["builtin:length", "rm=hf:someone/their-model?trust_remote_code=true"])
    rewards.fit_stats(np.array([[1.0, 0.0], [2.0, 1.0]]))
    with pytest.raises(SteerableError, match="'rm' from stats.json would run code from hf:someone/"):
        RewardSet.from_dict(rewards.to_dict(), where="stats.json").score(["q"], ["a"])


def test_a_grpo_reward_function_refuses_a_nan_score_instead_of_using_the_mean(tmp_path):
    """MORLHF/Soups/MOSLIM-GRPO score through one reward function per objective; a NaN there
    was replaced by the objective's mean, so a broken scorer trained the policy on made-up
    rewards."""
    from steerable.methods.rl import reward_functions

    module = tmp_path / "rewards_nan_rl.py"
    module.write_text(
        "def f(prompts, responses):\n    return [float('nan') if r == 'Blue.' else 1.0 for r in responses]\n"
    )
    rewards = RewardSet.from_specs(["n=builtin:length", f"bad=py:{module}:f"])
    rewards.fit_stats(np.array([[1.0, 0.0], [3.0, 2.0]]))
    _, bad = reward_functions(rewards, {"completions": 0, "tokens": 0}, tokenizer=None)
    assert bad(prompts=["Hi", "Sky?"], completions=["Hello.", "Green."]) == [0.0, 0.0]
    with pytest.raises(SteerableError, match=r"objective 'bad' .*gave nan for row 2 \(prompt 'Sky\?'"):
        bad(prompts=["Hi", "Sky?"], completions=["Hello.", "Blue."])


def test_moslim_objectives_of_one_model_are_different_scorers_unless_they_name_one_head(tmp_path):
    """A moslim: scorer reads the head named like its objective, so two objectives on one
    reward model are two scorers; one that names the other's head with ?objective= is the same."""
    rm = tmp_path / "rm"
    assert RewardSet.from_specs([f"mood=moslim:{rm}", f"size=moslim:{rm}"]).names == ["mood", "size"]
    with pytest.raises(SteerableError, match="objectives size and big are the same scorer"):
        RewardSet.from_specs([f"size=moslim:{rm}", f"big=moslim:{rm}?objective=size"])

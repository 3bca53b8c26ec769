import json

import numpy as np
import pytest

from steerable import ObjectiveStats, RewardSet, SteerableError

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
    with pytest.raises(SteerableError, match=r"'bad' gave nan for row 2"):
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

import json

import numpy as np
import pytest

from steerable import RewardSet, SteerableError
from steerable.evaluation.evaluate import evaluate
from steerable.evaluation.pareto import hypervolume, non_dominated
from steerable.evaluation.sweep import controllability, preference_grid, requested_controllability, sweep
from steerable.generation import SamplingConfig


def test_grid_k2_is_eleven_points_from_0_to_1():
    grid = preference_grid(2)
    assert grid.shape == (11, 2)
    assert grid[:, 0] == pytest.approx(np.linspace(0, 1, 11))
    assert grid.sum(axis=1) == pytest.approx(np.ones(11))


@pytest.mark.parametrize(("k", "resolution", "count"), [(3, 10, 66), (4, 4, 35), (3, 2, 6)])
def test_simplex_lattice_sizes(k, resolution, count):
    # C(resolution + k - 1, k - 1) points, all on the simplex, no duplicates
    grid = preference_grid(k, resolution)
    assert grid.shape == (count, k)
    assert grid.sum(axis=1) == pytest.approx(np.ones(count))
    assert (grid >= 0).all()
    assert len({tuple(r) for r in grid.round(6)}) == count


def test_bad_grids():
    with pytest.raises(SteerableError):
        preference_grid(1)
    with pytest.raises(SteerableError):
        preference_grid(2, 0)


def test_non_dominated_with_ties_and_duplicates():
    points = [[1, 3], [2, 2], [3, 1], [1, 1], [2, 2], [0, 3], [3, 1]]
    assert non_dominated(points).tolist() == [True, True, True, False, True, False, True]


def test_hypervolume_hand_computed():
    # staircase above reference (0, 0): 1*3 + 1*2 + 1*1 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0]) == pytest.approx(6)
    # dominated and duplicate points add nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2]], [0, 0]) == pytest.approx(6)
    # a point below the reference adds nothing
    assert hypervolume([[2, 2], [-1, 5]], [0, 0]) == pytest.approx(4)
    assert hypervolume([[1, 1, 1]], [0, 0, 0]) == pytest.approx(1)
    with pytest.raises(SteerableError, match="reference point"):
        hypervolume([[1, 1]], [0, 0, 0])


def test_sweep_and_controllability_with_a_fake_generator():
    rewards = RewardSet.from_specs(["long=builtin:length", "brief=builtin:brevity"])

    def generate(prompts, weights):  # more words as the weight of "long" grows
        return [" ".join(["word"] * (1 + int(10 * weights[0]))) for _ in prompts]

    points = sweep(generate, rewards, ["a", "b", "c"], preference_grid(2))
    assert [p.mean[0] for p in points] == [1 + int(10 * w) for w in np.linspace(0, 1, 11)]
    assert all(p.stderr == [0.0, 0.0] and p.n == 3 for p in points)
    ctrl = controllability(points, rewards.names)
    assert ctrl["long"] == pytest.approx(1.0) and ctrl["brief"] == pytest.approx(1.0)
    with pytest.raises(SteerableError, match="grid has shape"):
        sweep(generate, rewards, ["a"], preference_grid(3))


def test_controllability_against_the_request_ranks_equal_requests_together():
    """A model asked for linf-style targets (flat from w = 0.5 up) that hits each target up to
    noise on the plateau: perfect against its requests, not against its weights."""
    rewards = RewardSet.from_specs(["long=builtin:length", "brief=builtin:brevity"])
    plateau_noise = iter([0, 1, 0, 1, 0, 1] * 2)

    def target(w):
        return 1 + round(20 * min(2 * w, 1.0))

    def generate(prompts, weights):
        words = target(weights[0]) + (next(plateau_noise) if weights[0] >= 0.5 else 0)
        return [" ".join(["word"] * words) for _ in prompts]

    requested = lambda weights: [target(weights[0]), -target(weights[1])]  # noqa: E731
    points = sweep(generate, rewards, ["a"], preference_grid(2), requested=requested)
    assert [p.requested[0] for p in points] == [target(w) for w in np.linspace(0, 1, 11)]
    asked = requested_controllability(points, rewards.names)
    by_weight = controllability(points, rewards.names)
    assert asked["long"] > 0.9 and by_weight["long"] < asked["long"]
    points[3].requested = None  # a method that records no requests has no such controllability
    assert requested_controllability(points, rewards.names) is None


def test_sweep_with_several_samples_per_prompt_averages_each_prompt_first():
    rewards = RewardSet.from_specs(["long=builtin:length", "brief=builtin:brevity"])
    calls = []

    def generate(prompts, weights):  # the k-th answer to a prompt has len(prompt) + k words
        calls.append(list(prompts))
        seen: dict[str, int] = {}
        answers = []
        for p in prompts:
            seen[p] = seen.get(p, 0) + 1
            answers.append(" ".join(["word"] * (len(p) + seen[p])))
        return answers

    points = sweep(generate, rewards, ["a", "bbb"], preference_grid(2, 1), samples=3)
    assert calls[0] == ["a", "a", "a", "bbb", "bbb", "bbb"]  # one call, each prompt repeated
    point = points[0]
    # per-prompt means 3 and 5 words: mean 4, standard error over the two prompts 1
    assert point.mean[0] == pytest.approx(4.0) and point.stderr[0] == pytest.approx(1.0)
    assert (point.n, point.samples) == (6, 3)
    with pytest.raises(SteerableError, match="samples per prompt must be >= 1"):
        sweep(generate, rewards, ["a"], preference_grid(2), samples=0)
    with pytest.raises(SteerableError, match="samples per prompt must be >= 1, got -1"):
        evaluate("prompting", "no-such-model", ["a"], samples=-1, progress=False)


SAMPLING = {"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.95, "batch_size": 4, "seed": 0, "top_k": 50}


def _result(method, means, rewards, weights=None, seconds=10.0, **settings):
    from steerable.evaluation.report import EvaluationResult, prompts_digest
    from steerable.evaluation.sweep import SweepPoint, controllability

    k = len(rewards)
    weights = weights or [[i / (len(means) - 1), 1 - i / (len(means) - 1)] for i in range(len(means))]
    points = [SweepPoint(w, m, [0.1] * k, 5, 1.0, 50) for w, m in zip(weights, means, strict=True)]
    measured = dict(
        prompts_sha256=prompts_digest(["a", "b", "c", "d", "e"]),
        num_prompts=5,
        sampling=SAMPLING,
        samples=1,
        resolution=len(means) - 1,
        prompt_split="heldout",
        prompt_limit=5,
    )
    return EvaluationResult(
        method=method,
        model="m",
        names=rewards.names,
        rewards=rewards.to_dict(),
        points=points,
        controllability=controllability(points, rewards.names),
        compute={"train_seconds": seconds},
        **{**measured, **settings},
    )


@pytest.fixture
def fitted_rewards():
    rewards = RewardSet.from_specs(["a=builtin:length", "b=builtin:brevity"])
    rewards.fit_stats(np.array([[float(i), float(-i)] for i in range(21)]))  # q05 = (1, -19)
    return rewards


def test_report_from_a_fixed_result_set(tmp_path, fitted_rewards):
    from steerable.evaluation.report import EvaluationResult, summary, write_report

    ric = _result("ric", [[2, -10], [5, -15], [8, -18]], fitted_rewards)
    floor = _result("prompting", [[2, -18], [3, -17], [3, -18]], fitted_rewards, seconds=0)
    rows = summary([ric, floor])
    # reference (1, -19): ric staircase 1*9 + 3*4 + 3*1 = 24; prompting: (3,-17) dominates
    # both other points, so its hypervolume is (3-1)*(-17+19) = 4
    assert rows[0]["hypervolume"] == pytest.approx(24)
    assert rows[1]["hypervolume"] == pytest.approx(4)
    assert rows[0]["front"] == 3 and rows[1]["front"] == 1
    assert rows[0]["hypervolume_per_train_hour"] == pytest.approx(24 / (10 / 3600))
    assert rows[1]["hypervolume_per_train_hour"] is None
    write_report([ric, floor], tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| ric | 3 | 3 | 24 |" in text and "| prompting | 3 | 1 | 4 |" in text
    assert (tmp_path / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert len((tmp_path / "points.csv").read_text().splitlines()) == 7
    ric.save(tmp_path / "ric")
    assert EvaluationResult.load(tmp_path / "ric").means.tolist() == ric.means.tolist()


def test_report_shows_the_inner_product_and_the_cost_per_token_against_prompting(tmp_path, fitted_rewards):
    """w . z is the grid's mean of weights . normalised means; a token's cost is the forwards a
    method records and the measured seconds, relative to the prompting row's."""
    from dataclasses import asdict

    from steerable.evaluation.report import EvaluationResult, markdown, summary
    from steerable.evaluation.sweep import SweepPoint

    def measured(method, seconds, forwards):
        result = _result(method, [[2, -10], [5, -15]], fitted_rewards, weights=[[1.0, 0.0], [0.0, 1.0]])
        result.points = [  # 50 tokens a point
            SweepPoint([1.0, 0.0], [2, -10], [0.1, 0.1], 5, seconds, 50, normalised_mean=[1.0, -2.0]),
            SweepPoint([0.0, 1.0], [5, -15], [0.1, 0.1], 5, seconds, 50, normalised_mean=[0.5, 0.5]),
        ]
        result.compute["forwards_per_token"] = forwards
        return result

    mod, floor = measured("mod", 2.0, 2), measured("prompting", 1.0, 1)
    rows = {row["method"]: row for row in summary([mod, floor])}
    assert rows["mod"]["inner_product"] == pytest.approx((1.0 + 0.5) / 2)
    assert rows["mod"]["seconds_per_token"] == pytest.approx(0.04)
    assert rows["mod"]["relative_seconds_per_token"] == pytest.approx(2.0)
    assert rows["prompting"]["relative_seconds_per_token"] == pytest.approx(1.0)
    # moves from the centres (0.5, 0.5) and (0.75, -0.75): m = +-(0.25, -1.25) for d = +-(0.5, -0.5),
    # a slope of 0.75 / 0.5 and a sideways part +-(-0.5, -0.5): sin = sqrt(0.5) / sqrt(1.625)
    assert rows["mod"]["gain"] == pytest.approx(1.5)
    assert rows["mod"]["orthogonality"] == pytest.approx((0.5 / 1.625) ** 0.5)
    assert rows["mod"]["miscalibration"] is None  # MOD is asked by weights alone
    text = markdown([mod, floor])
    assert "| +0.750 | +1.500 | 0.555 | - | 10 | 0 | 4 | 2 | 40 | 2.00x |" in text
    assert "| 1 | 20 | 1.00x |" in text
    # a result written before these columns: read, its measured cost from its points, the rest '-'
    old = asdict(measured("ric", 1.0, 1))
    del old["inner_product"], old["compute"]["forwards_per_token"]
    for point in old["points"]:
        point["normalised_mean"] = None
    (tmp_path / "result.json").write_text(json.dumps(old))
    row = summary([EvaluationResult.load(tmp_path)])[0]
    assert row["inner_product"] is None and row["forwards_per_token"] is None
    assert row["seconds_per_token"] == pytest.approx(0.02) and row["relative_seconds_per_token"] is None
    assert "| - | 10 | 0 | 2 | - | 20 | - |" in markdown([EvaluationResult.load(tmp_path)])


def test_an_objective_that_does_not_vary_is_explained_not_nan(tmp_path, fitted_rewards):
    """Every grid point's mean b is 0.0: no ranking, so its controllability is null in the JSON,
    'n/a' in the tables, and the report says why instead of printing +nan."""
    from steerable.cli import summary_table
    from steerable.evaluation.report import EvaluationResult, summary, write_report

    flat = _result("ric", [[2, 0.0], [5, 0.0], [8, 0.0]], fitted_rewards)
    assert flat.controllability["a"] == pytest.approx(1.0) and flat.controllability["b"] is None
    flat.save(tmp_path / "flat")
    saved = (tmp_path / "flat" / "result.json").read_text()
    assert "NaN" not in saved and json.loads(saved)["controllability"]["b"] is None
    older = json.loads(saved)
    older["controllability"]["b"] = float("nan")  # as results were written before
    (tmp_path / "old.json").write_text(json.dumps(older))
    assert EvaluationResult.load(tmp_path / "old.json").controllability["b"] is None

    row = summary([flat])[0]
    assert row["controllability_b"] is None
    assert row["notes"] == {"controllability_b": "constant: every grid point's mean b was 0, no ranking"}
    write_report([flat], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "nan" not in text.lower()
    assert "| +1.000 | n/a | - | - |" in text
    assert "- ric, controllability of b: constant: every grid point's mean b was 0, no ranking" in text

    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary_table(["a", "b"], np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])))
    printed = console.export_text()
    assert "nan" not in printed and "constant" in printed
    assert "b is constant: every answer scored 0, no ranking" in printed


def test_results_on_different_stats_or_objectives_are_not_compared(fitted_rewards):
    from steerable.evaluation.report import summary

    other = RewardSet.from_specs(["a=builtin:length", "b=builtin:brevity"])
    other.fit_stats(np.array([[float(i), float(-2 * i)] for i in range(21)]))
    renamed = RewardSet.from_specs(["a=builtin:length", "c=builtin:brevity"])
    renamed.fit_stats(np.array([[float(i), float(-i)] for i in range(21)]))
    base = _result("ric", [[1, 1], [2, 2]], fitted_rewards)
    with pytest.raises(SteerableError, match="statistics differ"):
        summary([base, _result("x", [[1, 1], [2, 2]], other)])
    with pytest.raises(SteerableError, match="objectives"):
        summary([base, _result("x", [[1, 1], [2, 2]], renamed)])


def test_results_measured_on_other_prompts_or_sampling_are_not_compared(fitted_rewards):
    from steerable.evaluation.report import prompts_digest, summary

    base = _result("ric", [[1, 1], [2, 2]], fitted_rewards)
    cases = [
        ({"prompts_sha256": prompts_digest(["e", "d", "c", "b", "a"])}, "other prompts"),
        ({"sampling": {**SAMPLING, "max_new_tokens": 32}}, r"max_new_tokens differs \(8 vs 32\)"),
        ({"sampling": {**SAMPLING, "temperature": 1.0}}, r"temperature differs \(0.7 vs 1.0\)"),
        ({"sampling": {**SAMPLING, "top_p": 0.9}}, r"top_p differs \(0.95 vs 0.9\)"),
        ({"sampling": {**SAMPLING, "top_k": 0}}, r"top_k differs \(50 vs 0\)"),
        ({"samples": 4}, r"samples per prompt differs \(1 vs 4\)"),
    ]
    for settings, message in cases:
        with pytest.raises(SteerableError, match=message):
            summary([base, _result("x", [[1, 1], [2, 2]], fitted_rewards, **settings)])
    # batch size, seed and dtype do not change what is measured
    same = {"sampling": {**SAMPLING, "batch_size": 64, "seed": 3}, "dtype": "bfloat16", "resolution": 4}
    assert len(summary([base, _result("x", [[1, 1], [2, 2]], fitted_rewards, **same)])) == 2


def test_a_result_from_before_settings_were_recorded_asks_for_a_re_run(tmp_path, fitted_rewards):
    from dataclasses import asdict

    from steerable.evaluation.report import EvaluationResult

    old = asdict(_result("ric", [[1, 1], [2, 2]], fitted_rewards))
    for key in ("prompts_sha256", "num_prompts", "sampling", "samples", "resolution", "prompt_split"):
        del old[key]
    del old["prompt_limit"], old["dtype"]
    (tmp_path / "result.json").write_text(json.dumps(old))
    with pytest.raises(SteerableError, match="does not record prompts_sha256.*re-run the evaluation"):
        EvaluationResult.load(tmp_path)


def test_the_front_plot_joins_a_front_only_in_two_dimensions(fitted_rewards):
    from steerable.evaluation.report import front_figure

    def joined(ax):  # lines through more than one point
        return [line for line in ax.lines if line.get_linestyle() not in ("None", "none", " ", "")]

    two = front_figure([_result("ric", [[2, -10], [5, -15], [8, -18]], fitted_rewards)])
    (ax,) = two.axes
    assert [len(line.get_xdata()) for line in joined(ax)] == [3]
    three_rewards = RewardSet.from_specs(["a=builtin:length", "b=builtin:brevity", "c=builtin:sentiment"])
    three_rewards.fit_stats(np.array([[float(i), float(-i), i / 20] for i in range(21)]))
    grid = preference_grid(3, 1).tolist()
    three = front_figure([_result("ric", [[2, -10, 0.1], [5, -15, 0.5], [8, -18, 0.2]], three_rewards, grid)])
    labels = [(ax.get_xlabel().split()[0], ax.get_ylabel().split()[0]) for ax in three.axes]
    assert labels == [("a", "b"), ("a", "c"), ("b", "c")]
    assert all(not joined(ax) for ax in three.axes)


def test_corrupt_result_file(tmp_path):
    from steerable.evaluation.report import EvaluationResult

    (tmp_path / "result.json").write_text('{"method": "ric"')
    with pytest.raises(SteerableError, match="corrupt"):
        EvaluationResult.load(tmp_path)
    with pytest.raises(SteerableError, match="does not exist"):
        EvaluationResult.load(tmp_path / "missing")


def test_evaluate_ric_and_prompting_end_to_end_on_tiny(tiny_ric, tiny_path, tmp_path):
    from typer.testing import CliRunner

    from steerable.cli import app

    _, model_dir = tiny_ric
    runner = CliRunner()
    common = ["--limit", "2", "--resolution", "2", "--max-new-tokens", "4", "--samples", "2"]
    ric = runner.invoke(
        app,
        ["evaluate", "--method", "ric", "--model", str(model_dir), "--out", str(tmp_path / "ric"), *common],
    )
    assert ric.exit_code == 0, ric.output
    floor = runner.invoke(
        app,
        [
            "evaluate",
            "--method",
            "prompting",
            "--model",
            tiny_path,
            "--stats",
            str(model_dir),
            "--out",
            str(tmp_path / "floor"),
            *common,
        ],
    )
    assert floor.exit_code == 0, floor.output
    floor_points = json.loads((tmp_path / "floor" / "result.json").read_text())["points"]
    assert [(p["n"], p["samples"]) for p in floor_points] == [(4, 2)] * 3
    both = runner.invoke(
        app, ["report", str(tmp_path / "ric"), str(tmp_path / "floor"), "--out", str(tmp_path / "both")]
    )
    assert both.exit_code == 0, both.output
    text = (tmp_path / "both" / "report.md").read_text()
    assert "| ric | 3 |" in text and "| prompting | 3 |" in text
    assert (tmp_path / "both" / "front.png").is_file()
    # a sweep sampled with another token limit is refused, not overlaid
    longer = json.loads((tmp_path / "floor" / "result.json").read_text())
    longer["sampling"]["max_new_tokens"] = 32
    (tmp_path / "longer").mkdir()
    (tmp_path / "longer" / "result.json").write_text(json.dumps(longer))
    refused = runner.invoke(
        app, ["report", str(tmp_path / "ric"), str(tmp_path / "longer"), "--out", str(tmp_path / "no")]
    )
    assert refused.exit_code == 2 and "max_new_tokens differs (4 vs 32)" in refused.output
    missing = runner.invoke(
        app,
        ["evaluate", "--method", "prompting", "--model", tiny_path, "--out", str(tmp_path / "x"), *common],
    )
    assert missing.exit_code == 2 and "needs --stats" in missing.output
    unknown = runner.invoke(app, ["evaluate", "--method", "dpo", "--out", str(tmp_path / "y"), *common])
    assert unknown.exit_code == 2 and "unknown method" in unknown.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_evaluate_overrides_the_ric_mapping_and_labels_it(tiny_ric, tmp_path):
    _, model_dir = tiny_ric
    sampling = SamplingConfig(max_new_tokens=2, temperature=0.7)
    result = evaluate("ric", str(model_dir), ["Hi", "Why?"], 2, sampling, mapping="linear", progress=False)
    assert result.method == "ric-linear" and len(result.points) == 3
    with pytest.raises(SteerableError, match="mapping 'cosine' unknown"):
        evaluate("ric", str(model_dir), ["Hi"], 2, sampling, mapping="cosine", progress=False)
    applies = r"--mapping applies to RiC, MOSLIM and RiC \(images\) models only"
    with pytest.raises(SteerableError, match=applies):
        evaluate("prompting", str(model_dir), ["Hi"], 2, sampling, mapping="l2", progress=False)


def test_three_objectives_evaluated_and_reported_on_a_template_without_a_system_role(
    tiny_nosys_path, tmp_path
):
    """K = 3 end to end: the prompting floor (its preference is a system text, which this
    template cannot take) on three builtin objectives, then `steerable report`."""
    from typer.testing import CliRunner

    from steerable.cli import app
    from steerable.evaluation.report import prompts_digest

    rewards = RewardSet.from_specs(
        ["brief=builtin:brevity", "positive=builtin:sentiment", "easy=builtin:readability"]
    )
    answers = ["Yes.", "What a lovely, happy day it is.", "Photosynthesis converts light into energy.", "No"]
    rewards.fit_stats(rewards.score(["Hi?"] * len(answers), answers))
    rewards.save(tmp_path / "stats.json")
    prompts = ["Hi", "Why is the sky blue?"]
    sampling = SamplingConfig(max_new_tokens=4, temperature=0.7)
    result = evaluate(
        "prompting",
        tiny_nosys_path,
        prompts,
        resolution=1,
        sampling=sampling,
        stats=str(tmp_path / "stats.json"),
        progress=False,
        prompt_split="heldout",
        prompt_limit=2,
    )
    result.save(tmp_path / "floor")
    recorded = json.loads((tmp_path / "floor" / "result.json").read_text())
    assert recorded["prompts_sha256"] == prompts_digest(prompts) and recorded["num_prompts"] == 2
    assert (recorded["prompt_split"], recorded["prompt_limit"]) == ("heldout", 2)
    assert recorded["sampling"]["max_new_tokens"] == 4 and recorded["sampling"]["temperature"] == 0.7
    assert (recorded["samples"], recorded["resolution"]) == (1, 1)
    report = CliRunner().invoke(app, ["report", str(tmp_path / "floor"), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| controllability brief | controllability positive | controllability easy |" in text
    assert "| prompting | 3 |" in text and "2 prompts (heldout, first 2)" in text
    assert (tmp_path / "report" / "front.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_sweeps_a_generators_own_grid_and_records_its_requests(fitted_rewards, monkeypatch):
    """A method's `Generator` says where it answers (`grid`) and what each point asked for
    (`requested`); `evaluate` takes both from it."""
    from steerable.evaluation import evaluate as evaluation
    from steerable.methods.base import Generator

    class Tokenizer:
        name_or_path = "fake"

        def __call__(self, texts, **_):
            from types import SimpleNamespace

            return SimpleNamespace(input_ids=[t.split() for t in texts])

    def generate(prompts, weights):
        return [" ".join(["word"] * (1 + int(10 * weights[0]))) for _ in prompts]

    trained_at = np.array([[1.0, 0.0], [0.3, 0.7]])
    built = Generator(generate, fitted_rewards, Tokenizer(), None, "float32", grid=trained_at,
                      requested=lambda weights: [2 * weights[0], 2 * weights[1]], forwards=3)  # fmt: skip
    monkeypatch.setattr(evaluation, "method_generator", lambda *args, **kwargs: built)
    monkeypatch.setattr(evaluation, "refuse_trained_on", lambda prompts, model: None)
    result = evaluation.evaluate("morlhf", "dir", ["a", "b"], progress=False)
    assert [p.weights for p in result.points] == trained_at.tolist()
    assert [p.requested for p in result.points] == [[2.0, 0.0], [0.6, 1.4]]
    # what a token costs: the generator's forwards, and the seconds measured over its tokens
    assert result.compute["forwards_per_token"] == 3
    tokens = sum(p.generated_tokens for p in result.points)
    assert tokens == 2 * (11 + 4) and result.compute["seconds_per_token"] == pytest.approx(
        sum(p.seconds for p in result.points) / tokens
    )

"""`steerable evaluate` on directories of experts: Rewarded Soups, MOD and LoRA output mixing on
one soups directory, GenARM on its own; each result records the directory's training compute and
what a generated token costs."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from steerable import SteerableError
from steerable.cli import app
from steerable.evaluation.evaluate import evaluate, method_generator
from steerable.generation import SamplingConfig

GREEDY = SamplingConfig(max_new_tokens=4, temperature=0, batch_size=4)
PROMPTS = ["Say something kind.", "What is the capital of France?"]
TRAINED = {"seconds": {"policy_0": 12.0, "policy_1": 30.0}, "trained_tokens": 640, "generated_tokens": 0}


def copy_as(experts, out, **manifest):
    """A copy of the experts directory with its steerable.json's entries replaced by `manifest`."""
    shutil.copytree(experts, out)
    record = json.loads((out / "steerable.json").read_text())
    (out / "steerable.json").write_text(json.dumps({**record, **manifest}))
    return out


@pytest.fixture(scope="module")
def soups_dir(tiny_experts, tmp_path_factory):
    """Two hand-made experts in a soups directory whose training record says what they cost."""
    return copy_as(tiny_experts, tmp_path_factory.mktemp("soups") / "soups", training={"compute": TRAINED})


@pytest.fixture(scope="module")
def evaluated(soups_dir):
    return {
        method: evaluate(method, str(soups_dir), PROMPTS, resolution=2, sampling=GREEDY, progress=False)
        for method in ("soups", "mod", "lora-mix")
    }


def test_soups_mod_and_lora_mix_evaluate_one_directory_with_its_training_and_their_cost(evaluated):
    for method, result in evaluated.items():
        assert result.method == method and [p.weights for p in result.points] == [[0, 1], [0.5, 0.5], [1, 0]]
        # the experts' training is every mixing's training cost
        assert result.compute["train_seconds"] == 42.0 and result.compute["trained_tokens"] == 640
        tokens = sum(p.generated_tokens for p in result.points)
        assert tokens > 0
        seconds = sum(p.seconds for p in result.points)
        assert result.compute["seconds_per_token"] == pytest.approx(seconds / tokens)
    # MOD runs each expert on every token; output mixing and a merged soup run one model
    assert {m: r.compute["forwards_per_token"] for m, r in evaluated.items()} == {
        "soups": 1,
        "mod": 2,
        "lora-mix": 1,
    }


def test_the_inner_product_is_the_grids_mean_of_weights_dot_normalised_rewards(evaluated):
    result = evaluated["mod"]
    by_hand = sum(
        sum(w * z for w, z in zip(p.weights, p.normalised_mean, strict=True)) for p in result.points
    ) / len(result.points)
    assert result.inner_product == pytest.approx(by_hand)


def test_report_of_the_mixings_shows_the_new_columns(evaluated, tmp_path):
    from steerable.evaluation.report import summary, write_report

    results = list(evaluated.values())
    rows = {row["method"]: row for row in summary(results)}
    assert rows["mod"]["forwards_per_token"] == 2 and rows["mod"]["relative_seconds_per_token"] is None
    assert rows["lora-mix"]["inner_product"] == pytest.approx(evaluated["lora-mix"].inner_product)
    write_report(results, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| w . z | gain | orthogonality | miscalibration | train s | trained tokens | eval s |" in text
    assert "| forwards / token | ms / token | vs base |" in text
    mod = next(line for line in text.splitlines() if line.startswith("| mod |"))
    cells = [c.strip() for c in mod.strip("|").split("|")]
    assert cells[-10] == f"{rows['mod']['inner_product']:+.3f}"
    assert cells[-7:-3] == [
        "-",  # MOD is asked by weights alone: no miscalibration
        "42",
        "640",
        f"{rows['mod']['eval_seconds']:.0f}",
    ]
    assert cells[-3] == "2" and cells[-1] == "-"  # no prompting row: nothing to be relative to
    assert "Hypervolume reference point (5% quantile of the raw training scores): brief=" in text


def test_evaluate_cli_runs_mod_on_a_soups_directory(soups_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        ["evaluate", "--method", "mod", "--model", str(soups_dir), "--limit", "2", "--resolution", "1",
         "--max-new-tokens", "3", "--out", str(tmp_path / "mod"), "--yes"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "mod" / "result.json").read_text())
    assert saved["method"] == "mod" and saved["compute"]["forwards_per_token"] == 2
    assert saved["compute"]["train_seconds"] == 42.0 and saved["inner_product"] is not None


def test_divergence_reaches_mods_rows_and_is_refused_for_other_mixings(soups_dir, monkeypatch):
    from steerable.experts import steering

    seen = []

    def decode(model, tokenizer, texts, sampling, rows, progress):
        seen.extend(rows)
        return [""] * len(texts)

    monkeypatch.setattr(steering, "decode", decode)
    built = method_generator("mod", str(soups_dir), GREEDY, None, divergence=0.5)
    built.generate(["Hi"], [0.3, 0.7])
    assert [(tuple(r.weights), r.alpha) for r in seen] == [((0.3, 0.7), 0.5)]
    with pytest.raises(SteerableError, match="--divergence applies to MOD models only, not to LoRA output"):
        method_generator("lora-mix", str(soups_dir), GREEDY, None, divergence=0.5)
    with pytest.raises(SteerableError, match="divergence must be the alpha .* in \\[0, 1\\]"):
        method_generator("mod", str(soups_dir), GREEDY, None, divergence=2.0)


def test_a_result_names_the_divergence_it_was_evaluated_at(soups_dir):
    result = evaluate("mod", str(soups_dir), PROMPTS[:1], resolution=1, sampling=GREEDY, progress=False,
                      divergence=0.5)  # fmt: skip
    assert result.method == "mod-alpha0.5" and result.compute["forwards_per_token"] == 2


def test_genarm_evaluates_its_own_directory_and_mixings_refuse_it(tiny_experts, tmp_path):
    genarm = copy_as(tiny_experts, tmp_path / "genarm", method="genarm")
    result = evaluate("genarm", str(genarm), PROMPTS[:1], resolution=1, sampling=GREEDY, progress=False)
    assert result.compute["forwards_per_token"] == 3  # the base model and two reward models
    assert result.compute["train_seconds"] == 0.0  # a directory without a training record
    with pytest.raises(SteerableError, match="holds a 'genarm' model; --method mod loads 'mod' or 'soups'"):
        evaluate("mod", str(genarm), PROMPTS[:1], resolution=1, sampling=GREEDY, progress=False)

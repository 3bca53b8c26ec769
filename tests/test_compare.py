"""A short end-to-end `steerable compare` on the tiny configuration (every method)."""

import json

import pytest
from typer.testing import CliRunner

from steerable.cli import app

TINY_COMPARE = """
model: {model}
methods: [ric, soups, morlhf, prompting]
eval: {{limit: 2, resolution: 2, max_new_tokens: 4}}
ric:
  prompt_limit: 6
  samples_per_prompt: 2
  max_new_tokens: 6
  num_epochs: 1
  batch_size: 4
  lora_r: 4
  lora_alpha: 8
  objectives: [brief=builtin:brevity, positive=builtin:sentiment]
rl: {{max_steps: 1, batch_size: 4, num_generations: 2, max_completion_length: 4, prompt_limit: 4, lora_r: 4}}
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_path):
    root = tmp_path_factory.mktemp("compare")
    config = root / "compare.yaml"
    config.write_text(TINY_COMPARE.format(model=tiny_path))
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root, config, result


def test_compare_writes_one_report_for_every_method(compared):
    root, _, result = compared
    out = root / "out"
    report = (out / "report.md").read_text()
    for method in ("ric", "soups", "morlhf", "prompting"):
        assert f"| {method} |" in report
        assert (out / "eval" / method / "result.json").is_file()
    morlhf = json.loads((out / "eval" / "morlhf" / "result.json").read_text())
    assert [p["weights"] for p in morlhf["points"]] == [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    soups = json.loads((out / "eval" / "soups" / "result.json").read_text())
    assert len(soups["points"]) == 3 and soups["compute"]["trained_tokens"] > 0
    assert (out / "front.png").is_file() and "hypervolume" in result.output


def test_compare_rerun_skips_finished_stages(compared):
    root, config, _ = compared
    out = root / "out"
    stamps = {p: p.stat().st_mtime for p in out.glob("eval/*/result.json")}
    rerun = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(out)])
    assert rerun.exit_code == 0, rerun.output
    assert {p: p.stat().st_mtime for p in out.glob("eval/*/result.json")} == stamps


def test_compare_bad_configurations(compared, tmp_path):
    root, config, _ = compared
    runner = CliRunner()
    changed = runner.invoke(
        app, ["compare", "--config", str(config), "--out", str(root / "out"), "--methods", "ric,prompting"]
    )
    assert changed.exit_code == 2 and "different configuration" in changed.output
    unknown = runner.invoke(app, ["compare", "--out", str(tmp_path / "x"), "--methods", "ric,dpo"])
    assert unknown.exit_code == 2 and "unknown method" in unknown.output
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("modle: tiny\n")
    typo = runner.invoke(app, ["compare", "--config", str(bad_key), "--out", str(tmp_path / "y")])
    assert typo.exit_code == 2 and "unknown key" in typo.output
    no_stats = runner.invoke(app, ["compare", "--out", str(tmp_path / "z"), "--methods", "prompting"])
    assert no_stats.exit_code == 2 and "stats" in no_stats.output

import json

import pytest
from typer.testing import CliRunner

from steerable import RewardSet
from steerable.cli import app
from steerable.data import load_pairs, write_table

runner = CliRunner()
ROWS = [
    {"prompt": "How do plants grow?", "response": "Plants grow from seeds using light, water and soil."},
    {"prompt": "Say hi", "response": "Hi!"},
    {"prompt": "Is rain good?", "response": "Rain is wonderful for gardens and rivers."},
]
FAST = ["-o", "brief=builtin:brevity", "-o", "positive=builtin:sentiment"]


def invoke(args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_every_subcommand_has_help():
    for command in ["objectives", "prepare", "sample", "score"]:
        result = invoke([command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_score_writes_scores_and_stats(tmp_path):
    data = write_table(tmp_path / "in.jsonl", ROWS)
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", *FAST])
    assert result.exit_code == 0, result.output
    scored = load_pairs(tmp_path / "out.jsonl")
    assert [r["score_brief"] for r in scored] == [-9, -1, -7]
    assert {"z_brief", "score_positive", "z_positive"} <= set(scored[0])
    stats = RewardSet.load(tmp_path / "out.stats.json")
    assert stats.names == ["brief", "positive"]
    assert stats["brief"].stats.mean == pytest.approx(-17 / 3)
    assert "3 scored pairs" in result.output and "+1.000" in result.output  # summary table


def test_score_with_saved_stats_and_yaml_config(tmp_path):
    data = write_table(tmp_path / "in.parquet", ROWS)
    config = tmp_path / "objectives.yaml"
    config.write_text(
        "objectives:\n  - brief=builtin:brevity\n  - {name: long, kind: builtin, target: length}\n"
    )
    assert (
        invoke(
            [
                "score",
                data,
                "--out",
                tmp_path / "a.parquet",
                "--config",
                config,
                "--stats",
                tmp_path / "s.json",
            ]
        ).exit_code
        == 0
    )
    held = write_table(tmp_path / "held.jsonl", ROWS[:1])
    result = invoke(["score", held, "--out", tmp_path / "b.jsonl", "--stats-from", tmp_path / "s.json"])
    assert result.exit_code == 0, result.output
    row = load_pairs(tmp_path / "b.jsonl")[0]
    assert row["z_long"] == pytest.approx(
        (9 - 17 / 3) / json.loads((tmp_path / "s.json").read_text())["objectives"][1]["stats"]["std"]
    )


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"prompt": "a", "answer": "b"}], [], "missing columns"),
        ([{"prompt": "a", "response": ""}], [], "row 0: 'response' is empty"),
        (ROWS, ["-o", "x=builtin:nope"], "unknown built-in scorer 'nope'"),
        (ROWS, ["-o", "x=magic:thing"], "unknown scorer kind"),
        (ROWS, ["-o", "x=py:{nan}:f"], "'x' gave nan for row 0"),
    ],
)
def test_score_bad_input_exits_2_with_no_output(tmp_path, rows, extra, message):
    nan_module = tmp_path / "nan_scores.py"
    nan_module.write_text("def f(p, r):\n    return [float('nan')] * len(r)\n")
    data = write_table(tmp_path / "in.jsonl", rows)
    extra = [e.replace("{nan}", str(nan_module)) for e in extra]
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", *(extra or FAST)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "nan_scores.py"] or (
        sorted(p.name for p in tmp_path.iterdir()) == ["__pycache__", "in.jsonl", "nan_scores.py"]
    )


def test_score_unreadable_file(tmp_path):
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{oops\n')
    result = invoke(["score", bad, "--out", tmp_path / "out.jsonl", *FAST])
    assert result.exit_code == 2 and "line 2" in result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_sample_with_tiny_model(tmp_path, tiny_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Name a fruit.\nWhat is rain?\n")
    result = invoke(
        [
            "sample",
            "--model",
            tiny_path,
            "--prompts",
            prompts,
            "--n-per-prompt",
            "2",
            "--max-new-tokens",
            "5",
            "--out",
            tmp_path / "s.jsonl",
        ]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Name a fruit."] * 2 + ["What is rain?"] * 2
    bad = invoke(
        ["sample", "--model", tmp_path / "no-model", "--prompts", prompts, "--out", tmp_path / "x.jsonl"]
    )
    assert bad.exit_code == 2 and "could not be loaded" in bad.output

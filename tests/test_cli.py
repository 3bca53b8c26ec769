import json

import pytest
import typer
from typer.testing import CliRunner

from steerable import RewardSet
from steerable.cli import app
from steerable.data import load_pairs, write_table
from steerable.trust import store_path

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


def test_every_subcommand_has_help(capsys):
    import click

    from steerable.cli import train_app

    commands = sorted(click.Group.list_commands(typer.main.get_command(app), None))
    assert {"generate", "evaluate", "report", "compare", "demo", "score", "sample"} <= set(commands)
    for command in commands:
        result = invoke([command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, command
    # the train subcommands' options are their config dataclass's fields (argparse prints them)
    for method in sorted(c.name for c in train_app.registered_commands):
        result = invoke(["train", method, "--help"])
        shown = result.output + capsys.readouterr().out
        assert result.exit_code == 0 and "--output_dir" in shown and "--seed" in shown, method


def test_model_directories_that_are_not_usable_are_one_line(tmp_path, tiny_path):
    not_a_run = invoke(["generate", "--model", tmp_path, "Hi"])
    assert not_a_run.exit_code == 2 and "not a finished steerable model directory" in not_a_run.output
    (tmp_path / "steerable.json").write_text("{oops")
    corrupt = invoke(["evaluate", "--model", tmp_path, "--out", tmp_path / "e"])
    assert corrupt.exit_code == 2 and "malformed" in corrupt.output


def test_score_writes_scores_and_stats(tmp_path):
    data = write_table(tmp_path / "in.jsonl", ROWS)
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", *FAST])
    assert result.exit_code == 0, result.output
    scored = load_pairs(tmp_path / "out.jsonl")
    assert [r["score_brief"] for r in scored] == [-9, -1, -7]
    assert {"z_brief", "score_positive", "z_positive"} <= set(scored[0])
    stats = RewardSet.load(tmp_path / "out.jsonl.stats.json")
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
        ([{"prompt": "a", "response": ""}], [], "line 1: 'response' is empty"),
        (ROWS, ["-o", "x=builtin:nope"], "unknown built-in scorer 'nope'"),
        (ROWS, ["-o", "x=magic:thing"], "unknown scorer kind"),
        (ROWS, ["-o", "x=py:{nan}:f"], "'x' gave nan for {data}, line 1 (prompt"),
    ],
)
def test_score_bad_input_exits_2_with_no_output(tmp_path, rows, extra, message):
    nan_module = tmp_path / "nan_scores.py"
    nan_module.write_text("def f(p, r):\n    return [float('nan')] * len(r)\n")
    data = write_table(tmp_path / "in.jsonl", rows)
    extra = [e.replace("{nan}", str(nan_module)) for e in extra]
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", *(extra or FAST)])
    assert result.exit_code == 2
    assert message.replace("{data}", str(data)) in "".join(result.output.split("\n")), result.output
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


def test_score_default_stats_path_is_out_with_stats_json_appended(tmp_path):
    data = write_table(tmp_path / "in.jsonl", ROWS)
    for out, rows in (("data.train.jsonl", ROWS), ("data.heldout.jsonl", ROWS[:2])):
        held = write_table(tmp_path / f"{out}.in.jsonl", rows)
        assert invoke(["score", held, "--out", tmp_path / out, *FAST]).exit_code == 0
    assert RewardSet.load(tmp_path / "data.train.jsonl.stats.json")["brief"].stats.count == 3
    assert RewardSet.load(tmp_path / "data.heldout.jsonl.stats.json")["brief"].stats.count == 2
    assert not (tmp_path / "data.stats.json").exists() and data.exists()


def test_score_refuses_to_replace_statistics_fitted_on_other_rows(tmp_path):
    data, fewer = write_table(tmp_path / "in.jsonl", ROWS), write_table(tmp_path / "few.jsonl", ROWS[:2])
    stats = tmp_path / "s.json"
    assert invoke(["score", data, "--out", tmp_path / "a.jsonl", "--stats", stats, *FAST]).exit_code == 0
    before = stats.read_text()
    again = invoke(["score", data, "--out", tmp_path / "a.jsonl", "--stats", stats, *FAST])
    assert again.exit_code == 0, again.output  # the same rows and objectives: the same statistics
    for extra in (FAST, ["-o", "brief=builtin:brevity"]):  # other rows, other objectives
        args = ["score", fewer if extra is FAST else data, "--out", tmp_path / "b.jsonl", "--stats", stats]
        refused = invoke([*args, *extra])
        assert refused.exit_code == 2 and "Traceback" not in refused.output
        assert "fitted on other rows or objectives; pass --force" in " ".join(refused.output.split())
        assert stats.read_text() == before and not (tmp_path / "b.jsonl").exists()
    forced = invoke(["score", fewer, "--out", tmp_path / "b.jsonl", "--stats", stats, "--force", *FAST])
    assert forced.exit_code == 0 and RewardSet.load(stats)["brief"].stats.count == 2


@pytest.mark.parametrize("target", ["in.jsonl", "out.jsonl", "notes.json", "notes.txt"])
def test_score_stats_never_overwrites_the_input_the_output_or_other_files(tmp_path, target):
    data = write_table(tmp_path / "in.jsonl", ROWS)
    (tmp_path / "notes.json").write_text('{"mine": 1}\n')
    (tmp_path / "notes.txt").write_text("my notes\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", "--stats", tmp_path / target, *FAST])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "choose another path" in " ".join(result.output.split())
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_failed_score_leaves_no_statistics(tmp_path):
    data = write_table(tmp_path / "in.jsonl", ROWS)
    (tmp_path / "file").write_text("")
    bad_outs = {tmp_path / "out.xlsx": "unknown format", tmp_path / "file" / "o.jsonl": "cannot write"}
    for out, message in bad_outs.items():
        result = invoke(["score", data, "--out", out, *FAST])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "in.jsonl"]


def test_score_stats_from_runs_code_only_with_trust_remote_code(tmp_path):
    marker = tmp_path / "imported"
    module = tmp_path / "chars_reward.py"
    module.write_text(f"open({str(marker)!r}, 'w').close()\ndef f(p, r):\n    return [len(x) for x in r]\n")
    data = write_table(tmp_path / "in.jsonl", ROWS)
    stats = tmp_path / "s.json"
    fitted = invoke(
        ["score", data, "--out", tmp_path / "a.jsonl", "--stats", stats, "-o", f"c=py:{module}:f"]
    )
    assert fitted.exit_code == 0, fitted.output
    marker.unlink()
    store_path().unlink()  # as on another machine, which never trusted the file
    args = ["score", data, "--out", tmp_path / "b.jsonl", "--stats-from", stats]
    refused = invoke(args)
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "--trust-remote-code" in refused.output and not marker.exists()
    assert not (tmp_path / "b.jsonl").exists()
    trusted = invoke([*args, "--trust-remote-code"])
    assert trusted.exit_code == 0, trusted.output
    assert marker.exists() and [r["score_c"] for r in load_pairs(tmp_path / "b.jsonl")] == [51, 3, 41]


@pytest.mark.parametrize(
    ("spec", "source", "message"),
    [
        ("py:{module}:f", "def f(p, r):\n    raise ValueError('no')\n", "raised ValueError: no"),
        ("py:{module}:f", "def f(p, r):\n    return ['good'] * len(r)\n", "not a number ('good')"),
        ("py:{module}:f", "def f(p, r):\n    return None\n", "returned None, not a list of 3"),
        ("py:{module}:f", "def f(p, r):\n    return 0.5\n", "returned 0.5, not a list of 3"),
        ("py:{module}:f", "def f(p, r)\n", "SyntaxError"),
        ("py:{module}:f", "import not_installed_xyz\n", "No module named 'not_installed_xyz'"),
        ("py:{dir}/missing.py:f", "", "missing.py does not exist"),
        ("hf:{dir}/rm?batch_size=0", "", "batch_size must be a positive integer"),
        ("hf:{dir}/rm?max_length=0", "", "max_length must be a positive integer"),
        ("hf:{dir}", "", "not a Hugging Face model"),
    ],
)
def test_score_scorer_errors_are_one_line(tmp_path, spec, source, message):
    module = tmp_path / "user_reward.py"
    module.write_text(source)
    data = write_table(tmp_path / "in.jsonl", ROWS)
    spec = "x=" + spec.format(module=module, dir=tmp_path)
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", "-o", spec])
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert message in text and ("'x'" in text or spec.startswith("x=hf"))
    assert not (tmp_path / "out.jsonl").exists()


def test_score_one_row_warns_that_every_preference_gives_the_same_tags(tmp_path):
    data = write_table(tmp_path / "in.jsonl", ROWS[:1])
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", *FAST])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning" in text and "std 0" in text and "same tags" in text


def test_local_scorer_paths_are_recorded_absolute(tmp_path, tiny_reward_model, monkeypatch):
    import shutil

    shutil.copytree(tiny_reward_model, tmp_path / "my-rm")
    data = write_table(tmp_path / "in.jsonl", ROWS)
    monkeypatch.chdir(tmp_path)
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", "-o", "rm=hf:./my-rm", *FAST])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "out.jsonl.stats.json").read_text())["objectives"][0]["spec"]
    assert spec["target"] == str(tmp_path / "my-rm")
    monkeypatch.chdir(tmp_path.parent)  # another working directory still finds the model
    again = invoke(
        ["score", data, "--out", tmp_path / "b.jsonl", "--stats-from", tmp_path / "out.jsonl.stats.json"]
    )
    assert again.exit_code == 0, again.output


def test_score_names_the_file_line_of_an_hh_pair_whose_answer_gave_nan(tmp_path):
    """HH pairs are two rows each once read; a bad score names the pair's line in the file."""
    module = tmp_path / "nan_scores.py"
    module.write_text("def f(p, r):\n    return [float('nan') if 'Never' in x else 1.0 for x in r]\n")
    pairs = [
        {"chosen": f"\n\nHuman: Q{i}?\n\nAssistant: Sure.", "rejected": f"\n\nHuman: Q{i}?\n\nAssistant: No."}
        for i in range(3)
    ]
    pairs[1]["rejected"] = pairs[1]["rejected"].replace("No.", "Never.")
    data = write_table(tmp_path / "hh.jsonl", pairs)
    result = invoke(["score", data, "--out", tmp_path / "out.jsonl", "-o", f"x=py:{module}:f"])
    assert result.exit_code == 2
    assert f"'x' gave nan for {data}, line 2 (prompt" in "".join(result.output.split("\n")), result.output


@pytest.mark.parametrize(("host", "shown"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]")])
def test_serve_on_every_address_prints_a_url_a_browser_can_open(host, shown):
    from steerable.cli import start_message

    message = start_message([("ric-smoke", "ric")], host, 8000)
    assert message[:2] == [
        f"serving ric-smoke (ric) at http://{shown}:8000/v1",
        f"playground: http://{shown}:8000/ (open it in a browser)",
    ]
    assert "listening on every address" in message[2] and host in message[2]
    assert len(start_message([], "127.0.0.1", 8000)) == 1  # a named address: no such line


@pytest.mark.parametrize("name", ["soups", "morlhf"])
def test_every_trainer_takes_yes_though_it_has_no_cost_to_ask(name, scored_table, tmp_path, monkeypatch):
    from steerable import methods
    from steerable.methods.base import resolve

    method = methods.get(name)
    assert method.plan is None  # nothing to confirm: --yes is still accepted (scripts pass it to all)
    module, _, attr = method.recipe.partition(":")
    ran = []
    monkeypatch.setattr(resolve(module), attr, lambda config: ran.append(config) or tmp_path / "made")
    stats = scored_table.parent / "stats.json"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["train", name, "--yes", "--stats", str(stats), "--model", "tiny", "--output_dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert len(ran) == 1 and str(tmp_path / "made") in result.output.replace("\n", "")


@pytest.fixture(scope="module")
def served_ric(tiny_ric):
    from steerable.serving.api import ServedModel

    return ServedModel.load(str(tiny_ric[1]), max_batch=2, max_queue=4)


@pytest.mark.parametrize(
    ("options", "steering"),
    [
        (["--prefer", "brief=0.7,positive=0.3"], {"weights": {"brief": 0.7, "positive": 0.3}}),
        (["--prefer", "0.7,0.3", "--mapping", "l2"], {"weights": [0.7, 0.3], "mapping": "l2"}),
        (["--target", "brief=0.5,positive=-0.2"], {"targets": {"brief": 0.5, "positive": -0.2}}),
        ([], {}),
    ],
)
def test_generate_writes_the_steering_the_server_echoes(served_ric, tiny_ric, tmp_path, options, steering):
    out = tmp_path / "answers.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--model",
            str(tiny_ric[1]),
            *options,
            "--max-new-tokens",
            "2",
            "--out",
            str(out),
            "Hi",
            "Yo",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    _, echoed, _ = served_ric.steer([{"role": "user", "content": "Hi"}], steering)
    assert [{k: v for k, v in row.items() if k not in ("prompt", "response")} for row in rows] == [echoed] * 2
    assert all(f"{key}: " in result.output for key in echoed)


def test_help_lists_the_methods_the_registry_holds():
    """A method added to the registry shows up in every help that lists methods, with no
    list written by hand."""
    from steerable import methods

    def help_of(*command):
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        return " ".join(result.output.split())

    evaluate = help_of("evaluate")
    assert all(name in evaluate for name in methods.names())
    for option in ("adapter", "mapping"):
        takes = "/".join(methods.names(lambda m, option=option: option in m.evaluate_options))
        assert f"--{option} <str> {takes}" in evaluate
    compared = methods.names(lambda m: m.compare is not None or not m.own_directory)
    assert "np-dpo" in compared and f"methods: {', '.join(compared)}, or a variant" in help_of("compare")


def test_a_trainer_without_examples_still_ends_its_help_with_one():
    from steerable import methods
    from steerable.cli import EXAMPLES, train_examples
    from steerable.methods.base import Method

    new = Method(name="new", title="New", summary="a new method", steering=("weights",), sweep="m:sweep")
    assert train_examples(new) == ("steerable train new --help",)
    for name in methods.names(lambda m: m.trainable):  # every trainer's, from its record
        assert EXAMPLES[f"train {name}"] == train_examples(methods.get(name))


def test_a_policy_trainers_model_help_does_not_offer_the_reward_model_encoder():
    from steerable import methods

    def model_help(name):
        result = CliRunner().invoke(app, ["train", name, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        text = " ".join(result.output.split())
        return text.split("--model MODEL ")[-1].split(" --")[0]  # the option's line, not the usage

    for name in methods.names(lambda m: m.trainable and m.modality == "text"):
        shown = model_help(name)
        assert "Base policy" in shown and "minilm" not in shown, (name, shown)
    for name in methods.names(lambda m: m.trainable and m.modality == "image"):
        assert "diffusers pipeline" in model_help(name) and "minilm" not in model_help(name)
    for name in ("rm", "moslim-rm"):
        assert "minilm" in model_help(name) and "policy" not in model_help(name)

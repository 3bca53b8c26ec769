"""A quick first run: `--preset smoke` for `train ric` and `demo`, `--version`, runnable
examples in every `--help`, and the playground's URL when `serve` starts."""

import json
import re
from importlib.metadata import version

import pytest
import typer
import yaml
from typer.testing import CliRunner

from steerable.cli import EXAMPLES, app, start_message
from steerable.evaluation.compare import CompareConfig, plan_compare
from steerable.methods.ric.recipe import RiCConfig
from steerable.presets import names, preset_file, preset_note

NOT_QUALITY = "not steering quality"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_train_ric_smoke_runs_every_stage_with_the_presets_values_and_yours(tiny_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset's own output_dir must not be used when one is given
    out = tmp_path / "smoke"
    result = run("train", "ric", "--preset", "smoke", "--model", "tiny", "--output_dir", str(out),
                 "--online_samples", "8")  # fmt: skip
    assert result.exit_code == 0, result.output
    # said when it starts and again when it ends, so the run is not read as a steering result
    assert result.output.count(NOT_QUALITY) == 2, result.output
    said = result.output.strip().splitlines()
    assert said[0].startswith("preset: A smoke run") and said[-1].startswith("preset: A smoke run")
    stages = ["offline", "sft", "online_1_data", "online_1"]
    assert all((out / "stages" / stage / "done.json").is_file() for stage in stages)
    assert not (out / "stages" / "online_2_data").exists() and not (tmp_path / "runs").exists()
    config = json.loads((out / "steerable.json").read_text())["training"]["config"]
    preset = yaml.safe_load(preset_file("ric", "smoke", "steerable train ric").read_text())
    # every preset value applied, except the two given on the command line, which win
    assert {key: config[key] for key in preset} == {**preset, "output_dir": str(out), "online_samples": 8}
    assert config["model"] == "tiny"  # the alias, built by the tiny_path fixture
    offline = json.loads((out / "stages" / "offline" / "done.json").read_text())["inputs"]
    assert offline["prompt_limit"] == preset["prompt_limit"] == 16
    assert offline["max_new_tokens"] == preset["max_new_tokens"] == 24


def test_demo_smoke_evaluates_on_a_few_points_and_its_report_says_what_it_shows(tmp_path):
    out = tmp_path / "demo"
    result = run("demo", "--preset", "smoke", "--model", "tiny", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.count(NOT_QUALITY) == 2, result.output
    report = (out / "report.md").read_text()
    assert report.startswith("> **preset smoke:**") and NOT_QUALITY in report
    for method in ("ric", "prompting"):
        points = json.loads((out / "stages" / f"eval_{method}" / "result.json").read_text())["points"]
        assert len(points) == 3  # resolution 2 with K = 2
    compared = json.loads((out / "compare.json").read_text())
    assert compared["model"] == "tiny" and compared["eval"]["limit"] == 6
    assert (out / "ric" / "stages" / "online_1" / "done.json").is_file()


def test_a_preset_is_a_config_file_whose_header_is_the_command_that_runs_it(tmp_path):
    assert names("ric") == names("demo") == ["smoke"]
    ric_file, demo_file = preset_file("ric", "smoke", "x"), preset_file("demo", "smoke", "x")
    assert ric_file.read_text().startswith("# steerable train ric --preset smoke\n")
    assert demo_file.read_text().startswith("# steerable demo --preset smoke\n")
    for path in (ric_file, demo_file):
        assert NOT_QUALITY in preset_note(path) and "\n" not in preset_note(path)
    ric = yaml.safe_load(ric_file.read_text())
    RiCConfig(**ric)  # every key a field, every value accepted
    demo = CompareConfig.from_yaml(demo_file)
    plan_compare(demo, tmp_path / "demo")  # every section checked, as before a run
    # the demo's RiC is the one `train ric --preset smoke` trains
    assert demo.ric == {key: value for key, value in ric.items() if key != "output_dir"}


def test_a_bad_preset_is_one_error_naming_the_choices(tmp_path):
    for args in (["train", "ric", "--preset", "fast"], ["demo", "--preset", "fast"]):
        result = run(*args, "--model", "tiny")
        assert result.exit_code == 2, result.output
        assert "--preset 'fast' unknown" in result.output and "choose from ['smoke']" in result.output
    result = run("train", "moslim", "--preset", "smoke")
    assert result.exit_code == 2 and "it has none" in result.output, result.output
    config = tmp_path / "mine.yaml"
    config.write_text("num_epochs: 2\n")
    result = run("train", "ric", "--preset", "smoke", "--config", str(config))
    assert result.exit_code == 2 and "give one" in result.output, result.output
    result = run("train", "ric", "--preset")
    assert result.exit_code == 2 and "--preset needs a name" in result.output, result.output


def test_version_prints_the_installed_version():
    result = run("--version")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"steerable {version('steerable')}"


def command_paths(command, path=()):
    """Every command and subcommand of the CLI, as the words typed after `steerable`."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def lines(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines())


@pytest.mark.parametrize("path", list(command_paths(typer.main.get_command(app))), ids=" ".join)
def test_every_help_ends_with_runnable_examples(path):
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    assert any(line.strip().startswith("steerable ") for line in result.output.splitlines())
    for example in EXAMPLES[" ".join(path)]:
        assert lines(example) in lines(result.output), f"{example!r} cut or wrapped in:\n{result.output}"
        # the command it runs, and each of its options, exist
        words = [word for word in example.split()[1:] if not word.startswith("-")][:2]
        target = next(key for key in (" ".join(words), words[0]) if key in EXAMPLES)
        shown = run(*target.split(), "--help").output
        for option in re.findall(r"(?<!\S)--[a-z][a-z0-9_-]*", example):
            assert option in shown, f"{example!r}: {target} has no {option}"


def test_serve_start_message_gives_the_playground_url_it_serves():
    from fastapi.testclient import TestClient

    from steerable.serving.api import create_app

    message = start_message([("ric-smoke", "ric")], "127.0.0.1", 8000)
    assert message == [
        "serving ric-smoke (ric) at http://127.0.0.1:8000/v1",
        "playground: http://127.0.0.1:8000/ (open it in a browser)",
    ]
    assert start_message([], "::1", 8001) == ["playground: http://[::1]:8001/ (open it in a browser)"]
    path = message[-1].split()[1].removeprefix("http://127.0.0.1:8000")
    page = TestClient(create_app([], max_tokens_limit=64)).get(path)
    assert page.status_code == 200 and "<html" in page.text


def test_a_preset_value_that_your_options_replace_is_dropped(tmp_path):
    from steerable.configs import parse_config
    from steerable.presets import with_preset

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n")
    for given in (["--data", str(data)], [f"--data={data}"]):
        args, note = with_preset("ric", ["--preset", "smoke", *given], "steerable train ric")
        config = parse_config(RiCConfig, args, prog="steerable train ric")
        assert config.data == str(data.resolve()) and config.prompt_limit is None
        assert config.max_new_tokens == 24 and NOT_QUALITY in note  # the rest of the preset applies
    # without --data the preset's prompt_limit picks the prompts, and yours still wins
    args, _ = with_preset("ric", ["--preset", "smoke"], "steerable train ric")
    assert parse_config(RiCConfig, args, prog="steerable train ric").prompt_limit == 16
    args, _ = with_preset("ric", ["--preset", "smoke", "--prompt_limit", "4"], "steerable train ric")
    assert parse_config(RiCConfig, args, prog="steerable train ric").prompt_limit == 4

"""A user's own prompt file through every command that reads prompts: sample, train ric (its
offline sampling), train morlhf / moslim, evaluate, compare; generate from a file or stdin."""

import json

import datasets
import pandas as pd
import pytest
from typer.testing import CliRunner

from steerable.cli import app
from steerable.data.prompts import load_prompts, prompt_digests
from steerable.methods.ric.recipe import OFFLINE_INSTRUCTIONS
from steerable.policy import SteerablePolicy

runner = CliRunner()
TRAIN = ["Name a fruit.", "What is rain?", "Describe a cat.", "How do birds fly?"]
HELDOUT = ["Why is the sea salty?", "What is a cloud?"]
OWN = [{"prompt": p, "split": "train"} for p in TRAIN] + [{"prompt": p, "split": "heldout"} for p in HELDOUT]
OBJECTIVES = ["--objectives", "brief=builtin:brevity", "positive=builtin:sentiment"]
TINY_RIC = [
    "--samples_per_prompt", "2", "--max_new_tokens", "8", "--num_epochs", "1", "--batch_size", "4",
    "--lora_r", "4", "--lora_alpha", "8", "--online_iterations", "0",
]  # fmt: skip
TINY_SAMPLING = ["--max-new-tokens", "4", "--batch-size", "8"]


def invoke(args, **kwargs):
    result = runner.invoke(app, [str(a) for a in args], **kwargs)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def own_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("own") / "mine.jsonl", OWN)


@pytest.fixture(scope="module")
def own_ric(own_file, tiny_path, tmp_path_factory):
    """A RiC model trained through the CLI on the train split of the user's file."""
    out = tmp_path_factory.mktemp("own_ric") / "ric"
    args = ["train", "ric", "--model", tiny_path, "--prompts", own_file, *OBJECTIVES, *TINY_RIC]
    result = invoke([*args, "--output_dir", out])
    assert result.exit_code == 0, result.output
    return out


def test_a_prompt_file_in_every_format_gives_its_prompts_by_split(tmp_path):
    frame = pd.DataFrame(OWN)
    files = [
        write_jsonl(tmp_path / "p.jsonl", OWN),
        tmp_path / "p.csv",
        tmp_path / "p.parquet",
        tmp_path / "ds",
    ]
    frame.to_csv(files[1], index=False)
    frame.to_parquet(files[2])
    datasets.Dataset.from_pandas(frame).save_to_disk(str(files[3]))
    for path in files:
        assert load_prompts("train", path=path) == TRAIN, path
        assert load_prompts("heldout", path=path) == HELDOUT, path
        assert load_prompts("all", 3, path) == TRAIN[:3], path
    # without a split column every prompt is the user's, whatever split is asked for
    plain = tmp_path / "plain.txt"
    plain.write_text("Name a fruit.\n\n  What is rain?  \n")
    assert load_prompts("heldout", path=plain) == load_prompts("train", path=plain) == TRAIN[:2]
    no_split = write_jsonl(tmp_path / "no_split.jsonl", [{"prompt": p} for p in HELDOUT])
    assert load_prompts("train", path=no_split) == HELDOUT


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"prompt": "Hi"}, {"prompt": "   "}], "line 2: 'prompt' is empty"),
        ([{"prompt": "Hi"}, {"prompt": 42}], "line 2: 'prompt' is empty or not text (42)"),
        ([{"prompt": "Hi", "split": "train"}, {"prompt": "Yo", "split": "test"}], "line 2: split 'test'"),
        ([{"text": "Hi"}], "missing column 'prompt'"),
        (
            [{"prompt": "Hi there", "split": "train"}, {"prompt": " hi  THERE", "split": "heldout"}],
            "1 heldout row(s) repeat a train prompt, the first at line 2",
        ),
    ],
)
def test_bad_prompt_files_are_refused_naming_the_row(tmp_path, tiny_path, rows, expected):
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    for command in (
        ["sample", "--model", tiny_path, "--prompts", bad, "--out", tmp_path / "s.jsonl"],
        ["evaluate", "--model", tmp_path, "--prompts", bad, "--out", tmp_path / "e"],
        ["train", "ric", "--model", tiny_path, "--prompts", bad, "--output_dir", tmp_path / "r"],
        ["demo", "--model", tiny_path, "--prompts", bad, "--out", tmp_path / "d", "--yes"],
    ):
        result = invoke(command)
        assert result.exit_code == 2, (command, result.output)
        assert expected in " ".join(result.output.split()), (command, result.output)
    for run in ("r", "d"):  # refused before any stage ran
        assert not (tmp_path / run / "stages").exists() and not (tmp_path / run / "ric").exists()


def test_sample_answers_the_files_prompts_of_the_split(tmp_path, tiny_path, own_file):
    out = tmp_path / "s.jsonl"
    result = invoke(
        [
            "sample",
            "--model",
            tiny_path,
            "--prompts",
            own_file,
            "--split",
            "heldout",
            *TINY_SAMPLING,
            "--out",
            out,
        ]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == HELDOUT


def test_sample_on_a_steerable_model_directory_names_the_generate_command(tmp_path, own_ric, own_file):
    result = invoke(["sample", "--model", own_ric, "--prompts", own_file, "--out", tmp_path / "s.jsonl"])
    assert result.exit_code == 2
    assert f"steerable generate --model {own_ric} --prompts {own_file} --out" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "s.jsonl").exists()


def test_ric_samples_the_files_train_prompts_under_the_spreading_instructions(own_ric, own_file):
    rows = [json.loads(line) for line in (own_ric / "stages/offline/scored.jsonl").read_text().splitlines()]
    assert {r["prompt"] for r in rows} == set(TRAIN)  # never a held-out prompt
    assert {r["instruction"] for r in rows} <= set(OFFLINE_INSTRUCTIONS)
    assert len({r["instruction"] for r in rows}) > 1  # the instructions cycle over the samples
    done = json.loads((own_ric / "stages/offline/done.json").read_text())
    from steerable.stages import file_digest

    assert done["inputs"]["prompts"] == file_digest(own_file)  # the file by content
    manifest = json.loads((own_ric / "steerable.json").read_text())
    assert manifest["training"]["prompt_digests"] == prompt_digests(TRAIN)


def test_ric_refuses_a_changed_prompt_file_and_a_file_whose_splits_share_a_prompt(
    tmp_path, tiny_path, own_ric
):
    import shutil

    out = tmp_path / "ric"
    shutil.copytree(own_ric, out)
    edited = write_jsonl(tmp_path / "mine.jsonl", [*OWN, {"prompt": "One more?", "split": "train"}])
    args = [
        "train",
        "ric",
        "--model",
        tiny_path,
        "--prompts",
        edited,
        *OBJECTIVES,
        *TINY_RIC,
        "--output_dir",
        out,
    ]
    result = invoke(args)
    assert result.exit_code == 2 and "prompts differ" in " ".join(result.output.split()), result.output
    shared = write_jsonl(tmp_path / "shared.jsonl", [*OWN, {"prompt": TRAIN[0], "split": "heldout"}])
    result = invoke(
        ["train", "ric", "--model", tiny_path, "--prompts", shared, "--output_dir", tmp_path / "o"]
    )
    assert result.exit_code == 2 and "repeat a train prompt" in result.output


def test_evaluate_uses_the_files_heldout_prompts_and_refuses_its_training_prompts(
    tmp_path, own_ric, own_file
):
    out = tmp_path / "eval"
    args = ["evaluate", "--model", own_ric, "--prompts", own_file, "--resolution", "1", *TINY_SAMPLING]
    result = invoke([*args, "--out", out])
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "result.json").read_text())
    assert recorded["num_prompts"] == len(HELDOUT) and recorded["prompt_split"] == "heldout of mine.jsonl"
    from steerable.evaluation.report import prompts_digest

    assert recorded["prompts_sha256"] == prompts_digest(HELDOUT)
    seen = invoke([*args, "--split", "train", "--out", tmp_path / "seen"])
    assert seen.exit_code == 2
    assert (
        f"4 of the held-out prompts were among {own_ric}'s training prompts, the first 'Name a fruit.'"
        in (" ".join(seen.output.split()))
    )
    # a file without a split column: its prompts are the user's, so the ones trained on are refused
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": HELDOUT[0]}, {"prompt": "  describe A cat."}])
    result = invoke([*args[:3], "--prompts", mixed, "--out", tmp_path / "mixed"])
    assert result.exit_code == 2 and "1 of the held-out prompts" in result.output


def test_generate_reads_stdin_and_writes_a_row_per_prompt_with_its_steering(tmp_path, own_ric, own_file):
    out = tmp_path / "g.jsonl"
    args = ["generate", "--model", own_ric, "--prefer", "brief=1", "--max-new-tokens", "4"]
    result = invoke([*args, "--prompts", "-", "--out", out], input="Name a fruit.\n\nWhat is rain?\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == TRAIN[:2]
    assert all(isinstance(r["response"], str) for r in rows)
    policy = SteerablePolicy.from_pretrained(own_ric)
    assert rows[0]["targets"] == pytest.approx(policy.steering_for(preference="brief=1"))
    jsonl = "".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(HELDOUT))
    result = invoke([*args, "--prompts", "-", "--out", out], input=jsonl)
    assert (
        result.exit_code == 0 and [json.loads(x)["prompt"] for x in out.read_text().splitlines()] == HELDOUT
    )
    bad = invoke([*args, "--prompts", "-"], input=jsonl + '{"prompt": ""}\n')
    assert bad.exit_code == 2 and "stdin, line 3: 'prompt' is empty" in bad.output
    result = invoke([*args, "--prompts", own_file, "--out", out])  # a file: every row, whatever its split
    assert result.exit_code == 0 and len(out.read_text().splitlines()) == len(OWN)
    both = invoke([*args, "--prompts", own_file, "Hi"])
    assert both.exit_code == 2 and "not both" in both.output


def test_policy_generate_takes_the_sampling_options_as_keywords(own_ric):
    from steerable.errors import SteerableError
    from steerable.generation import SamplingConfig

    policy = SteerablePolicy.from_pretrained(own_ric)
    by_keywords = policy.generate(
        ["Name a fruit."], preference=[1, 0], max_new_tokens=3, temperature=0, seed=1
    )
    given = SamplingConfig(max_new_tokens=3, temperature=0, seed=1)
    assert by_keywords == policy.generate(["Name a fruit."], preference=[1, 0], sampling=given)
    assert len(policy.tokenizer(by_keywords[0], add_special_tokens=False).input_ids) <= 3
    with pytest.raises(SteerableError, match=r"not both"):
        policy.generate(["Hi"], sampling=given, max_new_tokens=3)


def test_morlhf_trains_on_the_files_prompts_and_records_them(tmp_path, tiny_path, own_ric, own_file):
    out = tmp_path / "morlhf"
    args = ["train", "morlhf", "--model", tiny_path, "--stats", own_ric, "--prompts", own_file]
    args += ["--weight_vectors", "0.5,0.5", "--max_steps", "1", "--batch_size", "4", "--num_generations", "2"]
    args += ["--max_completion_length", "4", "--lora_r", "4", "--lora_alpha", "8"]
    result = invoke([*args, "--output_dir", out])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "steerable.json").read_text())
    assert manifest["training"]["prompt_digests"] == prompt_digests(TRAIN)
    from steerable.stages import file_digest

    done = json.loads((out / "stages/policy_0/done.json").read_text())
    assert done["inputs"]["prompts"] == file_digest(own_file)


def test_moslim_trains_on_the_files_prompts(tiny_path, own_ric, own_file):
    from steerable.defaults import load_tokenizer
    from steerable.methods.moslim.recipe import MOSLIMConfig, training_rows

    config = MOSLIMConfig(
        model=tiny_path,
        stats=str(own_ric),
        reward="zscore",
        prompts=str(own_file),
        max_steps=2,
        batch_size=8,
        num_generations=2,
    )
    rows = training_rows(config, ["brief", "positive"], 5, load_tokenizer(tiny_path))
    assert [r["question"] for r in rows] == TRAIN * 2  # 4 prompts a step, in turn


def test_compare_trains_and_evaluates_on_the_files_splits(tmp_path, tiny_path, own_file):
    config = tmp_path / "compare.yaml"
    import yaml

    ric = dict(samples_per_prompt=2, max_new_tokens=8, num_epochs=1, batch_size=4, lora_r=4, lora_alpha=8)
    ric |= dict(online_iterations=0, objectives=["brief=builtin:brevity", "positive=builtin:sentiment"])
    settings = dict(model=tiny_path, methods=["ric", "prompting"], prompts=str(own_file), ric=ric)
    config.write_text(yaml.safe_dump({**settings, "eval": {"resolution": 1, "max_new_tokens": 4}}))
    out = tmp_path / "cmp"
    result = invoke(["compare", "--config", config, "--out", out])
    assert result.exit_code == 0, result.output
    scored = (out / "ric/stages/offline/scored.jsonl").read_text().splitlines()
    assert {json.loads(line)["prompt"] for line in scored} == set(TRAIN)
    for method in ("ric", "prompting"):
        recorded = json.loads((out / f"stages/eval_{method}/result.json").read_text())
        assert (recorded["num_prompts"], recorded["prompt_split"]) == (len(HELDOUT), "heldout of mine.jsonl")


def test_demo_on_a_prompt_file_without_a_split_is_refused_before_anything_trains(tmp_path):
    prompts = tmp_path / "mine.txt"
    prompts.write_text("".join(f"{p}\n" for p in TRAIN))
    out = tmp_path / "demo"
    result = invoke(
        ["demo", "--preset", "smoke", "--model", "tiny", "--prompts", prompts, "--out", out, "--yes"]
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"{len(TRAIN)} of the evaluation prompts" in said and "add a split column" in said, said
    assert not (out / "ric").exists()

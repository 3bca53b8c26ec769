"""Every option is checked before any work starts: a bad value, or an option that does nothing
in the mode asked for, is exit status 2 and one line naming the option, with no traceback and
nothing written, whichever command and however the value was given (flag or YAML)."""

import pytest
import torch
from typer.testing import CliRunner

from steerable.cli import app
from steerable.configs import parse_config
from steerable.data import write_table
from steerable.objectives import RewardSet

runner = CliRunner()
OBJECTIVES = "brief=builtin:brevity positive=builtin:sentiment"
TOPICS = ["rain", "cats", "sleep", "music", "tea", "trains", "snow", "maths"]
TOPICS += ["gardens", "bread", "rivers", "chess"]
ANSWERS = {  # three answers a prompt that differ in length and in mood
    f"What do you think of {topic}?": [
        f"{topic.capitalize()}.",
        f"{topic.capitalize()} is wonderful, lovely and great fun!",
        f"{topic.capitalize()} is sad, terrible and bad; it hurts everyone and ruins the day.",
    ]
    for topic in TOPICS
}

# A valid command per trainer, small enough to run in seconds; a case adds the bad option last.
TRAIN = {
    "ric": f"--model {{tiny}} --objectives {OBJECTIVES} --prompt_limit 4 --max_new_tokens 8 "
    "--stop_after offline",
    "rm": "--model {tiny} --data {pairs}",
    "moslim": "--model {tiny} --stats {stats} --reward zscore --max_steps 1",
    "morlhf": "--model {tiny} --stats {stats} --max_steps 1",
    "soups": "--model {tiny} --stats {stats} --max_steps 1",
    "moslim-rm": "--model {tiny} --data {scored} --num_epochs 1",
    "np-rm": "--steps 2 --eval_every 1 --eval_tasks 2 --validation_tasks 4",
    "np-dpo": "--model {tiny} --data {scored} --stats {stats} --max_steps 1 --eval_tasks 1 --eval_prompts 1 "
    "--targets 2 --max_context 1 --lm_targets 1 --eval_context_size 1 --eval_contexts 1 --no_conflicting",
}
TRAIN_CASES = [
    ("ric", "--batch_size 0", "--batch_size must be >= 1, got 0"),
    ("ric", "--learning_rate -1", "--learning_rate must be > 0, got -1.0"),
    ("ric", "--lora_r 0", "--lora_r must be >= 1, got 0"),
    ("ric", "--max_length 0", "--max_length must be >= 1, got 0"),
    ("ric", "--lr_scheduler bogus", "--lr_scheduler/--lr-scheduler: invalid choice: 'bogus'"),
    ("ric", "--prompt_limit -3", "--prompt_limit must be >= 1, got -3"),
    ("ric", "--num_epochs 0", "--num_epochs must be > 0, got 0.0"),
    ("ric", "--online_iterations -1", "--online_iterations must be >= 0, got -1"),
    ("ric", "--lora_dropout 1.5", "--lora_dropout must be in [0, 1), got 1.5"),
    ("ric", "--data {scored}", "--prompt_limit is read without --data only"),
    ("ric", "--seed -1", "--seed must be in [0, 4294967295], got -1"),
    ("moslim-rm", "--seed 4294967296", "--seed must be in [0, 4294967295], got 4294967296"),
    ("rm", "--learning_rate nan", "--learning_rate must be a finite number, got nan"),
    ("rm", "--num_epochs inf", "--num_epochs must be a finite number, got inf"),
    ("rm", "--batch_size 0", "--batch_size must be >= 1, got 0"),
    ("moslim", "--lora_r 0", "--lora_r must be >= 1, got 0"),
    ("moslim", "--temperature -1", "--temperature must be > 0, got -1.0"),
    ("moslim", "--lora_dropout 1.5", "--lora_dropout must be in [0, 1), got 1.5"),
    ("moslim", "--dpo_beta inf", "--dpo_beta must be a finite number, got inf"),
    ("morlhf", "--batch_size 0", "--batch_size must be >= 1, got 0"),
    ("morlhf", "--learning_rate -1", "--learning_rate must be > 0, got -1.0"),
    ("morlhf", "--temperature -1", "--temperature must be > 0, got -1.0"),
    ("morlhf", "--beta nan", "--beta must be a finite number, got nan"),
    ("soups", "--lora_dropout 1.5", "--lora_dropout must be in [0, 1), got 1.5"),
    ("soups", "--prompt_limit -3", "--prompt_limit must be >= 1, got -3"),
    ("moslim-rm", "--learning_rate 0", "--learning_rate must be > 0, got 0.0"),
    ("moslim-rm", "--pooling cls", "--pooling cls reads the first token"),
    ("moslim-rm", "--max_length 100000", "max_length 100000 is longer than the backbone"),
    ("moslim-rm", "--model {scored}", "could not be loaded"),
    ("np-rm", "--validation_tasks 0", "--validation_tasks must be >= 1, got 0"),
    ("np-rm", "--dirichlet_alpha -1", "--dirichlet_alpha must be > 0, got -1.0"),
    ("np-rm", "--learning_rate 0", "--learning_rate must be > 0, got 0.0"),
    ("np-rm", "--data {scored}", "--data is read by --task scored only"),
    ("np-rm", "--task scored --data {scored} --targets 4 --max_context 2 --objectives brief brief", "twice"),
    ("np-dpo", "--temperature -1", "--temperature must be >= 0, got -1.0"),
    ("np-dpo", "--beta nan", "--beta must be a finite number, got nan"),
]

# Other commands: (command line, what the one line says); {out} is where nothing may appear.
COMMAND_CASES = [
    ("sample --model {tiny} --out {out}/s.jsonl --limit -1", "--limit must be >= 1, got -1"),
    (
        "sample --model {tiny} --out {out}/s.jsonl --limit 2 --temperature inf",
        "--temperature must be a finite number, got inf",
    ),
    (
        "evaluate --method prompting --model {tiny} --stats {stats} --out {out} --limit -1 --resolution 1",
        "--limit must be >= 1, got -1",
    ),
    ("compare --config {compare_limit} --out {out}", "config eval: --limit must be >= 1, got -1"),
    ("prepare --model bogus", "--model 'bogus' unknown; choose from ['smollm2', 'tiny']"),
    ("score {scored} --out {out}/x.jsonl --config {no_objectives}", "'objectives:' list is empty"),
    (
        "score {scored} --out {out}/x.jsonl -o a=builtin:brevity -o b=builtin:brevity",
        "objectives a and b are the same scorer",
    ),
    ("score {scored} --out {out}/x.jsonl -o h=hf:{rm}?device=banana", "device 'banana' is not a device"),
    (
        "score {scored} --out {out}/x.jsonl -o h=hf:{rm}?device={missing_gpu}",
        "CUDA device(s); give device=cpu or leave device out",
    ),
    ("score {scored} --out {out}/x.jsonl -o h=hf:{rm_no_template}?input=chat", "input=chat"),
    ("score {scored} --out {out}/x.jsonl -o h=hf:{rm}?max_length=100000", "max_length 100000"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_path, tiny_reward_model) -> dict:
    """The valid files the command lines read: scored answers and their statistics, pairs, a
    reward model without a chat template, and YAML configs."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("inputs")
    rows = [{"prompt": p, "response": r} for p, answers in ANSWERS.items() for r in answers]
    rewards = RewardSet.from_specs(OBJECTIVES.split())
    rewards.annotate(rows, fit=True)
    write_table(folder / "scored.jsonl", rows)
    rewards.save(folder / "stats.json")
    pairs = [{"prompt": p, "chosen": a[1], "rejected": a[0]} for p, a in ANSWERS.items()]
    write_table(folder / "pairs.jsonl", pairs)
    no_template = folder / "rm_no_template"
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(no_template)
    AutoModelForSequenceClassification.from_pretrained(tiny_reward_model).save_pretrained(no_template)
    (folder / "compare.yaml").write_text(
        "methods: [prompting]\n"
        f"model: {tiny_path}\nstats: {folder / 'stats.json'}\n"
        "eval: {limit: -1, resolution: 1, max_new_tokens: 2}\n"
    )
    (folder / "no_objectives.yaml").write_text("objectives: []\n")
    return {
        "tiny": tiny_path,
        "rm": tiny_reward_model,
        "rm_no_template": str(no_template),
        "scored": str(folder / "scored.jsonl"),
        "stats": str(folder / "stats.json"),
        "pairs": str(folder / "pairs.jsonl"),
        "compare_limit": str(folder / "compare.yaml"),
        "no_objectives": str(folder / "no_objectives.yaml"),
        "missing_gpu": f"cuda:{torch.cuda.device_count()}",  # an index no machine here has
    }


def assert_refused(args: list[str], message: str, out) -> None:
    result = runner.invoke(app, args)
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not out.exists(), f"{out} was written: {sorted(p.name for p in out.rglob('*'))}"


@pytest.mark.parametrize(("method", "bad", "message"), TRAIN_CASES)
def test_a_bad_training_option_is_refused_before_any_work(tmp_path, inputs, method, bad, message):
    out = tmp_path / "out"
    line = f"{TRAIN[method]} --output_dir {out} {bad}"
    assert_refused(["train", method, *[a.format(**inputs) for a in line.split()]], message, out)


@pytest.mark.parametrize(
    ("method", "yaml", "message"),
    [
        ("ric", "lr_scheduler: bogus", "--lr_scheduler 'bogus' unknown; choose from"),
        ("ric", "tag_placement: middle", "--tag_placement 'middle' unknown; choose from"),
        ("rm", "learning_rate: .nan", "--learning_rate must be a finite number, got nan"),
        ("morlhf", "lora_r: 0", "--lora_r must be >= 1, got 0"),
    ],
)
def test_a_bad_value_from_a_yaml_config_is_refused_as_a_flag_is(tmp_path, inputs, method, yaml, message):
    out = tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(yaml + "\n")
    line = f"{TRAIN[method]} --output_dir {out} --config {config}"
    assert_refused(["train", method, *[a.format(**inputs) for a in line.split()]], message, out)


@pytest.mark.parametrize(("line", "message"), COMMAND_CASES)
def test_a_bad_option_of_another_command_is_refused_before_any_work(tmp_path, inputs, line, message):
    out = tmp_path / "out"
    assert_refused([a.format(out=out, **inputs) for a in line.split()], message, out)


def test_moslim_dpo_batches_are_not_held_to_grpo_groups(inputs):
    from steerable.methods.moslim.recipe import MOSLIMConfig

    args = "--stats {stats} --reward zscore --algorithm dpo --pool {scored} --batch_size 6"
    config = parse_config(MOSLIMConfig, [a.format(**inputs) for a in args.split()], prog="moslim")
    assert config.batch_size == 6 and config.num_generations == 4  # GRPO's group is not used by DPO


def test_help_shows_each_options_range(capsys):
    result = runner.invoke(app, ["train", "ric", "--help"])
    shown = " ".join((result.output + capsys.readouterr().out).split())
    assert result.exit_code == 0
    assert "LoRA dropout. (in [0, 1))" in shown and "Training batch size. (>= 1)" in shown

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steerable import SteerableError
from steerable.cli import app
from steerable.conditioning import TagFormat, parse_tags
from steerable.data import read_table
from steerable.data.text import first_clause, sentence_cuts
from steerable.methods.ric.recipe import (
    OFFLINE_INSTRUCTIONS,
    RiCConfig,
    instructed_messages,
    mors_keep,
    sample_targets,
    sft_example,
    train_ric,
)
from steerable.policy import SteerablePolicy

LO, HI = np.array([-1.0, -2.0, 0.0]), np.array([1.0, 2.0, 3.0])


def test_reference_targets_put_all_but_one_objective_at_hi():
    targets = sample_targets(200, LO, HI, "reference", np.random.default_rng(0))
    at_hi = np.isclose(targets, HI[None, :])
    assert targets.shape == (200, 3)
    assert (at_hi.sum(axis=1) >= 2).all()
    assert ((targets >= LO) & (targets <= HI)).all()
    free = np.argmin(at_hi, axis=1)[at_hi.sum(axis=1) == 2]
    assert set(free.tolist()) == {0, 1, 2}  # every objective gets its turn


def test_simplex_targets_stay_in_range_and_vary():
    targets = sample_targets(100, LO, HI, "simplex", np.random.default_rng(1))
    assert ((targets >= LO - 1e-9) & (targets <= HI + 1e-9)).all()
    assert targets.std(axis=0).min() > 0.1


def test_mors_keeps_rows_where_any_objective_reaches_its_quantile():
    z = np.array([[0.0, 0.0], [1.0, -3.0], [-3.0, 0.5], [0.69, 0.49]])
    assert mors_keep(z, np.array([0.7, 0.5])).tolist() == [False, True, True, False]


def test_sft_example_carries_the_obtained_scores_as_tags():
    from steerable.conditioning import TagFormat

    example = sft_example("Hi?", "Hello!", {"brief": 1.26, "relevant": -0.31}, TagFormat())
    assert example["completion"] == [{"role": "assistant", "content": "Hello!"}]
    (user,) = example["prompt"]  # by default the tags end the user turn
    assert user["role"] == "user" and user["content"].startswith("Hi?\n\n")
    assert parse_tags(user["content"]) == {"brief": 1.3, "relevant": -0.3}
    system, user = sft_example("Hi?", "Hello!", {"brief": 1.26}, TagFormat("system"))["prompt"]
    assert parse_tags(system["content"]) == {"brief": 1.3}
    assert user == {"role": "user", "content": "Hi?"}


def test_sentence_cuts_keep_whole_sentences_and_span_lengths():
    text = "Sure! Here are tips:\n\n1. Drink water. It helps a lot.\n2. Sleep well! Then you feel"
    whole = [
        "Sure!",
        "Sure! Here are tips:\n\n1. Drink water.",
        "Sure! Here are tips:\n\n1. Drink water. It helps a lot.",
        "Sure! Here are tips:\n\n1. Drink water. It helps a lot.\n2. Sleep well!",
    ]
    rng = np.random.default_rng(0)
    # Every whole sentence is a possible end; the cut-off fragment "Then you feel" never
    # survives, and a list number ("1.") is not a sentence end.
    assert {cut for _ in range(200) for cut in sentence_cuts(text, 1, rng)} == set(whole)
    two = sentence_cuts(text, 2, rng)
    assert len(two) == 2 and len(two[0]) < len(two[1]) and set(two) <= set(whole)
    assert sentence_cuts(text, 9, rng) == whole
    assert sentence_cuts("  no sentence end here ", 3, rng) == ["no sentence end here"]
    assert sentence_cuts("Complete.", 3, rng) == ["Complete."]


@pytest.mark.parametrize(
    "abbreviation", ["Dr.", "Mr.", "Mrs.", "Ms.", "e.g.", "i.e.", "etc.", "St.", "vs.", "E.g."]
)
def test_sentence_cuts_do_not_stop_at_an_abbreviation(abbreviation):
    text = f"Ask {abbreviation} Smith about it. She knows."
    cuts = sentence_cuts(text, 9, np.random.default_rng(0))
    assert cuts == [f"Ask {abbreviation} Smith about it.", text]
    # a response cut off by the token limit right after an abbreviation is not a whole sentence
    assert sentence_cuts(f"Fine. Ask {abbreviation}", 9, np.random.default_rng(0)) == ["Fine."]
    assert first_clause(f"Well, ask {abbreviation} Smith. Then more.") == "Well."


def test_first_clause_closes_the_first_sentence_early_with_its_own_mark():
    assert first_clause("Sure, here it is! More text.") == "Sure!"
    assert first_clause("What, you ask? Yes.") == "What?"
    assert first_clause("I love it: truly. Then, more.") == "I love it."
    assert first_clause("Well - maybe not.") == "Well."
    # one clause only, or a first sentence cut off by the token limit: nothing shorter to offer
    assert first_clause("No clause here. Then, yes.") is None
    assert first_clause("Cut off, by the") is None


def test_clause_cuts_add_an_answer_shorter_than_a_sentence():
    text = "Sure, happy to help. Drink water. Sleep well."
    rng = np.random.default_rng(0)
    everything = sentence_cuts(text, 9, rng, clause=True)
    assert everything == ["Sure.", "Sure, happy to help.", "Sure, happy to help. Drink water.", text]
    assert sentence_cuts(text, 9, rng) == everything[1:]
    drawn = [sentence_cuts(text, 2, rng, clause=True) for _ in range(200)]
    assert all(len(d) == 2 and len(d[0]) < len(d[1]) and set(d) <= set(everything) for d in drawn)
    assert {cut for d in drawn for cut in d} == set(everything)


def test_config_validation():
    with pytest.raises(SteerableError, match="at least two objectives"):
        RiCConfig(objectives=["builtin:brevity"])
    with pytest.raises(SteerableError, match="cuts_per_sample"):
        RiCConfig(cuts_per_sample=-1)
    with pytest.raises(SteerableError, match="online_scheme"):
        RiCConfig(online_scheme="grid")
    with pytest.raises(SteerableError, match="placement"):
        RiCConfig(tag_placement="footer")
    with pytest.raises(SteerableError, match="placement"):
        RiCConfig(offline_instruction_placement="footer")


def test_offline_instructions_go_where_the_placement_says():
    joy = OFFLINE_INSTRUCTIONS[0]
    assert instructed_messages("Why is the sky blue?", joy, TagFormat("user_end")) == [
        {"role": "user", "content": f"Why is the sky blue?\n\n{joy}"}
    ]
    assert instructed_messages("Why?", joy, TagFormat("system")) == [
        {"role": "system", "content": joy},
        {"role": "user", "content": "Why?"},
    ]
    assert instructed_messages("Why?", "", TagFormat("user_end")) == [{"role": "user", "content": "Why?"}]


def test_end_to_end_on_tiny_writes_a_self_describing_directory(tiny_ric):
    config, out = tiny_ric
    manifest = json.loads((out / "steerable.json").read_text())
    assert manifest["method"] == "ric"
    assert [o["name"] for o in manifest["rewards"]["objectives"]] == ["brief", "positive"]
    assert all(o["stats"]["std"] >= 0 for o in manifest["rewards"]["objectives"])
    assert manifest["tags"] == {"placement": "user_end", "decimals": 1}
    assert manifest["training"]["compute"]["trained_tokens"] > 0
    # offline samples of one prompt alternate between the tone instructions
    offline = [json.loads(x) for x in (out / "stages/offline/scored.jsonl").read_text().splitlines()]
    assert {row["instruction"] for row in offline} == set(OFFLINE_INSTRUCTIONS)
    # each online iteration's generated data is saved, relabelled with obtained scores, and
    # so is the training set merged from it
    generated = read_table(out / "stages/online_1_data/generated.jsonl")
    assert len(generated) == 8
    assert {"target_brief", "score_brief", "z_brief", "kept"} <= set(generated[0])
    assert all(g["score_brief"] == -len(g["response"].split()) for g in generated)
    info = json.loads((out / "stages/online_1_data/done.json").read_text())["info"]
    assert info["kept"] == sum(g["kept"] for g in generated) and info["generated"] == 8
    merged = read_table(out / "stages/online_1_data/merged.jsonl")
    assert len(merged) == info["kept"] + info["merged_original"]
    assert manifest["dtype"] == "float32" and set(manifest["training"]["stages"]) == {
        "offline",
        "sft",
        "online_1_data",
        "online_1",
    }


def test_training_changes_the_weights_of_every_stage(tiny_ric):
    from safetensors.torch import load_file

    _, out = tiny_ric
    sft = load_file(out / "stages/sft/weights/adapter_model.safetensors")
    online = load_file(out / "stages/online_1/weights/adapter_model.safetensors")
    # LoRA starts with B = 0: a trained adapter has B != 0, and the online round moved it again
    assert all(t.abs().sum() > 0 for k, t in sft.items() if "lora_B" in k)
    assert any(not torch.equal(sft[k], online[k]) for k in sft)


def test_policy_round_trip_and_steering(tiny_ric):
    _, out = tiny_ric
    policy = SteerablePolicy.from_pretrained(out, device="cpu")
    assert policy.names == ["brief", "positive"]
    lo, hi = policy.target_range()
    only_brief = policy.targets_for({"brief": 1.0})
    assert only_brief == pytest.approx({"brief": hi[0], "positive": lo[1]})
    balanced = policy.targets_for("0.5,0.5")
    assert balanced == pytest.approx({"brief": hi[0], "positive": hi[1]})  # linf: min(K w, 1) = 1
    texts = policy.prompts_with_tags(["Hi"], only_brief)
    assert parse_tags(texts[0]) == pytest.approx({k: round(v, 1) for k, v in only_brief.items()}, abs=0.051)
    from steerable.generation import SamplingConfig

    greedy = SamplingConfig(max_new_tokens=4, temperature=0)
    out_a = policy.generate(["Hi", "Name a tree"], preference={"brief": 1}, sampling=greedy)
    assert len(out_a) == 2
    assert out_a == policy.generate(["Hi", "Name a tree"], targets=only_brief, sampling=greedy)


def test_merged_policy_generates_like_the_adapter_and_refuses_to_save_as_one(tiny_ric, tmp_path):
    from steerable.generation import SamplingConfig

    _, out = tiny_ric
    merged = SteerablePolicy.from_pretrained(out, device="cpu")
    unmerged = SteerablePolicy.from_pretrained(out, device="cpu", merge=False)
    greedy = SamplingConfig(max_new_tokens=6, temperature=0)
    prompts = ["Hi", "Name a tree", "Why is the sea salty?"]
    assert merged.generate(prompts, preference=[0.3, 0.7], sampling=greedy) == unmerged.generate(
        prompts, preference=[0.3, 0.7], sampling=greedy
    )
    with pytest.raises(SteerableError, match="merge=False"):
        merged.save_pretrained(tmp_path / "copy")
    assert not (tmp_path / "copy").exists()
    unmerged.save_pretrained(tmp_path / "copy")
    assert SteerablePolicy.from_pretrained(tmp_path / "copy", device="cpu").names == ["brief", "positive"]


def test_policy_bad_inputs(tiny_ric, tmp_path):
    _, out = tiny_ric
    policy = SteerablePolicy.from_pretrained(out, device="cpu")
    with pytest.raises(SteerableError, match="unknown objective"):
        policy.generate(["Hi"], preference={"helpful": 1})
    with pytest.raises(SteerableError, match="2 objectives"):
        policy.generate(["Hi"], preference=[0.2, 0.3, 0.5])
    with pytest.raises(SteerableError, match="negative"):
        policy.generate(["Hi"], preference=[-1, 2])
    with pytest.raises(SteerableError, match="missing"):
        policy.generate(["Hi"], targets={"brief": 0.0})
    with pytest.raises(SteerableError, match="no prompts"):
        policy.generate([], preference=[1, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clipped = policy.check_targets({"brief": 99.0, "positive": 0.0})
    assert "outside the trained range" in str(caught[0].message)
    assert clipped["brief"] < 99
    with pytest.raises(SteerableError, match="no steerable.json"):
        SteerablePolicy.from_pretrained(tmp_path)
    with pytest.raises(SteerableError, match="adapter .*none does not exist"):
        SteerablePolicy.from_pretrained(out, adapter=tmp_path / "none")


def test_rerun_skips_finished_stages(tiny_ric):
    config, out = tiny_ric
    before = (out / "stages/sft/done.json").stat().st_mtime
    recorded = json.loads((out / "steerable.json").read_text())["training"]["compute"]
    train_ric(config)  # everything is done: nothing retrains
    assert (out / "stages/sft/done.json").stat().st_mtime == before
    # The compute record keeps the stages' first measured times, not the time taken to skip them.
    again = json.loads((out / "steerable.json").read_text())["training"]["compute"]
    assert again == recorded
    assert set(recorded["seconds"]) == {"offline", "sft", "online_1_data", "online_1"}


def test_generate_cli(tiny_ric):
    _, out = tiny_ric
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "generate",
            "--model",
            str(out),
            "--prefer",
            "brief=0.7,positive=0.3",
            "--max-new-tokens",
            "3",
            "Hello",
            "Name a fruit",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "> Hello" in ok.output and "> Name a fruit" in ok.output
    bad = runner.invoke(app, ["generate", "--model", str(out), "--prefer", "brief=0.7,tone=0.3", "Hi"])
    assert bad.exit_code == 2 and "unknown objective" in bad.output
    bad = runner.invoke(app, ["generate", "--model", str(out), "--target", "brief=abc,positive=0", "Hi"])
    assert bad.exit_code == 2 and "brief='abc' is not a number" in bad.output
    twice = runner.invoke(app, ["generate", "--model", str(out), "--target", "brief=1,brief=0", "Hi"])
    assert twice.exit_code == 2 and "names an objective twice" in twice.output
    clipped = runner.invoke(
        app,
        ["generate", "--model", str(out), "--target", "brief=99,positive=0", "--max-new-tokens", "2", "Hi"],
    )
    assert clipped.exit_code == 0 and "outside the trained range" in clipped.output
    bad = runner.invoke(app, ["train", "ric", "--objectives", "builtin:brevity"])
    assert bad.exit_code == 2 and "at least two objectives" in bad.output


def test_rerun_with_a_different_configuration_is_refused(tiny_ric):
    from dataclasses import replace

    config, out = tiny_ric
    with pytest.raises(SteerableError, match=r"stages/sft was made with other inputs \(num_epochs differ"):
        train_ric(replace(config, num_epochs=3))
    with pytest.raises(SteerableError, match=r"stages/offline was made with other inputs \(objectives"):
        train_ric(replace(config, objectives=["brief=builtin:brevity", "easy=builtin:readability"]))
    # a setting only the online round depends on leaves the earlier stages valid
    with pytest.raises(SteerableError, match=r"stages/online_1_data was made with .*online_samples"):
        train_ric(replace(config, online_samples=4))
    assert (out / "steerable.json").is_file()  # refused before anything was touched


def test_a_moved_run_resumes_without_retraining(tiny_ric, tmp_path):
    from dataclasses import replace

    config, out = tiny_ric
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    before = (moved / "stages" / "sft" / "done.json").read_text()
    assert train_ric(replace(config, output_dir=str(moved))) == moved
    assert (moved / "stages" / "sft" / "done.json").read_text() == before
    assert SteerablePolicy.from_pretrained(moved).names == ["brief", "positive"]


def interrupt_training_at(monkeypatch, step_calls: int, stage: str = "") -> list:
    """Make the SFT trainer of the stage whose folder name ends with `stage` raise
    KeyboardInterrupt on its `step_calls`-th training step; returns the list of steps run
    (cleared to count the steps of a later run)."""
    from trl import SFTTrainer

    original = SFTTrainer.training_step
    steps_run = []

    def interrupted(self, *args, **kwargs):
        if not self.args.output_dir.endswith(f"{stage}/checkpoints"):
            return original(self, *args, **kwargs)
        steps_run.append(self.state.global_step)
        if len(steps_run) == step_calls:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "training_step", interrupted)
    return steps_run


def adapter_weights(directory) -> dict:
    from safetensors.torch import load_file

    return load_file(directory / "adapter" / "adapter_model.safetensors")


def test_an_interrupted_sft_resumes_from_its_last_complete_checkpoint(
    make_tiny_ric_config, tmp_path, monkeypatch
):
    settings = dict(num_epochs=2, batch_size=2, gradient_accumulation_steps=1, save_steps=2, lora_dropout=0.0)
    whole = make_tiny_ric_config(tmp_path / "whole", **settings)
    train_ric(whole)

    out = tmp_path / "run"
    config = make_tiny_ric_config(out, **settings)
    steps_run = interrupt_training_at(monkeypatch, 5)  # after the checkpoints at steps 2 and 4
    with pytest.raises(KeyboardInterrupt):
        train_ric(config)
    assert not (out / "stages/sft/done.json").exists()
    assert not (out / "steerable.json").exists()  # no half-made model directory
    # A kill while checkpoint-6 was being saved: its folder exists without trainer_state.json
    # (written last), and checkpoint-4 is still there (rotation happens after a save).
    checkpoints = out / "stages/sft/checkpoints"
    shutil.copytree(checkpoints / "checkpoint-4", checkpoints / "checkpoint-6")
    (checkpoints / "checkpoint-6/trainer_state.json").unlink()
    # the seconds trained before the interruption, as the checkpoint keeps them: made large, so
    # the finished stage's record shows it counts them
    state_file = checkpoints / "checkpoint-4/trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["stateful_callbacks"]["StageClock"]["attributes"]["seconds"] > 0
    state["stateful_callbacks"]["StageClock"]["attributes"]["seconds"] = 1000.0
    state_file.write_text(json.dumps(state))
    monkeypatch.undo()
    from trl import SFTTrainer

    steps_run.clear()
    original = SFTTrainer.training_step
    monkeypatch.setattr(
        SFTTrainer, "training_step", lambda self, *a, **k: steps_run.append(1) or original(self, *a, **k)
    )
    started = time.perf_counter()
    train_ric(config)
    resumed_seconds = time.perf_counter() - started
    info = json.loads((out / "stages/sft/done.json").read_text())["info"]
    total = info["steps"]
    assert total > 6 and len(steps_run) == total - 4  # resumed at step 4, the last complete one
    assert 1000 < info["seconds"] < 1000 + resumed_seconds  # the run before the resume counted too
    assert (out / "steerable.json").is_file()
    resumed, uninterrupted = adapter_weights(out), adapter_weights(tmp_path / "whole")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-5) for k in resumed)


def test_three_objectives_from_a_given_table_through_the_cli(tiny_path, tmp_path):
    """K = 3 with no code edits: train from a prompt/response file, steer with three weights."""
    rows = [
        {"prompt": f"Question {i}: what is a good hobby?", "response": response}
        for i, response in enumerate(
            [
                "Reading. It is wonderful and calm.",
                "Gardening is lovely, fun and healthy for you.",
                "Nothing. Every hobby is boring, bad and a waste.",
                "Chess.",
                "Running is great! It makes you happy and strong, and it costs little.",
                "Painting is hard and frustrating at first, but rewarding later.",
            ]
        )
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "k3"
    result = CliRunner().invoke(
        app,
        [
            "train", "ric", "--model", tiny_path, "--output_dir", str(out), "--data", str(data),
            "--objectives", "brief=builtin:brevity", "positive=builtin:sentiment", "easy=builtin:readability",
            "--num_epochs", "1", "--batch_size", "2", "--lora_r", "4", "--lora_alpha", "8",
            "--online_iterations", "1", "--online_samples", "4", "--online_quantile", "0.5",
            "--max_new_tokens", "6",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # one named bar per training stage, with its ETA, and no per-step loss dictionaries
    assert "offline SFT" in result.output and "online_1 SFT" in result.output
    assert "'loss'" not in result.output and "FutureWarning" not in result.output
    policy = SteerablePolicy.from_pretrained(out, device="cpu")
    assert policy.names == ["brief", "positive", "easy"]
    targets = policy.targets_for("brief=0.2,positive=0.3,easy=0.5")
    assert parse_tags(policy.prompts_with_tags(["Hi"], targets)[0]).keys() == {"brief", "positive", "easy"}
    assert len(policy.generate(["Hi", "Why?"], preference=[1, 1, 1])) == 2
    with pytest.raises(SteerableError, match="3 objectives"):
        policy.generate(["Hi"], preference=[0.5, 0.5])


def test_every_config_field_belongs_to_a_stage():
    """A new RiCConfig field must say which stage depends on it, or a changed value would be
    silently reused."""
    from dataclasses import fields

    from steerable.methods.ric import recipe as ric

    grouped = {
        *ric.OFFLINE_FIELDS,
        *ric.SFT_FIELDS,
        *ric.ONLINE_DATA_FIELDS,
        *ric.ONLINE_TRAIN_FIELDS,
        *ric.UNSTAGED_FIELDS,
        *ric.CONTENT_FIELDS,
    }
    assert {f.name for f in fields(RiCConfig)} == grouped


def test_an_interrupted_online_round_resumes_on_the_same_data(make_tiny_ric_config, tmp_path, monkeypatch):
    settings = dict(online_iterations=1, online_samples=8, online_quantile=0.3, lora_dropout=0.0)
    whole = make_tiny_ric_config(tmp_path / "whole", **settings)
    train_ric(whole)

    out = tmp_path / "run"
    config = make_tiny_ric_config(out, **settings)
    interrupt_training_at(monkeypatch, 1, "online_1")  # the online round's first step
    with pytest.raises(KeyboardInterrupt):
        train_ric(config)
    assert (out / "stages/online_1_data/done.json").is_file()
    assert not (out / "stages/online_1/done.json").exists()
    assert not (out / "steerable.json").exists()  # an interrupted run does not load as finished
    with pytest.raises(SteerableError, match="not a finished steerable model directory"):
        SteerablePolicy.from_pretrained(out)
    generated = (out / "stages/online_1_data/generated.jsonl").read_text()
    monkeypatch.undo()
    train_ric(config)
    # the round's data was reused, not regenerated, and equals the uninterrupted run's
    assert (out / "stages/online_1_data/generated.jsonl").read_text() == generated
    for name in ("generated.jsonl", "merged.jsonl"):
        assert (out / "stages/online_1_data" / name).read_text() == (
            tmp_path / "whole/stages/online_1_data" / name
        ).read_text()
    resumed, uninterrupted = adapter_weights(out), adapter_weights(tmp_path / "whole")
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-5) for k in resumed)


def test_a_longer_rerun_removes_the_finished_manifest_until_it_is_done(tiny_ric, tmp_path, monkeypatch):
    from dataclasses import replace

    config, out = tiny_ric
    longer = tmp_path / "longer"
    shutil.copytree(out, longer)
    interrupt_training_at(monkeypatch, 1, "online_2")  # the second round's first step
    with pytest.raises(KeyboardInterrupt):
        train_ric(replace(config, output_dir=str(longer), online_iterations=2))
    assert (longer / "stages/online_2_data/done.json").is_file()
    assert not (longer / "steerable.json").exists()


def test_editing_the_data_file_in_place_is_noticed(make_tiny_ric_config, tmp_path):
    rows = [
        {"prompt": f"Question {i}?", "response": r}
        for i, r in enumerate(["Yes, great.", "No. It is bad and sad.", "Maybe.", "A wonderful idea!"])
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = make_tiny_ric_config(tmp_path / "run", data=str(data), prompt_limit=None)
    train_ric(config)
    rows[0]["response"] = "Yes, truly great and lovely."
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SteerableError, match=r"stages/offline was made with other inputs \(data differ"):
        train_ric(config)


def test_a_typo_is_refused_before_anything_is_recorded(tiny_path, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    common = ["train", "ric", "--model", tiny_path, "--output_dir", str(out)]  # each refused before work
    for extra, message in [
        (["--objectives", "brief=builtin:brevty", "positive=builtin:sentiment"], "unknown built-in scorer"),
        (["--data", str(tmp_path / "missing.jsonl")], "does not exist"),
        (["--num_epoch", "2"], "num_epoch"),
        (["--num_epochs", "abc"], "invalid float value"),
        (["--tag_placement", "footer"], "invalid choice"),
        (["--stop_after", "online_1"], "invalid choice"),
    ]:
        result = runner.invoke(app, [*common, *extra])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()) and "Traceback" not in result.output
        assert not (out / "stages").exists()
    bad_model = runner.invoke(app, ["train", "ric", "--model", str(tmp_path), "--output_dir", str(out)])
    assert bad_model.exit_code == 2 and "could not be loaded" in bad_model.output
    yaml_config = tmp_path / "ric.yaml"
    for text, message in [
        (f"model: {tiny_path}\nnum_epochs: abc\n", "invalid float value"),
        (f"model: {tiny_path}\nnum_epoch: 2\n", "num_epoch"),
        ("- not a mapping\n", "mapping"),
        ("model: [unclosed\n", "not valid YAML"),
        (f"model: {tiny_path}\nobjectives: brief=builtin:brevity\n", "objectives must be list[str]"),
    ]:
        yaml_config.write_text(text)
        result = runner.invoke(app, ["train", "ric", "--config", str(yaml_config), "--output_dir", str(out)])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()) and "Traceback" not in result.output
        assert not (out / "stages").exists()
    missing = runner.invoke(app, ["train", "ric", "--config", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2 and "existing YAML file" in missing.output


def test_stop_after_offline_leaves_the_scored_data_and_a_rerun_goes_on_from_it(tiny_path, tmp_path):
    out = tmp_path / "run"
    common = [
        "train",
        "ric",
        "--model",
        tiny_path,
        "--output_dir",
        str(out),
        "--prompt_limit",
        "4",
        "--max_new_tokens",
        "8",
        "--online_iterations",
        "0",
    ]
    result = CliRunner().invoke(app, [*common, "--stop_after", "offline"])
    assert result.exit_code == 0, result.output
    assert "stopped after stage offline" in " ".join(result.output.split())
    done = out / "stages" / "offline" / "done.json"
    assert done.is_file() and (out / "stages" / "offline" / "scored.jsonl").is_file()
    assert not (out / "stages" / "sft").exists() and not (out / "steerable.json").exists()
    recorded = done.read_text()
    result = CliRunner().invoke(app, common)
    assert result.exit_code == 0, result.output
    assert done.read_text() == recorded and (out / "steerable.json").is_file()


def test_config_file_and_flags_combine(tiny_path, tmp_path):
    from steerable.configs import parse_config

    yaml_config = tmp_path / "ric.yaml"
    yaml_config.write_text(f"model: {tiny_path}\nnum_epochs: 2\nlora_r: 8\n")
    config = parse_config(RiCConfig, ["--config", str(yaml_config), "--lora_r", "4"], prog="test")
    assert (config.num_epochs, config.lora_r, config.model) == (2.0, 4, tiny_path)


def test_local_paths_are_stored_absolute(tiny_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scorer.py").write_text("def f(p, r):\n    return [1.0] * len(r)\n")
    shutil.copytree(tiny_path, tmp_path / "ckpt")
    config = RiCConfig(
        model="./ckpt", data="data.jsonl", objectives=["a=py:scorer.py:f", "brief=builtin:brevity"]
    )
    assert config.model == str(tmp_path / "ckpt") and config.data == str(tmp_path / "data.jsonl")
    assert config.objectives == [f"a=py:{tmp_path / 'scorer.py'}:f", "brief=builtin:brevity"]
    assert (
        RiCConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct").model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )


def test_models_load_in_the_recorded_dtype_not_the_checkpoints(tiny_ric, tiny_path, tmp_path):
    """transformers 5 loads a checkpoint's own dtype (bf16 for most hub models); steerable
    loads the dtype the run recorded (float32 unless asked), for training and inference alike."""
    from transformers import AutoModelForCausalLM

    from steerable.defaults import load_causal_lm

    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.bfloat16).save_pretrained(bf16)
    shutil.copy(Path(tiny_path) / "tokenizer.json", bf16)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (Path(tiny_path) / name).is_file():
            shutil.copy(Path(tiny_path) / name, bf16)
    assert load_causal_lm(str(bf16))[0].dtype == torch.float32
    assert load_causal_lm(str(bf16), "bfloat16")[0].dtype == torch.bfloat16
    _, out = tiny_ric
    run = tmp_path / "run"
    shutil.copytree(out, run)
    manifest = json.loads((run / "steerable.json").read_text())
    (run / "steerable.json").write_text(json.dumps({**manifest, "base_model": str(bf16)}))
    assert SteerablePolicy.from_pretrained(run, device="cpu").model.dtype == torch.float32
    assert SteerablePolicy.from_pretrained(run, device="cpu", dtype="bfloat16").model.dtype == torch.bfloat16
    with pytest.raises(SteerableError, match="dtype 'float8' unknown"):
        SteerablePolicy.from_pretrained(run, dtype="float8")


def test_a_full_fine_tune_trains_resumes_and_loads(make_tiny_ric_config, tmp_path):
    from dataclasses import replace

    config = make_tiny_ric_config(tmp_path / "full", use_lora=False, online_iterations=1, online_samples=4)
    config = replace(config, online_quantile=0.3)
    train_ric(config)
    assert (tmp_path / "full/model/model.safetensors").is_file()
    policy = SteerablePolicy.from_pretrained(tmp_path / "full", device="cpu")
    assert len(policy.generate(["Hi"], preference=[1, 1])) == 1
    # a re-run loads the finished stages' full weights instead of retraining, onto the device
    # the run's model is on (here the meta device stands in for a GPU)
    assert train_ric(config) == tmp_path / "full"
    from steerable.methods.ric.recipe import load_stage_weights

    elsewhere = policy.model.to("meta")
    assert load_stage_weights(elsewhere, tmp_path / "full/stages/sft", config).device.type == "meta"


def test_ric_on_a_model_without_system_role_or_pad_token(tiny_nosys_path, make_tiny_ric_config, tmp_path):
    """Every system placement on a Gemma-like template: the system text is folded into the user
    turn in training and in use, and answers stop at its end-of-turn token."""
    config = make_tiny_ric_config(
        tmp_path / "run",
        model=tiny_nosys_path,
        tag_placement="system",
        offline_instruction_placement="system",
        online_iterations=1,
        online_samples=4,
        online_quantile=0.3,
    )
    train_ric(config)
    policy = SteerablePolicy.from_pretrained(tmp_path / "run", device="cpu")
    (text,) = policy.prompts_with_tags(["Hi"], policy.targets_for([1, 1]), system="Be kind.")
    assert "Be kind." in text and "<brief>" in text
    assert len(policy.generate(["Hi"], preference=[1, 1])) == 1


def test_a_model_without_a_chat_template_is_refused_or_given_one(tiny_path, tmp_path):
    import shutil as sh

    bare = tmp_path / "bare"
    sh.copytree(tiny_path, bare)
    for name in ("chat_template.jinja",):
        (bare / name).unlink(missing_ok=True)
    config_file = bare / "tokenizer_config.json"
    tokenizer_config = json.loads(config_file.read_text())
    tokenizer_config.pop("chat_template", None)
    config_file.write_text(json.dumps(tokenizer_config))
    result = CliRunner().invoke(
        app, ["train", "ric", "--model", str(bare), "--output_dir", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "chat template" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
    from steerable.methods.ric.recipe import check_inputs

    given = RiCConfig(model=str(bare), chat_template_path=tiny_path)  # a tokenizer dir to take it from
    assert check_inputs(given).chat_template


# Offline rows: short and positive. The round's answers are longer, most of them gloomy, so the
# offline data's 0.5-quantile keeps only the round's shortest or happiest few.
MORS_OFFLINE = [
    {"prompt": f"Q{i}?", "response": text}
    for i, text in enumerate(["Great!", "Good fun.", "Nice.", "Sad.", "Wonderful day!", "Fine, thanks."])
]
MORS_ANSWERS = [
    "This is bad and sad and wrong in every way.",
    "I hate this terrible awful thing so much now.",
    "It is a grim and dangerous and gloomy place.",
    "Wonderful, great, fun and lovely and happy day!",
    "A plain answer of a few more words than most.",
    "Sad.",
    "The worst, the most painful and the most wrong.",
    "Nothing much to say about it at all, really.",
]


@pytest.mark.parametrize("rule", ["round", "offline"])
def test_mors_keeps_answers_reaching_the_quantile_of_the_rounds_own_answers_or_of_the_offline_data(
    make_tiny_ric_config, tmp_path, monkeypatch, rule
):
    """The reference (YangRui2015/RiC, `merge_dataset`) keeps a generated answer when any
    objective reaches the q-quantile of that round's generated answers; `offline` takes the
    quantile of the offline data instead. Offline rows merged in pass the offline quantile."""
    from types import SimpleNamespace

    from steerable.methods.ric import recipe as ric
    from steerable.objectives import RewardSet

    rewards = RewardSet.from_specs(["brief=builtin:brevity", "positive=builtin:sentiment"])
    offline = [dict(row) for row in MORS_OFFLINE]
    rewards.annotate(offline, fit=True)
    monkeypatch.setattr(ric, "generate_texts", lambda model, tokenizer, texts, sampling: MORS_ANSWERS)
    monkeypatch.setattr(ric, "count_tokens", lambda tokenizer, texts: 0)
    policy = SimpleNamespace(
        target_range=lambda: ([-1.0, -1.0], [1.0, 1.0]),
        prompts_with_tags=lambda prompts, targets: prompts,
        model=SimpleNamespace(eval=lambda: None),
        tokenizer=None,
    )
    config = make_tiny_ric_config(
        tmp_path / "run", online_samples=8, online_quantile=0.5, online_threshold=rule
    )
    info = ric.mors_round(policy, rewards, offline, config, 1, None, tmp_path)

    generated = read_table(tmp_path / "generated.jsonl")
    z = np.array([[row["z_brief"], row["z_positive"]] for row in generated])
    z_offline = np.array([[row["z_brief"], row["z_positive"]] for row in offline])
    over = {"round": z, "offline": z_offline}[rule]
    expected = (z >= np.quantile(over, 0.5, axis=0)).any(axis=1)
    assert [row["kept"] for row in generated] == expected.tolist()
    assert info["online_threshold"] == rule
    assert info["thresholds"] == pytest.approx(
        dict(zip(["brief", "positive"], np.quantile(over, 0.5, axis=0), strict=True))
    )
    merged = read_table(tmp_path / "merged.jsonl")
    original = [row for row in merged if "kept" not in row]
    offline_keep = (z_offline >= np.quantile(z_offline, 0.5, axis=0)).any(axis=1)
    assert {row["prompt"] for row in original} <= {
        r["prompt"] for r, k in zip(offline, offline_keep, strict=True) if k
    }
    if rule == "round":  # the round's own quantile keeps about half of it, whatever the offline data
        assert expected.sum() >= 4


def test_the_mors_threshold_rule_is_a_stage_input_and_rounds_made_before_it_still_match(
    make_tiny_ric_config, tmp_path
):
    from steerable.methods.ric.recipe import stage_plan

    config = make_tiny_ric_config(tmp_path / "run", online_iterations=1)
    assert config.online_threshold == "round"  # the reference's rule by default
    assert stage_plan(config)["online_1_data"]["online_threshold"] == "round"
    # `offline`, the only rule before the option existed, leaves the inputs as they were then
    offline = make_tiny_ric_config(tmp_path / "run", online_iterations=1, online_threshold="offline")
    assert "online_threshold" not in stage_plan(offline)["online_1_data"]
    with pytest.raises(SteerableError, match="online_threshold"):
        make_tiny_ric_config(tmp_path / "run", online_threshold="generations")


def test_a_round_made_with_the_offline_threshold_is_refused_naming_the_option_that_reruns_it(
    make_tiny_ric_config, tmp_path
):
    """A run made before `round` became the default differs from an unchanged rerun only in the
    threshold rule: the refusal says which option reruns it as it was made."""
    from steerable.methods.ric.recipe import stage_plan, train_ric
    from steerable.stages import Stages

    older = make_tiny_ric_config(tmp_path / "run", online_iterations=1, online_threshold="offline")
    stages = Stages(tmp_path / "run", "train ric")
    made = stage_plan(older)["online_1_data"]
    stages.start("online_1_data", made)
    stages.finish("online_1_data", made, {})
    with pytest.raises(
        SteerableError, match=r"online_threshold differ.*pass --online_threshold offline \(the rule"
    ):
        train_ric(make_tiny_ric_config(tmp_path / "run", online_iterations=1))
    made["online_quantile"] = 0.9  # another change too: the option alone would not rerun it
    stages.finish("online_1_data", made, {})
    with pytest.raises(SteerableError, match="differ") as refused:
        train_ric(make_tiny_ric_config(tmp_path / "run", online_iterations=1))
    assert "--online_threshold offline" not in str(refused.value)


def test_a_nan_score_of_the_given_data_names_its_line_in_the_file(make_tiny_ric_config, tmp_path):
    """HH pairs are two rows each once read: the error names the pair's line, not its row."""
    module = tmp_path / "nan_scores.py"
    module.write_text(
        "def f(p, r):\n    return [float('nan') if 'Never' in x else float(len(x)) for x in r]\n"
    )
    pairs = [
        {
            "chosen": f"\n\nHuman: Q{i}?\n\nAssistant: Sure, {i}.",
            "rejected": f"\n\nHuman: Q{i}?\n\nAssistant: No.",
        }
        for i in range(3)
    ]
    pairs[2]["rejected"] = pairs[2]["rejected"].replace("No.", "Never.")
    data = tmp_path / "hh.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    config = make_tiny_ric_config(
        tmp_path / "run",
        data=str(data),
        prompt_limit=None,
        objectives=[f"x=py:{module}:f", "brief=builtin:brevity"],
    )
    with pytest.raises(SteerableError, match=rf"'x' gave nan for {data}, line 3 \(prompt"):
        train_ric(config)


def given_rows(tmp_path) -> Path:
    """A small prompt/response table for --data (the offline stage then only scores it)."""
    rows = [
        {"prompt": f"Question {i}?", "response": r}
        for i, r in enumerate(["Yes, great.", "No. It is bad and sad.", "Maybe.", "A wonderful idea!"])
    ]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def test_editing_a_py_scorer_is_noticed_and_runs_without_one_keep_their_stage_keys(
    make_tiny_ric_config, tmp_path
):
    from steerable.methods.ric.recipe import stage_plan
    from steerable.trust import file_sha256

    module = tmp_path / "chars.py"
    module.write_text("def f(p, r):\n    return [float(len(x)) for x in r]\n")
    settings = dict(
        data=str(given_rows(tmp_path)), prompt_limit=None, online_iterations=1, stop_after="offline"
    )
    config = make_tiny_ric_config(
        tmp_path / "run", objectives=[f"size=py:{module}:f", "brief=builtin:brevity"], **settings
    )
    plan = stage_plan(config)
    for stage in ("offline", "online_1_data"):
        assert plan[stage]["scorer_sha256"] == {"size": file_sha256(module)}
    builtins = make_tiny_ric_config(tmp_path / "other", **settings)
    assert all("scorer_sha256" not in inputs for inputs in stage_plan(builtins).values())
    train_ric(config)
    module.write_text("def f(p, r):\n    return [-float(len(x)) for x in r]\n")
    with pytest.raises(
        SteerableError, match=r"stages/offline was made with other inputs \(scorer_sha256 differ"
    ):
        train_ric(config)


def test_mors_scores_with_the_runs_own_objectives_not_the_specs_its_stats_file_holds(
    make_tiny_ric_config, tmp_path
):
    config = make_tiny_ric_config(
        tmp_path / "run", data=str(given_rows(tmp_path)), prompt_limit=None, stop_after="offline"
    )
    train_ric(config)
    marker = tmp_path / "ran"
    (tmp_path / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\ndef f(p, r):\n    return [0.0] * len(r)\n"
    )
    stats = tmp_path / "run" / "stages" / "offline" / "stats.json"
    data = json.loads(stats.read_text())
    data["objectives"][1]["spec"] = {"kind": "py", "target": f"{tmp_path / 'evil.py'}:f", "options": {}}
    stats.write_text(json.dumps(data))  # a copied run directory, say
    with pytest.raises(SteerableError, match=rf"{stats}.*positive"):
        train_ric(make_tiny_ric_config(
            tmp_path / "run", data=str(given_rows(tmp_path)), prompt_limit=None, stop_after="sft"
        ))  # fmt: skip
    assert not marker.exists()

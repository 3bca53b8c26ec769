import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from steerable import RewardSet
from steerable.cli import app
from steerable.data import write_table
from steerable.data.loading import split_by_prompt
from steerable.errors import SteerableError
from steerable.reward_models.hf import PAD_TOKEN, HFRewardModel
from steerable.reward_models.pairwise import (
    RECORD,
    RMConfig,
    encode_pairs,
    load_backbone,
    pair_collator,
    pairs_from_scores,
    pairwise_accuracy,
    read_preference_pairs,
    train_rm,
)

runner = CliRunner()
WORDS = ["good", "fine", "nice", "happy", "sunny", "calm", "bright", "warm", "kind", "clear"]


def invoke(args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def long_short_pairs(n: int) -> list[dict]:
    """A learnable preference: the long answer is chosen, the short one rejected."""
    return [
        {
            "prompt": f"Question {i}: what is {WORDS[i % 10]}?",
            "chosen": " ".join(WORDS[(i + k) % 10] for k in range(12 + i % 5)),
            "rejected": " ".join(WORDS[(i + k) % 10] for k in range(1 + i % 3)),
        }
        for i in range(n)
    ]


def tiny_config(model: str, data, out, **overrides) -> RMConfig:
    settings = dict(model=model, data=str(data), output_dir=str(out), num_epochs=1.0, batch_size=4)
    return RMConfig(**{**settings, **overrides})


# --- pairs, split and accuracy (pure) -----------------------------------------------------


def test_pairs_from_scores_ranks_responses_to_the_same_prompt_and_skips_ties():
    rows = [
        {"prompt": "a", "response": "x", "score_len": 1.0},
        {"prompt": "a", "response": "yy", "score_len": 2.0},
        {"prompt": "a", "response": "zz", "score_len": 2.0},  # ties with yy
        {"prompt": "b", "response": "u", "score_len": 5},
        {"prompt": "a", "response": "x", "score_len": 1.0},  # a repeat of x
        {"prompt": "b", "response": "v", "score_len": 3},
    ]
    pairs = pairs_from_scores(rows, "len")
    assert pairs == [
        {"prompt": "a", "chosen": "yy", "rejected": "x"},
        {"prompt": "a", "chosen": "zz", "rejected": "x"},
        {"prompt": "a", "chosen": "yy", "rejected": "x"},
        {"prompt": "a", "chosen": "zz", "rejected": "x"},
        {"prompt": "b", "chosen": "u", "rejected": "v"},
    ]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), None, "high", True])
def test_pairs_from_scores_refuses_a_score_that_is_not_a_finite_number(bad):
    rows = [
        {"prompt": "a", "response": "x", "score_s": 1.0},
        {"prompt": "a", "response": "y", "score_s": bad},
    ]
    with pytest.raises(SteerableError, match="row 2: score_s is"):
        pairs_from_scores(rows, "s")


@given(
    sizes=st.lists(st.integers(1, 4), min_size=2, max_size=12),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 5),
)
def test_split_by_prompt_keeps_every_prompt_on_one_side(sizes, fraction, seed):
    pairs = [
        {"prompt": f"p{i}", "chosen": f"c{j}", "rejected": "r"} for i, n in enumerate(sizes) for j in range(n)
    ]
    prompts = [p["prompt"] for p in pairs]
    train_rows, heldout_rows = split_by_prompt(prompts, fraction, seed)
    train, heldout = [pairs[i] for i in train_rows], [pairs[i] for i in heldout_rows]
    train_prompts, heldout_prompts = {p["prompt"] for p in train}, {p["prompt"] for p in heldout}
    assert train_prompts and heldout_prompts and not train_prompts & heldout_prompts
    assert sorted(train + heldout, key=str) == sorted(pairs, key=str)
    assert len(heldout_prompts) == min(max(1, round(fraction * len(sizes))), len(sizes) - 1)
    again = split_by_prompt(prompts, fraction, seed)  # the seed fixes it
    assert again[0].tolist() == train_rows.tolist() and again[1].tolist() == heldout_rows.tolist()


def test_pairwise_accuracy_counts_strict_wins():
    pairs = [
        {"prompt": "p", "chosen": c, "rejected": r} for c, r in [("aaa", "a"), ("b", "bbb"), ("cc", "dd")]
    ]
    assert pairwise_accuracy(lambda prompts, responses: [len(r) for r in responses], pairs) == 1 / 3


def test_read_preference_pairs_reads_every_layout(tmp_path):
    explicit = write_table(tmp_path / "pairs.csv", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}])
    assert read_preference_pairs(explicit) == ([{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}], 0)
    hh = write_table(
        tmp_path / "hh.jsonl",
        [{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go."}],
    )
    assert read_preference_pairs(hh) == (
        [{"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": "Hello!", "rejected": "Go."}],
        0,
    )
    scored = write_table(
        tmp_path / "scored.parquet",
        [
            {"prompt": "Hi", "response": "Go.", "score_a": 0.0},
            {"prompt": "Hi", "response": "Hey", "score_a": 1.0},
        ],
    )
    assert read_preference_pairs(scored, "a") == ([{"prompt": "Hi", "chosen": "Hey", "rejected": "Go."}], 0)


# --- bad input at the CLI -----------------------------------------------------------------

PAIR = {"prompt": "Hi", "chosen": "Hello there!", "rejected": "Go."}
SCORED = [
    {"prompt": "Hi", "response": "Hello there!", "score_positive": 0.5},
    {"prompt": "Hi", "response": "Go.", "score_positive": -0.2},
    {"prompt": "Bye", "response": "Farewell!", "score_positive": 0.4},
    {"prompt": "Bye", "response": "Leave.", "score_positive": 0.1},
]


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"prompt": "Hi", "answer": "Hello"}], [], "missing columns"),
        ([PAIR, {**PAIR, "rejected": "  "}], [], "line 2: 'rejected' is empty"),
        ([PAIR, {**PAIR, "rejected": PAIR["chosen"]}], [], "line 2: chosen and rejected are the same text"),
        ([{"chosen": "no turns", "rejected": "\n\nAssistant: x"}], [], "line 1: 'chosen' is not an HH-RLHF"),
        (SCORED, [], "pass --objective NAME to rank its responses by score_NAME, NAME one of ['positive']"),
        (SCORED, ["--objective", "brief"], "has no column score_brief"),
        ([{**SCORED[0], "score_positive": float("nan")}, *SCORED[1:]], ["--objective", "positive"], "line 1"),
        (SCORED[:2], ["--objective", "positive"], "at least two distinct prompts"),
        ([PAIR, {**PAIR, "chosen": "Hey"}], [], "at least two distinct prompts"),
        (
            [{**r, "score_positive": 1.0} for r in SCORED],
            ["--objective", "positive"],
            "tie on score_positive",
        ),
        ([PAIR], ["--objective", "positive"], "need no --objective"),
        ([PAIR, {**PAIR, "prompt": "Bye"}], ["--model", "/nonexistent/model"], "could not be loaded"),
    ],
)
def test_bad_input_is_one_line_naming_it_and_writes_nothing(tmp_path, rows, extra, message):
    data = write_table(tmp_path / "data.jsonl", rows)
    out = tmp_path / "out"
    result = invoke(["train", "rm", "--data", data, "--output_dir", out, *extra])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and result.output.strip().count("\n") == 0, result.output
    assert message in result.output
    assert not out.exists()


def test_bad_options_are_refused_before_reading_anything(tmp_path):
    missing = invoke(["train", "rm", "--output_dir", tmp_path / "out"])
    assert missing.exit_code == 2 and "--data is required" in missing.output
    fraction = invoke(["train", "rm", "--data", tmp_path / "x.jsonl", "--heldout_fraction", "1"])
    assert fraction.exit_code == 2 and "heldout_fraction must be in [0, 1)" in fraction.output
    absent = invoke(["train", "rm", "--data", tmp_path / "x.jsonl", "--output_dir", tmp_path / "out"])
    assert absent.exit_code == 2 and "x.jsonl does not exist" in absent.output
    assert not (tmp_path / "out").exists()


# --- training: the hf scorer reads the model as it trained ---------------------------------


@pytest.mark.parametrize("backbone", ["minilm", "tiny_nosys"])
def test_the_saved_directory_scores_exactly_as_it_trained(backbone, tiny_nosys_path, tmp_path):
    """Same tokens, token types and padding: a forward pass on a training batch gives the scores
    the hf scorer gives from the saved directory (an encoder that reads segments; a decoder
    whose tokenizer has no pad token, so both get the scorer's dedicated one)."""
    model_name = "minilm" if backbone == "minilm" else tiny_nosys_path
    model, tokenizer = load_backbone(tiny_config(model_name, "unused.jsonl", "unused"))
    pairs = long_short_pairs(3)  # of different lengths, so the batch is padded
    batch = pair_collator(tokenizer.pad_token_id)(encode_pairs(tokenizer, pairs, 512)[0].to_list())
    if backbone == "minilm":
        assert batch["token_type_ids"].max() == 1  # the response is segment 1, as the scorer has it
    else:
        assert tokenizer.pad_token == PAD_TOKEN and model.config.pad_token_id == tokenizer.pad_token_id
    with torch.inference_mode():
        trained_on = model.eval()(**batch).logits[:, 0].tolist()  # chosen rows, then rejected rows
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    scorer = HFRewardModel.from_options(str(tmp_path / "saved"), {})
    prompts = [p["prompt"] for p in pairs]
    scored = scorer(prompts, [p["chosen"] for p in pairs]) + scorer(prompts, [p["rejected"] for p in pairs])
    assert trained_on == pytest.approx(scored, abs=1e-5)


def test_training_changes_the_weights_and_the_directory_is_an_hf_objective(tmp_path, tiny_path):
    from transformers import AutoModelForSequenceClassification

    data = write_table(tmp_path / "pairs.jsonl", long_short_pairs(12))
    out = train_rm(tiny_config(tiny_path, data, tmp_path / "rm", learning_rate=1e-3))
    name = "model.layers.0.self_attn.q_proj.weight"
    before = AutoModelForSequenceClassification.from_pretrained(tiny_path, num_labels=1).state_dict()[name]
    after = AutoModelForSequenceClassification.from_pretrained(out).state_dict()[name]
    assert not torch.equal(before, after)

    record = json.loads((out / RECORD).read_text())
    assert record["pairs"] == {"train": 10, "heldout": 2} and record["prompts"]["heldout"] == 2
    assert 0 <= record["metrics"]["heldout_accuracy"] <= 1
    assert record["objective"] == f"reward=hf:{out.resolve()}"
    assert not (out / "stages" / "train" / "checkpoints").exists()  # spent once the stage is done

    rewards = RewardSet.from_specs([record["objective"]])
    pairs = long_short_pairs(12)
    scores = rewards.score([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    assert scores.shape == (12, 1)
    direct = HFRewardModel.from_options(str(out), {})
    assert scores[:, 0].tolist() == pytest.approx(
        direct([p["prompt"] for p in pairs], [p["chosen"] for p in pairs])
    )


def test_lora_is_merged_into_a_plain_model(tmp_path, tiny_path):
    data = write_table(tmp_path / "pairs.jsonl", long_short_pairs(8))
    out = train_rm(tiny_config(tiny_path, data, tmp_path / "rm", lora_r=4, lora_alpha=8))
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    scorer = HFRewardModel.from_options(str(out), {})
    assert len(scorer(["Hi"], ["Hello"])) == 1


def test_a_run_again_reuses_the_model_and_other_inputs_are_refused(tmp_path, tiny_path):
    data = write_table(tmp_path / "pairs.jsonl", long_short_pairs(8))
    out = train_rm(tiny_config(tiny_path, data, tmp_path / "rm"))
    weights = (out / "model.safetensors").read_bytes()
    done = (out / "stages" / "train" / "done.json").stat().st_mtime_ns
    train_rm(tiny_config(tiny_path, data, tmp_path / "rm"))
    assert (out / "stages" / "train" / "done.json").stat().st_mtime_ns == done  # not trained again
    assert (out / "model.safetensors").read_bytes() == weights
    with pytest.raises(SteerableError, match=r"made with other inputs \(seed differ\)"):
        train_rm(tiny_config(tiny_path, data, tmp_path / "rm", seed=1))


@pytest.mark.slow
def test_cli_learns_a_scored_table_and_prints_the_objective(tmp_path, tiny_path):
    """End to end on a learnable task (longer responses score higher): held-out accuracy above
    chance, measured through the hf scorer, and the printed spec scores with the model."""
    rows = []
    for pair in long_short_pairs(40):
        for response in (pair["chosen"], pair["rejected"], " ".join(pair["rejected"].split()[:1] * 6)):
            rows.append({"prompt": pair["prompt"], "response": response, "score_long": len(response.split())})
    data = write_table(tmp_path / "scored.jsonl", rows)
    out = tmp_path / "rm-long"
    result = invoke(
        [
            "train",
            "rm",
            "--data",
            data,
            "--objective",
            "long",
            "--output_dir",
            out,
            "--model",
            tiny_path,
            "--num_epochs",
            "2",
            "--learning_rate",
            "1e-3",
        ]
    )
    assert result.exit_code == 0, result.output
    spec = f"long=hf:{out.resolve()}"
    assert f"score with: -o {spec}" in result.output
    record = json.loads((out / RECORD).read_text())
    assert record["metrics"]["heldout_accuracy"] > 0.8
    assert f"held-out pairwise accuracy {record['metrics']['heldout_accuracy']:.3f}" in result.output
    scored = invoke(["score", data, "--out", tmp_path / "rescored.jsonl", "-o", spec])
    assert scored.exit_code == 0, scored.output


# --- real preference pairs: bad rows, HH splits, truncation, batching, storage, test files ----


def test_every_bad_pair_is_listed_and_skip_invalid_drops_them(tmp_path, tiny_path):
    rows = long_short_pairs(10)
    rows.insert(2, {**PAIR, "rejected": " "})  # line 3
    rows.insert(5, {**PAIR, "rejected": PAIR["chosen"]})  # line 6
    data = write_table(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "rm"
    refused = invoke(["train", "rm", "--data", data, "--output_dir", out, "--model", tiny_path])
    assert refused.exit_code == 2 and refused.output.strip().count("\n") == 0, refused.output
    assert "has 2 bad rows: line 3: 'rejected' is empty" in refused.output
    assert "line 6: chosen and rejected are the same text" in refused.output
    assert "--skip_invalid" in refused.output and not out.exists()

    skipped = invoke(
        ["train", "rm", "--data", data, "--output_dir", out, "--model", tiny_path, "--skip_invalid", "true"]
    )
    assert skipped.exit_code == 0, skipped.output
    record = json.loads((out / RECORD).read_text())
    assert record["skipped_rows"] == {"data": 2}
    assert record["pairs"]["train"] + record["pairs"]["heldout"] == 10
    assert "skipped 2 bad rows of the data" in skipped.stdout


def test_hh_pairs_that_part_before_the_last_turn_split_at_their_common_start(tmp_path):
    rows = [
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant: Take care.",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.\n\nHuman: Bye?\n\nAssistant: Bye.",
        }
    ]
    assert read_preference_pairs(write_table(tmp_path / "hh.jsonl", rows)) == (
        [
            {
                "prompt": "\n\nHuman: Hi\n\nAssistant:",
                "chosen": "Hello!\n\nHuman: Bye?\n\nAssistant: Take care.",
                "rejected": "Go away.\n\nHuman: Bye?\n\nAssistant: Bye.",
            }
        ],
        0,
    )


def test_a_bad_score_is_named_by_its_file_line(tmp_path):
    rows = [*SCORED[:2], {**SCORED[2], "score_positive": None}, SCORED[3]]
    with pytest.raises(SteerableError, match=r"scored.jsonl, line 3: score_positive is None"):
        read_preference_pairs(write_table(tmp_path / "scored.jsonl", rows), "positive")


@pytest.mark.parametrize("backbone", ["minilm", "tiny"])
def test_truncation_keeps_the_end_of_the_prompt_and_the_whole_answer(backbone, tiny_path):
    """A long conversation loses its oldest turns, never its last question or the answer; only
    an answer longer than max_length alone is cut, at its end. The hf scorer reads the same ids."""
    model, tokenizer = load_backbone(tiny_config("minilm" if backbone == "minilm" else tiny_path, "x", "y"))
    prompt = "first turn long ago. " + "some old words here. " * 20 + "what is the last question?"
    answer = "the answer is yes."
    long_answer = " ".join(f"word{i}" for i in range(60))
    pairs = [{"prompt": prompt, "chosen": answer, "rejected": long_answer}]
    encoded, truncated = encode_pairs(tokenizer, pairs, 32)
    assert truncated == {"prompts": 2, "answers": 1, "sequences": 2}
    chosen, rejected = encoded["chosen_ids"][0], encoded["rejected_ids"][0]
    assert len(chosen) == 32 and len(rejected) == 32
    text = tokenizer.decode(chosen, skip_special_tokens=True)
    assert "what is the last question?" in text and text.endswith(answer) and "first turn" not in text
    cut = tokenizer.decode(rejected, skip_special_tokens=True)
    assert cut.startswith("word0 word1") and "word59" not in cut and "question" not in cut
    scorer = HFRewardModel(model, tokenizer, max_length=32)
    for side, ids in (("chosen", chosen), ("rejected", rejected)):
        assert scorer._encode([prompt], [pairs[0][side]])["input_ids"][0].tolist() == ids
    assert tokenizer.truncation_side == "right"  # cut through copies: the caller's is unchanged


def test_batches_are_grouped_by_length(tmp_path, tiny_path, monkeypatch):
    """Pairs of very different lengths: each batch pads to its longest pair, and pairs of
    similar length are batched together, so little of what the model reads is padding."""
    from trl import RewardTrainer

    widths = []
    compute_loss = RewardTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        widths.append((inputs["attention_mask"].numel(), int(inputs["attention_mask"].sum())))
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(RewardTrainer, "compute_loss", recording)
    short = [{"prompt": f"Q{i}?", "chosen": "yes sure", "rejected": "no"} for i in range(32)]
    long = [
        {"prompt": f"Question {i}: " + "tell me more " * 15, "chosen": "well " * 20, "rejected": "so " * 18}
        for i in range(32)
    ]
    data = write_table(
        tmp_path / "pairs.jsonl", [pair for two in zip(short, long, strict=True) for pair in two]
    )
    train_rm(tiny_config(tiny_path, data, tmp_path / "rm", heldout_fraction=0.1))
    padded, real = map(sum, zip(*widths, strict=True))
    assert 1 - real / padded < 0.2, widths


def test_the_trained_model_is_stored_once(tmp_path, tiny_path):
    data = write_table(tmp_path / "pairs.jsonl", long_short_pairs(8))
    out = train_rm(tiny_config(tiny_path, data, tmp_path / "rm"))
    assert [p.relative_to(out) for p in out.rglob("*.safetensors")] == [Path("model.safetensors")]


def test_a_test_file_is_evaluated_and_the_result_goes_to_stdout(tmp_path, tiny_path):
    """--eval FILE measures the pairwise accuracy on a test file (every held-out prompt may then
    be trained on: --heldout_fraction 0); the result line is the command's output on stdout."""
    train = write_table(tmp_path / "train.jsonl", long_short_pairs(8))
    test = write_table(tmp_path / "test.csv", long_short_pairs(13)[8:])
    out = tmp_path / "rm"
    args = ["train", "rm", "--data", train, "--eval", test, "--output_dir", out, "--model", tiny_path]
    result = invoke([*args, "--heldout_fraction", "0"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / RECORD).read_text())
    assert record["pairs"] == {"train": 8, "heldout": 0, "test": 5}
    assert "heldout_accuracy" not in record["metrics"] and 0 <= record["metrics"]["test_accuracy"] <= 1
    line = f"test pairwise accuracy {record['metrics']['test_accuracy']:.3f} on 5 pairs of {test}"
    assert line in " ".join(result.stdout.split()) and "score with: -o" in result.stdout
    done = (out / "stages" / "train" / "done.json").stat().st_mtime_ns
    other = write_table(tmp_path / "other.jsonl", long_short_pairs(20)[13:])
    again = invoke([*args[:5], other, *args[6:], "--heldout_fraction", "0"])  # another test file
    assert again.exit_code == 0, again.output
    assert (out / "stages" / "train" / "done.json").stat().st_mtime_ns == done  # measured, not retrained
    assert json.loads((out / RECORD).read_text())["pairs"]["test"] == 7
    refused = invoke(
        ["train", "rm", "--data", train, "--output_dir", tmp_path / "x", "--heldout_fraction", "0"]
    )
    assert refused.exit_code == 2 and "heldout_fraction 0 needs --eval" in refused.output


def test_a_publish_cut_short_is_finished_by_the_next_run(tmp_path, tiny_path):
    """The model moves from its stage into OUTPUT_DIR, config.json last; a run stopped between
    the two leaves the rest in the stage, and the next run finishes the move without training."""
    data = write_table(tmp_path / "pairs.jsonl", long_short_pairs(8))
    out = train_rm(tiny_config(tiny_path, data, tmp_path / "rm"))
    weights = (out / "model.safetensors").read_bytes()
    stage_model = out / "stages" / "train" / "model"
    stage_model.mkdir()
    for name in ("config.json", "tokenizer.json"):  # as if stopped before these moved
        (out / name).replace(stage_model / name)
    (out / RECORD).unlink()
    done = (out / "stages" / "train" / "done.json").stat().st_mtime_ns
    train_rm(tiny_config(tiny_path, data, tmp_path / "rm"))
    assert (out / "stages" / "train" / "done.json").stat().st_mtime_ns == done
    assert not stage_model.exists() and (out / "model.safetensors").read_bytes() == weights
    assert len(HFRewardModel.from_options(str(out), {})(["Hi"], ["Hello"])) == 1
    assert json.loads((out / RECORD).read_text())["objective"] == f"reward=hf:{out.resolve()}"


def test_score_reads_the_pairs_train_rm_reads(tmp_path):
    """`steerable score` on a prompt/chosen/rejected table: two scored rows per pair."""
    data = write_table(tmp_path / "pairs.jsonl", long_short_pairs(3))
    result = invoke(["score", data, "--out", tmp_path / "scored.jsonl", "-o", "brief=builtin:brevity"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert [(r["label"], r["pair"]) for r in rows] == [
        (label, n) for n in range(3) for label in ("chosen", "rejected")
    ]
    assert rows[1]["response"] == long_short_pairs(3)[0]["rejected"] and "score_brief" in rows[1]

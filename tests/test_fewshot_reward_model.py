"""Few-shot tasks, NP-BTL and its evaluation (issue 17): the pieces on plain arrays, the
training, and `steerable train np-rm` end to end."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steerable.cli import app
from steerable.data.loading import read_placed, write_table
from steerable.errors import SteerableError
from steerable.evaluation.fewshot import context_curve, model_margins, oracle_margins
from steerable.fewshot.embeddings import embed_options, write_cache
from steerable.fewshot.reward_model import (
    NPRewardConfig,
    NPRewardModel,
    bradley_terry_loss,
    pack_context,
    target_accuracy,
)
from steerable.fewshot.tasks import (
    ChoiceLog,
    LogSource,
    PairPool,
    TaskBatch,
    TaskSource,
    UserTypes,
    choice_log,
    sample_tasks,
    scored_pool,
    synthetic_rewards,
    synthetic_source,
)

SMALL = dict(hidden=32, latent_size=8, heads=2, validation_tasks=64, eval_every=25)


def scored_rows(prompts=12, per_prompt=4, seed=0):
    """Rows as `steerable score` writes them: brevity (minus words) and a sentiment-like score
    that rises with length, so the two objectives conflict."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(prompts):
        for r in range(per_prompt):
            words = int(rng.integers(1, 30))
            rows.append(
                {
                    "prompt": f"question {p}",
                    "response": " ".join(["good"] * words) + f" {r}",
                    "score_brief": -float(words),
                    "score_positive": float(words) / 30 + float(rng.normal(0, 0.01)),
                }
            )
    return rows


# --- tasks --------------------------------------------------------------------------------
def test_the_synthetic_rewards_are_the_authors():
    rewards = synthetic_rewards(np.array([0.2, 0.5, 0.9]))
    np.testing.assert_allclose(rewards, [[0.2, 0.2], [1.0, 0.5], [1.8, 0.1]])


def test_half_the_synthetic_pairs_conflict_and_the_splits_share_no_option():
    source = synthetic_source({"train": 4000, "validation": 500, "test": 500})
    assert abs(source.pool.conflicting(source.types).mean() - 0.5) < 0.03
    options = {
        s: set(source.pool.pairs[source.pool.split == s].ravel()) for s in ("train", "validation", "test")
    }
    assert not options["train"] & options["test"] and not options["validation"] & options["test"]


def test_a_task_holds_its_types_choices_and_a_context_of_its_own_pairs():
    source = synthetic_source({"train": 200, "validation": 50, "test": 50})
    batch = sample_tasks(
        source.pool, source.types, "test", 30, np.random.default_rng(0), targets=20, context_sizes=5
    )
    utilities = source.pool.utilities
    for b in range(len(batch)):
        assert (
            utilities[batch.chosen[b], batch.types[b]] > utilities[batch.rejected[b], batch.types[b]]
        ).all()
        assert batch.context[b].sum() == 5
        assert set(batch.pairs[b]) <= set(source.pool.split_indices("test"))
        assert len(set(batch.pairs[b])) == 20


def test_balanced_tasks_give_every_type_the_same_number():
    source = synthetic_source({"train": 200, "validation": 50, "test": 50})
    batch = source.sample("test", 101, np.random.default_rng(0), context_sizes=2, balanced=True)
    assert sorted(np.bincount(batch.types).tolist()) == [50, 51]
    assert len(set(batch.types[:10].tolist())) == 2  # shuffled, not one type after the other


def test_conflicting_keeps_only_pairs_the_types_disagree_on():
    pool = scored_pool(scored_rows(), ["brief", "positive"])
    types = UserTypes.one_per_objective(["brief", "positive"])
    kept = pool.for_types(types, conflicting=True)
    first = kept.first_preferred(types)
    assert len(kept.pairs) > 0 and (first[:, 0] != first[:, 1]).all()


def test_scored_pairs_are_split_by_prompt():
    pool = scored_pool(scored_rows(prompts=20), ["brief", "positive"])
    prompt_of = [text[0] for text in pool.texts]
    seen = {}
    for (a, b), split in zip(pool.pairs, pool.split, strict=True):
        assert prompt_of[a] == prompt_of[b]
        assert seen.setdefault(prompt_of[a], split) == split
    assert set(pool.split) == {"train", "validation", "test"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: rows[3].pop("score_positive"), "data.jsonl, row 4: column 'score_positive' is missing"),
        (lambda rows: rows[2].update(score_brief=float("nan")), "data.jsonl, row 3: column 'score_brief'"),
        (lambda rows: rows[1].update(response="  "), "data.jsonl, row 2: 'response' is empty"),
    ],
)
def test_bad_scored_rows_are_named(change, message):
    rows = scored_rows()
    change(rows)
    with pytest.raises(SteerableError, match=message):
        scored_pool(rows, ["brief", "positive"], where="data.jsonl")


def test_an_undeclared_type_and_wrong_weights_are_refused():
    types = UserTypes.one_per_objective(["brief", "positive"])
    with pytest.raises(SteerableError, match="'helpful' is not declared"):
        types.index("helpful")
    with pytest.raises(SteerableError, match="non-negative"):
        UserTypes(["a"], ["brief", "positive"], [[0.5, -0.5]])
    pool = PairPool(["x"], np.zeros((2, 1)), [[0, 1]], ["train"])
    with pytest.raises(SteerableError, match="over objectives"):
        pool.first_preferred(types)


# --- the model on arrays ---------------------------------------------------------------------
def small_model(dim=3, **changes):
    torch.manual_seed(0)
    return NPRewardModel(dim, NPRewardConfig(**{**SMALL, **changes}))


def test_the_bradley_terry_loss_is_minus_log_sigmoid_of_the_margin():
    chosen, rejected = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.0, 0.0, 5.0]])
    mask = torch.tensor([[True, True, False]])
    expected = (-math.log(1 / (1 + math.exp(-1.0))) + math.log(2.0)) / 2
    assert bradley_terry_loss(chosen, rejected, mask).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("latent", ["deterministic", "gaussian"])
def test_the_reward_does_not_depend_on_the_order_of_the_context(latent):
    model = small_model(latent=latent)
    rng = np.random.default_rng(0)
    chosen, rejected, options = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(7, 3))
    order = rng.permutation(5)
    np.testing.assert_allclose(
        model.reward(chosen, rejected, options),
        model.reward(chosen[order], rejected[order], options),
        atol=1e-5,
    )
    assert not np.allclose(
        model.reward(chosen[:1], rejected[:1], options), model.reward(chosen, rejected, options)
    )


def test_a_context_beyond_the_trained_maximum_is_truncated_with_a_warning():
    model = small_model(max_context=2)
    rng = np.random.default_rng(3)
    chosen, rejected, options = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    with pytest.warns(UserWarning, match="more than the 2"):
        scores = model.reward(chosen, rejected, options)
    np.testing.assert_allclose(scores, model.reward(chosen[:2], rejected[:2], options), atol=1e-6)


def test_an_empty_context_gives_the_prior_reward_alone_or_in_a_batch():
    model = small_model()
    options = np.random.default_rng(1).normal(size=(4, 3)).astype(np.float32)
    alone = model.reward(np.zeros((0, 3)), np.zeros((0, 3)), options)
    assert np.isfinite(alone).all()
    # the same task in a batch beside one with a context: padding must not change it
    embeddings = torch.from_numpy(np.concatenate([options, options]))
    batch = TaskBatch(
        types=np.array([0, 0]),
        pairs=np.zeros((2, 4), dtype=int),
        chosen=np.array([[0, 1, 2, 3], [0, 1, 2, 3]]),
        rejected=np.array([[4, 5, 6, 7], [4, 5, 6, 7]]),
        context=np.array([[False] * 4, [True, True, False, False]]),
    )
    chosen_scores, _, _ = model.task_scores(embeddings, batch)
    np.testing.assert_allclose(chosen_scores[0].detach().numpy(), alone, atol=1e-5)


def test_pack_context_moves_the_context_pairs_to_the_front():
    chosen = torch.arange(8.0).reshape(2, 4, 1)
    context = torch.tensor([[False, True, False, True], [False, False, False, False]])
    c, r, mask = pack_context(chosen, chosen + 10, context)
    assert c.shape == (2, 2, 1) and mask.tolist() == [[True, True], [False, False]]
    assert c[0, :, 0].tolist() == [1.0, 3.0] and r[0, :, 0].tolist() == [11.0, 13.0]


def test_only_targets_outside_the_context_are_scored():
    batch = TaskBatch(
        types=np.array([0]),
        pairs=np.zeros((1, 4), dtype=int),
        chosen=np.zeros((1, 4), dtype=int),
        rejected=np.zeros((1, 4), dtype=int),
        context=np.array([[True, True, False, False]]),
    )
    margins = np.array([[1.0, 1.0, -1.0, 1.0]])  # right on both context pairs, 1 of 2 targets
    assert target_accuracy(margins, batch).tolist() == [0.5]


def test_embeddings_of_the_wrong_width_are_refused():
    with pytest.raises(SteerableError, match=r"\[n, 3\]"):
        small_model().reward(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((2, 4)))
    pool = PairPool(["x"], np.zeros((2, 1)), [[0, 1]], ["train"])
    with pytest.raises(SteerableError, match="embeddings of shape"):
        TaskSource(pool, UserTypes.one_per_objective(["x"]), np.zeros((3, 2)), "x")


@pytest.mark.parametrize("context", [(4, 16), (3, 10), (32,)])
def test_a_context_of_another_width_is_refused_naming_the_width_it_needs(context):
    # (4, 16) holds as many numbers as two 32-wide pairs; (3, 10) as none; (32,) is one pair flat
    model = small_model(dim=32)
    with pytest.raises(SteerableError, match=rf"context_chosen: embeddings of shape \({context[0]},"):
        model.reward(np.zeros(context), np.zeros(context), np.zeros((2, 32)))
    with pytest.raises(SteerableError, match=r"reads \[n, 32\]"):
        model.reward(np.zeros((1, 32)), np.zeros(context), np.zeros((2, 32)))


def test_fitting_and_scoring_leave_torchs_global_random_state_and_threads_alone():
    source = synthetic_source({"train": 200, "validation": 50, "test": 50})
    config = NPRewardConfig(**{**SMALL, "latent": "gaussian", "validation_tasks": 8}, steps=3)
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    model = NPRewardModel.fit(source, config, progress=False)
    model.reward(np.zeros((2, 1)), np.ones((2, 1)), np.zeros((3, 1)))
    assert torch.equal(torch.random.get_rng_state(), state) and torch.get_num_threads() == threads
    again = NPRewardModel.fit(source, config, progress=False)  # still the same model for a seed
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


def test_save_and_load_give_the_same_rewards(tmp_path):
    model = small_model(latent="gaussian")
    rng = np.random.default_rng(2)
    chosen, rejected, options = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.normal(size=(3, 3))
    model.save(tmp_path / "np")
    loaded = NPRewardModel.load(tmp_path / "np")
    np.testing.assert_allclose(
        loaded.reward(chosen, rejected, options), model.reward(chosen, rejected, options)
    )
    with pytest.raises(SteerableError, match="not an NP reward model directory"):
        NPRewardModel.load(tmp_path)


# --- training ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_models():
    source = synthetic_source({"train": 3000, "validation": 300, "test": 600})
    config = NPRewardConfig(**{**SMALL, "hidden": 64, "latent_size": 16}, steps=250, learning_rate=1e-3)
    untrained = NPRewardModel(1, config)
    np_model = NPRewardModel.fit(source, config, progress=False)
    btl = NPRewardModel.fit(
        source,
        NPRewardConfig(**{**SMALL, "hidden": 64}, steps=250, context="none", learning_rate=1e-3),
        progress=False,
    )
    return source, untrained, np_model, btl


def test_training_changes_the_weights_and_learns_from_the_context(synthetic_models):
    source, untrained, np_model, btl = synthetic_models
    before, after = untrained.state_dict(), np_model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    points = context_curve(
        {"np": model_margins(np_model), "btl": model_margins(btl)}, source, tasks=300, sizes=(0, 10)
    )
    acc = {(p.model, p.context): p.accuracy for p in points if p.type == "all"}
    assert acc[("np", 10)] > acc[("np", 0)] + 0.08
    assert acc[("np", 10)] > acc[("btl", 10)] + 0.08
    assert abs(acc[("btl", 0)] - 0.75) < 0.05  # the context-free ceiling of the synthetic task


def test_the_oracle_infers_the_type_from_the_context():
    source = synthetic_source({"train": 100, "validation": 50, "test": 600})

    class TrueReward(NPRewardModel):  # the type's own reward, saturated: a perfect per-type model
        def __init__(self, t):
            super().__init__(1, NPRewardConfig(**SMALL, context="none"))
            self.t = t

        def score(self, options, z):
            return 1e4 * torch.from_numpy(synthetic_rewards(options[..., 0].numpy())[..., self.t])

    points = context_curve(
        {"oracle": oracle_margins([TrueReward(0), TrueReward(1)])}, source, tasks=2000, sizes=(0, 1, 3)
    )
    acc = [p.accuracy for p in points if p.type == "all"]
    # With a share c of conflicting pairs, a target is lost half the time when it conflicts and
    # no context pair did: 1 - c/2 (1 - c)^n; at c = 1/2, 75 / 87.5 / 96.9%.
    c = source.pool.select(source.pool.split == "test").conflicting(source.types).mean()
    np.testing.assert_allclose(acc, [1 - c / 2 * (1 - c) ** n for n in (0, 1, 3)], atol=0.01)


# --- embeddings and the command ------------------------------------------------------------
def test_an_embeddings_cache_from_another_encoder_is_rebuilt(tmp_path):
    texts = [("hi", "hello there"), ("hi", "go away")]
    cache = tmp_path / "cache.npz"
    write_cache(cache, "lm:other", {"k": np.zeros(3, dtype=np.float32)})
    with pytest.warns(UserWarning, match="from encoder 'lm:other'"):
        vectors = embed_options(texts, "minilm", cache=cache)
    assert vectors.shape == (2, 384)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(embed_options(texts, "minilm", cache=cache), vectors)
    with np.load(cache) as data:
        assert str(data["encoder"]) == "minilm" and len(data["keys"]) == 2


def test_train_np_rm_runs_end_to_end_on_scored_data(tmp_path):
    data = tmp_path / "scored.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in scored_rows(prompts=40)))
    out = tmp_path / "np-rm"
    args = [
        "train",
        "np-rm",
        "--task",
        "scored",
        "--data",
        str(data),
        "--output_dir",
        str(out),
        "--steps",
        "30",
        "--hidden",
        "32",
        "--latent_size",
        "8",
        "--heads",
        "2",
        "--targets",
        "8",
        "--max_context",
        "5",
        "--eval_tasks",
        "50",
        "--validation_tasks",
        "20",
        "--eval_every",
        "15",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "NP-BTL" in result.output and "oracle" in result.output
    report = json.loads((out / "stages" / "evaluation" / "accuracy.json").read_text())
    assert {p["type"] for p in report["curve"]} == {"all", "brief", "positive"}
    assert (out / "stages" / "evaluation" / "accuracy.png").stat().st_size > 0
    assert NPRewardModel.load(out / "stages" / "np" / "model").types["names"] == ["brief", "positive"]
    again = CliRunner().invoke(app, args[:-2] + ["--eval_every", "10"])  # another setting: stale stage
    assert again.exit_code == 2 and "other inputs" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "scored"], "--data is required"),
        (["--task", "scored", "--data", "missing.jsonl"], "no such file"),
        (["--max_context", "20"], "--max_context"),
        (["--encoder", "bert"], "encoder 'bert' unknown"),
    ],
)
def test_train_np_rm_refuses_bad_settings(args, message, tmp_path):
    result = CliRunner().invoke(app, ["train", "np-rm", "--output_dir", str(tmp_path / "x"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x").exists()


def test_train_np_rm_names_the_file_line_of_a_bad_scored_row(tmp_path):
    rows = scored_rows()
    rows[5].pop("score_positive")
    rows[7]["response"] = " "
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["train", "np-rm", "--task", "scored", "--data", str(data), "--output_dir", str(tmp_path / "x")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "d.jsonl, line 8: 'response' is empty" in result.output, result.output
    rows[7]["response"] = "fine"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "d.jsonl, line 6: column 'score_positive' is missing" in result.output, result.output


# --- real users' logs ----------------------------------------------------------------------
def log_rows(users=12, pairs=6, seed=0):
    """A users' log: half the users choose the shorter answer, half the longer; user ids are
    plain numbers for some (as a CSV gives them)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for p in range(pairs):
            short, long = (
                " ".join(["word"] * int(n)) + f" {u}.{p}" for n in sorted(rng.choice(30, 2, False))
            )
            chosen, rejected = (short, long) if u % 2 else (long, short)
            rows.append(
                {"user": f"u{u}", "prompt": f"question {u}.{p}", "chosen": chosen, "rejected": rejected}
            )
    return rows


def test_a_log_is_split_by_user_deterministically_with_the_seed():
    rows = log_rows(users=20)
    log = choice_log(rows, seed=3)
    again, other = choice_log(rows, seed=3), choice_log(rows, seed=4)
    assert log.user_split.tolist() == again.user_split.tolist() != other.user_split.tolist()
    assert {s: int((log.user_split == s).sum()) for s in ("train", "validation", "test")} == {
        "train": 14,
        "validation": 3,
        "test": 3,
    }
    for p, (a, b) in enumerate(log.pairs):  # each pair is its user's row, chosen first
        row = rows[p]
        assert log.users[log.user[p]] == row["user"]
        assert log.texts[a] == (row["prompt"], row["chosen"]) and log.texts[b] == (
            row["prompt"],
            row["rejected"],
        )


def test_a_choice_logged_twice_is_one_pair_so_it_cannot_be_its_own_context_and_target():
    rows = log_rows(users=12, pairs=4)
    logged = [*rows, dict(rows[0]), dict(rows[5]), dict(rows[5])]
    with pytest.warns(UserWarning, match="3 duplicate row"):
        log = choice_log(logged, seed=2)
    expected = choice_log(rows, seed=2)
    assert log.pairs.tolist() == expected.pairs.tolist() and log.user.tolist() == expected.user.tolist()
    assert log.user_split.tolist() == expected.user_split.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        choice_log(rows, seed=2)  # nothing said when nothing is dropped


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", ""])
def test_a_log_reads_from_every_table_format_alike(suffix, tmp_path):
    rows = log_rows(users=6, pairs=3)
    path = tmp_path / f"logs{suffix}"
    if suffix:
        write_table(path, rows)
    else:  # a dataset saved with `datasets`
        import datasets

        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    read, places = read_placed(path)
    log = choice_log(read, str(path), seed=1, places=places)
    expected = choice_log(rows, seed=1)
    assert log.users == expected.users and log.texts == expected.texts
    assert (
        log.pairs.tolist() == expected.pairs.tolist()
        and log.user_split.tolist() == expected.user_split.tolist()
    )


def test_a_log_task_is_one_users_own_choices_padded_to_the_targets():
    log = choice_log(log_rows(users=12, pairs=6))
    source = LogSource(log, np.zeros((len(log.texts), 2)), "none")
    batch = source.sample("train", 40, np.random.default_rng(0), targets=10, context_sizes=(0, 9))
    for b in range(len(batch)):
        own = set(log.pairs_of[batch.types[b]].tolist())
        assert log.user_split[batch.types[b]] == "train"
        assert batch.valid[b].sum() == 6 and set(batch.pairs[b, batch.valid[b]].tolist()) == own
        assert not (batch.context[b] & ~batch.valid[b]).any()
        assert batch.scored()[b].sum() >= 1  # a context always leaves a target of the user's to score
    assert source.largest_task("test") == 6
    with pytest.raises(SteerableError, match="no test user has more than 6 pairs"):
        source.sample("test", 4, np.random.default_rng(0), targets=10, context_sizes=6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda rows: [r.pop("user") for r in rows], "logs.jsonl: no column 'user'; a users' log has"),
        (lambda rows: rows[4].update(chosen=" "), "logs.jsonl, line 5: 'chosen' is empty"),
        (
            lambda rows: rows[2].update(rejected=rows[2]["chosen"]),
            "line 3: 'chosen' and 'rejected' are the same",
        ),
        (lambda rows: rows.append({**rows[0], "user": "solo"}), "line 73: user 'solo' has only this pair"),
    ],
)
def test_bad_log_rows_are_one_error_naming_the_row_and_the_fix(change, message, tmp_path):
    rows = log_rows()
    change(rows)
    data = tmp_path / "logs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["train", "np-rm", "--task", "logs", "--data", str(data), "--output_dir", str(tmp_path / "x")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "x" / "stages" / "np").exists()


def synthetic_log(users=300, pairs=12, seed=0) -> LogSource:
    """The authors' synthetic task as a log: each user of one of the two types chooses on pairs
    of their own; no utilities or types reach the model, only who chose what."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.0, 1.0, size=(users * pairs, 2))
    kind = np.repeat(np.arange(users) % 2, pairs)
    rewards = synthetic_rewards(y.ravel()).reshape(-1, 2, 2)[np.arange(len(y)), :, kind]  # (P, 2)
    first = rewards[:, 0] > rewards[:, 1]
    options = np.arange(2 * len(y)).reshape(-1, 2)
    chosen = np.where(first, options[:, 0], options[:, 1])
    rejected = np.where(first, options[:, 1], options[:, 0])
    split = np.array(["train"] * (users - 80) + ["validation"] * 40 + ["test"] * 40)
    texts = [("", str(i)) for i in range(2 * len(y))]
    log = ChoiceLog(
        [f"u{u}" for u in range(users)],
        split,
        np.stack([chosen, rejected], 1),
        np.repeat(np.arange(users), pairs),
        texts,
    )
    return LogSource(log, y.reshape(-1, 1), "synthetic:y")


def test_np_btl_trains_from_a_log_without_utilities_or_types_and_uses_the_context():
    source = synthetic_log()
    config = NPRewardConfig(
        **{**SMALL, "hidden": 64, "latent_size": 16}, steps=250, learning_rate=1e-3, targets=12
    )
    untrained = NPRewardModel(1, config)
    model = NPRewardModel.fit(source, config, progress=False)
    assert model.types is None
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in untrained.state_dict().items())
    points = context_curve({"np": model_margins(model)}, source, tasks=400, targets=12, sizes=(0, 5))
    assert {p.type for p in points} == {"all"}
    acc = {p.context: p.accuracy for p in points}
    assert acc[5] > acc[0] + 0.08


def test_batched_predictions_equal_one_user_at_a_time():
    model = small_model(max_context=4)
    rng = np.random.default_rng(5)
    sizes, targets = [0, 2, 4, 1], [3, 1, 2, 3]  # context pairs and target pairs per user
    c = rng.normal(size=(4, 4, 3)).astype(np.float32)  # (T, C, d)
    r = rng.normal(size=(4, 4, 3)).astype(np.float32)
    a = rng.normal(size=(4, 3, 3)).astype(np.float32)  # (T, N, d)
    b = rng.normal(size=(4, 3, 3)).astype(np.float32)
    context_mask = np.arange(4)[None] < np.array(sizes)[:, None]  # (T, C)
    target_mask = np.arange(3)[None] < np.array(targets)[:, None]  # (T, N)
    batched = model.predict(c, r, context_mask, a, b, target_mask)
    assert batched.shape == (4, 3) and np.isnan(batched[~target_mask]).all()
    for t in range(4):
        n = targets[t]
        ra = model.reward(c[t, : sizes[t]], r[t, : sizes[t]], a[t, :n])
        rb = model.reward(c[t, : sizes[t]], r[t, : sizes[t]], b[t, :n])
        np.testing.assert_allclose(batched[t, :n], 1 / (1 + np.exp(-(ra - rb))), atol=1e-5)
    with pytest.raises(SteerableError, match=r"target_a \(4, 3, 2\)"):
        model.predict(c, r, context_mask, a[..., :2], b[..., :2])
    empty = model.predict(np.zeros((0,)), np.zeros((0,)), np.zeros((0,)), a, b)  # no context at all
    np.testing.assert_allclose(empty[0], batched[0], atol=1e-5)  # user 0 had none either


def test_train_np_rm_from_users_logs_reports_held_out_users(tmp_path):
    data = tmp_path / "logs.csv"
    import pandas as pd

    pd.DataFrame(log_rows(users=16, pairs=8)).to_csv(data, index=False)
    out = tmp_path / "np-rm"
    small = "--steps 30 --hidden 32 --latent_size 8 --heads 2 --targets 8 --max_context 5 --eval_tasks 20"
    args = ["train", "np-rm", "--task", "logs", "--data", str(data), "--output_dir", str(out), *small.split()]
    args += ["--validation_tasks", "20", "--eval_every", "15"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "NP-BTL" in result.output and "no oracle" in result.output
    report = json.loads((out / "stages" / "evaluation" / "accuracy.json").read_text())
    assert report["users"] == {"train": 11, "validation": 2, "test": 3}
    assert {p["model"] for p in report["curve"]} == {"NP-BTL", "BTL"}
    assert {p["context"] for p in report["curve"]} == {0, 1, 3, 5} and {
        p["type"] for p in report["curve"]
    } == {"all"}
    model = NPRewardModel.load(out / "stages" / "np" / "model")
    assert model.types is None and model.split["task"] == "logs"
    torch.manual_seed(0)  # the layers' initialisation at --seed 0, as fit makes them
    untrained = NPRewardModel(model.dim, model.config)
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in untrained.state_dict().items())
    assert CliRunner().invoke(app, args).exit_code == 0  # a finished run is reused


def test_padding_of_any_value_in_masked_context_slots_changes_no_prediction():
    model = small_model(max_context=4)
    rng = np.random.default_rng(6)
    c = rng.normal(size=(3, 4, 3)).astype(np.float32)  # (T, C, d)
    r = rng.normal(size=(3, 4, 3)).astype(np.float32)
    a, b = rng.normal(size=(2, 3, 2, 3)).astype(np.float32)  # (T, N, d) each
    context_mask = np.arange(4)[None] < np.array([0, 2, 4])[:, None]  # user 0: an empty context
    zeros_c, zeros_r = np.where(context_mask[..., None], c, 0), np.where(context_mask[..., None], r, 0)
    nan_c, nan_r = np.where(context_mask[..., None], c, np.nan), np.where(context_mask[..., None], r, np.nan)
    with_zeros = model.predict(zeros_c, zeros_r, context_mask, a, b)
    assert np.isfinite(with_zeros).all()
    np.testing.assert_allclose(model.predict(nan_c, nan_r, context_mask, a, b), with_zeros, atol=1e-6)

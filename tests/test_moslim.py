"""MOSLIM: intensity tags, the mapped reward and its statistics, the recipe end to end."""

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from steerable.conditioning import (
    check_levels,
    format_levels,
    parse_levels,
    parse_levels_text,
    preference_to_levels,
)
from steerable.errors import SteerableError
from steerable.methods.moslim.recipe import (
    MIN_STD,
    RewardStats,
    level_matrix,
    level_weight,
    mapped_reward,
    sample_levels,
    target_probability,
    zscore_reward,
)
from steerable.preferences import Preference

NAMES = ["brief", "positive", "relevant"]


@given(
    st.dictionaries(
        st.sampled_from(NAMES), st.integers(min_value=1, max_value=9), min_size=1, max_size=len(NAMES)
    ),
    st.text(alphabet="abc ?.", max_size=20),
)
def test_level_tags_round_trip(levels, prompt):
    text = format_levels(levels)
    assert parse_levels(f"{prompt}\n\n{text}") == levels
    assert check_levels(levels, NAMES, 9) == {n: levels[n] for n in NAMES if n in levels}


def test_level_tags_look_like_the_paper_and_refuse_bad_levels():
    assert format_levels({"brief": 4, "positive": 2}) == "<brief 4> <positive 2>"
    assert parse_levels_text("brief=4, positive=2") == {"brief": 4, "positive": 2}
    for bad, field in [
        ({"brief": 0}, "'brief'"),
        ({"brief": 6}, "1..5"),
        ({"brief": 2.5}, "integers"),
        ({"brief": True}, "integers"),
        ({"brief": float("nan")}, "integers"),
        ({"brief": float("inf")}, "integers"),
        ({"brief": 10**400}, "1..5"),
        ({"helpful": 3}, "helpful"),
        ({}, "at least one"),
    ]:
        with pytest.raises(SteerableError, match=field):
            check_levels(bad, NAMES, 5)
    for text in ("brief", "brief=x", "", "brief=1,brief=2"):
        with pytest.raises(SteerableError):
            parse_levels_text(text)


def test_preference_maps_to_levels_like_ric_maps_to_targets():
    def levels(w, mapping="linf"):
        return preference_to_levels(Preference.parse(w, NAMES[:2]), 5, mapping)

    assert levels([1, 0]) == {"brief": 5, "positive": 1}
    assert levels([0.5, 0.5]) == {"brief": 5, "positive": 5}
    assert levels([0.3, 0.7]) == {"brief": 3, "positive": 5}  # 1 + 0.6 * 4 = 3.4
    assert levels([0.3, 0.7], "linear") == {"brief": 2, "positive": 4}  # 2.2 and 3.8


# Two heads, three levels; row 0 asks brief 3 and positive 1, row 1 asks brief 2 only.
PROBS = np.array(
    [
        [[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]],
        [[0.2, 0.6, 0.2], [0.1, 0.1, 0.8]],
    ]
)
LEVELS = np.array([[3, 1], [2, 0]])


def test_target_probability_reads_the_requested_level():
    assert target_probability(PROBS, LEVELS, "level") == pytest.approx(np.array([[0.7, 0.5], [0.6, 0.0]]))
    # expected levels: row 0 = 2.6 and 1.7, row 1 = 2.0; distance to the request over L - 1 = 2
    expected = np.array([[1 - 0.4 / 2, 1 - 0.7 / 2], [1.0, 0.0]])
    assert target_probability(PROBS, LEVELS, "expected") == pytest.approx(expected)
    assert target_probability(PROBS, LEVELS, "at_least") == pytest.approx(np.array([[0.7, 1.0], [0.8, 0.0]]))


def test_mapped_reward_on_hand_computed_probabilities_with_a_masked_objective():
    p = np.array([[0.7, 0.5], [0.6, 0.0]])
    mask = LEVELS > 0
    avg = np.array([[0.5, 0.3], [0.4, 0.0]])
    std = np.array([[0.1, 0.2], [0.4, 1.0]])
    # row 0: ((0.7-0.5)/0.1 + (0.5-0.3)/0.2) = 2 + 1 = 3; row 1: (0.6-0.4)/0.4 = 0.5, brief only
    assert mapped_reward(p, mask, avg, std, "active") == pytest.approx([3 / 2, 0.5 / 1])
    assert mapped_reward(p, mask, avg, std, "all") == pytest.approx([3 / 2, 0.5 / 2])
    # a masked objective adds nothing, whatever its probability
    assert mapped_reward(p + [[0, 0], [0, 9]], mask, avg, std, "active") == pytest.approx([1.5, 0.5])


def test_zscore_reward_is_a_weighted_sum_with_weights_from_the_levels():
    assert level_weight(np.array([1, 2, 3]), 3) == pytest.approx([-1, 0, 1])
    z = np.array([[2.0, -1.0], [0.5, 7.0]])
    # row 0: brief 3 -> +1 * 2, positive 1 -> -1 * -1: (2 + 1) / 2; row 1: brief 2 -> 0
    assert zscore_reward(z, LEVELS, 3, "active") == pytest.approx([1.5, 0.0])
    assert zscore_reward(z, LEVELS, 3, "all") == pytest.approx([1.5, 0.0])


def test_running_statistics_per_head_and_level():
    stats = RewardStats(["brief", "positive"], 3, decay=0.5)
    p = np.array([[0.7, 0.5], [0.3, 0.0], [0.5, 0.1]])
    levels = np.array([[3, 1], [3, 0], [2, 1]])
    stats.update(p, levels)  # first batch sets: brief 3 -> mean 0.5, var 0.04
    assert stats.mean[0, 2] == pytest.approx(0.5) and stats.var[0, 2] == pytest.approx(0.04)
    assert stats.mean[1, 0] == pytest.approx(0.3) and stats.var[1, 0] == pytest.approx(0.04)
    assert not stats.seen[1, 1] and not stats.seen[1, 2]
    stats.update(np.array([[0.9, 0.0]]), np.array([[3, 0]]))  # EMA: 0.5 * 0.5 + 0.5 * 0.9
    assert stats.mean[0, 2] == pytest.approx(0.7) and stats.var[0, 2] == pytest.approx(0.02)
    avg, std = stats.lookup(np.array([[3, 0], [2, 1]]))
    assert avg == pytest.approx(np.array([[0.7, 0.0], [0.5, 0.3]]))
    assert std == pytest.approx(np.array([[np.sqrt(0.02), 1.0], [MIN_STD, 0.2]]))  # one value: var 0
    assert RewardStats.from_dict(json.loads(json.dumps(stats.to_dict()))).to_dict() == stats.to_dict()


def test_tag_sampling_covers_every_non_empty_subset_and_level():
    rng = np.random.default_rng(0)
    draws = [sample_levels(rng, NAMES, 5) for _ in range(400)]
    assert all(d and set(d) <= set(NAMES) for d in draws)
    assert {tuple(sorted(d)) for d in draws} == {
        tuple(sorted(s))
        for s in ([0], [1], [2], [0, 1], [0, 2], [1, 2], [0, 1, 2])
        for s in [[NAMES[i] for i in s]]
    }
    assert {v for d in draws for v in d.values()} == {1, 2, 3, 4, 5}
    assert all(len(sample_levels(rng, NAMES, 5, "all")) == 3 for _ in range(10))
    assert level_matrix([{"positive": 2}], NAMES).tolist() == [[0, 2, 0]]


TINY_RL = [
    "--max_steps", "2", "--batch_size", "4", "--num_generations", "2", "--max_completion_length", "6",
    "--prompt_limit", "4", "--lora_r", "4", "--lora_alpha", "8", "--learning_rate", "0.01",
]  # fmt: skip


LEGEND = "Tags such as <brief 5> ask for a level from 1 (least) to 5 (most)."


@pytest.fixture(scope="module")
def zscore_policy(tiny_ric, tiny_path, tmp_path_factory):
    """A MOSLIM policy trained through the CLI on the weighted z-score reward (no RM needed),
    with a system prompt (LEGEND)."""
    from typer.testing import CliRunner

    from steerable.cli import app

    _, ric = tiny_ric
    out = tmp_path_factory.mktemp("moslim") / "zscore"
    args = ["train", "moslim", "--model", tiny_path, "--stats", str(ric), "--reward", "zscore"]
    args += ["--system", LEGEND]
    result = CliRunner().invoke(app, [*args, *TINY_RL, "--output_dir", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_zscore_policy_is_a_self_describing_directory_whose_weights_changed(zscore_policy, tiny_ric):
    from safetensors.torch import load_file

    manifest = json.loads((zscore_policy / "steerable.json").read_text())
    assert manifest["method"] == "moslim" and manifest["moslim"]["levels"] == 5
    assert manifest["moslim"]["reward"] == "zscore" and manifest["moslim"]["tag_sampling"] == "subset"
    assert manifest["moslim"]["reward_stats"] is None  # the z-score reward keeps no statistics of p_i
    assert manifest["system"] == LEGEND  # what generate and evaluate prompt the policy with
    assert manifest["rewards"] == json.loads((tiny_ric[1] / "steerable.json").read_text())["rewards"]
    adapter = load_file(zscore_policy / manifest["policies"][0]["adapter"] / "adapter_model.safetensors")
    # LoRA's B matrices start at zero: any non-zero one is a step the RL took
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)
    done = json.loads((zscore_policy / "stages/policy/done.json").read_text())
    assert done["info"]["steps"] == 2 and done["info"]["generated_completions"] == 8


def test_training_rows_carry_tags_in_the_prompt_and_the_untagged_question(tiny_path, tiny_ric):
    from steerable.defaults import load_tokenizer
    from steerable.methods.moslim.recipe import MOSLIMConfig, training_rows

    config = MOSLIMConfig(
        model=tiny_path, stats=str(tiny_ric[1]), reward="zscore", max_steps=3, batch_size=4, num_generations=2
    )
    rows = training_rows(config, ["brief", "positive"], 5, load_tokenizer(tiny_path))
    assert len(rows) == 3 * 2
    for row in rows:
        levels = json.loads(row["levels"])
        assert row["prompt"][-1]["content"] == f"{row['question']}\n\n{format_levels(levels)}"
        assert parse_levels(row["question"]) == {}
    tokenizer = load_tokenizer(tiny_path)
    legend = training_rows(replace(config, system=LEGEND), ["brief", "positive"], 5, tokenizer)
    assert [m["role"] for m in legend[0]["prompt"]] == ["system", "user"]
    assert legend[0]["prompt"][0]["content"] == LEGEND and legend[0]["prompt"][1] == rows[0]["prompt"][-1]


# training_rows' levels for seed 0 (max_steps 2, 2 prompts a step), read off the code before
# mirror_levels was added
GOLDEN_LEVELS = [{"brief": 2, "positive": 2}, {"brief": 1}, {"positive": 4}, {"brief": 5, "positive": 4}]


def test_mirrored_rows_pair_each_prompt_with_its_antithetic_levels(
    tiny_path, tiny_ric, tmp_path, monkeypatch
):
    from trl.trainer.grpo_trainer import RepeatSampler

    from steerable.defaults import load_tokenizer
    from steerable.methods.moslim import recipe as moslim
    from steerable.methods.rl import grpo_args

    config = moslim.MOSLIMConfig(
        model=tiny_path,
        stats=str(tiny_ric[1]),
        reward="zscore",
        max_steps=5,
        batch_size=8,
        num_generations=2,
        mirror_levels=True,
        output_dir=str(tmp_path / "policy"),
    )
    rows = moslim.training_rows(config, ["brief", "positive"], 5, load_tokenizer(tiny_path))
    assert len(rows) == 5 * 4
    for first, second in zip(rows[::2], rows[1::2], strict=True):
        a, b = json.loads(first["levels"]), json.loads(second["levels"])
        assert first["question"] == second["question"] and a.keys() == b.keys() and a
        assert all(a[name] + b[name] == 6 for name in a)
    assert len({row["question"] for row in rows[::2]}) > 1  # the pairs walk through the prompts
    with pytest.raises(SteerableError, match="even number of prompts per step"):
        replace(config, batch_size=6)

    # train_moslim asks for unshuffled rows ...
    asked = {}

    def stop(*args, **kwargs):
        asked.update(kwargs)
        raise InterruptedError

    monkeypatch.setattr(moslim, "train_grpo", stop)
    with pytest.raises(InterruptedError):
        moslim.train_moslim(config)
    assert asked["shuffle"] is False
    # ... and TRL's sampler, built as GRPOTrainer builds it from those arguments, then puts both
    # rows of every pair in the batch of one optimisation step
    args = grpo_args(config, [1.0], tmp_path / "checkpoints", shuffle=asked["shuffle"])
    sampler = RepeatSampler(
        range(len(rows)),
        mini_repeat_count=args.num_generations,
        batch_size=args.generation_batch_size // args.num_generations,
        repeat_count=args.num_iterations * args.steps_per_generation,
        shuffle=args.shuffle_dataset,
        seed=args.seed,
    )
    order = list(sampler)
    steps = [
        order[i : i + args.generation_batch_size] for i in range(0, len(order), args.generation_batch_size)
    ]
    assert len(steps) == config.max_steps
    for step in steps:
        assert all((i ^ 1) in step for i in step)  # row 2j and row 2j + 1 together


def test_unmirrored_rows_keep_their_tags_for_a_seed(tiny_path, tiny_ric):
    """The levels drawn for seed 0, as before mirror_levels existed (a run's tags are part of
    what reproduces it)."""
    from steerable.defaults import load_tokenizer
    from steerable.methods.moslim.recipe import MOSLIMConfig, training_rows

    config = MOSLIMConfig(
        model=tiny_path, stats=str(tiny_ric[1]), reward="zscore", max_steps=2, batch_size=4, num_generations=2
    )
    rows = training_rows(config, ["brief", "positive"], 5, load_tokenizer(tiny_path))
    assert [json.loads(r["levels"]) for r in rows] == GOLDEN_LEVELS


def test_generate_cli_steers_a_moslim_policy_by_levels_or_preference(zscore_policy):
    from typer.testing import CliRunner

    from steerable.cli import app

    runner = CliRunner()
    base = ["generate", "--model", str(zscore_policy), "--max-new-tokens", "3"]
    result = runner.invoke(app, [*base, "--levels", "brief=4", "Hi"])
    assert result.exit_code == 0 and "levels: brief=4" in result.output and "> Hi" in result.output, (
        result.output
    )
    result = runner.invoke(app, [*base, "--prefer", "1,0", "Hi"])
    assert result.exit_code == 0 and "levels: brief=5, positive=1" in result.output, result.output
    for args, message in [
        (["--levels", "brief=6"], "1..5"),
        (["--levels", "helpful=2"], "helpful"),
        (["--levels", "brief=2", "--prefer", "1,0"], "one of"),
        (["--target", "brief=1,positive=0"], "--target steers ric"),
    ]:
        result = runner.invoke(app, [*base, *args, "Hi"])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_moslim_config_refuses_bad_settings(tiny_ric, tiny_path):
    from steerable.methods.moslim.recipe import MOSLIMConfig

    stats = str(tiny_ric[1])
    for overrides, message in [
        ({}, "--reward_model is required"),
        ({"reward": "zscore", "levels": 1}, "--levels"),
        ({"reward": "zscore", "ema_decay": 1.0}, "--ema_decay"),
        ({"reward": "zscore", "k": "some"}, "--k"),
        ({"reward": "zscore", "sft_weight": 1.0}, "--sft_weight is read by --algorithm dpo only"),
        ({"reward": "zscore", "algorithm": "dpo", "pool": stats, "sft_weight": -1.0}, "--sft_weight must be"),
        ({"reward": "zscore", "algorithm": "dpo", "pool": stats, "sft_weight": float("nan")}, "--sft_weight"),
        ({"reward": "zscore", "rejected": "mirrored"}, "--rejected is read by --algorithm dpo only"),
        (
            {"reward": "zscore", "algorithm": "dpo", "pool": stats, "rejected": "first"},
            "--rejected 'first' unknown",
        ),
    ]:
        with pytest.raises(SteerableError, match=message):
            MOSLIMConfig(model=tiny_path, stats=stats, **overrides)
    dpo = {"model": tiny_path, "stats": stats, "reward": "zscore", "algorithm": "dpo", "pool": stats}
    assert MOSLIMConfig(**dpo).dpo_loss == {"loss_type": ["sigmoid"]}  # DPO as published
    assert MOSLIMConfig(**dpo, sft_weight=0.5).dpo_loss == {
        "loss_type": ["sigmoid", "sft"],
        "loss_weights": [1.0, 0.5],
    }


def test_evaluate_sweeps_levels_beside_the_tags_floor(zscore_policy, tmp_path):
    from typer.testing import CliRunner

    from steerable.cli import app
    from steerable.evaluation.report import EvaluationResult

    runner = CliRunner()
    base = ["evaluate", "--model", str(zscore_policy), "--limit", "2", "--resolution", "2"]
    base += ["--max-new-tokens", "4", "--samples", "2"]
    for method in ("moslim", "tags"):
        result = runner.invoke(app, [*base, "--method", method, "--out", str(tmp_path / method)])
        assert result.exit_code == 0, result.output
        assert "Controllability by requested level" in result.output
    trained, floor = (EvaluationResult.load(tmp_path / m) for m in ("moslim", "tags"))
    assert len(trained.points) == 3 and trained.levels["count"] == 5
    points = trained.levels["points"]
    assert [(p["objective"], p["level"]) for p in points] == [
        (n, lv) for n in ("brief", "positive") for lv in range(1, 6)
    ]
    assert all(p["n"] == 4 and len(p["prompt_means"]) == 2 for p in points)
    assert all(-1 <= p["relevance"] <= 1 for p in points)  # MiniLM cosine of question and answer
    assert set(trained.levels["controllability"]) == {"brief", "positive"}
    assert trained.compute["train_seconds"] > 0 and floor.compute["train_seconds"] == 0
    report = runner.invoke(
        app, ["report", str(tmp_path / "moslim"), str(tmp_path / "tags"), "--out", str(tmp_path / "both")]
    )
    assert report.exit_code == 0 and "### tags: controllability" in report.output, report.output
    wrong = runner.invoke(app, [*base, "--method", "ric", "--out", str(tmp_path / "ric")])
    assert wrong.exit_code == 2 and "--method moslim" in wrong.output, wrong.output


def test_level_sweep_tags_the_others_at_a_fixed_level_or_leaves_them_untagged():
    from types import SimpleNamespace

    from steerable.evaluation.levels import level_markdown, level_record, level_sweep

    asked = []

    def generate(prompts, tags):
        asked.append(dict(tags))
        return [str(tags[name]) for name in (next(iter(tags)),) for _ in prompts]

    names = ["brief", "positive"]
    rewards = SimpleNamespace(names=names, score=lambda p, r: np.array([[float(x), -float(x)] for x in r]))
    alone = level_sweep(generate, rewards, ["a", "b"], 3, samples=2)
    assert asked == [{name: level} for name in names for level in (1, 2, 3)]
    assert "tag alone" in level_markdown("moslim", level_record(alone, names, 3))[0]
    asked.clear()
    beside = level_sweep(generate, rewards, ["a", "b"], 3, samples=2, others=2)
    assert asked == [
        *({"brief": level, "positive": 2} for level in (1, 2, 3)),
        *({"brief": 2, "positive": level} for level in (1, 2, 3)),
    ]
    record = level_record(beside, names, 3, others=2)
    assert record["others"] == 2 and "the others tagged at level 2" in level_markdown("moslim", record)[0]
    assert all(p.relevance is None for p in beside)  # no quality check asked for
    scored = level_sweep(
        generate, rewards, ["a", "b"], 3, samples=2, quality=lambda p, r: [float(x) for x in r]
    )
    assert [p.relevance for p in scored] == [
        1.0,
        2.0,
        3.0,
        1.0,
        2.0,
        3.0,
    ]  # the mean over the level's answers
    lines = level_markdown("moslim", level_record(scored, names, 3))
    assert "relevance 3.00" in lines[-2] and "relevance 1.00" in lines[-1]


def saved_checkpoint(folder, callbacks) -> None:
    """A complete checkpoint as transformers' Trainer writes it: trainer_state.json last, with
    the state of every ExportableState callback in it."""
    from transformers import TrainerState

    folder.mkdir(parents=True)
    TrainerState(global_step=10, stateful_callbacks=list(callbacks)).save_to_json(
        folder / "trainer_state.json"
    )


def test_running_statistics_travel_with_checkpoints(tmp_path):
    """The statistics are part of the checkpoint's trainer_state.json, which transformers writes
    before it deletes the older checkpoint: no crash can leave a checkpoint without them."""
    from steerable.methods.moslim.recipe import resumed_stats, stats_callback

    stats = RewardStats(["brief"], 3)
    stats.update(np.array([[0.4], [0.6]]), np.array([[2], [2]]))
    saved_checkpoint(tmp_path / "checkpoints" / "checkpoint-10", [stats_callback(stats)])
    fresh = RewardStats(["brief"], 3)
    assert resumed_stats(tmp_path, fresh).to_dict() == stats.to_dict()
    assert resumed_stats(tmp_path / "elsewhere", fresh) is fresh


def test_a_checkpoint_without_the_running_statistics_is_refused_not_resumed_from_scratch(tmp_path):
    """Resuming the policy with fresh statistics would rescale its reward mid-run; they cannot be
    recomputed (they run over every batch since step 0), so the run says so instead."""
    from steerable.methods.moslim.recipe import resumed_stats

    saved_checkpoint(tmp_path / "checkpoints" / "checkpoint-10", [])
    with pytest.raises(SteerableError, match=r"checkpoint-10 holds no MOSLIM reward statistics.*delete"):
        resumed_stats(tmp_path, RewardStats(["brief"], 3))


def test_a_checkpoint_with_the_previous_versions_statistics_file_resumes_them(tmp_path):
    """The previous version kept the statistics in checkpoint-N/moslim_reward_stats.json; a run it
    left unfinished goes on with them."""
    from steerable.methods.moslim.recipe import resumed_stats

    stats = RewardStats(["brief"], 3)
    stats.update(np.array([[0.4], [0.6]]), np.array([[2], [2]]))
    checkpoint = tmp_path / "checkpoints" / "checkpoint-10"
    saved_checkpoint(checkpoint, [])
    (checkpoint / "moslim_reward_stats.json").write_text(json.dumps(stats.to_dict()))
    assert resumed_stats(tmp_path, RewardStats(["brief"], 3)).to_dict() == stats.to_dict()


def test_running_statistics_fold_in_every_process_share_of_the_batch():
    """Under `accelerate launch` each process scores its share of a batch; the statistics fold
    in the whole batch (`total` sums the per-process moments), so every process keeps the same
    ones, the ones one process would keep for the whole batch."""
    p = np.array([[0.7, 0.5], [0.3, 0.0], [0.5, 0.1], [0.2, 0.9]])
    levels = np.array([[3, 1], [3, 0], [2, 1], [3, 2]])
    whole = RewardStats(["brief", "positive"], 3, decay=0.5)
    whole.update(p, levels)
    shares = [RewardStats(["brief", "positive"], 3, decay=0.5) for _ in range(2)]
    halves = [(p[:2], levels[:2]), (p[2:], levels[2:])]
    moments = [share.moments(*half) for share, half in zip(shares, halves, strict=True)]
    for share, half in zip(shares, halves, strict=True):
        share.update(*half, total=lambda _: moments[0] + moments[1])
    for share in shares:
        np.testing.assert_allclose(share.mean, whole.mean)
        np.testing.assert_allclose(share.var, whole.var, atol=1e-12)
        assert (share.seen == whole.seen).all()


def test_the_statistics_are_summed_on_the_processes_device(monkeypatch):
    """NCCL reduces only CUDA tensors: the moments go to the processes' device (a device that is
    not the CPU here, as a GPU's is), and come back as numbers."""
    import accelerate
    import accelerate.utils
    import torch

    from steerable.methods.moslim.recipe import summed_over_processes

    seen = []

    class State:
        num_processes, device = 2, torch.device("meta")

    def reduce(tensor, reduction="mean"):
        seen.append((tensor.device, reduction))
        if tensor.device != State.device:
            raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")
        return torch.full(tensor.shape, 3.0)  # what the other process added, in effect

    monkeypatch.setattr(accelerate, "PartialState", lambda *a, **k: State())
    monkeypatch.setattr(accelerate.utils, "reduce", reduce)
    total = summed_over_processes(np.ones((3, 2, 5)))
    assert seen == [(State.device, "sum")]
    assert isinstance(total, np.ndarray) and total.shape == (3, 2, 5) and (total == 3.0).all()


@pytest.fixture(scope="module")
def tiny_rms(tiny_ric, tiny_path, tmp_path_factory):
    """Tiny multi-head RMs on the tiny RiC run's scored offline data: both objectives, and brief alone."""
    from steerable.reward_models.multihead import MOSLIMRMConfig, train_moslim_rm

    _, ric = tiny_ric
    root = tmp_path_factory.mktemp("moslim_rms")
    data = str(ric / "stages/offline/scored.jsonl")
    common = dict(model=tiny_path, data=data, num_epochs=1.0, batch_size=8, max_length=32)
    both = train_moslim_rm(
        MOSLIMRMConfig(**common, labels=["brief", "positive"], output_dir=str(root / "both"))
    )
    brief = train_moslim_rm(MOSLIMRMConfig(**common, labels=["brief"], output_dir=str(root / "brief")))
    return both, brief


def test_mapped_policy_trains_on_the_rm_and_saves_its_running_statistics(
    tiny_rms, tiny_ric, tiny_path, tmp_path
):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from steerable.cli import app
    from steerable.methods.moslim.recipe import resumed_stats

    both, brief = tiny_rms
    stats = str(tiny_ric[1])
    base = ["train", "moslim", "--model", tiny_path, "--stats", stats, *TINY_RL]
    runner = CliRunner()
    result = runner.invoke(
        app, [*base, "--reward_model", str(both), "--output_dir", str(tmp_path / "mapped")]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "mapped/steerable.json").read_text())
    assert manifest["moslim"]["reward"] == "mapped" and manifest["moslim"]["reward_model"] == str(both)
    stats_seen = np.array(manifest["moslim"]["reward_stats"]["seen"])
    assert stats_seen.shape == (2, 5) and stats_seen.any()  # some (head, level) pairs were requested
    # the trainer kept them in its last checkpoint, where a resumed run reads them
    resumed = resumed_stats(tmp_path / "mapped/stages/policy", None)
    assert resumed.to_dict() == manifest["moslim"]["reward_stats"]
    adapter = load_file(
        tmp_path / "mapped" / manifest["policies"][0]["adapter"] / "adapter_model.safetensors"
    )
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)
    for extra, message in [
        (["--reward_model", str(brief)], "has heads ['brief']"),
        (["--reward_model", str(both), "--levels", "3"], "has 5 levels per head"),
        (["--reward_model", stats], "is not a MOSLIM reward model"),
    ]:
        out = tmp_path / "refused"
        refused = runner.invoke(app, [*base, *extra, "--output_dir", str(out)])
        assert refused.exit_code == 2 and message in " ".join(refused.output.split()), (extra, refused.output)
        assert not out.exists()  # nothing half-written


# --- DPO on a pool of answers ranked by the reward (--algorithm dpo) -------------------------
def test_pool_statistics_are_the_mean_and_variance_of_p_at_every_level():
    from steerable.methods.moslim.recipe import pool_stats

    probs = np.array(
        [[[0.7, 0.2, 0.1]], [[0.1, 0.3, 0.6]], [[0.4, 0.4, 0.2]]]
    )  # (3 answers, 1 head, 3 levels)
    stats = pool_stats(probs, ["brief"])
    np.testing.assert_allclose(stats.mean, [[0.4, 0.3, 0.3]])
    np.testing.assert_allclose(stats.var, [[0.06, 0.02 / 3, 0.14 / 3]])
    assert stats.seen.all()
    expected = pool_stats(probs, ["brief"], "expected")  # 1 - |E[level] - n| / (L - 1)
    levels = probs[:, 0] @ np.arange(1, 4)  # 1.4, 2.5, 1.8
    np.testing.assert_allclose(expected.mean[0, 0], np.mean(1 - np.abs(levels - 1) / 2))


def test_preferred_pair_takes_the_best_and_the_worst_answer_and_refuses_ties():
    from steerable.methods.moslim.recipe import preferred_pair

    assert preferred_pair(np.array([0.1, 0.9, -0.3, 0.5])) == (1, 2)
    assert preferred_pair(np.array([0.2, 0.2, 0.2])) is None


def test_mirrored_pair_rejects_the_mirrored_tags_best_answer_or_else_the_last():
    from steerable.methods.moslim.recipe import mirror, mirrored_pair

    assert mirror({"brief": 1, "positive": 4}, 5) == {"brief": 5, "positive": 2}
    assert mirror({"brief": 3}, 5) == {"brief": 3}
    # answer 1 is best for the tags, answer 3 for the mirrored ones; answer 2 is the worst
    assert mirrored_pair(np.array([0.1, 0.9, -0.3, 0.5]), np.array([0.0, -0.9, 0.2, 0.8])) == (1, 3)
    # the same answer is best for both (the middle level): the last-ranked one is rejected
    assert mirrored_pair(np.array([0.1, 0.9, -0.3]), np.array([0.1, 0.9, -0.3])) == (1, 2)
    # the mirrored tags' best is as good for these tags: no contrast, the last-ranked one again
    assert mirrored_pair(np.array([0.9, 0.9, -0.3]), np.array([0.0, 1.0, 0.2])) == (0, 2)
    assert mirrored_pair(np.array([0.2, 0.2]), np.array([0.0, 1.0])) is None


def test_dpo_rows_rank_the_pool_by_the_reward_for_each_tag(tiny_path, tiny_ric, tmp_path):
    from steerable.data import write_table
    from steerable.defaults import load_tokenizer
    from steerable.methods.moslim.recipe import MOSLIMConfig, answer_pool, dpo_rows

    answers = ["Yes.", "Yes, it is. " * 6, "Yes, it is great and wonderful. " * 3]
    pool_file = write_table(
        tmp_path / "pool.jsonl",
        [{"prompt": p, "response": a} for p in ("Is it?", "Why not?") for a in answers]
        + [{"prompt": "Alone?", "response": "One answer only."}],
    )
    pool = answer_pool(str(pool_file))
    assert list(pool) == ["Is it?", "Why not?"]  # a prompt with one answer has nothing to rank
    config = MOSLIMConfig(
        model=tiny_path,
        stats=str(tiny_ric[1]),
        reward="zscore",
        algorithm="dpo",
        pool=str(pool_file),
        max_steps=3,
        batch_size=4,
        mirror_levels=True,
    )
    # z-scores by hand: brief falls with length, positive rises with the cheer
    z = np.array([[1.0, 0.0], [-1.0, -0.5], [-0.5, 1.0]] * 2)
    rows = dpo_rows(config, ["brief", "positive"], 5, pool, z, None, load_tokenizer(tiny_path))
    assert len(rows) == 3 * 4
    for row in rows:
        levels = json.loads(row["levels"])
        reward = {
            answer: sum(
                (2 * (levels[n] - 1) / 4 - 1) * z[i, k]
                for k, n in enumerate(["brief", "positive"])
                if n in levels
            )
            for i, answer in enumerate(answers)
        }
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert reward[chosen] == max(reward.values()) and reward[rejected] == min(reward.values())
        assert row["prompt"][-1]["content"] == f"{row['question']}\n\n{format_levels(levels)}"
    for first, second in zip(rows[::2], rows[1::2], strict=True):  # mirrored: the pair swaps
        assert first["question"] == second["question"]
        assert (first["chosen"], first["rejected"]) == (second["rejected"], second["chosen"])
    with pytest.raises(SteerableError, match="same value"):
        dpo_rows(config, ["brief", "positive"], 5, pool, np.zeros_like(z), None, load_tokenizer(tiny_path))
    # rejected=mirrored: the rejected answer is the best one for the mirrored tags
    config.rejected = "mirrored"
    rows = dpo_rows(config, ["brief", "positive"], 5, pool, z, None, load_tokenizer(tiny_path))
    assert len(rows) == 3 * 4
    for row in rows:
        levels = json.loads(row["levels"])
        mirrored = {name: 6 - n for name, n in levels.items()}
        best_for = {
            json.dumps(tags): max(
                answers,
                key=lambda a: sum(
                    (2 * (tags[n] - 1) / 4 - 1) * z[answers.index(a), k]
                    for k, n in enumerate(["brief", "positive"])
                    if n in tags
                ),
            )
            for tags in (levels, mirrored)
        }
        assert row["chosen"][0]["content"] == best_for[json.dumps(levels)]
        if best_for[json.dumps(mirrored)] != best_for[json.dumps(levels)]:
            assert row["rejected"][0]["content"] == best_for[json.dumps(mirrored)]


def test_dpo_policy_trains_through_the_cli_on_the_mapped_reward_and_refuses_bad_pools(
    tiny_rms, tiny_ric, tiny_path, tmp_path
):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from steerable.cli import app
    from steerable.generation import SamplingConfig
    from steerable.policy import SteerablePolicy

    both, _ = tiny_rms
    ric = tiny_ric[1]
    pool = str(ric / "stages/offline/scored.jsonl")
    base = ["train", "moslim", "--model", tiny_path, "--stats", str(ric), "--reward_model", str(both)]
    base += [
        "--algorithm",
        "dpo",
        "--max_steps",
        "2",
        "--batch_size",
        "4",
        "--lora_r",
        "4",
        "--lora_alpha",
        "8",
    ]
    runner = CliRunner()
    out = tmp_path / "dpo"
    result = runner.invoke(app, [*base, "--pool", pool, "--learning_rate", "0.01", "--output_dir", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "steerable.json").read_text())
    assert manifest["moslim"]["algorithm"] == "dpo"
    assert manifest["training"]["dpo"]["loss_type"] == ["sigmoid"]
    stats = manifest["moslim"]["reward_stats"]
    assert np.array(stats["seen"]).all() and np.array(stats["mean"]).shape == (2, 5)  # the pool's
    done = json.loads((out / "stages/policy/done.json").read_text())
    assert done["info"]["steps"] == 2 and done["info"]["pairs"] == 8 and done["info"]["trained_tokens"] > 0
    pairs = [json.loads(line) for line in (out / "stages/policy/pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 8 and all(p["margin"] > 0 for p in pairs)
    adapter = load_file(out / "stages/policy/weights/adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)  # DPO moved the policy
    policy = SteerablePolicy.from_pretrained(out)
    assert len(policy.generate(["Hi"], levels={"brief": 5}, sampling=SamplingConfig(max_new_tokens=3))) == 1

    one_answer = tmp_path / "one.jsonl"
    one_answer.write_text(json.dumps({"prompt": "Hi", "response": "Hello."}) + "\n")
    no_column = tmp_path / "bad.jsonl"
    no_column.write_text(json.dumps({"prompt": "Hi", "text": "Hello."}) + "\n")
    for extra, message in [
        ([], "--pool is required"),
        (["--pool", str(one_answer)], "no prompt has two different answers"),
        (["--pool", str(no_column)], "missing columns"),
        (["--pool", str(tmp_path / "absent.jsonl")], "absent.jsonl"),
    ]:
        refused_out = tmp_path / "refused"
        refused = runner.invoke(app, [*base, *extra, "--output_dir", str(refused_out)])
        assert refused.exit_code == 2 and message in " ".join(refused.output.split()), (extra, refused.output)
        assert not refused_out.exists()  # nothing half-written

"""One expert per objective trained by DPO on a pool of answers: Rewarded Soups' `--algo dpo`
and GenARM's autoregressive reward models (reference-free DPO), and what each refuses."""

import json
import math

import numpy as np
import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from steerable.cli import app
from steerable.errors import SteerableError
from steerable.objectives import RewardSet

TINY_RUN = [
    "--max_steps",
    "2",
    "--batch_size",
    "2",
    "--lora_r",
    "4",
    "--lora_alpha",
    "8",
    "--learning_rate",
    "0.01",
]


def moved(adapter_dir) -> bool:
    """Whether training moved the adapter from its initialisation (LoRA's B starts at zero)."""
    adapter = load_file(adapter_dir / "adapter_model.safetensors")
    return any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)


def one_answer_pool(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"prompt": "Hi", "response": "Hello."}) + "\n")
    return path


def test_objective_pairs_take_the_best_and_worst_answer_of_each_prompt_for_that_objective():
    from steerable.methods.dpo import objective_pairs

    pool = {"a?": ["one", "two", "three"], "b?": ["four", "five"]}
    z = np.array([[0.1, 2.0], [0.9, 2.0], [-0.3, 2.0], [0.5, 1.0], [0.5, 0.5]])  # (5 answers, K = 2)
    rows = objective_pairs(pool, z, 0, "brief", "pool.jsonl")
    assert len(rows) == 1  # b?'s answers tie on objective 0: no pair
    assert rows[0]["prompt"] == [{"role": "user", "content": "a?"}]
    assert rows[0]["chosen"][0]["content"] == "two" and rows[0]["rejected"][0]["content"] == "three"
    assert rows[0]["margin"] == pytest.approx(1.2) and rows[0]["objective"] == "brief"
    (row,) = objective_pairs(pool, z, 1, "positive", "pool.jsonl")
    assert (row["chosen"][0]["content"], row["rejected"][0]["content"]) == ("four", "five")
    with pytest.raises(SteerableError, match="objective positive scores every answer"):
        objective_pairs({"a?": ["one", "two", "three"]}, z[:3], 1, "positive", "pool.jsonl")


def test_soups_dpo_trains_one_expert_per_objective_on_pairs_ranked_by_it(scored_table, tiny_path, tmp_path):
    stats = scored_table.parent / "stats.json"
    out = tmp_path / "soups"
    command = ["train", "soups", "--algo", "dpo", "--model", tiny_path, "--stats", str(stats)]
    command += ["--pool", str(scored_table), *TINY_RUN, "--output_dir", str(out)]
    runner = CliRunner()
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "steerable.json").read_text())
    assert manifest["method"] == "soups"
    assert (out / "tokenizer_config.json").is_file()  # a SteerablePolicy loads it from the directory
    assert manifest["policies"] == [
        {"weights": [1.0, 0.0], "adapter": "stages/policy_0/weights"},
        {"weights": [0.0, 1.0], "adapter": "stages/policy_1/weights"},
    ]
    training = manifest["training"]
    assert training["config"]["algo"] == "dpo" and "grpo" not in training
    assert training["dpo"] == {"loss_type": ["sigmoid"], "beta": 0.1, "reference_free": False}

    rewards = RewardSet.load(stats)
    answers = {}
    for row in map(json.loads, scored_table.read_text().splitlines()):
        answers.setdefault(row["prompt"], []).append(row["response"])
    chosen = {}
    for k, name in enumerate(rewards.names):
        stage = out / f"stages/policy_{k}"
        done = json.loads((stage / "done.json").read_text())
        assert done["inputs"]["algo"] == "dpo" and done["inputs"]["dpo"] == ["sigmoid"]
        assert done["info"]["steps"] == 2 and done["info"]["generated_tokens"] == 0
        pairs = [json.loads(line) for line in (stage / "pairs.jsonl").read_text().splitlines()]
        assert pairs and len(pairs) == done["info"]["pairs"]
        for pair in pairs:
            prompt = pair["prompt"][0]["content"]
            z = rewards.normalise(rewards.score([prompt] * len(answers[prompt]), answers[prompt]))[:, k]
            by_answer = dict(zip(answers[prompt], z, strict=True))
            assert pair["objective"] == name
            assert by_answer[pair["chosen"][0]["content"]] == pytest.approx(z.max())
            assert by_answer[pair["rejected"][0]["content"]] == pytest.approx(z.min())
        chosen[name] = [p["chosen"][0]["content"] for p in pairs]
        assert moved(stage / "weights")
    assert chosen["brief"] != chosen["positive"]  # each expert learns its own objective's ranking

    first = (out / "stages/policy_0/done.json").read_text()
    (out / "stages/policy_1/done.json").unlink()  # as if the run stopped while training expert 1
    again = runner.invoke(app, command)
    assert again.exit_code == 0 and json.loads((out / "steerable.json").read_text())["policies"]
    assert (out / "stages/policy_0/done.json").read_text() == first  # a finished expert is kept
    assert (out / "stages/policy_1/done.json").is_file()
    grpo_only = runner.invoke(app, [*command, "--num_generations", "8", "--temperature", "0.5"])
    assert grpo_only.exit_code == 0, grpo_only.output  # settings DPO does not read leave the experts valid
    stale = runner.invoke(app, [*command, "--dpo_beta", "0.5"])
    assert stale.exit_code == 2 and "made with other inputs" in " ".join(stale.output.split())


def test_soups_grpo_stages_keep_their_inputs(scored_table, tiny_path):
    """The options added for DPO leave a GRPO expert's stage inputs as they were, so experts
    trained before them still match."""
    from steerable.methods.rl import RLConfig, load_rewards, policy_inputs
    from steerable.methods.soups.recipe import SoupsConfig

    stats = str(scored_table.parent / "stats.json")
    rewards = load_rewards(stats)
    soups = SoupsConfig(model=tiny_path, stats=stats, output_dir="runs/soups")
    rl = RLConfig(model=tiny_path, stats=stats, output_dir="runs/soups", lora_r=16, lora_alpha=32)
    assert policy_inputs(soups, rewards, [1.0, 0.0]) == policy_inputs(rl, rewards, [1.0, 0.0])
    assert soups.grpo and not SoupsConfig(model=tiny_path, stats=stats, algo="dpo", pool=stats).grpo


def test_genarm_loss_is_bradley_terry_on_the_models_own_log_likelihoods(scored_table, tiny_path, tmp_path):
    import torch
    import torch.nn.functional as F

    from steerable.defaults import load_tokenizer
    from steerable.methods.dpo import answer_pool, dpo_trainer, objective_pairs, pool_scores
    from steerable.methods.genarm.recipe import GenARMConfig

    config = GenARMConfig(
        model=tiny_path, stats=str(scored_table.parent / "stats.json"), pool=str(scored_table), batch_size=4
    )
    pool = dict(list(answer_pool(config.pool).items())[:4])
    rows = objective_pairs(pool, pool_scores(RewardSet.load(config.stats), pool), 0, "brief", config.pool)
    beta = 0.5
    trainer = dpo_trainer(
        config, tmp_path / "checkpoints", load_tokenizer(tiny_path), rows, beta, reference_free=True
    )
    assert trainer.ref_model is None
    assert (
        set(trainer.train_dataset["ref_chosen_logps"])
        == set(trainer.train_dataset["ref_rejected_logps"])
        == {0.0}
    )
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # (2B, T, V)
    token_logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])[
        ..., 0
    ]
    logp = (token_logp * batch["completion_mask"][:, 1:]).sum(1)  # (2B,) each answer's log pi(y | x)
    chosen, rejected = logp.chunk(2)
    expected = -F.logsigmoid(beta * (chosen - rejected)).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    # with a reference (the untrained adapter is the base model) the loss would be log 2
    assert abs(float(loss) - math.log(2)) > 1e-3


def test_genarm_trains_one_reward_model_per_objective_without_a_reference_forward(
    scored_table, tiny_path, tmp_path, monkeypatch
):
    import trl.trainer.dpo_trainer as dpo_trainer

    def no_reference(*args, **kwargs):
        raise AssertionError("GenARM ran a reference forward")

    monkeypatch.setattr(dpo_trainer.DPOTrainer, "compute_ref_log_probs", no_reference)
    monkeypatch.setattr(dpo_trainer, "use_adapter", no_reference)
    out = tmp_path / "genarm"
    result = CliRunner().invoke(
        app,
        ["train", "genarm", "--model", tiny_path, "--stats", str(scored_table.parent / "stats.json")]
        + ["--pool", str(scored_table), *TINY_RUN, "--output_dir", str(out)],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "steerable.json").read_text())
    assert manifest["method"] == "genarm" and (out / "tokenizer_config.json").is_file()
    assert [p["weights"] for p in manifest["policies"]] == [[1.0, 0.0], [0.0, 1.0]]
    assert manifest["training"]["dpo"] == {
        "loss_type": ["sigmoid", "reference_free"],
        "beta": 0.05,
        "reference_free": True,
    }
    for policy in manifest["policies"]:
        assert moved(out / policy["adapter"])


@pytest.mark.parametrize(
    "method, extra, message",
    [
        ("soups", ["--algo", "dpo"], "--pool is required for --algo dpo"),
        ("soups", ["--algo", "ppo"], "--algo"),
        ("soups", ["--algo", "dpo", "--pool", "{one}"], "no prompt has two different answers"),
        ("soups", ["--pool", "{scored}"], "--pool is read by --algo dpo only"),
        (
            "soups",
            ["--algo", "dpo", "--pool", "{scored}", "--prompts", "{scored}"],
            "--prompts is read by --algo grpo",
        ),
        ("genarm", [], "--pool is required"),
        ("genarm", ["--pool", "{one}"], "no prompt has two different answers"),
        ("genarm", ["--pool", "{scored}", "--beta", "0"], "--beta must be > 0"),
    ],
)
def test_bad_expert_training_input_is_one_line_at_exit_2(
    method, extra, message, scored_table, tiny_path, tmp_path
):
    files = {"one": str(one_answer_pool(tmp_path)), "scored": str(scored_table)}
    out = tmp_path / "refused"
    command = ["train", method, "--model", tiny_path, "--stats", str(scored_table.parent / "stats.json")]
    result = CliRunner().invoke(
        app, [*command, *(e.format(**files) for e in extra), "--output_dir", str(out)]
    )
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing half-written


def test_an_unknown_algo_is_refused_naming_the_field(scored_table, tiny_path):
    from steerable.methods.soups.recipe import SoupsConfig

    with pytest.raises(SteerableError, match="--algo"):
        SoupsConfig(model=tiny_path, stats=str(scored_table.parent / "stats.json"), algo="ppo")


def test_genarm_in_a_comparison_ranks_the_scored_data_of_a_method_before_it(
    scored_table, tiny_path, tmp_path
):
    from steerable.evaluation.compare import CompareConfig
    from steerable.methods.base import CompareInputs
    from steerable.methods.genarm.compare import compare

    stats = str(scored_table.parent / "stats.json")
    config = CompareConfig(model=tiny_path, stats=stats, methods=["genarm"])
    with pytest.raises(SteerableError, match="genarm ranks a pool of answers"):
        compare(CompareInputs(config, tmp_path))
    (step,) = compare(CompareInputs(config, tmp_path, made_scored=str(scored_table))).steps
    assert step.config.pool == str(scored_table) and step.config.output_dir == str(tmp_path / "genarm")
    assert step.config.stats == stats

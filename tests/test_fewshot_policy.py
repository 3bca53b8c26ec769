"""NP-DPO: FiLM conditioning, the DPO loss, the context path, and `steerable train np-dpo` /
`steerable generate --examples` end to end on the tiny model."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from steerable.cli import app
from steerable.defaults import load_tokenizer
from steerable.errors import SteerableError
from steerable.fewshot.policy import (
    ContextConfig,
    ContextPath,
    FiLM,
    check_examples,
    completion_logps,
    decoder_layers,
    dpo_loss,
    encode_options,
    pad_sequences,
)
from steerable.policy import SteerablePolicy
from steerable.stages import file_digest

TEXTS = [("Name a colour.", "Blue."), ("Name a colour.", "A lovely, bright and happy yellow!")]


def tiny_lm(tiny_path):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_path).eval()


def tiny_batch(tiny_path):
    tokenizer = load_tokenizer(tiny_path)
    encoded = encode_options(tokenizer, TEXTS, max_completion_length=16)
    return pad_sequences(encoded, [0, 1], tokenizer.pad_token_id)


def small_path(lm, dim=6) -> ContextPath:
    config = ContextConfig(dim=dim, hidden=16, latent_size=4, heads=2, max_context=3)
    return ContextPath(config, lm.config.hidden_size, len(decoder_layers(lm)))


def perturb(film: FiLM, seed=1) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in film.parameters():
            parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))


def test_the_dpo_loss_matches_a_hand_computed_value():
    loss = dpo_loss(
        torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5]), 0.1
    )
    # margin = (-1 + 2) - (-3 + 2.5) = 1.5; -log sigmoid(0.15) = log(1 + e^-0.15)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.15)), abs=1e-6)
    same = dpo_loss(
        torch.tensor([-4.0]), torch.tensor([-4.0]), torch.tensor([-4.0]), torch.tensor([-4.0]), 0.1
    )
    assert same.item() == pytest.approx(math.log(2))


def test_film_is_the_identity_at_initialisation(tiny_path):
    lm, base = tiny_lm(tiny_path), tiny_lm(tiny_path)
    path = small_path(lm)
    path.film.attach(lm)
    batch = tiny_batch(tiny_path)
    z = torch.randn(2, 4)
    with torch.no_grad(), path.film.conditioned(z):
        conditioned = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    with torch.no_grad():
        plain = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(conditioned, plain)


def test_trained_film_depends_on_z_and_the_reference_does_not(tiny_path):
    lm, base = tiny_lm(tiny_path), tiny_lm(tiny_path)
    path = small_path(lm)
    path.film.attach(lm)
    perturb(path.film)
    batch = tiny_batch(tiny_path)
    with torch.no_grad():
        reference = completion_logps(base, **batch)
        outside = completion_logps(lm, **batch)  # no z: the FiLM hooks are off, the reference
        under = []
        for seed in (0, 1):
            z = torch.randn(1, 4, generator=torch.Generator().manual_seed(seed)).expand(2, -1)
            with path.film.conditioned(z):
                under.append(completion_logps(lm, **batch))
    assert torch.allclose(outside, reference)
    assert not torch.allclose(under[0], under[1])
    assert not torch.allclose(under[0], reference)


def test_completion_logps_count_only_the_completion_tokens(tiny_path):
    lm = tiny_lm(tiny_path)
    batch = tiny_batch(tiny_path)
    with torch.no_grad():
        full = completion_logps(lm, **batch)
        logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:].bool()
    assert torch.allclose(full, (logps * mask).sum(dim=1), atol=1e-5)
    assert (batch["completion_mask"].sum(dim=1) < batch["attention_mask"].sum(dim=1)).all()  # prompt excluded


def test_the_latent_ignores_the_order_of_the_context_and_takes_an_empty_one(tiny_path):
    path = small_path(tiny_lm(tiny_path))
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    order = [2, 0, 1]
    z = path.latent_of(chosen, rejected)
    assert torch.allclose(z, path.latent_of(chosen[order], rejected[order]), atol=1e-5)
    empty = path.latent_of(np.zeros((0, 6)), np.zeros((0, 6)))
    assert empty.shape == (1, 4) and torch.isfinite(empty).all()
    assert not torch.allclose(empty, z)


def test_a_long_context_is_truncated_and_a_wrong_width_refused(tiny_path):
    path = small_path(tiny_lm(tiny_path))
    rng = np.random.default_rng(0)
    chosen, rejected = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    with pytest.warns(UserWarning, match="using the first 3"):
        z = path.latent_of(chosen, rejected)
    assert torch.allclose(z, path.latent_of(chosen[:3], rejected[:3]))
    with pytest.raises(SteerableError, match=r"reads \[n, 6\]"):
        path.latent_of(rng.normal(size=(2, 12)), rng.normal(size=(2, 12)))


def test_the_context_path_saves_and_loads(tiny_path, tmp_path):
    path = small_path(tiny_lm(tiny_path))
    perturb(path.film)
    path.save(tmp_path)
    again = ContextPath.load(tmp_path)
    chosen = np.ones((2, 6))
    assert torch.equal(path.latent_of(chosen, -chosen), again.latent_of(chosen, -chosen))
    assert all(
        torch.equal(a, b)
        for a, b in zip(path.state_dict().values(), again.state_dict().values(), strict=True)
    )
    with pytest.raises(SteerableError, match="is not an NP-DPO context encoder"):
        ContextPath.load(tmp_path / "missing")


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ([{"prompt": "q", "chosen": "a"}], "example 1: field 'rejected' is missing"),
        (
            [
                {"prompt": "q", "chosen": "a", "rejected": "b"},
                {"prompt": " ", "chosen": "a", "rejected": "b"},
            ],
            "example 2: field 'prompt'",
        ),
        ([{"prompt": "q", "chosen": "a", "rejected": "a"}], "the same text"),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "give a list"),
    ],
)
def test_bad_examples_are_named(examples, message):
    with pytest.raises(SteerableError, match=message):
        check_examples(examples)


# --- end to end ---------------------------------------------------------------------------
TINY_ARGS = [
    "--hidden", "16", "--latent_size", "4", "--heads", "2", "--targets", "6", "--max_context", "3",
    "--lm_targets", "2", "--tasks_per_batch", "2", "--max_steps", "3", "--save_steps", "2",
    "--lora_r", "4", "--lora_alpha", "8", "--max_completion_length", "12", "--learning_rate", "1e-2",
    "--eval_tasks", "4", "--eval_prompts", "2", "--eval_contexts", "1", "--eval_context_size", "2",
    "--max_new_tokens", "6",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_np_dpo(tiny_path, tmp_path_factory, scored_table):
    data = scored_table
    out = tmp_path_factory.mktemp("np-dpo") / "model"
    args = [
        "train",
        "np-dpo",
        "--data",
        str(data),
        "--model",
        tiny_path,
        "--output_dir",
        str(out),
        *TINY_ARGS,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, args, result.output


def test_train_np_dpo_trains_film_lora_and_the_encoder_and_reports(tiny_np_dpo):
    out, _, output = tiny_np_dpo
    assert "implicit-reward accuracy" in output and "generations" in output
    manifest = json.loads((out / "steerable.json").read_text())
    assert manifest["method"] == "np-dpo" and manifest["fewshot"]["types"]["names"] == ["brief", "positive"]
    saved = ContextPath.load(out / manifest["fewshot"]["context"])
    assert all(p.abs().sum() > 0 for p in saved.film.parameters())  # every FiLM layer left zero
    from safetensors.torch import load_file

    earlier = load_file(out / "stages" / "policy" / "checkpoints" / "checkpoint-2" / "model.safetensors")
    encoder = {
        k[len("path.context_encoder.") :]: v
        for k, v in earlier.items()
        if k.startswith("path.context_encoder.")
    }
    assert encoder and any(
        not torch.equal(v, saved.context_encoder.state_dict()[k]) for k, v in encoder.items()
    )
    from safetensors.torch import load_file

    lora = load_file(out / "stages" / "policy" / "weights" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # LoRA B starts at zero
    report = json.loads((out / "stages" / "evaluation" / "evaluation.json").read_text())
    assert {p["context"] for p in report["curve"]} == {0, 1, 3}
    conditions = {(e["condition"], e["vs"]) for e in report["generations"]["effects"]}
    assert {
        ("brief", "base"),
        ("positive", "base"),
        ("brief", "positive"),
        ("no context", "base"),
    } <= conditions


def test_a_finished_run_is_reused_and_a_changed_one_refused(tiny_np_dpo):
    out, args, _ = tiny_np_dpo
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    changed = CliRunner().invoke(app, [*args, "--beta", "0.2"])
    assert changed.exit_code == 2 and "other inputs" in changed.output


def test_an_interrupted_policy_stage_resumes_from_its_last_checkpoint(tiny_np_dpo, tmp_path):
    import shutil

    out, args, _ = tiny_np_dpo
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    policy = copy / "stages" / "policy"
    # as a run killed after its step-3 checkpoint leaves it: no weights, no done marker, no later stage
    for gone in (policy / "done.json", copy / "steerable.json"):
        gone.unlink()
    shutil.rmtree(policy / "weights")
    shutil.rmtree(copy / "stages" / "evaluation")
    assert (policy / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()
    rerun = [
        *args[: args.index("--output_dir")],
        "--output_dir",
        str(copy),
        *args[args.index("--output_dir") + 2 :],
    ]
    result = CliRunner().invoke(app, rerun)
    assert result.exit_code == 0, result.output
    info = json.loads((policy / "done.json").read_text())["info"]
    assert info["steps"] == 3 and (policy / "weights" / "adapter_model.safetensors").is_file()
    resumed = SteerablePolicy.from_pretrained(copy).fewshot.state_dict()
    original = SteerablePolicy.from_pretrained(out).fewshot.state_dict()
    assert all(torch.allclose(resumed[k], original[k]) for k in original)  # the checkpoint's weights


def test_generate_steers_from_examples(tiny_np_dpo, tmp_path):
    out, _, _ = tiny_np_dpo
    policy = SteerablePolicy.from_pretrained(out)
    examples = [{"prompt": "Hi?", "chosen": "Great, wonderful day!", "rejected": "Bad."}] * 2
    z_examples, z_none = policy.latent_for(examples), policy.latent_for([])
    assert not torch.allclose(z_examples, z_none)
    answers = policy.generate(["Say something."], examples=examples)
    assert len(answers) == 1
    with pytest.raises(SteerableError, match="steered by a user's examples"):
        policy.generate(["Say something."], preference=[1, 0])
    path = tmp_path / "user.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    result = CliRunner().invoke(
        app,
        ["generate", "Say something.", "--model", str(out), "--examples", str(path), "--max-new-tokens", "4"],
    )
    assert result.exit_code == 0, result.output
    assert "examples: 2" in result.output  # what the server echoes
    path.write_text(json.dumps({"prompt": "Hi?", "chosen": "", "rejected": "Bad."}) + "\n")
    bad = CliRunner().invoke(app, ["generate", "x", "--model", str(out), "--examples", str(path)])
    assert bad.exit_code == 2 and "field 'chosen' is missing or empty" in bad.output


def test_examples_beyond_max_context_are_cut_before_they_are_embedded(tiny_np_dpo, monkeypatch):
    from steerable.fewshot import embeddings

    out, _, _ = tiny_np_dpo
    policy = SteerablePolicy.from_pretrained(out)  # trained with --max_context 3
    embedded = []

    def counted(texts, *args):
        embedded.append(len(texts))
        return compute(texts, *args)

    compute = embeddings.compute
    monkeypatch.setattr(embeddings, "compute", counted)
    examples = [{"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."} for i in range(500)]
    with pytest.warns(UserWarning, match="500 .*more than the 3 this policy was trained with"):
        z = policy.latent_for(examples)
    assert embedded == [6]  # the first 3 pairs' two options each, not 1,000 options
    assert torch.allclose(z, policy.latent_for(examples[:3]))


def test_an_lm_pair_encoder_is_loaded_once_per_process(tiny_path, monkeypatch):
    import steerable.defaults
    from steerable.fewshot import embeddings

    loads = []

    def counted(*args, **kwargs):
        loads.append(args[0])
        return load(*args, **kwargs)

    load = steerable.defaults.load_causal_lm
    monkeypatch.setattr(steerable.defaults, "load_causal_lm", counted)
    monkeypatch.setattr(embeddings, "_LM_ENCODERS", {}, raising=False)  # as a fresh process starts
    first = embeddings.embed_options(TEXTS[:1], f"lm:{tiny_path}")
    both = embeddings.embed_options(TEXTS, f"lm:{tiny_path}")  # a second request, as a server gets
    assert loads == [tiny_path]
    np.testing.assert_allclose(both[:1], first, atol=1e-5)


def test_the_server_batches_np_dpo_rows_each_with_its_own_z(tiny_np_dpo):
    """Rows with different examples share a batch; each keeps its own z while others leave."""
    from steerable.decoding import Job, run_batch
    from steerable.serving.api import ServedModel

    out, _, _ = tiny_np_dpo
    served = ServedModel.load(str(out))
    assert served.engine.prefixes is None  # FiLM changes every layer's keys and values with z
    examples = [{"prompt": "Hi?", "chosen": "Great, wonderful day!", "rejected": "Bad."}] * 2
    ask = [{"role": "user", "content": "Say something."}]
    steered = [served.steer(ask, {"examples": e}) for e in (examples, [])]

    def answers(rows, lengths):
        jobs = [
            Job(text=served.render(m), max_tokens=n, temperature=1.0, seed=3, condition=z)
            for (m, _, z), n in zip(rows, lengths, strict=True)
        ]
        run_batch(served.model, served.tokenizer, jobs, served.engine.conditioner)
        return [j.output for j in jobs]

    together = answers(steered, [2, 8])
    alone = [answers([row], [n])[0] for row, n in zip(steered, [2, 8], strict=True)]
    assert together == alone
    assert answers([steered[0]], [8]) != answers([steered[1]], [8])  # z changes the draws


def test_the_server_echoes_how_many_examples_it_used(tiny_np_dpo):
    from steerable.serving.api import ServedModel

    out, _, _ = tiny_np_dpo
    served = ServedModel.load(str(out))  # trained with --max_context 3
    examples = [{"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}."} for i in range(50)]
    ask = [{"role": "user", "content": "Say something."}]
    with pytest.warns(UserWarning, match="using the first 3"):
        _, applied, z = served.steer(ask, {"examples": examples})
    assert applied == {"examples": 3} and torch.allclose(z, served.steer(ask, {"examples": examples[:3]})[2])
    assert served.steer(ask, {"examples": examples[:2]})[1] == {"examples": 2}


def test_examples_do_not_steer_a_model_without_a_context_encoder(tiny_ric, tmp_path):
    _, ric = tiny_ric
    path = tmp_path / "user.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    result = CliRunner().invoke(app, ["generate", "x", "--model", str(ric), "--examples", str(path)])
    assert result.exit_code == 2 and "--examples steers np-dpo models" in result.output
    policy = SteerablePolicy.from_pretrained(ric)
    with pytest.raises(SteerableError, match="examples steer np-dpo models"):
        policy.generate(["x"], examples=[{"prompt": "q", "chosen": "a", "rejected": "b"}])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "synthetic"], "invalid choice: 'synthetic'"),
        (["--max_context", "19"], "--max_context must be in 0..targets - lm_targets"),
        (["--beta", "0"], "--beta must be > 0"),
        (["--stats", "missing.json"], "missing.json"),
    ],
)
def test_train_np_dpo_refuses_bad_settings(args, message, tmp_path, scored_table):
    data = scored_table
    out = tmp_path / "x"
    result = CliRunner().invoke(
        app, ["train", "np-dpo", "--data", str(data), "--output_dir", str(out), *args]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


def test_a_simulated_user_chooses_by_its_weighted_objectives():
    from steerable.methods.np_dpo.steering import simulated_examples
    from steerable.objectives import RewardSet

    rewards = RewardSet.from_specs(["brief=builtin:brevity", "positive=builtin:sentiment"])
    rewards.fit_stats(np.array([[-1.0, 0.0], [-10.0, 1.0], [-5.0, 0.5]]))
    pairs = [
        {"prompt": f"q{i}", "a": f"short {i}", "b": f"long and happy {i}",
         "scores_a": {"brief": -1.0, "positive": 0.1}, "scores_b": {"brief": -9.0, "positive": 0.9}}
        for i in range(8)
    ]  # fmt: skip
    brief = simulated_examples(pairs, rewards, [1, 0], count=5, seed=0)
    happy = simulated_examples(pairs, rewards, [0, 1], count=5, seed=0)
    assert len(brief) == 5 and all(e["chosen"].startswith("short") for e in brief)
    assert all(e["chosen"].startswith("long") for e in happy)
    assert simulated_examples(pairs, rewards, [1, 0], count=5, seed=0) == brief  # one user per point
    with pytest.raises(SteerableError, match="only 8 held-out pairs"):
        simulated_examples(pairs, rewards, [1, 0], count=9)


def test_evaluate_sweeps_np_dpo_over_the_preference_grid(tiny_np_dpo):
    from steerable.evaluation.evaluate import evaluate
    from steerable.generation import SamplingConfig

    out, _, _ = tiny_np_dpo
    result = evaluate(
        "np-dpo", str(out), ["Say hi.", "Name a fruit."], resolution=2,
        sampling=SamplingConfig(max_new_tokens=4), progress=False, examples=3,
    )  # fmt: skip
    assert [p.weights for p in result.points] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert result.names == ["brief", "positive"] and result.compute["trained_tokens"] > 0


def test_np_dpo_trains_its_policy_without_dropout(tiny_path, scored_table, tmp_path, monkeypatch):
    """As TRL's DPO (disable_dropout): a dropped LoRA input would make the policy's log-probs,
    compared with the reference's, noisy."""
    from steerable.methods.np_dpo import recipe as np_dpo

    class Trained(Exception):
        pass

    def trainer(model, **_):
        raise Trained(model)

    monkeypatch.setattr(np_dpo, "dpo_trainer_class", lambda: trainer)
    config = np_dpo.NPDPOConfig(
        data=str(scored_table), model=tiny_path, output_dir=str(tmp_path / "x"), hidden=16, latent_size=4,
        heads=2, targets=6, max_context=3, lm_targets=2, eval_context_size=2, lora_r=4, lora_alpha=8,
        max_completion_length=8,
    )  # fmt: skip
    with pytest.raises(Trained) as trained:
        np_dpo.train_np_dpo(config)
    module = trained.value.args[0].train()  # as the Trainer runs it
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # LoRA's B starts at zero, where a dropped input changes nothing
        for name, parameter in module.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    batch = tiny_batch(tiny_path)
    assert torch.equal(completion_logps(module.lm, **batch), completion_logps(module.lm, **batch))


NP_RM_TINY = [
    "--task", "scored", "--steps", "4", "--hidden", "16", "--latent_size", "4", "--heads", "2",
    "--targets", "6", "--max_context", "3", "--eval_tasks", "4", "--validation_tasks", "4",
    "--eval_every", "2",
]  # fmt: skip


def test_a_context_init_fitted_on_another_split_is_refused_naming_both(tiny_path, scored_table, tmp_path):
    rm = tmp_path / "np-rm"
    fitted = CliRunner().invoke(
        app, ["train", "np-rm", "--data", str(scored_table), "--output_dir", str(rm), *NP_RM_TINY]
    )
    assert fitted.exit_code == 0, fitted.output
    other = tmp_path / "other.jsonl"  # the same pairs but one: another split by prompt
    other.write_text("".join(scored_table.read_text().splitlines(keepends=True)[:-1]))
    stats = scored_table.with_name("stats.json")
    for change, mine, theirs in [
        (["--seed", "1"], "seed 0", "seed 1"),
        (["--data", str(other)], file_digest(scored_table)[:12], file_digest(other)[:12]),
    ]:
        out = tmp_path / "np-dpo"
        args = ["train", "np-dpo", "--data", str(scored_table), "--stats", str(stats), "--model", tiny_path,
                "--output_dir", str(out), "--context_init", str(rm), *TINY_ARGS, *change]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        line = result.output.strip().splitlines()[-1]
        assert "fitted on the split" in line and mine in line and theirs in line, result.output
        assert not out.exists()
    record = rm / "stages/np/model/np_reward.json"  # as an NP-BTL from before splits were recorded
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "split"}))
    result = CliRunner().invoke(app, args[: -len(change)])
    assert result.exit_code == 2 and f"delete {rm / 'stages' / 'np'}" in result.output, result.output


def test_a_finished_run_on_an_np_btl_without_a_recorded_split_is_rerun(
    tiny_path, scored_table, tmp_path, monkeypatch
):
    """The split check guards a policy that still has to train: a finished run reruns (and
    re-evaluates nothing) though its NP-BTL is older than recorded splits; a run loads the NP-BTL
    once."""
    from steerable.methods.np_dpo import recipe as np_dpo

    rm = tmp_path / "np-rm"
    fitted = CliRunner().invoke(
        app, ["train", "np-rm", "--data", str(scored_table), "--output_dir", str(rm), *NP_RM_TINY]
    )
    assert fitted.exit_code == 0, fitted.output
    loads = []
    load = np_dpo.context_init_model
    monkeypatch.setattr(np_dpo, "context_init_model", lambda config: loads.append(config) or load(config))
    stats = scored_table.with_name("stats.json")
    args = ["train", "np-dpo", "--data", str(scored_table), "--stats", str(stats), "--model", tiny_path,
            "--output_dir", str(tmp_path / "np-dpo"), "--context_init", str(rm), *TINY_ARGS]  # fmt: skip
    trained = CliRunner().invoke(app, args)
    assert trained.exit_code == 0, trained.output
    assert len(loads) == 1
    record = rm / "stages/np/model/np_reward.json"  # as an NP-BTL from before splits were recorded
    record.write_text(json.dumps({k: v for k, v in json.loads(record.read_text()).items() if k != "split"}))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output


def test_compare_fits_the_np_btl_that_starts_np_dpo_on_np_dpos_split(scored_table, tmp_path):
    from steerable.evaluation.compare import CompareConfig, plan_compare

    config = CompareConfig(
        methods=["np-dpo"], stats=str(scored_table.with_name("stats.json")),
        np_dpo={"data": str(scored_table), "seed": 3},
    )  # fmt: skip
    rm, dpo = (plan_compare(config, tmp_path).configs[name] for name in ("np_rm", "np_dpo"))
    assert rm.seed == dpo.seed == 3 and rm.data == dpo.data
    config.np_dpo, config.np_rm = {"data": str(scored_table)}, {"seed": 2}
    with pytest.raises(SteerableError, match="np_rm: seed 2 but np_dpo's is 0"):
        plan_compare(config, tmp_path)


def test_np_dpo_statistics_default_to_what_steerable_score_wrote(scored_table, tmp_path):
    from steerable.methods.np_dpo.recipe import NPDPOConfig

    data = tmp_path / "scored.jsonl"
    data.write_text(scored_table.read_text())
    (tmp_path / "scored.jsonl.stats.json").write_text(scored_table.with_name("stats.json").read_text())
    assert NPDPOConfig(data=str(data)).stats == str(tmp_path / "scored.jsonl.stats.json")
    (tmp_path / "scored.jsonl.stats.json").rename(tmp_path / "stats.json")  # as RiC's offline stage
    assert NPDPOConfig(data=str(data)).stats == str(tmp_path / "stats.json")


def test_evaluate_sweeps_np_dpo_over_more_objectives_than_its_types_know(tiny_path, scored_table, tmp_path):
    from steerable.evaluation.evaluate import evaluate
    from steerable.generation import SamplingConfig

    out = tmp_path / "np-dpo"
    args = ["train", "np-dpo", "--data", str(scored_table), "--model", tiny_path, "--output_dir", str(out),
            *TINY_ARGS, "--objectives", "brief", "--conflicting", "false", "--max_steps", "1"]  # fmt: skip
    trained = CliRunner().invoke(app, args)
    assert trained.exit_code == 0, trained.output
    result = evaluate(
        "np-dpo", str(out), ["Say hi."], resolution=1, sampling=SamplingConfig(max_new_tokens=2),
        progress=False, examples=3,
    )  # fmt: skip
    assert result.names == ["brief", "positive"] and len(result.points) == 2


def test_the_sft_term_is_the_chosen_answers_nll_per_token():
    from steerable.evaluation.fewshot import run_on_share
    from steerable.methods.np_dpo.recipe import sft_loss

    # two chosen answers with log-probs -3 and -5 over 2 + 2 tokens: 8 / 4 = 2 nats per token
    assert sft_loss(torch.tensor([-3.0, -5.0]), torch.tensor(4)).item() == pytest.approx(2.0)
    assert run_on_share(["a fine answer", "usalemhipshipshipshipshipshipships", "ok"]) == pytest.approx(1 / 3)


def test_train_np_dpo_from_users_logs_evaluates_on_held_out_users(tiny_path, scored_table, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for u in range(12):  # half the users choose the shorter answer, half the longer
        for p in range(6):
            short, long = ("great " * n + f"{u}.{p}" for n in sorted(rng.choice(8, 2, replace=False) + 1))
            chosen, rejected = (short, long) if u % 2 else (long, short)
            rows.append({"user": u, "prompt": f"Tell me about {p}.", "chosen": chosen, "rejected": rejected})
    data = tmp_path / "logs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "np-dpo"
    args = ["train", "np-dpo", "--task", "logs", "--data", str(data), "--model", tiny_path,
            "--output_dir", str(out), *TINY_ARGS]  # fmt: skip
    refused = CliRunner().invoke(app, args)  # logs carry no scores: the objectives must be named
    assert refused.exit_code == 2 and "--stats is required with --task logs" in refused.output
    result = CliRunner().invoke(app, [*args, "--stats", str(scored_table.parent / "stats.json")])
    assert result.exit_code == 0, result.output
    assert "implicit-reward accuracy" in result.output and "not measured" in result.output
    manifest = json.loads((out / "steerable.json").read_text())
    assert manifest["fewshot"]["types"] is None
    report = json.loads((out / "stages" / "evaluation" / "evaluation.json").read_text())
    assert {p["context"] for p in report["curve"]} == {0, 1, 3} and "generations" not in report
    assert report["users"]["test"] >= 1 and "no types" in report["not_measured"]
    held = [json.loads(line) for line in (out / "heldout_pairs.jsonl").read_text().splitlines()]
    assert len(held) == 6 * report["users"]["test"]  # the held-out users' own choices, unscored
    assert set(held[0]) == {"user", "prompt", "chosen", "rejected"}
    saved = ContextPath.load(out / manifest["fewshot"]["context"])
    assert all(p.abs().sum() > 0 for p in saved.film.parameters())  # FiLM starts at zero: it trained
    from safetensors.torch import load_file

    lora = load_file(out / "stages" / "policy" / "weights" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # LoRA B starts at zero
    from steerable.evaluation.evaluate import evaluate
    from steerable.generation import SamplingConfig

    with pytest.raises(SteerableError, match="trained from users' logs"):
        evaluate("np-dpo", str(out), ["Say hi."], resolution=1, sampling=SamplingConfig(max_new_tokens=2),
                 progress=False, examples=2)  # fmt: skip

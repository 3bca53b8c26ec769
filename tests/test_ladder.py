"""The budget ladder of `steerable compare` (`budgets:`) on the tiny configuration: each method
evaluated at the saves along its one training run, hypervolume against compute written as a
table, a CSV and a plot, and a run interrupted between rungs resuming to the same table."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from steerable.cli import app
from steerable.policy import load_manifest

LADDER = """
model: {model}
methods: [ric, moslim, moslim-grpo, soups, mod, genarm, morlhf, prompting]
eval: {{limit: 2, resolution: 2, max_new_tokens: 4}}
{ric}
rl: {{max_steps: 3, batch_size: 4, num_generations: 2, max_completion_length: 4, prompt_limit: 4, lora_r: 4}}
soups: {{algo: dpo, batch_size: 2, learning_rate: 1.0e-3}}
genarm: {{max_steps: 3, batch_size: 2, lora_r: 4, lora_alpha: 8}}
morlhf: {{weight_vectors: ["1,0", "0,1"]}}
moslim_rm: {{model: {model}, num_epochs: 1, batch_size: 4, max_length: 32}}
moslim: {{algorithm: dpo}}
variants: {{moslim-grpo: {{method: moslim, moslim: {{algorithm: grpo}}}}}}
budgets: {{rl_steps: [1, 2, 3], sft_steps: [1]}}
"""


@pytest.fixture(scope="module")
def laddered(tmp_path_factory, tiny_path, tiny_compare_ric):
    root = tmp_path_factory.mktemp("ladder")
    config = root / "compare.yaml"
    config.write_text(LADDER.format(model=tiny_path, ric=tiny_compare_ric))
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root, config


def test_every_method_is_evaluated_at_the_saves_along_its_run(laddered):
    root, _ = laddered
    out = root / "out"
    table = pd.read_csv(out / "ladder.csv")
    rungs = {m: list(group["rung"]) for m, group in table.groupby("method", sort=False)}
    # saved at steps 1, 2 and 3, the last step: that save is the finished model, one rung
    assert (out / "morlhf" / "stages" / "policy_0" / "rungs" / "step-3").is_dir()
    assert rungs["soups"] == rungs["mod"] == rungs["morlhf"] == ["step-1", "step-2", "final"]
    assert rungs["genarm"] == ["step-1", "step-2", "final"]  # its reward models at the same steps
    assert rungs["ric"] == ["sft-step-1", "sft", "final"]
    assert rungs["prompting"] == ["final"]
    assert rungs["moslim"] == ["policy-step-1", "policy-step-2", "final"]
    # MOSLIM pays for its reward model and for RiC's scored answers (the pool both train on)
    pool = json.loads((out / "ric" / "stages" / "offline" / "done.json").read_text())["info"]
    assert pool["seconds"] > 0 and pool["generated_tokens"] > 0
    rm = json.loads((out / "moslim_rm" / "moslim_rm.json").read_text())["training"]["seconds"]
    policy = json.loads((out / "moslim" / "stages" / "policy" / "done.json").read_text())["info"]
    final = table[(table["method"] == "moslim") & (table["rung"] == "final")].iloc[0]
    assert final["seconds"] == pytest.approx(rm + policy["seconds"] + pool["seconds"])
    assert final["generated_tokens"] == pool["generated_tokens"]  # DPO samples nothing itself
    # so do Rewarded Soups' DPO experts at every rung; MORLHF samples its own answers
    soups = load_manifest(out / "soups").training["compute"]
    final = table[(table["method"] == "soups") & (table["rung"] == "final")].iloc[0]
    assert final["seconds"] == pytest.approx(sum(soups["seconds"].values()) + pool["seconds"])
    first = table[table["method"] == "soups"].iloc[0]
    assert first["generated_tokens"] == pool["generated_tokens"] and first["seconds"] > pool["seconds"]
    morlhf = load_manifest(out / "morlhf").training["compute"]
    final = table[(table["method"] == "morlhf") & (table["rung"] == "final")].iloc[0]
    assert final["seconds"] == pytest.approx(sum(morlhf["seconds"].values()))
    for method, group in table.groupby("method"):
        assert group["seconds"].is_monotonic_increasing, method  # each rung costs more than the one before
        assert group["trained_tokens"].is_monotonic_increasing, method
    prompting = table[table["method"] == "prompting"].iloc[0]
    assert prompting["seconds"] == 0 and prompting["flops"] == 0
    # FLOPs: 6 N a trained token, 2 N a generated one, the tiny model's N
    row = table[(table["method"] == "morlhf") & (table["rung"] == "step-2")].iloc[0]
    from steerable.evaluation.ladder import base_parameters

    n = base_parameters(json.loads((out / "compare.json").read_text())["model"])
    assert row["flops"] == pytest.approx(n * (6 * row["trained_tokens"] + 2 * row["generated_tokens"]))
    assert row["generated_tokens"] > 0  # GRPO's sampling counts
    # MOD is evaluated on the experts' own rungs: the same compute as Soups at every rung
    soups, mod = (table[table["method"] == m].reset_index() for m in ("soups", "mod"))
    assert soups["seconds"].tolist() == mod["seconds"].tolist()
    assert (out / "ladder.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "ladder.md").read_text()
    assert "morlhf's final hypervolume" in report
    assert "x morlhf's" in report or "- ric: not reached" in report  # RiC's cost over MORLHF's, or none
    assert "Rank at equal compute" in report and "- moslim: " in report
    # each rung's command: the comparison's, and the stage that holds the rung's evaluation
    assert f"Made by `steerable compare --config {root / 'compare.yaml'} --out {out}`" in report
    for row in table.itertuples():
        assert (out / "stages" / row.stage / "result.json").is_file(), row.stage
    assert set(table[table["rung"] == "final"]["stage"]) == {f"eval_{m}" for m in rungs}


def test_a_variant_is_its_method_trained_again_under_its_own_settings(laddered):
    """variants: MOSLIM's GRPO recipe beside its DPO one, each with its own directories, rungs
    and report rows."""

    root, _ = laddered
    out = root / "out"
    assert load_manifest(out / "moslim").moslim["algorithm"] == "dpo"
    variant = load_manifest(out / "moslim-grpo" / "moslim")
    assert variant.method == "moslim" and variant.moslim["algorithm"] == "grpo"
    assert (out / "moslim-grpo" / "moslim_rm" / "moslim_rm.json").is_file()  # its own reward model
    table = pd.read_csv(out / "ladder.csv")
    grpo = table[table["method"] == "moslim-grpo"]
    assert list(grpo["rung"]) == ["policy-step-1", "policy-step-2", "final"]
    # GRPO samples beyond the pool its reward model trained on; the DPO recipe only pays the pool
    pool = json.loads((out / "ric" / "stages" / "offline" / "done.json").read_text())["info"]
    assert (grpo["generated_tokens"] > pool["generated_tokens"]).all()
    assert (table[table["method"] == "moslim"]["generated_tokens"] == pool["generated_tokens"]).all()
    result = json.loads((out / "stages" / "eval_moslim-grpo" / "result.json").read_text())
    assert result["method"] == "moslim" and result["variant"] == "moslim-grpo"
    summary = pd.read_csv(out / "summary.csv")
    assert {"moslim", "moslim-grpo"} <= set(summary["method"])
    assert "## moslim-grpo (" in (out / "report.md").read_text()


def test_a_rung_is_the_policy_as_it_was_at_that_step(laddered):
    from safetensors.torch import load_file

    root, _ = laddered
    policy = root / "out" / "morlhf" / "stages" / "policy_0"
    saves = [load_file(policy / f"rungs/step-{n}/adapter_model.safetensors") for n in (1, 2)]
    final = load_file(policy / "weights" / "adapter_model.safetensors")
    changed = [name for name in final if "lora_B" in name]
    assert changed
    assert any(not (saves[0][k] == saves[1][k]).all() for k in changed)  # trained between the rungs
    assert any(not (saves[1][k] == final[k]).all() for k in changed)
    rung = json.loads((policy / "rungs/step-2/rung.json").read_text())
    first = json.loads((policy / "rungs/step-1/rung.json").read_text())
    assert rung["step"] == 2 and rung["seconds"] > first["seconds"] > 0
    # the rung's model directory lists those saves as its policies, and loads

    manifest = load_manifest(root / "out" / "ladder" / "morlhf" / "step-2")
    assert all(p["adapter"].endswith("rungs/step-2") for p in manifest.policies)


def test_a_ladder_interrupted_between_rungs_resumes_to_the_same_table(laddered, monkeypatch):
    import steerable.evaluation.evaluate as evaluate_module

    root, config = laddered
    out = root / "out"
    whole = pd.read_csv(out / "ladder.csv")  # the uninterrupted run's
    for stage in (out / "stages").glob("rung_*"):
        shutil.rmtree(stage)  # every rung still to evaluate (the trained models stay)
    for written in ("ladder.csv", "ladder.md", "ladder.png"):
        (out / written).unlink()
    real, calls = evaluate_module.evaluate, []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:
            raise RuntimeError("the machine stopped")  # after two rungs were evaluated
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module, "evaluate", interrupted)
    stopped = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(out)])
    assert isinstance(stopped.exception, RuntimeError), stopped.output
    assert not (out / "ladder.csv").exists()
    assert len(list((out / "stages").glob("rung_*/done.json"))) == 2
    monkeypatch.setattr(evaluate_module, "evaluate", real)
    resumed = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "rung_ric_sft-step-1" in resumed.output.split("starting")[0]  # kept: evaluated before the stop
    pd.testing.assert_frame_equal(pd.read_csv(out / "ladder.csv"), whole)


def test_budgets_are_checked_before_anything_trains(tmp_path, tiny_path, tiny_compare_ric):
    from steerable import SteerableError
    from steerable.evaluation.compare import CompareConfig

    for budgets, message in (
        ({"rl_steps": [2, 1]}, "increasing positive integers"),
        ({"rl_steps": [0]}, "increasing positive integers"),
        ({"epochs": [1]}, "unknown key"),
        ({"baseline": "ppo"}, "budgets.baseline 'ppo' is not among the methods"),
        ({"baseline": 3}, "budgets.baseline must name one of the methods"),
        ({"baseline": "morlhf"}, "budgets.baseline 'morlhf' is not among the methods"),
        ({"sft_steps": [5]}, "budgets.sft_steps saves ric on the way; none is among the methods"),
    ):
        with pytest.raises(SteerableError, match=message):
            CompareConfig(model="tiny", methods=["soups"], budgets=budgets)
    with pytest.raises(
        SteerableError, match="seeds: every seed must be measured under one set of statistics"
    ):
        CompareConfig(model="tiny", methods=["ric"], seeds=[0, 1])
    config = tmp_path / "c.yaml"
    ladder = LADDER.format(model=tiny_path, ric=tiny_compare_ric)
    config.write_text(ladder.replace("rl_steps: [1, 2, 3]", "rl_steps: [1, 9]"))
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "--rungs [9] are beyond --max_steps (3) (in a comparison: budgets.rl_steps beyond" in said
    assert not (tmp_path / "out" / "ric").exists()  # refused before RiC trained


SEEDED = """
model: {model}
methods: [soups, morlhf, prompting]
stats: {stats}
eval: {{limit: 2, resolution: 2, max_new_tokens: 4}}
rl: {{max_steps: 2, batch_size: 4, num_generations: 2, max_completion_length: 4, prompt_limit: 4, lora_r: 4}}
morlhf: {{weight_vectors: ["1,0", "0,1"]}}
budgets: {{rl_steps: [1]}}
seeds: [0, 1]
"""


def test_a_comparison_over_two_training_seeds_reports_their_spread(tmp_path, tiny_path, scored_table):
    from safetensors.torch import load_file

    from steerable.evaluation.compare import CompareConfig, seeded

    config = tmp_path / "seeds.yaml"
    config.write_text(SEEDED.format(model=tiny_path, stats=scored_table.parent / "stats.json"))
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "seeds.md" in result.output and "ladder.md" in result.output
    out = tmp_path / "out"
    for seed in (0, 1):
        assert all((out / f"seed-{seed}" / name).is_file() for name in ("report.md", "ladder.csv"))
    # the seeds trained differently (the evaluation's sampling seed did not change)
    policy = "morlhf/stages/policy_0/weights/adapter_model.safetensors"
    saves = [load_file(out / f"seed-{s}" / policy) for s in (0, 1)]
    assert any(not (saves[0][k] == saves[1][k]).all() for k in saves[0])
    spread = pd.read_csv(out / "seeds.csv")
    hv = spread[(spread["method"] == "morlhf") & (spread["number"] == "hypervolume")].iloc[0]
    assert hv["mean"] == pytest.approx((hv["seed_0"] + hv["seed_1"]) / 2)
    assert hv["stderr"] == pytest.approx(abs(hv["seed_0"] - hv["seed_1"]) / 2)  # two seeds: |a - b| / 2
    assert "| morlhf | hypervolume |" in (out / "seeds.md").read_text()
    ladder = pd.read_csv(out / "ladder.csv")
    assert set(ladder["seeds"]) == {2} and "hypervolume_stderr" in ladder
    rung = ladder[(ladder["method"] == "morlhf") & (ladder["rung"] == "step-1")].iloc[0]
    each = [pd.read_csv(out / f"seed-{s}" / "ladder.csv") for s in (0, 1)]
    volumes = [t[(t["method"] == "morlhf") & (t["rung"] == "step-1")].iloc[0]["hypervolume"] for t in each]
    assert rung["hypervolume"] == pytest.approx(sum(volumes) / 2)
    # every section with a training seed gets the seed; the evaluation's stays
    two = seeded(CompareConfig(model="tiny", methods=["ric"], eval={"seed": 5}), 1)
    assert two.ric["seed"] == two.rl["seed"] == two.moslim_rm["seed"] == two.np_dpo["seed"] == 1
    assert two.eval == {"seed": 5} and two.seeds == []


def test_the_compute_claims_read_off_a_hand_built_ladder():
    from steerable.evaluation.ladder import RungResult, claims
    from steerable.rungs import Rung

    steer = {"gain": None, "orthogonality": None, "miscalibration": None}

    def at(method, name, seconds, volume, stderr=None):
        rung = Rung(method, name, "", seconds, 0, 0)
        return RungResult(rung, volume, 6.0 * seconds, steer, stderr, 1 if stderr is None else 2)

    ladder = [
        at("morlhf", "step-1", 100, 2.0),
        at("morlhf", "step-2", 200, 5.0),
        at("morlhf", "final", 400, 6.0),
        at("ric", "sft", 20, 4.0),
        at("ric", "final", 40, 7.0),
        at("prompting", "final", 0, 1.0),
    ]
    text = "\n".join(claims(ladder, "morlhf"))
    assert "morlhf's final hypervolume: 6, at 400s." in text
    assert "one training seed: no standard error to tell a plateau by" in text
    assert "morlhf's compute over each method's final: 10x ric's." in text  # prompting cost nothing
    assert "- ric: at 40s, 0.1x morlhf's" in text  # its first rung (4.0) falls short of 6
    assert "- prompting: not reached within 0s" in text
    assert "- ric: 1/2 at 20s (sft), 1/2 at 40s (final)" in text  # no MORLHF rung that cheap
    assert "- morlhf: 2/3 at 100s (step-1), 2/3 at 200s (step-2), 2/3 at 400s (final)" in text
    flops = "\n".join(claims(ladder, "morlhf", "flops"))
    assert "at 2400 FLOPs" in flops and "- ric: at 240 FLOPs, 0.1x morlhf's" in flops
    # over seeds, the last two rungs within one standard error: it stopped rising; else not
    seeded = [at("morlhf", "step-2", 200, 5.0, 0.5), at("morlhf", "final", 400, 5.3, 0.4)]
    assert "within one standard error (0.5): it stopped rising" in "\n".join(claims(seeded, "morlhf"))
    rising = [at("morlhf", "step-2", 200, 5.0, 0.5), at("morlhf", "final", 400, 6.0, 0.2)]
    assert "+1, beyond one standard error (0.5): still rising" in "\n".join(claims(rising, "morlhf"))


def test_each_method_is_measured_as_soon_as_it_has_trained(
    tmp_path, tiny_path, tiny_compare_ric, monkeypatch
):
    """A comparison stopped while a later method trains has already evaluated the methods
    trained before it, with their rungs: a long ladder split over several runs shows its
    numbers as it goes."""
    import steerable.methods.morlhf.recipe as morlhf_recipe

    config = tmp_path / "compare.yaml"
    ladder = LADDER.format(model=tiny_path, ric=tiny_compare_ric)
    methods = "methods: [ric, moslim, moslim-grpo, soups, mod, genarm, morlhf, prompting]"
    assert methods in ladder
    variants = "variants: {moslim-grpo: {method: moslim, moslim: {algorithm: grpo}}}"
    assert variants in ladder
    config.write_text(ladder.replace(methods, "methods: [ric, morlhf, prompting]").replace(variants, ""))

    def stopped(config):
        raise RuntimeError("the machine stopped")

    monkeypatch.setattr(morlhf_recipe, "train_morlhf", stopped)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(out)])
    assert isinstance(result.exception, RuntimeError), result.output
    done = sorted(p.parent.name for p in (out / "stages").glob("*/done.json"))
    assert done == ["eval_ric", "rung_ric_sft", "rung_ric_sft-step-1"]  # RiC and its rungs; MORLHF next
    assert not (out / "ladder.csv").exists() and not (out / "report.md").exists()


NP_LADDER = """
model: {model}
methods: [np-dpo, prompting]
stats: {stats}
eval: {{limit: 2, resolution: 2, examples: 3, max_new_tokens: 4}}
np_rm: {{steps: 20, hidden: 16, latent_size: 4, heads: 2, targets: 6, max_context: 3, eval_tasks: 10,
        validation_tasks: 10, eval_every: 10}}
np_dpo: {{data: {data}, targets: 6, max_context: 3, tasks_per_batch: 2, max_steps: 3, lora_r: 4,
         lora_alpha: 8, max_completion_length: 8, eval_tasks: 2, eval_prompts: 2, eval_contexts: 1,
         max_new_tokens: 4, eval_context_size: 2}}
budgets: {{rl_steps: [1, 2]}}
"""


def test_np_dpo_is_evaluated_at_its_saves_with_their_context_encoders(tmp_path, tiny_path, scored_table):
    from steerable.stages import file_digest

    config = tmp_path / "compare.yaml"
    stats = scored_table.parent / "stats.json"
    config.write_text(NP_LADDER.format(model=tiny_path, stats=stats, data=scored_table))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "ladder.csv")
    mine = table[table["method"] == "np-dpo"].reset_index()
    assert list(mine["rung"]) == ["step-1", "step-2", "final"]
    # each rung's directory steers with that save's context encoder and the finished run's pairs
    saves = out / "np_dpo" / "stages" / "policy" / "rungs"
    for step in (1, 2):
        rung = out / "ladder" / "np-dpo" / f"step-{step}"
        fewshot = load_manifest(rung).fewshot
        assert (rung / fewshot["context"]).resolve() == (saves / f"step-{step}" / "fewshot").resolve()
        assert (rung / fewshot["heldout_pairs"]).is_file()
    assert file_digest(saves / "step-1" / "fewshot") != file_digest(saves / "step-2" / "fewshot")  # trained
    # every rung pays the NP-BTL run its encoder started from; the tokens, the run's share
    started_from = json.loads((out / "np_rm" / "stages" / "np" / "done.json").read_text())["info"]["seconds"]
    policy = json.loads((out / "np_dpo" / "stages" / "policy" / "done.json").read_text())["info"]
    assert started_from > 0
    assert mine["seconds"].iloc[-1] == pytest.approx(policy["seconds"] + started_from)
    assert mine["seconds"].iloc[0] > started_from and mine["seconds"].is_monotonic_increasing
    assert mine["trained_tokens"].iloc[0] == round(policy["trained_tokens"] / 3)
    assert mine["trained_tokens"].is_monotonic_increasing


def test_the_methods_trained_on_rics_answers_pay_for_them_under_a_relative_out(
    tmp_path, tiny_path, tiny_compare_ric, monkeypatch
):
    """Their configs hold the pool's path resolved; the plan still knows it as RiC's."""
    from steerable.evaluation.compare import CompareConfig, plan_compare

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "compare.yaml"
    config.write_text(LADDER.format(model=tiny_path, ric=tiny_compare_ric))
    plan = plan_compare(CompareConfig.from_yaml(config), Path("out"))
    pool = str(Path("out") / "ric" / "stages" / "offline" / "scored.jsonl")
    assert plan.pools == {m: pool for m in ("moslim", "moslim-grpo", "soups", "genarm")}

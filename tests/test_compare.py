"""A short end-to-end `steerable compare` on the tiny configuration (every method)."""

import json

import pytest
from typer.testing import CliRunner

from steerable.cli import app

TINY_COMPARE = """
model: {model}
methods: [ric, moslim, np-dpo, soups, morlhf, prompting]
eval: {{limit: 2, resolution: 2, examples: 3, max_new_tokens: 4}}
moslim_rm: {{model: {model}, num_epochs: 1, batch_size: 4, max_length: 32}}
{ric}
rl: {{max_steps: 1, batch_size: 4, num_generations: 2, max_completion_length: 4, prompt_limit: 4, lora_r: 4}}
np_rm: {{steps: 20, hidden: 16, latent_size: 4, heads: 2, targets: 6, max_context: 3, eval_tasks: 10,
        validation_tasks: 10, eval_every: 10}}
np_dpo: {{data: {data}, targets: 6, max_context: 3, tasks_per_batch: 2, max_steps: 2, lora_r: 4,
         lora_alpha: 8,
         max_completion_length: 8, eval_tasks: 2, eval_prompts: 2, eval_contexts: 1, max_new_tokens: 4,
         eval_context_size: 2}}
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_path, scored_table, tiny_compare_ric):
    root = tmp_path_factory.mktemp("compare")
    config = root / "compare.yaml"
    config.write_text(TINY_COMPARE.format(model=tiny_path, data=scored_table, ric=tiny_compare_ric))
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root, config, result


def test_compare_writes_one_report_for_every_method(compared):
    root, _, result = compared
    out = root / "out"
    report = (out / "report.md").read_text()
    for method in ("ric", "moslim", "np-dpo", "soups", "morlhf", "prompting"):
        assert f"| {method} |" in report
        assert (out / "stages" / f"eval_{method}" / "result.json").is_file()
    morlhf = json.loads((out / "stages/eval_morlhf/result.json").read_text())
    assert [p["weights"] for p in morlhf["points"]] == [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    soups = json.loads((out / "stages/eval_soups/result.json").read_text())
    assert len(soups["points"]) == 3 and soups["compute"]["trained_tokens"] > 0
    assert (out / "front.png").is_file() and "hypervolume" in result.output
    # each model the run trained carries its measured front (the playground draws it)
    for method in ("ric", "moslim", "soups", "morlhf"):
        front = json.loads((out / method / "front.json").read_text())
        evaluated = json.loads((out / "stages" / f"eval_{method}" / "result.json").read_text())
        assert [p["mean"] for p in front["points"]] == [p["mean"] for p in evaluated["points"]]
    # MOSLIM's RM was trained on RiC's scored offline data; its policy is swept level by level
    moslim = json.loads((out / "moslim/steerable.json").read_text())
    assert moslim["moslim"]["reward_model"] == str((out / "moslim_rm").resolve())
    rm = json.loads((out / "moslim_rm/moslim_rm.json").read_text())
    assert rm["objectives"] == ["brief", "positive"] and rm["data"]["path"].endswith(
        "ric/stages/offline/scored.jsonl"
    )
    levels = json.loads((out / "stages/eval_moslim/result.json").read_text())["levels"]
    assert len(levels["points"]) == 2 * 5 and "Controllability by requested level" in report
    # NP-DPO's context encoder started from the NP-BTL run; it is swept on the same grid
    np_dpo = json.loads((out / "np_dpo/steerable.json").read_text())
    assert np_dpo["training"]["config"]["context_init"] == str((out / "np_rm").resolve())
    fewshot = json.loads((out / "stages/eval_np-dpo/result.json").read_text())
    assert len(fewshot["points"]) == 3


def test_compare_rerun_skips_finished_stages(compared):
    root, config, _ = compared
    out = root / "out"
    stamps = {p: p.stat().st_mtime for p in out.glob("stages/eval_*/result.json")}
    assert len(stamps) == 6
    rerun = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(out)])
    assert rerun.exit_code == 0, rerun.output
    # fewer methods: the finished stages are reused, not refused
    fewer = CliRunner().invoke(
        app, ["compare", "--config", str(config), "--out", str(out), "--methods", "ric,prompting"]
    )
    assert fewer.exit_code == 0, fewer.output
    assert {p: p.stat().st_mtime for p in out.glob("stages/eval_*/result.json")} == stamps


def test_compare_bad_configurations(compared, tmp_path):
    root, config, _ = compared
    runner = CliRunner()
    changed = tmp_path / "changed.yaml"
    changed.write_text(config.read_text().replace("max_new_tokens: 4}", "max_new_tokens: 5}"))
    refused = runner.invoke(app, ["compare", "--config", str(changed), "--out", str(root / "out")])
    assert refused.exit_code == 2
    assert "stages/eval_ric was made with other inputs (eval differ" in " ".join(refused.output.split())
    unknown = runner.invoke(app, ["compare", "--out", str(tmp_path / "x"), "--methods", "ric,dpo"])
    assert unknown.exit_code == 2 and "unknown method" in unknown.output
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("modle: tiny\n")
    typo = runner.invoke(app, ["compare", "--config", str(bad_key), "--out", str(tmp_path / "y")])
    assert typo.exit_code == 2 and "unknown key" in typo.output
    no_stats = runner.invoke(app, ["compare", "--out", str(tmp_path / "z"), "--methods", "prompting"])
    assert no_stats.exit_code == 2 and "stats" in no_stats.output
    # a typo in a later section is found before the first method trains
    for section, message in [("rl: {max_step: 1}", "config rl/soups: unknown key(s) ['max_step']"),
                             ("eval: {samples: 0}", "config eval: --samples must be >= 1, got 0"),
                             ("ric: {num_epochs: abc}", "num_epochs must be float"),
                             ("morlhf: {weight_vectors: ['1,-1']}", "negative")]:  # fmt: skip
        bad = tmp_path / "late.yaml"
        bad.write_text(config.read_text().split("eval:")[0] + section + "\n")
        late = runner.invoke(app, ["compare", "--config", str(bad), "--out", str(tmp_path / "late")])
        assert late.exit_code == 2 and message in " ".join(late.output.split()), late.output
        assert not (tmp_path / "late" / "ric").exists()


def test_rl_baselines_refuse_a_stale_policy_and_change_weights(compared):
    from dataclasses import replace

    from safetensors.torch import load_file

    from steerable import SteerableError
    from steerable.methods.soups.recipe import SoupsConfig, train_soups

    root, _, _ = compared
    out = root / "out"
    manifest = json.loads((out / "soups/steerable.json").read_text())
    assert manifest["training"]["grpo"] == {"loss_type": "dapo", "scale_rewards": "group"}
    config = SoupsConfig(**manifest["training"]["config"])
    assert train_soups(config) == out / "soups"  # the same settings: nothing retrains
    with pytest.raises(SteerableError, match=r"stages/policy_0 was made with other inputs \(max_steps"):
        train_soups(replace(config, max_steps=2))
    other_stats = root / "other.stats.json"
    rewards = json.loads((out / "ric/steerable.json").read_text())["rewards"]
    rewards["objectives"][0]["stats"]["std"] *= 2
    other_stats.write_text(json.dumps(rewards))
    with pytest.raises(SteerableError, match=r"other inputs \(rewards differ"):
        train_soups(replace(config, stats=str(other_stats)))
    assert (out / "soups/steerable.json").is_file()
    # GRPO moved the brevity policy (its rewards vary within a group): LoRA B left zero
    adapter = load_file(out / "soups" / manifest["policies"][0]["adapter"] / "adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if "lora_B" in k)


def test_generate_steers_every_method(compared):
    root, _, _ = compared
    out = root / "out"
    runner = CliRunner()
    soups = runner.invoke(
        app, ["generate", "--model", str(out / "soups"), "--prefer", "0.3,0.7", "--max-new-tokens", "3", "Hi"]
    )
    assert soups.exit_code == 0 and "> Hi" in soups.output, soups.output
    morlhf = runner.invoke(
        app, ["generate", "--model", str(out / "morlhf"), "--prefer", "1,1", "--max-new-tokens", "3", "Hi"]
    )
    assert morlhf.exit_code == 0 and "> Hi" in morlhf.output, morlhf.output
    missing = runner.invoke(app, ["generate", "--model", str(out / "morlhf"), "--prefer", "0.3,0.7", "Hi"])
    assert missing.exit_code == 2 and "no policy for weights" in missing.output
    target = runner.invoke(
        app, ["generate", "--model", str(out / "soups"), "--target", "brief=1,positive=0", "Hi"]
    )
    assert target.exit_code == 2 and "--target steers ric, ric-image models" in target.output, target.output


def test_compare_plans_moslim_dpo_on_rics_scored_data(tmp_path):
    from steerable.errors import SteerableError
    from steerable.evaluation.compare import CompareConfig, plan_compare

    out = tmp_path / "out"
    config = CompareConfig(model="tiny", methods=["ric", "moslim"], moslim={"algorithm": "dpo"})
    plan = plan_compare(config, out)
    scored = (out / "ric/stages/offline/scored.jsonl").resolve()
    assert plan.configs["moslim"].pool == str(scored) and plan.configs["moslim_rm"].data == str(
        out / "ric/stages/offline/scored.jsonl"
    )
    alone = CompareConfig(
        model="tiny",
        methods=["moslim"],
        stats=str(tmp_path / "stats.json"),
        moslim={"algorithm": "dpo", "reward_model": str(tmp_path / "rm")},
    )
    with pytest.raises(SteerableError, match="moslim's dpo ranks a pool"):
        plan_compare(alone, out)
    given = CompareConfig(**{**alone.__dict__, "moslim": {**alone.moslim, "pool": str(tmp_path / "p.jsonl")}})
    assert plan_compare(given, out).configs["moslim"].pool == str(tmp_path / "p.jsonl")


def test_compare_refuses_another_commands_model_before_training_into_it(tmp_path, tiny_path, scored_table):
    """`compare --out` on a RiC model directory is refused before any method trains, so nothing of
    the comparison is written into the model."""
    out = tmp_path / "model"
    out.mkdir()
    (out / "steerable.json").write_text(json.dumps({"method": "ric"}))
    config = tmp_path / "compare.yaml"
    config.write_text(
        f"model: {tiny_path}\nmethods: [soups]\nstats: {scored_table.parent / 'stats.json'}\n"
        "rl: {max_steps: 1, batch_size: 4, num_generations: 2, max_completion_length: 4, "
        "prompt_limit: 4, lora_r: 4}\n"
    )
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 2 and "holds a RiC model" in result.output, result.output
    assert [p.name for p in out.iterdir()] == ["steerable.json"]


def test_compare_names_the_eval_option_out_of_range_as_every_other(tmp_path, tiny_path):
    config = tmp_path / "compare.yaml"
    config.write_text(f"model: {tiny_path}\nmethods: [prompting]\neval: {{samples: 0}}\n")
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "config eval: --samples must be >= 1, got 0" in " ".join(result.output.split()), result.output


EXPERTS_COMPARE = """
model: {model}
methods: [soups, mod, lora-mix, prompting]
stats: {stats}
eval: {{limit: 2, resolution: 2, max_new_tokens: 4}}
soups: {{algo: dpo, pool: {pool}, max_steps: 1, batch_size: 2, lora_r: 4}}
"""


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tiny_path, scored_table):
    """One comparison of the experts soups trains (DPO on the scored pool) as Rewarded Soups, MOD
    and LoRA output mixing, beside the prompting floor."""
    root = tmp_path_factory.mktemp("mixed")
    config = root / "compare.yaml"
    stats = scored_table.parent / "stats.json"
    config.write_text(EXPERTS_COMPARE.format(model=tiny_path, stats=stats, pool=scored_table))
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root / "out", result


def test_compare_evaluates_mod_and_lora_mix_on_the_experts_soups_trained(mixed):
    out, result = mixed
    report = (out / "report.md").read_text()
    results = {
        method: json.loads((out / "stages" / f"eval_{method}" / "result.json").read_text())
        for method in ("soups", "mod", "lora-mix", "prompting")
    }
    for method, evaluated in results.items():
        assert f"| {method} |" in report and evaluated["inner_product"] is not None
        assert evaluated["compute"]["seconds_per_token"] > 0
    assert {m: r["compute"]["forwards_per_token"] for m, r in results.items()} == {
        "soups": 1,
        "mod": 2,
        "lora-mix": 1,
        "prompting": 1,
    }
    # nothing trains for mod and lora-mix: the experts' training is theirs, and no folder of their own
    assert results["soups"]["compute"]["train_seconds"] > 0
    for method in ("mod", "lora-mix"):
        assert results[method]["compute"]["train_seconds"] == results["soups"]["compute"]["train_seconds"]
        assert results[method]["model"] == str(out / "soups") and not (out / method).exists()
    # the soups directory carries soups' own front, not a mixing's
    front = json.loads((out / "soups" / "front.json").read_text())
    assert [p["mean"] for p in front["points"]] == [p["mean"] for p in results["soups"]["points"]]
    summary = (out / "summary.csv").read_text().splitlines()
    header = summary[0].split(",")
    for column in ("inner_product", "forwards_per_token", "seconds_per_token", "relative_seconds_per_token"):
        assert column in header
    prompting = next(line.split(",") for line in summary[1:] if line.startswith("prompting,"))
    assert float(prompting[header.index("relative_seconds_per_token")]) == pytest.approx(1.0)
    printed = " ".join(result.output.split())
    assert "fwd/tok" in printed and "reference: 5% quantile of the training scores, brief=" in printed
    assert "w.z gain orth miscal train s" in printed  # the steerability columns, in the console too


def test_compare_refuses_mod_without_soups_before_anything_trains(tmp_path, tiny_path, scored_table):
    from steerable.errors import SteerableError
    from steerable.evaluation.compare import CompareConfig, plan_compare

    stats = str(scored_table.parent / "stats.json")
    config = tmp_path / "compare.yaml"
    config.write_text(f"model: {tiny_path}\nmethods: [mod, prompting]\nstats: {stats}\n")
    result = CliRunner().invoke(app, ["compare", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "mod trains nothing of its own: it is evaluated on the model directory soups trains; add soups " \
        "to the methods" in " ".join(result.output.split()), result.output  # fmt: skip
    assert not (tmp_path / "out" / "stages").exists()
    with pytest.raises(SteerableError, match="lora-mix trains nothing of its own"):
        plan_compare(CompareConfig(model="tiny", methods=["lora-mix"], stats=stats), tmp_path / "x")

    # its divergence is checked with the plan, and given to its evaluation
    def plan(divergence):
        mod = {"divergence": divergence}
        return plan_compare(CompareConfig(model="tiny", methods=["soups", "mod"], stats=stats, mod=mod), out)

    out = tmp_path / "x"
    with pytest.raises(SteerableError, match=r"config mod: --divergence must be in \[0, 1\], got 2.0"):
        plan(2)
    assert plan(0.5).trainings["mod"].evaluates == "soups"
    assert plan(0.5).trainings["mod"].options == {"divergence": 0.5}


def test_compare_plans_genarm_on_rics_scored_data_and_counts_the_mixings_sweeps(tmp_path):
    from steerable.cost import grid_points
    from steerable.evaluation.compare import CompareConfig, compare_cost, plan_compare

    out = tmp_path / "out"
    config = CompareConfig(model="tiny", methods=["ric", "soups", "mod", "lora-mix", "genarm"],
                           soups={"algo": "dpo"}, eval={"limit": 4, "resolution": 2})  # fmt: skip
    plan = plan_compare(config, out)
    scored = str((out / "ric/stages/offline/scored.jsonl").resolve())
    assert plan.configs["genarm"].pool == scored and plan.configs["soups"].pool == scored
    assert list(plan.configs) == ["ric", "soups", "genarm"]  # mod and lora-mix train nothing
    assert plan.methods == ["ric", "soups", "mod", "lora-mix", "genarm"]
    cost = compare_cost(config, out)
    assert f"5 methods, {5 * grid_points(2, 2)} grid points x 4 prompts" in cost.what
    assert "MOD 2 forwards a token, GenARM 3 forwards a token" in cost.what
    # the estimate counts a mixture's sweep at its forwards: MOD's (K = 2) twice LoRA mixing's (1)
    one, two = (
        compare_cost(CompareConfig(**{**config.__dict__, "methods": ["ric", "soups", m]}), out)
        for m in ("lora-mix", "mod")
    )
    swept = grid_points(2, 2) * 4 * plan.settings.samples * plan.settings.max_new_tokens
    assert two.tokens - one.tokens == swept


def test_variants_are_checked_before_anything_trains(tmp_path):
    from dataclasses import replace
    from pathlib import Path

    from steerable.errors import SteerableError
    from steerable.evaluation.compare import CompareConfig, plan_compare

    grpo = {"method": "moslim", "moslim": {"algorithm": "grpo"}}
    for variants, methods, message in (
        ({"moslim": grpo}, ["moslim"], "'moslim' cannot name a variant"),
        ({"Moslim GRPO": grpo}, ["ric"], "'Moslim GRPO' cannot name a variant"),
        ({"seed-1": grpo}, ["ric"], "'seed-1' cannot name a variant"),
        ({"x": {"method": "ppo"}}, ["ric"], r"variants.x.method must be one of \[.*\] \(a method a"),
        ({"x": {"method": "prompting"}}, ["ric"], "variants.x.method must be one of"),
        ({"x": {"moslim": {}}}, ["ric"], "variants.x needs method: M"),
        ({"lora_mix": grpo}, ["ric"], "'lora_mix' cannot name a variant"),
        ({"x": grpo}, ["ric"], r"variants \['x'\] are not among the methods"),
        ({"x": {"method": "moslim", "moslm": {}}}, ["ric"], r"variants.x: unknown key\(s\) \['moslm'\]"),
        ({"x": {"method": "moslim", "moslim": "grpo"}}, ["ric"], "variants.x.moslim must be a mapping"),
        ({}, ["ric", "moslim-grpo"], r"unknown method\(s\) \['moslim-grpo'\]"),
        ({"x": grpo}, ["ric", "x", "x"], "methods: each method once"),
    ):
        with pytest.raises(SteerableError, match=message):
            CompareConfig(model="tiny", methods=methods, variants=variants)
    # a variant can be the compute claims' baseline, and budgets its method alone could not take
    longer = {"method": "morlhf", "rl": {"max_steps": 60}}
    benchmarks = Path(__file__).parents[1] / "benchmarks"
    chosen = CompareConfig(
        model="tiny",
        stats=str(benchmarks / "ladder-stats.json"),
        methods=["morlhf", "x"],
        variants={"x": longer},
        budgets={"baseline": "x", "rl_steps": [50]},
    )
    with pytest.raises(SteerableError, match=r"--rungs \[50\] are beyond --max_steps \(30\)"):
        plan_compare(chosen, tmp_path / "o")  # morlhf itself, at its default 30 steps
    plan = plan_compare(replace(chosen, methods=["x"]), tmp_path / "o")
    assert plan.trainings["x"].steps[0].config.max_steps == 60
    # methods named on the command line leave out the file's variants they do not name
    ladder = benchmarks / "ladder.yaml"
    assert "moslim-grpo" in CompareConfig.from_yaml(ladder).variants
    assert CompareConfig.from_yaml(ladder, {"methods": ["ric", "morlhf", "prompting"]}).variants == {}
    # a variant whose sections its method never reads is refused: it would be its method again
    idle = {"x": {"method": "moslim", "ric": {"num_epochs": 2}}}
    with pytest.raises(SteerableError, match="variants.x trains and evaluates exactly as its method"):
        idling = CompareConfig(model="tiny", methods=["ric", "moslim", "x"], variants=idle)
        plan_compare(idling, tmp_path / "o")
    # a variant's section is checked as its method's own, before anything trains
    bad = {"x": {"method": "moslim", "moslim": {"algorithm": "ppo"}}}
    config = CompareConfig(model="tiny", methods=["ric", "moslim", "x"], variants=bad)
    with pytest.raises(SteerableError, match="algorithm"):
        plan_compare(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # each variant trains into its own folder, its method's settings under its own
    dpo = {"algorithm": "dpo"}
    config = CompareConfig(model="tiny", methods=["x", "ric", "moslim"], moslim=dpo, variants={"x": grpo})
    plan = plan_compare(config, tmp_path / "out")
    assert plan.methods == ["ric", "moslim", "x"] and plan.method("x") == "moslim"
    steps = {step.name: step.config for step in plan.trainings["x"].steps}
    assert steps["moslim"].algorithm == "grpo"
    assert steps["moslim"].output_dir == str(tmp_path / "out/x/moslim")
    assert steps["moslim_rm"].output_dir == str(tmp_path / "out/x/moslim_rm")
    mine = {step.name: step.config for step in plan.trainings["moslim"].steps}
    assert mine["moslim"].algorithm == "dpo"  # the comparison's section, under the variant's
    assert mine["moslim"].output_dir == str(tmp_path / "out/moslim")


def test_every_seed_trains_a_variant_at_that_seed(tmp_path):
    from steerable.evaluation.compare import CompareConfig, plan_compare, seeded

    variants = {
        "x": {"method": "moslim", "moslim": {"algorithm": "grpo"}},
        "y": {"method": "moslim", "moslim": {"algorithm": "grpo"}, "rl": {"seed": 7, "max_steps": 5}},
    }
    config = CompareConfig(
        model="tiny", methods=["ric", "moslim", "x", "y"], moslim={"algorithm": "dpo"}, variants=variants
    )
    plan = plan_compare(seeded(config, 3), tmp_path / "out")
    for name in ("moslim", "x", "y"):
        steps = {step.name: step.config for step in plan.trainings[name].steps}
        assert steps["moslim"].seed == steps["moslim_rm"].seed == 3, name
    assert {step.name: step.config for step in plan.trainings["y"].steps}["moslim"].max_steps == 5

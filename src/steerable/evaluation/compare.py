"""`steerable compare` and `steerable demo`: train the chosen methods on one benchmark
configuration, evaluate them on the same held-out prompts, grid, objectives and statistics,
and write one report. Every section of the configuration is checked before anything trains.
Every stage is cached under the output directory and records what produced it
(`steerable.stages`):

    OUT/ric/                       RiC model directory (its own stages inside)
    OUT/moslim_rm/  OUT/moslim/    MOSLIM's multi-head RM and policy directories
    OUT/np_rm/  OUT/np_dpo/        the few-shot NP-BTL run (its context encoder starts NP-DPO's)
                                   and the NP-DPO policy directory
    OUT/soups/  OUT/morlhf/        the RL baselines' directories (their own stages inside)
    OUT/stages/eval_METHOD/        result.json of each evaluated method (and front.json, its
                                   measured front, in each model directory: the playground plots it)
    OUT/report.md, front.png, summary.csv, points.csv, compare.json (the configuration)

A re-run skips finished stages and trains or evaluates only what is missing (another list of
methods is fine); a stage whose settings changed is refused with the fix. RiC's statistics are
the comparison's statistics; without RiC, `stats:` must name a stats JSON or model directory.

The configuration (YAML, every key optional):

    model: smollm2
    methods: [ric, moslim, np-dpo, soups, morlhf, prompting]
    stats: null
    prompts: null   your prompt file (a prompt column, an optional split column): every method
           trains on its train split and is evaluated on its heldout split (eval's split)
    eval: {split: heldout, limit: null, resolution: 10, max_new_tokens: 64, temperature: 0.7,
           top_p: 0.95, top_k: 50, seed: 0, samples: 1, dtype: float32}
           samples: responses per prompt at each grid point; examples: NP-DPO's examples
           per grid point (a simulated user with utility w . normalised objectives)
    ric: {...}      RiCConfig fields
    rl: {...}       RLConfig fields shared by soups, morlhf and moslim (the same RL budget)
    morlhf: {weight_vectors: ["1,0", "0.5,0.5", "0,1"]}
    moslim: {...}   MOSLIMConfig fields over rl's (algorithm dpo: pool defaults to RiC's scored
           offline data); without reward_model, the RM is trained:
    moslim_rm: {...} MOSLIMRMConfig fields; data defaults to RiC's scored offline data
           (OUT/ric/stages/offline/scored.jsonl), labels to its score_* columns
    np_dpo: {...}   NPDPOConfig fields; data defaults to RiC's scored offline data, stats to the
           comparison's; without context_init, an NP-BTL run is trained first:
    np_rm: {...}    NPRMConfig fields (task scored, the same data, seed, types and conflicting)
    trust_remote_code: false   let hub models and py: objectives run their own code
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from steerable import methods
from steerable.configs import SEED, check_config, config_from_dict
from steerable.data.prompts import SPLITS
from steerable.defaults import DTYPE_NAMES
from steerable.errors import SteerableError
from steerable.evaluation.report import EvaluationResult, record_front, write_report

# every method a comparison trains, or evaluates on the base model (the prompting floor)
METHOD_ORDER = tuple(methods.names(lambda m: m.trainable or not m.trained))


@dataclass
class EvalSettings:
    """Evaluation settings shared by every method in a comparison."""

    split: str = field(default="heldout", metadata={"choices": SPLITS})
    limit: int | None = field(default=None, metadata={"ge": 1})
    resolution: int = field(default=10, metadata={"ge": 1})
    max_new_tokens: int = field(default=64, metadata={"ge": 1})
    temperature: float = field(default=0.7, metadata={"ge": 0})
    top_p: float = field(default=0.95, metadata={"gt": 0, "le": 1})
    top_k: int = field(default=50, metadata={"ge": 0})
    seed: int = field(default=0, metadata=SEED)
    samples: int = field(default=1, metadata={"ge": 1})
    dtype: str = field(default="float32", metadata={"choices": DTYPE_NAMES})
    examples: int = field(default=5, metadata={"ge": 1})

    def __post_init__(self):
        check_config(self)
        self.sampling  # noqa: B018 -- validates the sampling settings

    @property
    def sampling(self):
        from steerable.generation import SamplingConfig

        return SamplingConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
        )


@dataclass
class CompareConfig:
    model: str = "smollm2"
    methods: list[str] = field(default_factory=lambda: list(METHOD_ORDER))
    stats: str | None = None
    prompts: str | None = None
    eval: dict = field(default_factory=dict)
    ric: dict = field(default_factory=dict)
    rl: dict = field(default_factory=dict)
    morlhf: dict = field(default_factory=dict)
    moslim: dict = field(default_factory=dict)
    moslim_rm: dict = field(default_factory=dict)
    np_dpo: dict = field(default_factory=dict)
    np_rm: dict = field(default_factory=dict)
    trust_remote_code: bool = False

    def __post_init__(self):
        check_config(self)
        bad = [m for m in self.methods if m not in METHOD_ORDER]
        if bad or not self.methods:
            raise SteerableError(f"unknown method(s) {bad}; choose from {list(METHOD_ORDER)}")
        if self.stats is not None:
            self.stats = str(Path(self.stats).resolve())
        if self.prompts is not None:
            self.prompts = str(Path(self.prompts).resolve())

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: dict | None = None) -> CompareConfig:
        import yaml

        data = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as err:
                raise SteerableError(f"config {path}: cannot read it as YAML ({err})")
            if not isinstance(data, dict):
                raise SteerableError(f"config {path}: expected a mapping")
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return config_from_dict(cls, data, str(path or "command line"))


@dataclass
class ComparePlan:
    """Every stage's configuration, built (and so checked) before anything trains."""

    methods: list[str]
    settings: EvalSettings
    stats: str
    ric: object | None = None
    soups: object | None = None
    morlhf: object | None = None
    moslim: object | None = None
    moslim_rm: object | None = None
    np_dpo: object | None = None
    np_rm: object | None = None


def plan_compare(config: CompareConfig, out: Path) -> ComparePlan:
    """Check every section of `config` and build the configurations of its stages."""
    methods = [m for m in METHOD_ORDER if m in config.methods]
    settings = config_from_dict(EvalSettings, config.eval, "eval")
    stats = config.stats or (str((out / "ric").resolve()) if "ric" in methods else None)
    if stats is None:
        raise SteerableError(
            "without ric in the methods, the config needs stats: (a stats JSON or model dir)"
        )
    plan = ComparePlan(methods, settings, stats)
    if "ric" in methods:
        from steerable.methods.ric.recipe import RiCConfig

        fixed = {
            "model": config.model,
            "output_dir": str(out / "ric"),
            "trust_remote_code": config.trust_remote_code,
            **({"prompts": config.prompts} if config.prompts is not None else {}),
        }
        plan.ric = config_from_dict(RiCConfig, {**config.ric, **fixed}, "ric")
    rl = {**config.rl, "model": config.model, "stats": stats, "trust_remote_code": config.trust_remote_code}
    if config.prompts is not None:
        rl["prompts"] = config.prompts
    if "soups" in methods:
        from steerable.methods.soups.recipe import SoupsConfig

        plan.soups = config_from_dict(SoupsConfig, {**rl, "output_dir": str(out / "soups")}, "rl")
    if "morlhf" in methods:
        from steerable.methods.morlhf.recipe import MORLHFConfig

        plan.morlhf = config_from_dict(
            MORLHFConfig, {**rl, **config.morlhf, "output_dir": str(out / "morlhf")}, "rl/morlhf"
        )
    if "moslim" in methods:
        plan_moslim(config, plan, rl, out)
    if "np-dpo" in methods:
        plan_np_dpo(config, plan, out)
    return plan


def ric_data(plan: ComparePlan, given: str | None, out: Path, missing: str) -> str:
    """A section's scored data: as given, or RiC's scored offline data when RiC is compared
    (`missing`: the error when it is neither)."""
    if given is None and "ric" not in plan.methods:
        raise SteerableError(missing)
    return given or str(out / "ric" / "stages" / "offline" / "scored.jsonl")


def plan_np_dpo(config: CompareConfig, plan: ComparePlan, out: Path) -> None:
    """NP-DPO's config and, unless it names a context_init, the NP-BTL run that starts it."""
    from steerable.methods.np_dpo.recipe import NPDPOConfig

    fixed = {
        "model": config.model,
        "data": ric_data(
            plan,
            config.np_dpo.get("data"),
            out,
            "np-dpo needs data: set np_dpo: {data: TABLE} (a `steerable score` output), or add ric "
            "to the methods to use its scored offline data",
        ),
        "stats": config.np_dpo.get("stats") or plan.stats,
        "output_dir": str(out / "np_dpo"),
        "trust_remote_code": config.trust_remote_code,
    }
    section = {**config.np_dpo, **fixed}
    if section.get("context_init") is None:
        from steerable.methods.np_rm import NPRMConfig

        # the same pairs, split the same way (data and seed), so no pair it trained on is held out
        shared = {
            k: section[k] for k in ("types", "conflicting", "encoder", "objectives", "seed") if k in section
        }
        rm = {
            **config.np_rm,
            **shared,
            "task": "scored",
            "data": fixed["data"],
            "output_dir": str(out / "np_rm"),
        }
        plan.np_rm = config_from_dict(NPRMConfig, rm, "np_rm")
        section["context_init"] = plan.np_rm.output_dir
    plan.np_dpo = config_from_dict(NPDPOConfig, section, "np_dpo")
    if plan.np_rm is not None and plan.np_rm.seed != plan.np_dpo.seed:
        raise SteerableError(
            f"np_rm: seed {plan.np_rm.seed} but np_dpo's is {plan.np_dpo.seed}; the NP-BTL that starts "
            "NP-DPO must split the pairs as NP-DPO does: set seed in np_dpo only (np_rm takes it from there)"
        )


def plan_moslim(config: CompareConfig, plan: ComparePlan, rl: dict, out: Path) -> None:
    """MOSLIM's policy config and, unless it names a reward model, the RM it trains first;
    under algorithm dpo without a pool, the pool is RiC's scored offline data."""
    from steerable.methods.moslim.recipe import MOSLIMConfig

    section = {**rl, **config.moslim, "output_dir": str(out / "moslim")}
    if section.get("reward", "mapped") == "mapped" and section.get("reward_model") is None:
        from steerable.reward_models.multihead import MOSLIMRMConfig

        data = ric_data(
            plan,
            config.moslim_rm.get("data"),
            out,
            "moslim needs a reward model: set moslim: {reward_model: DIR}, or moslim_rm: {data: "
            "TABLE} to train one (with ric in the methods it trains on RiC's scored offline data)",
        )
        fixed = {
            "data": data,
            "output_dir": str(out / "moslim_rm"),
            "trust_remote_code": config.trust_remote_code,
        }
        plan.moslim_rm = config_from_dict(MOSLIMRMConfig, {**config.moslim_rm, **fixed}, "moslim_rm")
        section["reward_model"] = plan.moslim_rm.output_dir
    if section.get("algorithm") == "dpo":
        section.pop("prompts", None)  # DPO trains on the pool's prompts
        section["pool"] = ric_data(
            plan,
            section.get("pool"),
            out,
            "moslim's dpo ranks a pool of answers: set moslim: {pool: TABLE} (prompt/response rows, "
            "several per prompt), or put ric in the methods to rank RiC's scored offline data",
        )
    plan.moslim = config_from_dict(MOSLIMConfig, section, "rl/moslim")


def run_compare(config: CompareConfig, out: str | Path) -> list[EvaluationResult]:
    """Train (cached), evaluate (cached) and report every method of `config`."""
    from steerable.data.prompts import load_prompts, prompt_source
    from steerable.io import atomic_write_text
    from steerable.methods.rl import load_rewards
    from steerable.stages import Stages, file_digest, fingerprint

    out = Path(out)
    stages = Stages(out, "compare")  # refuses another command's directory before anything trains
    plan = plan_compare(config, out)
    prompts = load_prompts(plan.settings.split, plan.settings.limit, config.prompts)
    trained: dict[str, Path] = {}
    if plan.ric is not None:
        from steerable.methods.ric.recipe import check_inputs, train_ric

        check_inputs(plan.ric)
        trained["ric"] = train_ric(plan.ric)
    if plan.soups is not None:
        from steerable.methods.soups.recipe import train_soups

        trained["soups"] = train_soups(plan.soups)
    if plan.morlhf is not None:
        from steerable.methods.morlhf.recipe import train_morlhf

        trained["morlhf"] = train_morlhf(plan.morlhf)
    if plan.moslim is not None:
        from steerable.methods.moslim.recipe import train_moslim

        if plan.moslim_rm is not None:
            from steerable.reward_models.multihead import train_moslim_rm

            train_moslim_rm(plan.moslim_rm)
        trained["moslim"] = train_moslim(plan.moslim)
    if plan.np_dpo is not None:
        from steerable.evaluation.fewshot import run_np_dpo, run_np_rm

        if plan.np_rm is not None:
            run_np_rm(plan.np_rm)
        trained["np-dpo"] = run_np_dpo(plan.np_dpo)
    statistics = fingerprint(load_rewards(plan.stats).to_dict())
    results = []
    for method in plan.methods:
        own = methods.get(method).trained  # evaluated on the directory it trained, or on the base model
        model = str(trained[method]) if own else config.model
        inputs = {
            "method": method,
            "model": model_key(Path(model)) if own else model,
            "eval": asdict(plan.settings),
            "statistics": statistics,
        }
        if config.prompts is not None:  # by content; absent without a file, as before the option
            inputs["prompts"] = file_digest(config.prompts)

        def work(folder, method=method, model=model):
            from steerable.evaluation.evaluate import evaluate

            result = evaluate(
                method,
                model,
                prompts,
                plan.settings.resolution,
                plan.settings.sampling,
                plan.stats,
                samples=plan.settings.samples,
                dtype=plan.settings.dtype,
                trust_remote_code=config.trust_remote_code,
                prompt_split=prompt_source(plan.settings.split, config.prompts),
                prompt_limit=plan.settings.limit,
                examples=plan.settings.examples,
            )
            result.save(folder)
            return {"seconds": result.compute["eval_seconds"]}

        stages.run(f"eval_{method}", inputs, work)
        results.append(EvaluationResult.load(stages.path(f"eval_{method}")))
        if own and Path(model).resolve().is_relative_to(out.resolve()):
            record_front(results[-1], model)  # a model this run trained carries its measured front
    write_report(results, out)
    atomic_write_text(out / "compare.json", json.dumps(asdict(config), indent=2) + "\n")
    return results


def model_key(directory: Path) -> str:
    """What a trained model directory is, for the stages built on it: its stages' keys."""
    from steerable.policy import load_manifest
    from steerable.stages import fingerprint

    return fingerprint(load_manifest(directory).training.get("stages"))


# The one-command demo: RiC on the embedded default against the prompting floor, sized for 2 CPU
# cores (benchmarks/RESULTS.md, "The demo": its wall time and controllability). RiC's offline
# data for the first 96 train prompts (the recipe's own), reward-conditioned SFT for 3 epochs in
# batches of 4 without accumulation (1.5x the optimiser steps of the recipe's 4 epochs of 8, 3/4
# of its tokens), then one MORS round of 96 samples merged with half as many offline rows (the
# recipe's round is 128 and as many); evaluated on 22 held-out prompts at 6 grid points with 2
# samples per prompt.
# Without the round, the 3-epoch model missed brevity's bar on one machine (it answered alike at
# the three lowest brevity targets); 2 epochs with the round missed it too; halving the epochs at
# batches of 8, or halving the prompts, lost the tags' effect.
DEMO_CONFIG = {
    "model": "smollm2",
    "methods": ["ric", "prompting"],
    "eval": {"split": "heldout", "limit": 22, "resolution": 5, "max_new_tokens": 48, "samples": 2},
    "ric": {
        "prompt_limit": 96,
        "num_epochs": 3,
        "gradient_accumulation_steps": 1,
        "online_iterations": 1,
        "online_samples": 96,
        "original_ratio": 0.5,
    },
}

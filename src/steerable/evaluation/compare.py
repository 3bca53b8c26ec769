"""`steerable compare` and `steerable demo`: train the chosen methods on one benchmark
configuration, evaluate them on the same held-out prompts, grid, objectives and statistics,
and write one report. Every section of the configuration is checked before anything trains.
Every stage is cached under the output directory and records what produced it
(`steerable.stages`):

    OUT/ric/                       RiC model directory (its own stages inside)
    OUT/moslim_rm/  OUT/moslim/    MOSLIM's multi-head RM and policy directories
    OUT/np_rm/  OUT/np_dpo/        the few-shot NP-BTL run (its context encoder starts NP-DPO's)
                                   and the NP-DPO policy directory
    OUT/soups/  OUT/morlhf/        the RL baselines' directories (their own stages inside); mod
                                   and lora-mix train nothing: they are evaluated on OUT/soups
    OUT/genarm/                    GenARM's reward models (one adapter per objective)
    OUT/stages/eval_METHOD/        result.json of each evaluated method (and front.json, its
                                   measured front, in each model directory: the playground plots it)
    OUT/report.md, front.png, summary.csv, points.csv, compare.json (the configuration)

A re-run skips finished stages and trains or evaluates only what is missing (another list of
methods is fine); a stage whose settings changed is refused with the fix. RiC's statistics are
the comparison's statistics; without RiC, `stats:` must name a stats JSON or model directory.
How a method trains here is its registry entry's `compare` hook (`methods/NAME/compare.py`),
which reads its sections below and what the methods before it made.

The configuration (YAML, every key optional):

    model: smollm2
    methods: [ric, moslim, np-dpo, soups, mod, lora-mix, genarm, morlhf, prompting]
    stats: null
    prompts: null   your prompt file (a prompt column, an optional split column): every method
           trains on its train split and is evaluated on its heldout split (eval's split);
           evaluation prompts that are also training prompts (a file without a split column)
           are refused before anything trains
    eval: {split: heldout, limit: null, resolution: 10, max_new_tokens: 64, temperature: 0.7,
           top_p: 0.95, top_k: 50, seed: 0, samples: 1, dtype: float32}
           samples: responses per prompt at each grid point; examples: NP-DPO's examples
           per grid point (a simulated user with utility w . normalised objectives)
    ric: {...}      RiCConfig fields
    rl: {...}       RLConfig fields shared by soups, morlhf and moslim (the same RL budget)
    soups: {...}    SoupsConfig fields over rl's: algo grpo (default) or dpo (pool defaults to
           RiC's scored offline data); its experts are also mod's and lora-mix's, so either
           without soups in the methods is refused
    mod: {divergence: null}   MOD's alpha-divergence, in [0, 1] (null: reverse KL)
    genarm: {...}   GenARMConfig fields (pool defaults to RiC's scored offline data)
    morlhf: {weight_vectors: ["1,0", "0.5,0.5", "0,1"]}
    moslim: {...}   MOSLIMConfig fields over rl's (algorithm dpo: pool defaults to RiC's scored
           offline data); without reward_model, the RM is trained:
    moslim_rm: {...} MOSLIMRMConfig fields; data defaults to RiC's scored offline data
           (OUT/ric/stages/offline/scored.jsonl), labels to its score_* columns
    np_dpo: {...}   NPDPOConfig fields; data defaults to RiC's scored offline data, stats to the
           comparison's; without context_init, an NP-BTL run is trained first:
    np_rm: {...}    NPRMConfig fields (task scored, the same data, seed, types and conflicting)
    variants: {moslim-grpo: {method: moslim, moslim: {algorithm: grpo}}}   a method again under
           other settings, as a method of its own (name it in methods:): each variant names its
           method and the sections it sets over the comparison's (ric, rl, morlhf, moslim,
           moslim_rm, np_dpo, np_rm, soups, mod, genarm; a section's keys replace the same keys);
           it trains into OUT/VARIANT/ (its reward models too) and is evaluated, reported and
           laddered under its name
    seeds: [0, 1]   the whole comparison once per training seed (OUT/seed-S/, each as above),
           then the spread of every number over the seeds (OUT/seeds.md, seeds.csv; with
           budgets, ladder.csv/md/png of the seeds' mean and standard error)
    budgets: {rl_steps: [...], sft_steps: [...]}   a budget ladder: every RL-trained policy
           (and RiC's offline SFT) also saved at these steps, each save evaluated as a rung,
           and hypervolume against compute written (`evaluation.ladder`: OUT/ladder.csv,
           ladder.png, ladder.md)
    trust_remote_code: false   let hub models and py: objectives run their own code
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from steerable import methods
from steerable.configs import SEED, check_config, config_from_dict
from steerable.cost import Plan, coarser_lattice, grid_points
from steerable.data.prompts import SPLITS
from steerable.defaults import DTYPE_NAMES
from steerable.errors import SteerableError
from steerable.evaluation.report import EvaluationResult, record_front, write_report
from steerable.methods.base import CompareInputs, Comparing, resolve

# every method a comparison trains, or evaluates on the base model (the prompting floor)
METHOD_ORDER = tuple(methods.names(lambda m: m.compare is not None or not m.own_directory))
# the sections a method's compare hook reads, which a variant may set over the comparison's
SECTIONS = ("ric", "rl", "morlhf", "moslim", "moslim_rm", "np_dpo", "np_rm", "soups", "mod", "genarm")
VARIANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
# the methods a variant may vary: those a comparison trains (prompting has no settings to vary)
TRAINED = tuple(methods.names(lambda m: m.compare is not None))


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
    soups: dict = field(default_factory=dict)
    mod: dict = field(default_factory=dict)
    genarm: dict = field(default_factory=dict)
    budgets: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list, metadata=SEED)
    trust_remote_code: bool = False

    def __post_init__(self):
        check_config(self)
        check_variants(self.variants)
        bad = [m for m in self.methods if m not in METHOD_ORDER and m not in self.variants]
        if bad or not self.methods:
            defined = f", or a variant of variants: ({', '.join(self.variants)})" if self.variants else ""
            raise SteerableError(f"unknown method(s) {bad}; choose from {list(METHOD_ORDER)}{defined}")
        if len(set(self.methods)) != len(self.methods):
            raise SteerableError(f"methods: each method once, got {self.methods}")
        unused = [name for name in self.variants if name not in self.methods]
        if unused:
            raise SteerableError(
                f"variants {unused} are not among the methods {self.methods}: list them in methods: "
                "(or remove them)"
            )
        check_budgets(self.budgets)
        baseline = self.budgets.get("baseline")
        if baseline is not None and baseline not in self.methods:
            raise SteerableError(
                f"budgets.baseline {baseline!r} is not among the methods {self.methods}: the compute "
                "claims are read against its final hypervolume"
            )
        read = {key for label in self.methods for key in methods.get(self.method_of(label)).budgets}
        for key in sorted(set(self.budgets) - read - {"baseline"}):
            readers = methods.names(lambda m, key=key: key in m.budgets)
            raise SteerableError(
                f"budgets.{key} saves {', '.join(readers)} on the way; none is among the methods"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise SteerableError(f"seeds must be distinct, got {self.seeds}")
        if self.seeds and self.stats is None:
            raise SteerableError(
                "seeds: every seed must be measured under one set of statistics (RiC's would differ from "
                "seed to seed); set stats: to a stats JSON or a model directory"
            )
        if self.stats is not None:
            self.stats = str(Path(self.stats).resolve())
        if self.prompts is not None:
            self.prompts = str(Path(self.prompts).resolve())

    def method_of(self, label: str) -> str:
        """The registered method a name in `methods` is: itself, or the method a variant varies."""
        return self.variants[label]["method"] if label in self.variants else label

    def variant(self, label: str) -> CompareConfig:
        """This configuration with the variant `label`'s sections over its own."""
        given = {name: section for name, section in self.variants[label].items() if name != "method"}
        return replace(self, **{name: {**getattr(self, name), **section} for name, section in given.items()})

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
        if (overrides or {}).get("methods") is not None and isinstance(data.get("variants"), dict):
            # methods given on the command line: the file's variants they leave out are not run
            data["variants"] = {k: v for k, v in data["variants"].items() if k in data["methods"]}
        return config_from_dict(cls, data, str(path or "command line"))


BUDGETS = {
    "rl_steps": "the RL (GRPO or DPO) steps per policy at which every RL-trained method is also saved",
    "sft_steps": "the offline SFT steps at which RiC is also saved",
    "baseline": "the method whose final hypervolume the compute claims are measured against (morlhf)",
}


def check_budgets(budgets: dict) -> None:
    """The budgets: section (`BUDGETS`): rl_steps and sft_steps, each a list of increasing
    positive steps at which the methods it names are also saved and evaluated as rungs of a
    budget ladder; baseline, the name of one of the comparison's methods (checked there)."""
    unknown = sorted(set(budgets) - set(BUDGETS))
    if unknown:
        raise SteerableError(f"budgets: unknown key(s) {unknown}; budgets takes {', '.join(BUDGETS)}")
    baseline = budgets.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise SteerableError(f"budgets.baseline must name one of the methods, got {baseline!r}")
    for key, steps in budgets.items():
        if key == "baseline":
            continue
        valid = isinstance(steps, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in steps)
        if not valid or any(s < 1 for s in steps) or steps != sorted(set(steps)):
            raise SteerableError(f"budgets.{key} must be increasing positive integers, got {steps!r}")


def check_variants(variants: dict) -> None:
    """The variants: section: each a new name (lowercase letters, digits, - and _; not a method's
    nor a folder's of the comparison) for a `method` under `SECTIONS` set over the comparison's."""
    from steerable.methods import METHODS

    if not isinstance(variants, dict):
        raise SteerableError(f"variants must map names to {{method: M, SECTION: {{...}}}}, got {variants!r}")
    taken = {n.replace("_", "-") for n in (*METHODS, *SECTIONS, "stages", "ladder")}
    for name, body in variants.items():
        named = isinstance(name, str) and VARIANT_NAME.fullmatch(name) is not None
        if not named or name.replace("_", "-") in taken or name.startswith("seed-"):
            raise SteerableError(
                f"variants: {name!r} cannot name a variant; give it a new name of lowercase letters, digits, "
                "- and _ (not a method's, a section's, stages, ladder or seed-N), e.g. moslim-grpo"
            )
        if not isinstance(body, dict) or "method" not in body:
            raise SteerableError(f"variants.{name} needs method: M, the method it varies, got {body!r}")
        if body["method"] not in TRAINED:
            raise SteerableError(
                f"variants.{name}.method must be one of {list(TRAINED)} (a method a comparison trains), "
                f"got {body['method']!r}"
            )
        unknown = sorted(set(body) - {"method", *SECTIONS})
        if unknown:
            raise SteerableError(
                f"variants.{name}: unknown key(s) {unknown}; a variant takes method and the sections "
                f"{', '.join(SECTIONS)}"
            )
        for section, value in body.items():
            if section != "method" and not isinstance(value, dict):
                raise SteerableError(f"variants.{name}.{section} must be a mapping, got {value!r}")


@dataclass
class ComparePlan:
    """Every stage's configuration, built (and so checked) before anything trains: `trainings`,
    how each method of the comparison that trains is trained, in the order they train."""

    methods: list[str]  # the methods' names: registered methods and variants
    settings: EvalSettings
    stats: str
    trainings: dict[str, Comparing] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)  # a variant's name: the method it varies
    # a method's name: the scored data it trains on that a method before it made (RiC's offline
    # data), which its budget ladder pays for (`evaluation.ladder.climb`)
    pools: dict[str, str] = field(default_factory=dict)

    def method(self, name: str) -> str:
        """The registered method `name` (in `methods`) is."""
        return self.variants.get(name, name)

    @property
    def configs(self) -> dict[str, object]:
        """Each training stage's config, by its folder's name (ric, moslim_rm, moslim, ...)."""
        return {step.name: step.config for training in self.trainings.values() for step in training.steps}


def plan_compare(config: CompareConfig, out: Path) -> ComparePlan:
    """Check every section of `config` and build the configurations of its stages: each method's
    `compare` hook, given what the methods before it made (statistics, scored data), in registry
    order with those that use another's scored data last; each variant after its method, on its
    configuration (`CompareConfig.variant`) and into its own folder."""

    def place(name):  # registry order, a method's variants after it (in the order given)
        return METHOD_ORDER.index(config.method_of(name)), name in config.variants

    chosen = sorted(config.methods, key=place)
    settings = config_from_dict(EvalSettings, config.eval, "eval")
    inputs = CompareInputs(config, out)
    trainings, pools = {}, {}
    for name in sorted(chosen, key=lambda name: methods.get(config.method_of(name)).uses_scored):
        method = methods.get(config.method_of(name))
        if method.compare is None:
            continue
        mine = inputs if name == method.name else replace(inputs, config=config.variant(name), variant=name)
        training = resolve(method.compare)(mine)
        if name != method.name:
            try:  # its method as the comparison's sections train it (which may not hold alone)
                plain = resolve(method.compare)(replace(inputs, variant=name))
            except SteerableError:
                plain = None  # e.g. budgets beyond the method's own max_steps: the variant differs
            if plain is not None:
                refuse_idle_variant(name, training, plain)
        if inputs.made_scored is not None and reads_file(training, inputs.made_scored):
            pools[name] = inputs.made_scored
        inputs.made_stats = inputs.made_stats or training.stats
        inputs.made_scored = inputs.made_scored or training.scored
        trainings[name] = training
    for name, training in trainings.items():
        if training.evaluates is not None and training.evaluates not in chosen:
            raise SteerableError(
                f"{name} trains nothing of its own: it is evaluated on the model directory "
                f"{training.evaluates} trains; add {training.evaluates} to the methods "
                f"(methods: [{training.evaluates}, {name}])"
            )
    if trainings and config.prompts is not None:
        refuse_training_prompts(config.prompts, settings)
    variants = {name: config.method_of(name) for name in chosen if name in config.variants}
    return ComparePlan(chosen, settings, inputs.stats, trainings, variants, pools)


def reads_file(training: Comparing, path: str) -> bool:
    """Whether a stage of `training` is configured to read `path` (a field of its config, which
    may hold it resolved)."""
    return any(
        isinstance(value, str | Path) and Path(value).resolve() == Path(path).resolve()
        for step in training.steps
        for value in vars(step.config).values()
    )


def refuse_idle_variant(name: str, training: Comparing, plain: Comparing) -> None:
    """Refuse the variant `name` when it trains and evaluates exactly as its method does
    (`plain`: its method's training, into the variant's folder): its sections set nothing that
    method reads (a ric: section on moslim, a soups: section on mod, which mixes the comparison's
    own soups experts)."""

    def settings(t: Comparing):
        return [asdict(step.config) for step in t.steps], dict(t.options or {})

    if settings(training) == settings(plain):
        raise SteerableError(
            f"variants.{name} trains and evaluates exactly as its method: its sections set nothing that "
            "method reads; set the method's own section (or rl: for soups, morlhf and moslim)"
        )


def refuse_training_prompts(path: str, settings: EvalSettings) -> None:
    """Refuse, before anything trains, evaluation prompts of the prompt file at `path` that the
    methods train on (its train split), by digest: evaluating them would be refused only after
    every method had trained."""
    from steerable.data.prompts import load_prompts, prompt_digest, read_prompt_file

    trained = {prompt_digest(p) for p in load_prompts("train", None, path)}
    shared = [p for p in load_prompts(settings.split, settings.limit, path) if prompt_digest(p) in trained]
    if not shared:
        return
    if all("split" not in row for row in read_prompt_file(path)):
        fix = (
            "it has no split column, so every prompt trains and evaluates; add a split column "
            "(train or heldout for each row)"
        )
    else:
        fix = "evaluate on its heldout split (eval: {split: heldout})"
    raise SteerableError(
        f"prompt file {path}: {len(shared)} of the evaluation prompts ({settings.split}) are training "
        f"prompts too, the first {shared[0][:60]!r}; {fix}"
    )


# the sections whose config has a training seed (soups, morlhf and moslim take rl's)
SEEDED = ("ric", "rl", "moslim_rm", "np_rm", "np_dpo", "genarm")


def seeded(config: CompareConfig, seed: int) -> CompareConfig:
    """`config` with every method trained at `seed` (the evaluation's sampling seed unchanged)."""
    from dataclasses import replace

    sections = {name: {**getattr(config, name), "seed": seed} for name in SEEDED}
    over_rl = {
        n: {**getattr(config, n), "seed": seed}
        for n in ("soups", "morlhf", "moslim")
        if "seed" in getattr(config, n)
    }
    variants = {  # a variant's sections that set a seed are set to this one too
        name: {k: {**v, "seed": seed} if isinstance(v, dict) and "seed" in v else v for k, v in body.items()}
        for name, body in config.variants.items()
    }
    return replace(config, seeds=[], variants=variants, **sections, **over_rl)


def seed_folder(out: Path, seed: int) -> Path:
    return Path(out) / f"seed-{seed}"


def run_compare(config: CompareConfig, out: str | Path, command: str | None = None) -> list[EvaluationResult]:
    """Train (cached), evaluate (cached) and report every method of `config`; with `seeds`, the
    whole comparison once per training seed (OUT/seed-S/), then their spread (`write_seeds`).
    `command`: the command line that runs it, recorded in the budget ladder. Returns the (first
    seed's) results."""
    if config.seeds:
        from steerable.evaluation.seeds import write_seeds
        from steerable.io import atomic_write_text
        from steerable.stages import Stages

        Stages(Path(out), "compare")  # refuses another command's directory before anything trains
        for seed in config.seeds:
            plan_compare(seeded(config, seed), seed_folder(out, seed))  # every seed checked first
        runs = {seed: run_one(seeded(config, seed), seed_folder(out, seed), command) for seed in config.seeds}
        from steerable.evaluation.ladder import CLAIMS_BASELINE, base_parameters

        ladder = None
        if config.budgets:
            parameters = base_parameters(config.model, config.trust_remote_code)
            baseline = config.budgets.get("baseline", CLAIMS_BASELINE)
            ladder = {"parameters": parameters, "baseline": baseline, "command": command}
        write_seeds(runs, Path(out), {seed: seed_folder(out, seed) for seed in config.seeds}, ladder)
        atomic_write_text(Path(out) / "compare.json", json.dumps(asdict(config), indent=2) + "\n")
        return runs[config.seeds[0]]
    return run_one(config, out, command)


def run_one(config: CompareConfig, out: str | Path, command: str | None = None) -> list[EvaluationResult]:
    """One comparison: train (cached), evaluate (cached) and report every method of `config`."""
    from steerable.data.prompts import load_prompts, prompt_source
    from steerable.io import atomic_write_text
    from steerable.methods.rl import load_rewards
    from steerable.stages import Stages, file_digest, fingerprint

    out = Path(out)
    stages = Stages(out, "compare")  # refuses another command's directory before anything trains
    plan = plan_compare(config, out)
    prompts = load_prompts(plan.settings.split, plan.settings.limit, config.prompts)
    trained: dict[str, Path] = {}

    def train(name: str) -> Path:
        """`name` trained (cached): its steps, the last writing the model directory evaluated."""
        if name not in trained:
            training = plan.trainings[name]
            if training.evaluates is not None:  # MOD, LoRA output mixing: soups' experts
                trained[name] = train(training.evaluates)
            for step in training.steps:
                trained[name] = resolve(step.train)(step.config)
        return trained[name]

    statistics = None  # read once the methods that make them (RiC) have trained

    def evaluated(
        stage: str, name: str, model: str, own: bool, options: dict, rung: str | None = None, adapter=None
    ):
        """The method `name` (a variant's: its method) evaluated on `model` (`adapter`: that
        adapter of it, a rung's) as the stage `stage` (cached), its result loaded. A ladder's
        `rung` is named in the stage's inputs, its adapter's path is not: the output directory
        can move."""
        nonlocal statistics
        statistics = statistics or fingerprint(load_rewards(plan.stats).to_dict())
        method = plan.method(name)
        inputs = {
            "method": method,
            "model": model_key(Path(model)) if own else model,
            "eval": asdict(plan.settings),
            "statistics": statistics,
        }
        if config.prompts is not None:  # by content; absent without a file, as before the option
            inputs["prompts"] = file_digest(config.prompts)
        if options:  # absent without any, as before methods had evaluate options here
            inputs["options"] = options
        if rung is not None:  # a budget ladder's rung
            inputs["rung"] = rung
        if name != method:
            inputs["variant"] = name
        given = {**options, **({"adapter": adapter} if adapter is not None else {})}

        def work(folder):
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
                **given,
            )
            result.variant = None if name == method else name
            result.save(folder)
            return {"seconds": result.compute["eval_seconds"]}

        stages.run(stage, inputs, work)
        return EvaluationResult.load(stages.path(stage))

    # each method evaluated (and its budget ladder's rungs) as soon as it has trained, so a run
    # stopped part way has measured every method trained before the stop; those on the base
    # model last
    from steerable.evaluation.ladder import climb, run_ladder

    measured, climbed = {}, []
    for name in [*plan.trainings, *(m for m in plan.methods if m not in plan.trainings)]:
        training = plan.trainings.get(name)
        # evaluated on the directory it trained, or on the base model
        own = methods.get(plan.method(name)).own_directory
        model = str(train(name)) if own else config.model
        options = dict(training.options or {}) if training is not None else {}
        measured[name] = evaluated(f"eval_{name}", name, model, own, options)
        wrote = own and (training is None or training.evaluates is None)  # not soups' experts as MOD
        if wrote and Path(model).resolve().is_relative_to(out.resolve()):
            record_front(measured[name], model)  # a model this run trained carries its measured front
        if config.budgets:
            climbed.append(climb(config, plan, name, measured[name], trained, out, evaluated))
    results = [measured[name] for name in plan.methods]
    if config.budgets:
        run_ladder(config, plan, climbed, out, command)
    write_report(results, out)
    atomic_write_text(out / "compare.json", json.dumps(asdict(config), indent=2) + "\n")
    return results


def compare_cost(config: CompareConfig, out: str | Path) -> Plan:
    """What `compare` (and `demo`) generate: what each method's training generates (its `plan`,
    RiC's offline data and MORS rounds), and every method's sweep of the grid on the held-out
    prompts (with `seeds`, all of it once per seed). What a method's training generates without
    a plan (GRPO's sampling) is named, not counted: its step bars show it. A budget ladder's
    rungs are not counted either: each costs a sweep of its own."""
    from steerable.data import load_prompts

    if config.seeds:
        each = compare_cost(seeded(config, config.seeds[0]), seed_folder(out, config.seeds[0]))
        times = len(config.seeds)
        return Plan(
            each.generations * times, each.max_new_tokens, each.model, f"{times} seeds, each: {each.what}",
            each.note, None if each.tokens is None else each.tokens * times, trains=True,
        )  # fmt: skip

    plan = plan_compare(config, Path(out))
    settings = plan.settings
    prompts = len(load_prompts(settings.split, settings.limit, config.prompts))
    trainings = plan.trainings.values()
    given_k = next((t.objectives for t in trainings if t.objectives is not None), None)
    k = given_k or objective_count(plan.stats) or 2
    points = {}
    for name in plan.methods:
        training = plan.trainings.get(name)
        own = training.points if training is not None else None
        points[name] = own(k) if own is not None else grid_points(k, settings.resolution)
    swept = sum(points.values()) * prompts * settings.samples
    samples = f"{settings.samples} sample{'s' * (settings.samples != 1)}"
    swept_points = sum(points.values())
    parts = [f"evaluation: {len(points)} methods, {swept_points} grid points x {prompts} prompts x {samples}"]
    # a mixture's token costs its forwards of the base model (MOD: K), counted as that many tokens
    forwards = {m: methods.get(plan.method(m)).forwards_per_token(k) for m in points}
    titles = {m: methods.get(plan.method(m)).title for m in points}
    titles.update({m: f"{titles[m]} ({m})" for m in plan.variants})  # a variant named beside its method
    several = [f"{titles[m]} {n} forwards a token" for m, n in forwards.items() if n > 1]
    parts += [", ".join(several)] if several else []
    slots = sum(points[m] * forwards[m] for m in points) * prompts * settings.samples
    generations, tokens, longest = swept, slots * settings.max_new_tokens, settings.max_new_tokens
    for name, training in reversed(plan.trainings.items()):
        method = methods.get(plan.method(name))
        if method.plan is not None and training.steps:
            trains = resolve(method.plan)(training.steps[-1].config)
            generations, tokens = generations + trains.generations, tokens + trains.slots
            longest = max(longest, trains.max_new_tokens)
            parts.insert(0, f"{titles.get(name, method.title)} {trains.what}")
    parts += sorted({f"{t.uncounted} not counted" for t in trainings if t.uncounted is not None})
    parts += ["the budget ladder's rungs not counted (each a sweep of its own)"] if config.budgets else []
    note = coarser_lattice(k, settings.resolution, "eval: {{resolution: {}}}")
    return Plan(generations, longest, config.model, "; ".join(parts), note, tokens, trains=True)


def objective_count(stats: str) -> int | None:
    """K of a stats JSON or a model directory's manifest, read without building scorers."""
    path = Path(stats)
    try:
        data = json.loads((path / "steerable.json" if path.is_dir() else path).read_text())
    except (OSError, ValueError):
        return None
    rewards = data.get("rewards", data) if isinstance(data, dict) else None
    objectives = rewards.get("objectives") if isinstance(rewards, dict) else None
    return len(objectives) if isinstance(objectives, list) else None


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

"""`steerable compare` and `steerable demo`: train the chosen methods on one benchmark
configuration, evaluate them on the same held-out prompts, grid, objectives and statistics,
and write one report. Every stage is cached under the output directory:

    OUT/ric/          RiC model directory (its own stages inside)
    OUT/soups/        Rewarded Soups directory        OUT/morlhf/   MORLHF directory
    OUT/eval/METHOD/  result.json of each evaluated method
    OUT/report.md, front.png, summary.csv, points.csv

A re-run skips finished stages. RiC's statistics are the comparison's statistics; without
RiC, `stats:` must name a stats JSON or model directory.

The configuration (YAML, every key optional):

    model: smollm2
    methods: [ric, soups, morlhf, prompting]
    stats: null
    eval: {split: heldout, limit: null, resolution: 10, max_new_tokens: 64, temperature: 0.7,
           seed: 0, samples: 1}   samples: responses per prompt at each grid point
    ric: {...}      RiCConfig fields
    rl: {...}       RLConfig fields shared by soups and morlhf
    morlhf: {weight_vectors: ["1,0", "0.5,0.5", "0,1"]}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from steerable.errors import SteerableError
from steerable.evaluation.report import EvaluationResult, write_report

METHOD_ORDER = ("ric", "soups", "morlhf", "prompting")


@dataclass
class EvalSettings:
    """Evaluation settings shared by every method in a comparison."""

    split: str = "heldout"
    limit: int | None = None
    resolution: int = 10
    max_new_tokens: int = 64
    temperature: float = 0.7
    seed: int = 0
    samples: int = 1


@dataclass
class CompareConfig:
    model: str = "smollm2"
    methods: list[str] = field(default_factory=lambda: list(METHOD_ORDER))
    stats: str | None = None
    eval: dict = field(default_factory=dict)
    ric: dict = field(default_factory=dict)
    rl: dict = field(default_factory=dict)
    morlhf: dict = field(default_factory=dict)

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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SteerableError(f"config: unknown key(s) {unknown}; known: {sorted(known)}")
        config = cls(**data)
        bad = [m for m in config.methods if m not in METHOD_ORDER]
        if bad or not config.methods:
            raise SteerableError(f"unknown method(s) {bad}; choose from {list(METHOD_ORDER)}")
        return config


def _dataclass(cls, values: dict, where: str, **fixed):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise SteerableError(f"config {where}: unknown key(s) {unknown}")
    return cls(**{**values, **fixed})


def run_compare(config: CompareConfig, out: str | Path) -> list[EvaluationResult]:
    """Train (cached), evaluate (cached) and report every method of `config`."""
    import json
    from dataclasses import asdict

    from steerable.data import load_prompts
    from steerable.evaluation.evaluate import evaluate
    from steerable.generation import SamplingConfig
    from steerable.io import atomic_write_text

    out = Path(out)
    record = out / "compare.json"
    if record.is_file() and json.loads(record.read_text()) != asdict(config):
        raise SteerableError(
            f"{out} holds a comparison made with a different configuration (see {record}); "
            "use another --out, or delete the directory to start over"
        )
    atomic_write_text(record, json.dumps(asdict(config), indent=2) + "\n")
    settings = _dataclass(EvalSettings, config.eval, "eval")
    prompts = load_prompts(settings.split, settings.limit)
    sampling = SamplingConfig(settings.max_new_tokens, settings.temperature, 0.95, 64, settings.seed)
    methods = [m for m in METHOD_ORDER if m in config.methods]
    stats = config.stats
    trained: dict[str, Path] = {}
    if "ric" in methods:
        from steerable.methods.ric import RiCConfig, train_ric

        ric = _dataclass(RiCConfig, config.ric, "ric", model=config.model, output_dir=str(out / "ric"))
        trained["ric"] = train_ric(ric)
        stats = stats or str(trained["ric"])
    if stats is None:
        raise SteerableError(
            "without ric in the methods, the config needs stats: (a stats JSON or model dir)"
        )
    if "soups" in methods:
        from steerable.methods.soups import SoupsConfig, train_soups

        soups = _dataclass(
            SoupsConfig, config.rl, "rl", model=config.model, stats=stats, output_dir=str(out / "soups")
        )
        trained["soups"] = train_soups(soups)
    if "morlhf" in methods:
        from steerable.methods.morlhf import MORLHFConfig, train_morlhf

        morlhf = _dataclass(
            MORLHFConfig,
            {**config.rl, **config.morlhf},
            "rl/morlhf",
            model=config.model,
            stats=stats,
            output_dir=str(out / "morlhf"),
        )
        trained["morlhf"] = train_morlhf(morlhf)
    results = []
    for method in methods:
        directory = out / "eval" / method
        if (directory / "result.json").is_file():
            results.append(EvaluationResult.load(directory))
            continue
        model = config.model if method == "prompting" else str(trained[method])
        result = evaluate(
            method, model, prompts, settings.resolution, sampling, stats, samples=settings.samples
        )
        result.save(directory)
        results.append(result)
    write_report(results, out)
    return results


# The one-command demo: RiC end to end on the embedded default against the prompting floor,
# sized for 2 CPU cores (see README for the measured wall time): RiC's default recipe on the
# first 48 train prompts (the recipe's own measurements use 96) and one online round of 64
# samples (the default is two of 128; a second round made the demo 16 min before install and
# did not steer better at this size: benchmarks/RESULTS.md).
DEMO_CONFIG = {
    "model": "smollm2",
    "methods": ["ric", "prompting"],
    "eval": {"split": "heldout", "limit": 22, "resolution": 10, "max_new_tokens": 48},
    "ric": {"prompt_limit": 48, "online_iterations": 1, "online_samples": 64},
}

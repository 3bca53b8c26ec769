"""`steerable train np-rm`: the few-shot NP-BTL reward model, its baselines and their evaluation,
as one recipe in stages (Kobalczyk et al. 2024).

1. tasks        the pair pool and user types: the authors' synthetic task, or pairs of
                responses to the same prompt from a scored JSONL (one type per objective, or
                Dirichlet weight vectors); optionally only conflicting pairs (rebuilt each
                run: deterministic from the data and the seed)
2. embeddings   every option through the frozen encoder (cached by encoder and text)
3. np           NP-BTL, trained on tasks with random contexts, best by validation
4. btl          the plain BTL model on the same tasks' pooled choices (no context)
5. oracle       one BTL model per type, fitted on that type's tasks alone
6. evaluation   held-out accuracy vs context size {0, 1, 3, 5, 10}, per type and overall,
                for all three, on targets not in the context; a latent probe; table and plot

Every stage records its inputs and is reused only when they match.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from steerable.data.loading import read_placed
from steerable.errors import SteerableError
from steerable.evaluation.fewshot import (
    CONTEXT_SIZES,
    context_curve,
    latent_probe,
    model_margins,
    oracle_margins,
    plot_curve,
)
from steerable.fewshot.embeddings import DEFAULT_ENCODER, embed_options, encoder_id
from steerable.fewshot.reward_model import NPRewardConfig, NPRewardModel
from steerable.fewshot.tasks import HELDOUT_PROMPTS, TaskSource, UserTypes, scored_pool, synthetic_source
from steerable.io import atomic_write, atomic_write_text
from steerable.stages import Stages, file_digest, fingerprint

TASKS = ("synthetic", "scored")
TYPE_KINDS = ("objective", "dirichlet")
RESULT_FILE = "accuracy.json"


@dataclass
class TaskConfig:
    """Where few-shot tasks come from; shared by `train np-rm` and `train np-dpo`.

    task: synthetic (the authors' 1-D task; no data needed) or scored (pairs of responses to
        the same prompt in `data`, a `steerable score` output with score_NAME columns).
    data: the scored JSONL (task=scored).
    objectives: the score columns the types care about (default: every score_* column).
    types: objective (one type per objective) or dirichlet (`type_count` weight vectors,
        Dirichlet(`dirichlet_alpha`)).
    conflicting: keep only the pairs the types disagree on.
    encoder: minilm or lm:MODEL (fewshot.embeddings).
    """

    task: str = field(default="synthetic", metadata={"help": "Task builder.", "choices": TASKS})
    data: str | None = field(default=None, metadata={"help": "Scored JSONL (task=scored)."})
    objectives: list[str] = field(
        default_factory=list, metadata={"help": "Objectives (default: all scored)."}
    )
    types: str = field(default="objective", metadata={"help": "User types.", "choices": TYPE_KINDS})
    type_count: int = field(default=4, metadata={"help": "Dirichlet types.", "ge": 1})
    dirichlet_alpha: float = field(default=1.0, metadata={"help": "Dirichlet concentration.", "gt": 0})
    conflicting: bool = field(default=False, metadata={"help": "Keep only pairs the types disagree on."})
    encoder: str = field(default=DEFAULT_ENCODER, metadata={"help": "minilm or lm:MODEL."})

    def __post_init__(self):
        """What depends on the task; the fields' own ranges are checked by the config that holds
        them (`check_config`)."""
        if self.task == "scored":
            if not self.data:
                raise SteerableError("--data is required for task=scored: a `steerable score` JSONL")
            self.data = str(Path(self.data).resolve())  # read (and checked) when the tasks are built
        elif self.data is not None or self.objectives:
            option = "--data" if self.data is not None else "--objectives"
            raise SteerableError(
                f"{option} is read by --task scored only; the synthetic task makes its own pairs"
            )
        twice = sorted({name for name in self.objectives if self.objectives.count(name) > 1})
        if twice:
            raise SteerableError(f"--objectives names {', '.join(twice)} twice; name each objective once")
        encoder_id(self.encoder)  # refuses an unknown encoder before any work


@dataclass
class NPRMConfig(NPRewardConfig, TaskConfig):
    """TaskConfig (where the tasks come from), NPRewardConfig (the model and its training), and:

    eval_tasks: held-out tasks per context size (mean +- standard error over tasks).
    output_dir: where the stages, the three models and the report go.
    """

    eval_tasks: int = field(default=1000, metadata={"help": "Held-out tasks per context size.", "ge": 2})
    output_dir: str = field(default="runs/np-rm", metadata={"help": "Output directory."})

    def __post_init__(self):
        NPRewardConfig.__post_init__(self)  # checks every field (check_config) first
        TaskConfig.__post_init__(self)

    def model_config(self, **changes) -> NPRewardConfig:
        names = {f.name for f in fields(NPRewardConfig)}
        return NPRewardConfig(**{**{k: v for k, v in asdict(self).items() if k in names}, **changes})


def task_inputs(config: TaskConfig) -> dict:
    inputs = {"task": config.task, "seed": config.seed, "conflicting": config.conflicting}
    if config.task == "scored":
        inputs.update(
            data=file_digest(config.data),
            objectives=config.objectives,
            types=[config.types, config.type_count, config.dirichlet_alpha],
            encoder=encoder_id(config.encoder),
        )
    return inputs


def build_source(config: TaskConfig, stages: Stages) -> TaskSource:
    """The task source, its embeddings from the `embeddings` stage (made once)."""
    if config.task == "synthetic":
        return synthetic_source(seed=config.seed)
    if not Path(config.data).is_file():
        raise SteerableError(f"--data {config.data}: no such file")
    rows, places = read_placed(config.data)
    objectives = config.objectives or [c[len("score_") :] for c in rows[0] if c.startswith("score_")]
    if not objectives:
        raise SteerableError(f"{config.data}: no score_* columns; score the data with `steerable score`")
    pool = scored_pool(rows, objectives, where=config.data, seed=config.seed, places=places)
    if config.types == "objective":
        types = UserTypes.one_per_objective(objectives)
    else:
        types = UserTypes.dirichlet(objectives, config.type_count, config.dirichlet_alpha, config.seed)
    inputs = task_inputs(config)

    def embed(folder: Path) -> dict:
        vectors = embed_options(pool.texts, config.encoder, cache=folder / "cache.npz")

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, vectors)

        atomic_write(folder / "embeddings.npy", write)
        return {"options": len(vectors), "dim": int(vectors.shape[1])}

    stages.run("embeddings", inputs, embed)
    embeddings = np.load(stages.path("embeddings") / "embeddings.npy")
    source = TaskSource(pool, types, embeddings, encoder_id(config.encoder), config.conflicting)
    source.split = split_record(config)
    return source


def split_record(config: TaskConfig) -> dict:
    """What decides which pairs of scored data are held out: the data (by content), the seed and
    the share of prompts held out (the synthetic task records its own)."""
    return {
        "task": "scored",
        "data": file_digest(config.data),
        "seed": config.seed,
        "heldout": HELDOUT_PROMPTS,
    }


def fitted(stages: Stages, name: str, inputs: dict, fit) -> NPRewardModel:
    """A model stage: trained by `fit()` and saved once, loaded after."""

    def work(folder: Path) -> dict:
        model = fit()
        model.save(folder / "model")
        return {"validation_accuracy": model.validation_accuracy}

    stages.run(name, inputs, work)
    return NPRewardModel.load(stages.path(name) / "model")


def train_np_rm(config: NPRMConfig) -> Path:
    """Run the recipe (module docstring); returns the output directory."""
    out = Path(config.output_dir)
    stages = Stages(out, "train np-rm")
    source = build_source(config, stages)
    for split in ("train", "validation", "test"):
        if len(source.pool.split_indices(split)) < config.targets:
            raise SteerableError(
                f"the {split} split has {len(source.pool.split_indices(split))} usable pairs, fewer than "
                f"--targets {config.targets}; use more data, fewer targets, or --conflicting false"
            )
    base = {"tasks": task_inputs(config), "pairs": len(source.pool.pairs)}
    model = config.model_config()
    np_model = fitted(
        stages, "np", {**base, "model": asdict(model)}, lambda: NPRewardModel.fit(source, model)
    )
    btl_config = config.model_config(context="none")
    btl = fitted(
        stages, "btl", {**base, "model": asdict(btl_config)}, lambda: NPRewardModel.fit(source, btl_config)
    )
    oracles = []
    for t, name in enumerate(source.types.names):
        only = np.eye(len(source.types.names))[t]
        inputs = {**base, "model": asdict(btl_config), "type": name}
        oracles.append(
            fitted(
                stages, f"oracle-{t}", inputs, lambda only=only: NPRewardModel.fit(source, btl_config, only)
            )
        )
    models = {"NP-BTL": model_margins(np_model), "BTL": model_margins(btl), "oracle": oracle_margins(oracles)}
    sizes = [s for s in CONTEXT_SIZES if s < config.targets]  # a task keeps a target to score
    eval_inputs = {
        **base,
        "models": [fingerprint(asdict(model)), fingerprint(asdict(btl_config))],
        "eval_tasks": config.eval_tasks,
        "sizes": sizes,
        "tasks_per_type": "balanced",
    }

    def evaluate(folder: Path) -> dict:
        points = context_curve(models, source, "test", sizes, config.eval_tasks, config.targets, config.seed)
        probe = latent_probe(np_model, source, "test", sizes, config.eval_tasks, config.targets, config.seed)
        result = {
            "types": source.types.names,
            "pairs": {s: int(len(source.pool.split_indices(s))) for s in ("train", "validation", "test")},
            "curve": [asdict(p) for p in points],
            "latent_probe": probe,
        }
        atomic_write_text(folder / RESULT_FILE, json.dumps(result, indent=2) + "\n")
        plot_curve(points, folder / "accuracy.png", title=f"{config.task} task, held-out targets")
        return {"file": RESULT_FILE}

    stages.run("evaluation", eval_inputs, evaluate)
    return out


def result(out: str | Path, file: str = RESULT_FILE) -> dict:
    """The evaluation stage's record of a finished run (np-rm, or np-dpo with its file)."""
    return json.loads((Path(out) / "stages" / "evaluation" / file).read_text())


def accuracy_table(data: dict):
    """A rich table: accuracy +- s.e. per model and context size, overall and per type."""
    from rich.table import Table

    sizes = sorted({p["context"] for p in data["curve"]})
    table = Table(title="held-out pairwise accuracy (targets not in the context), mean ± s.e. over tasks")
    table.add_column("model")
    table.add_column("type")
    for size in sizes:
        table.add_column(f"{size} ctx", justify="right")
    keys = dict.fromkeys((p["model"], p["type"]) for p in data["curve"])
    for model, kind in keys:
        cells = {p["context"]: p for p in data["curve"] if p["model"] == model and p["type"] == kind}
        table.add_row(model, kind, *(f"{cells[s]['accuracy']:.3f}±{cells[s]['stderr']:.3f}" for s in sizes))
    probe = data.get("latent_probe")
    if probe:
        table.caption = "latent probe (type from z): " + ", ".join(
            f"{k} ctx {v:.2f}" for k, v in probe.items()
        )
    return table

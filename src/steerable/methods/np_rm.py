"""`steerable train np-rm`: the few-shot NP-BTL reward model and its baselines, as one recipe in
stages (Kobalczyk et al. 2024).

1. tasks        the pairs tasks are drawn from: the authors' synthetic task; pairs of responses
                to the same prompt from a scored JSONL (one type per objective, or Dirichlet
                weight vectors; optionally only conflicting pairs); or real users' logs, one
                task per user and their own choices, no utilities or types (rebuilt each run:
                deterministic from the data and the seed)
2. embeddings   every option through the frozen encoder (cached by encoder and text)
3. np           NP-BTL, trained on tasks with random contexts, best by validation
4. btl          the plain BTL model on the same tasks' pooled choices (no context)
5. oracle       one BTL model per type, fitted on that type's tasks alone (not for logs: they
                have no types)

The evaluation (held-out accuracy against context size) is `evaluation.fewshot.evaluate_np_rm`;
`evaluation.fewshot.run_np_rm` runs both, as the command does. Every stage records its inputs
and is reused only when they match.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from steerable.data.loading import read_placed
from steerable.errors import SteerableError
from steerable.fewshot.embeddings import DEFAULT_ENCODER, embed_options, encoder_id
from steerable.fewshot.reward_model import NPRewardConfig, NPRewardModel
from steerable.fewshot.tasks import (
    HELDOUT_PROMPTS,
    HELDOUT_USERS,
    LogSource,
    TaskSource,
    UserTypes,
    choice_log,
    scored_pool,
    synthetic_source,
)
from steerable.io import atomic_write
from steerable.stages import Stages, file_digest

TASKS = ("synthetic", "scored", "logs")
TYPE_KINDS = ("objective", "dirichlet")


@dataclass
class TaskConfig:
    """Where few-shot tasks come from; shared by `train np-rm` and `train np-dpo`.

    task: synthetic (the authors' 1-D task; no data needed), scored (pairs of responses to
        the same prompt in `data`, a `steerable score` output with score_NAME columns), or logs
        (real users' choices in `data`: one row per choice, columns user, prompt, chosen and
        rejected; each user is a task, split by user; no scores, no types).
    data: the scored table (task=scored) or the users' log (task=logs): jsonl, csv, parquet
        or a saved dataset directory.
    objectives: the score columns the types care about (default: every score_* column).
    types: objective (one type per objective) or dirichlet (`type_count` weight vectors,
        Dirichlet(`dirichlet_alpha`)); scored data only.
    conflicting: keep only the pairs the types disagree on (not for logs: users have no types
        to disagree, so every choice is kept).
    encoder: minilm or lm:MODEL (fewshot.embeddings).
    """

    task: str = field(default="synthetic", metadata={"help": "Task builder.", "choices": TASKS})
    data: str | None = field(default=None, metadata={"help": "Scored table (scored) or users' log (logs)."})
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
        if self.task in ("scored", "logs"):
            if not self.data:
                what = (
                    "a `steerable score` JSONL"
                    if self.task == "scored"
                    else "a table of users' choices (user, prompt, chosen, rejected)"
                )
                raise SteerableError(f"--data is required for task={self.task}: {what}")
            self.data = str(Path(self.data).resolve())  # read (and checked) when the tasks are built
            if self.task == "logs":
                if self.objectives:
                    raise SteerableError("--objectives is read by --task scored only; logs have no scores")
                self.conflicting = False  # no types to disagree: every choice is kept
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
    if config.task == "logs":
        inputs.update(data=file_digest(config.data), encoder=encoder_id(config.encoder))
    elif config.task == "scored":
        inputs.update(
            data=file_digest(config.data),
            objectives=config.objectives,
            types=[config.types, config.type_count, config.dirichlet_alpha],
            encoder=encoder_id(config.encoder),
        )
    return inputs


def build_source(config: TaskConfig, stages: Stages) -> TaskSource | LogSource:
    """The task source, its embeddings from the `embeddings` stage (made once)."""
    if config.task == "synthetic":
        return synthetic_source(seed=config.seed)
    if not Path(config.data).exists():
        raise SteerableError(f"--data {config.data}: no such file")
    rows, places = read_placed(config.data)
    if config.task == "logs":
        log = choice_log(rows, where=config.data, seed=config.seed, places=places)
        embeddings = embedded(config, stages, log.texts)
        return LogSource(log, embeddings, encoder_id(config.encoder), split=split_record(config))
    objectives = config.objectives or [c[len("score_") :] for c in rows[0] if c.startswith("score_")]
    if not objectives:
        raise SteerableError(f"{config.data}: no score_* columns; score the data with `steerable score`")
    pool = scored_pool(rows, objectives, where=config.data, seed=config.seed, places=places)
    if config.types == "objective":
        types = UserTypes.one_per_objective(objectives)
    else:
        types = UserTypes.dirichlet(objectives, config.type_count, config.dirichlet_alpha, config.seed)
    source = TaskSource(
        pool, types, embedded(config, stages, pool.texts), encoder_id(config.encoder), config.conflicting
    )
    source.split = split_record(config)
    return source


def embedded(config: TaskConfig, stages: Stages, texts: list[tuple[str, str]]) -> np.ndarray:
    """[M, d]: every option through the encoder, once (the `embeddings` stage)."""

    def embed(folder: Path) -> dict:
        vectors = embed_options(texts, config.encoder, cache=folder / "cache.npz")

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, vectors)

        atomic_write(folder / "embeddings.npy", write)
        return {"options": len(vectors), "dim": int(vectors.shape[1])}

    stages.run("embeddings", task_inputs(config), embed)
    return np.load(stages.path("embeddings") / "embeddings.npy")


def split_record(config: TaskConfig) -> dict:
    """What decides which pairs of scored data (or which users of logs) are held out: the data
    (by content), the seed and the share of prompts (users) held out (the synthetic task records
    its own)."""
    return {
        "task": config.task,
        "data": file_digest(config.data),
        "seed": config.seed,
        "heldout": HELDOUT_USERS if config.task == "logs" else HELDOUT_PROMPTS,
    }


def fitted(stages: Stages, name: str, inputs: dict, fit) -> NPRewardModel:
    """A model stage: trained by `fit()` and saved once, loaded after; its record holds the
    seconds it took (what NP-DPO started from it pays in a budget ladder)."""

    def work(folder: Path) -> dict:
        started = time.perf_counter()
        model = fit()
        model.save(folder / "model")
        return {"validation_accuracy": model.validation_accuracy, "seconds": time.perf_counter() - started}

    stages.run(name, inputs, work)
    return NPRewardModel.load(stages.path(name) / "model")


def train_np_rm(config: NPRMConfig) -> Path:
    """Run the recipe's training stages (module docstring); returns the output directory."""
    out = Path(config.output_dir)
    stages = Stages(out, "train np-rm")
    trained_models(config, stages, build_source(config, stages))
    return out


def trained_models(config: NPRMConfig, stages: Stages, source: TaskSource | LogSource) -> dict:
    """{"np", "btl", "oracles"}: the three models' stages, trained once and loaded after
    ("oracles" is empty for logs, which have no types)."""
    if source.types is not None:
        for split, count in source.pair_counts().items():
            if count < config.targets:
                raise SteerableError(
                    f"the {split} split has {count} usable pairs, fewer than --targets "
                    f"{config.targets}; use more data, fewer targets, or --conflicting false"
                )
    base = base_inputs(config, source)
    model = config.model_config()
    np_model = fitted(
        stages, "np", {**base, "model": asdict(model)}, lambda: NPRewardModel.fit(source, model)
    )
    btl_config = config.model_config(context="none")
    btl = fitted(
        stages, "btl", {**base, "model": asdict(btl_config)}, lambda: NPRewardModel.fit(source, btl_config)
    )
    oracles = []
    for t, name in enumerate(source.types.names if source.types is not None else []):
        only = np.eye(len(source.types.names))[t]
        inputs = {**base, "model": asdict(btl_config), "type": name}
        oracles.append(
            fitted(
                stages, f"oracle-{t}", inputs, lambda only=only: NPRewardModel.fit(source, btl_config, only)
            )
        )
    return {"np": np_model, "btl": btl, "oracles": oracles}


def base_inputs(config: NPRMConfig, source: TaskSource | LogSource) -> dict:
    """What every model stage builds on: the tasks and how many pairs they hold."""
    pairs = len(source.pool.pairs) if source.types is not None else len(source.log.pairs)
    return {"tasks": task_inputs(config), "pairs": pairs}

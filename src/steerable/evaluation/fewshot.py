"""Few-shot reward models judged on held-out tasks (Kobalczyk et al. 2024): pairwise accuracy against
context size, per user type and overall, for NP-BTL, the plain BTL model and the oracle.

Every task is scored only on its targets that are not in its context, by index (the reference
code's leak: a context pair must never count towards the accuracy it helped). Each context size
gets its own fresh tasks, mean +- standard error over tasks.

The oracle infers the type as well as the data allows and no better: the posterior over types
given the context under each type's own BTL model (fitted on that type's choices alone), then
the posterior-weighted probability that a target's first option wins. On the authors' synthetic
task it traces the perfect-inference curve (75, 87.5, 96.9% at 0, 1, 3 context pairs); NP-BTL
above it would mean the context leaks into the score. Users' logs have no types, so no oracle:
there the tasks are held-out users and their own choices.

Here too the few-shot recipes' evaluation stages: `evaluate_np_rm` and `evaluate_np_dpo` (each
after its recipe's training, `run_np_rm` / `run_np_dpo` run both, as `steerable train` does),
their records (`result`, `np_dpo_result`) and tables.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from steerable.errors import SteerableError
from steerable.fewshot.reward_model import NPRewardModel, pack_context, target_accuracy
from steerable.fewshot.tasks import CONTEXT_SIZES, LogSource, TaskBatch, TaskSource
from steerable.io import atomic_write, atomic_write_text
from steerable.stages import Stages, fingerprint

NP_RM_RESULT = "accuracy.json"
NP_DPO_RESULT = "evaluation.json"
Margins = Callable[[torch.Tensor, TaskBatch], np.ndarray]  # (embeddings, batch) -> [B, N_T]


@dataclass
class CurvePoint:
    """One model's accuracy on `tasks` held-out tasks with `context` context pairs, for one user
    type ("all" for every type together)."""

    model: str
    context: int
    type: str
    accuracy: float
    stderr: float
    tasks: int


def model_margins(model: NPRewardModel) -> Margins:
    """r(chosen) - r(rejected) of every target, each task conditioned on its own context."""
    return model.margins


def oracle_margins(per_type: list[NPRewardModel], prior: np.ndarray | None = None) -> Margins:
    """The Bayes oracle over the per-type BTL models (module docstring): P(chosen wins) - 1/2."""
    prior = None if prior is None else np.asarray(prior, dtype=float)

    @torch.no_grad()
    def margins(embeddings: torch.Tensor, batch: TaskBatch) -> np.ndarray:
        chosen, rejected = embeddings[batch.chosen], embeddings[batch.rejected]  # (B, N, d)
        diffs = torch.stack([m.score(chosen, None) - m.score(rejected, None) for m in per_type])  # (T, B, N)
        log_win = torch.nn.functional.logsigmoid(diffs).numpy()
        context = batch.context[None].astype(float)  # (1, B, N)
        log_post = (log_win * context).sum(axis=2)  # (T, B)
        if prior is not None:
            log_post = log_post + np.log(prior)[:, None]
        post = np.exp(log_post - log_post.max(axis=0, keepdims=True))
        post /= post.sum(axis=0, keepdims=True)
        win = np.exp(log_win)  # (T, B, N)
        return (post[..., None] * win).sum(axis=0) - 0.5

    return margins


def context_curve(
    models: dict[str, Margins],
    source: TaskSource | LogSource,
    split: str = "test",
    sizes=CONTEXT_SIZES,
    tasks: int = 1000,
    targets: int = 20,
    seed: int = 0,
) -> list[CurvePoint]:
    """Accuracy of every model at every context size, on the same fresh tasks for all models
    (as many per type, or per user of logs; mean +- standard error over tasks). A size no task
    of `split` can hold with a target left to score (a log whose users all have fewer pairs) is
    left out."""
    embeddings = torch.from_numpy(source.embeddings)
    points = []
    for size in [s for s in sizes if s < source.largest_task(split)]:
        rng = np.random.default_rng([seed, size])
        batch = source.sample(split, tasks, rng, targets, int(size), balanced=True)
        for name, margins in models.items():
            accuracy = target_accuracy(margins(embeddings, batch), batch)  # (B,)
            groups = [("all", np.ones(len(batch), dtype=bool))]
            groups += [(t, batch.types == i) for i, t in enumerate(source.groups)]
            for kind, member in groups:
                mean, stderr = mean_and_stderr(accuracy[member])
                points.append(CurvePoint(name, int(size), kind, mean, stderr, int(member.sum())))
    return points


@torch.no_grad()
def latent_probe(
    model: NPRewardModel,
    source: TaskSource,
    split: str = "test",
    sizes=CONTEXT_SIZES,
    tasks: int = 1000,
    targets: int = 20,
    seed: int = 0,
) -> dict[int, float]:
    """How well z tells the types apart, per context size: nearest-centroid accuracy of the
    task's type from its z, centroids from one half of the tasks, scored on the other half
    (chance: the largest type's share)."""
    embeddings = torch.from_numpy(source.embeddings)
    out = {}
    for size in sizes:
        batch = source.sample(split, tasks, np.random.default_rng([seed, size, 1]), targets, int(size))
        chosen, rejected = embeddings[batch.chosen], embeddings[batch.rejected]
        z, _ = model.latent(*pack_context(chosen, rejected, torch.from_numpy(batch.context)))
        z = z.numpy()
        half = len(batch) // 2
        fit, test = slice(0, half), slice(half, None)
        labels = np.unique(batch.types[fit])
        centroids = np.stack([z[fit][batch.types[fit] == t].mean(axis=0) for t in labels])
        distance = ((z[test][:, None, :] - centroids[None]) ** 2).sum(axis=2)
        out[int(size)] = float((labels[distance.argmin(axis=1)] == batch.types[test]).mean())
    return out


def curve_table(points: list[CurvePoint]) -> list[dict]:
    return [asdict(p) for p in points]


def plot_curve(points: list[CurvePoint], path, title: str = "") -> None:
    """Accuracy (all types) against context size, one line per model, with standard errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in dict.fromkeys(p.model for p in points):
        rows = [p for p in points if p.model == name and p.type == "all"]
        ax.errorbar(
            [p.context for p in rows],
            [p.accuracy for p in rows],
            yerr=[p.stderr for p in rows],
            marker="o",
            capsize=3,
            label=name,
        )
    ax.set_xlabel("context pairs")
    ax.set_ylabel("held-out pairwise accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()) if len(values) else math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


# --- `train np-rm`'s evaluation ---------------------------------------------------------
def run_np_rm(config) -> Path:
    """`steerable train np-rm`: the recipe's training stages, then `evaluate_np_rm`."""
    from steerable.methods.np_rm import train_np_rm

    out = train_np_rm(config)
    evaluate_np_rm(config)
    return out


def evaluate_np_rm(config) -> dict:
    """The evaluation stage of a trained np-rm run (`NPRMConfig`): held-out accuracy against
    context size for NP-BTL, BTL and, with types, the oracle (overall and per type); with types,
    a latent probe; a table (`accuracy_table`) and a plot. Logs are judged on held-out users'
    own choices: no types, so no oracle and no probe (the record says so)."""
    from steerable.methods.np_rm import base_inputs, build_source, trained_models

    out = Path(config.output_dir)
    stages = Stages(out, "train np-rm")
    source = build_source(config, stages)
    trained = trained_models(config, stages, source)
    models = {"NP-BTL": model_margins(trained["np"]), "BTL": model_margins(trained["btl"])}
    if trained["oracles"]:
        models["oracle"] = oracle_margins(trained["oracles"])
    np_config, btl_config = trained["np"].config, trained["btl"].config
    sizes = [s for s in CONTEXT_SIZES if s < config.targets]  # a task keeps a target to score
    inputs = {
        **base_inputs(config, source),
        "models": [fingerprint(asdict(np_config)), fingerprint(asdict(btl_config))],
        "eval_tasks": config.eval_tasks,
        "sizes": sizes,
        "tasks_per_type": "balanced",
    }

    def work(folder: Path) -> dict:
        points = context_curve(models, source, "test", sizes, config.eval_tasks, config.targets, config.seed)
        record = {
            "types": source.groups,
            "pairs": source.pair_counts(),
            "curve": [asdict(p) for p in points],
        }
        if source.types is not None:
            probe = latent_probe(
                trained["np"], source, "test", sizes, config.eval_tasks, config.targets, config.seed
            )
            record["latent_probe"] = probe
        else:
            record["users"] = source.user_counts()
            record["not_measured"] = (
                "users' logs have no user types: no oracle, no latent probe and no per-type accuracy; "
                "accuracy is on held-out users' own choices"
            )
        atomic_write_text(folder / NP_RM_RESULT, json.dumps(record, indent=2) + "\n")
        plot_curve(points, folder / "accuracy.png", title=f"{config.task} task, held-out targets")
        return {"file": NP_RM_RESULT}

    stages.run("evaluation", inputs, work)
    return result(out)


def result(out: str | Path, file: str = NP_RM_RESULT) -> dict:
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
        table.add_row(
            model,
            kind,
            *(f"{cells[s]['accuracy']:.3f}±{cells[s]['stderr']:.3f}" if s in cells else "-" for s in sizes),
        )
    probe = data.get("latent_probe")
    if probe:
        table.caption = "latent probe (type from z): " + ", ".join(
            f"{k} ctx {v:.2f}" for k, v in probe.items()
        )
    if data.get("not_measured"):
        table.caption = f"not measured: {data['not_measured']}"
    return table


# --- `train np-dpo`'s evaluation --------------------------------------------------------
def run_np_dpo(config) -> Path:
    """`steerable train np-dpo`: the recipe's training stages, then `evaluate_np_dpo`."""
    from steerable.methods.np_dpo.recipe import train_np_dpo

    out = train_np_dpo(config)
    evaluate_np_dpo(config)
    return out


def implicit_margins(policy, encoded, reference: np.ndarray, beta: float):
    """The policy's implicit reward margin beta * [(pi_c - ref_c) - (pi_r - ref_r)] of every
    target not in its task's context (others 0: they are not scored), as context_curve reads."""
    from steerable.methods.np_dpo.recipe import option_logps

    pad_id = policy.tokenizer.pad_token_id

    @torch.no_grad()
    def margins(embeddings: torch.Tensor, batch: TaskBatch) -> np.ndarray:
        out = np.zeros(batch.chosen.shape)
        for b in range(len(batch)):
            inside, scored = np.flatnonzero(batch.context[b]), np.flatnonzero(batch.scored()[b])
            z = policy.fewshot.latent_of(
                embeddings[batch.chosen[b, inside]].numpy(), embeddings[batch.rejected[b, inside]].numpy()
            )
            rows = batch.chosen[b, scored].tolist() + batch.rejected[b, scored].tolist()
            logps = option_logps(policy.model, encoded, rows, pad_id, z.expand(len(rows), -1), policy.fewshot)
            implicit = beta * (logps - reference[rows])
            out[b, scored] = implicit[: len(scored)] - implicit[len(scored) :]
        return out

    return margins


def generation_effects(config, policy, base, source: TaskSource) -> dict:
    """Held-out prompts answered under contexts of each type's held-out choices, and by the base
    model; per type, the mean change in each objective's normalised score (mean +- s.e. over
    prompts, each prompt's answers averaged first)."""
    from steerable.data import load_prompts
    from steerable.generation import SamplingConfig, format_chat, generate_texts

    prompts = load_prompts("heldout", config.eval_prompts)
    names = policy.names
    rng = np.random.default_rng([config.seed, 7])
    sampling = SamplingConfig(
        max_new_tokens=config.max_new_tokens, temperature=config.temperature, seed=config.seed
    )
    texts = format_chat(policy.tokenizer, prompts)

    answers_of: dict[str, list[str]] = {}

    def scores(answers: list[str], kind: str) -> np.ndarray:
        answers_of.setdefault(kind, []).extend(answers)
        return policy.rewards.normalise(policy.rewards.score(prompts, answers))  # (n, K)

    runs = {"base": [], "no context": []}
    prior = policy.latent_for([])  # z of an empty context
    for r in range(config.eval_contexts):
        sampling.seed = config.seed + r
        runs["base"].append(scores(generate_texts(base, policy.tokenizer, texts, sampling, False), "base"))
        with policy.fewshot.film.conditioned(prior):
            answers = generate_texts(policy.model, policy.tokenizer, texts, sampling, False)
            runs["no context"].append(scores(answers, "no context"))
    for t, kind in enumerate(source.types.names):
        runs[kind] = []
        for r in range(config.eval_contexts):
            batch = source.sample(
                "test",
                1,
                rng,
                config.targets,
                config.eval_context_size,
                type_probabilities=np.eye(len(source.types.names))[t],
            )
            inside = np.flatnonzero(batch.context[0])
            z = policy.fewshot.latent_of(
                source.embeddings[batch.chosen[0, inside]], source.embeddings[batch.rejected[0, inside]]
            )
            sampling.seed = config.seed + r
            with policy.fewshot.film.conditioned(z):
                answers = generate_texts(policy.model, policy.tokenizer, texts, sampling, progress=False)
            runs[kind].append(scores(answers, kind))
    means = {kind: np.mean(values, axis=0) for kind, values in runs.items()}  # (n, K) per run kind
    effects = []
    # each type against the base model, the policy's own prior (no context) and the other types
    contrasts = [("no context", "base")]
    contrasts += [(kind, vs) for kind in source.types.names for vs in ("base", "no context")]
    contrasts += [
        (kind, other) for kind in source.types.names for other in source.types.names if other != kind
    ]
    for kind, vs in contrasts:
        for k, name in enumerate(names):
            mean, stderr = mean_and_stderr(means[kind][:, k] - means[vs][:, k])
            effects.append({"condition": kind, "objective": name, "vs": vs, "effect": mean, "stderr": stderr})
    levels = {kind: {n: float(means[kind][:, k].mean()) for k, n in enumerate(names)} for kind in means}
    return {
        "prompts": len(prompts),
        "contexts": config.eval_contexts,
        "context_size": config.eval_context_size,
        "mean_scores": levels,
        "effects": effects,
        # a score can be won with degenerate text: how often an answer holds a 25+ character
        # run without a space (not a word), and the first answers of each condition to read
        "run_on_share": {kind: run_on_share(a) for kind, a in answers_of.items()},
        "per_prompt": {kind: m.tolist() for kind, m in means.items()},  # [prompt][objective]
        "samples": {
            kind: [{"prompt": p, "answer": a} for p, a in zip(prompts[:3], answers[:3], strict=False)]
            for kind, answers in answers_of.items()
        },  # fmt: skip
    }


def run_on_share(answers: list[str], length: int = 25) -> float:
    """The share of answers with a run of `length` or more non-space characters (no word is that
    long: it flags token soup that a word-count objective would score as brief)."""
    return float(np.mean([any(len(w) >= length for w in a.split()) for a in answers])) if answers else 0.0


LOGS_NOT_MEASURED = (
    "generations steered by each user type's choices: users' logs have no types and no scores, so "
    "the implicit-reward accuracy on held-out users' own choices is the evaluation"
)


def evaluate_np_dpo(config) -> dict:
    """The evaluation stage of a trained np-dpo run (`NPDPOConfig`): the implicit-reward accuracy
    on held-out tasks against context size (targets not in the context), and, with user types,
    generations on held-out prompts steered by each type's held-out choices against the base
    model. With logs, the accuracy is on held-out users' own choices and the record names what
    was not measured."""
    from steerable.defaults import load_causal_lm, load_tokenizer
    from steerable.fewshot.policy import encode_options
    from steerable.methods.np_dpo.recipe import build_source, eval_sizes, reference_stage, run_inputs
    from steerable.policy import SteerablePolicy

    out = Path(config.output_dir)
    stages = Stages(out, "train np-dpo")
    base_inputs, policy_inputs = run_inputs(config)
    info = stages.done("policy", policy_inputs)
    if info is None:
        raise SteerableError(
            f"{out} holds no trained NP-DPO policy of these settings; run `steerable train np-dpo`"
        )
    source = build_source(config, stages)  # the embeddings stage, made in training
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    encoded = encode_options(tokenizer, source.texts, config.max_completion_length)
    reference = reference_stage(config, stages, base_inputs, encoded, tokenizer.pad_token_id)
    inputs = {
        **policy_inputs,
        "policy": fingerprint(info),
        "eval": [
            config.eval_tasks,
            config.eval_prompts,
            config.eval_contexts,
            config.eval_context_size,
            config.max_new_tokens,
            config.temperature,
        ],
        "sizes": list(CONTEXT_SIZES),
    }

    def work(folder: Path) -> dict:
        policy = SteerablePolicy.from_pretrained(out, trust_remote_code=config.trust_remote_code)
        sizes = eval_sizes(config)
        targets = max(sizes) + 1  # the largest context leaves one target to score
        margins = implicit_margins(policy, encoded, reference, config.beta)
        points = context_curve(
            {"NP-DPO": margins}, source, "test", sizes, config.eval_tasks, targets, config.seed
        )
        record = {"types": source.groups, "curve": [asdict(p) for p in points]}
        if source.types is None:
            record["users"] = source.user_counts()
            record["not_measured"] = LOGS_NOT_MEASURED
        else:
            base, _ = load_causal_lm(config.model, config.dtype, trust_remote_code=config.trust_remote_code)
            record["generations"] = generation_effects(config, policy, base, source)
        atomic_write_text(folder / NP_DPO_RESULT, json.dumps(record, indent=2) + "\n")
        plot_curve(points, folder / "implicit_accuracy.png", title="NP-DPO implicit reward, held-out targets")
        return {"file": NP_DPO_RESULT}

    stages.run("evaluation", inputs, work)
    return np_dpo_result(out)


def np_dpo_result(out: str | Path) -> dict:
    return result(out, NP_DPO_RESULT)


def effects_table(data: dict) -> list:
    """Rich tables: the implicit-reward accuracy curve per type, and the generation effects (not
    for logs: the first table's caption says what was not measured)."""
    from rich.table import Table

    table = accuracy_table(data)
    table.title = "NP-DPO implicit-reward accuracy (held-out targets not in the context), mean ± s.e."
    gen = data.get("generations")
    if gen is None:
        return [table]
    effects = Table(
        title=f"generations: change in normalised score, mean ± s.e. over {gen['prompts']} held-out prompts "
        f"({gen['contexts']} contexts of {gen['context_size']} pairs per type)"
    )
    for column in ("conditioned on", "vs", "objective", "effect"):
        effects.add_column(column, justify="right" if column == "effect" else "left")
    for row in gen["effects"]:
        effects.add_row(
            row["condition"], row["vs"], row["objective"], f"{row['effect']:+.3f}±{row['stderr']:.3f}"
        )
    return [table, effects]

"""Few-shot reward models judged on held-out tasks (Kobalczyk et al. 2024): pairwise accuracy against
context size, per user type and overall, for NP-BTL, the plain BTL model and the oracle.

Every task is scored only on its targets that are not in its context, by index (the reference
code's leak: a context pair must never count towards the accuracy it helped). Each context size
gets its own fresh tasks, mean +- standard error over tasks.

The oracle infers the type as well as the data allows and no better: the posterior over types
given the context under each type's own BTL model (fitted on that type's choices alone), then
the posterior-weighted probability that a target's first option wins. On the authors' synthetic
task it traces the perfect-inference curve (75, 87.5, 96.9% at 0, 1, 3 context pairs); NP-BTL
above it would mean the context leaks into the score.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from steerable.fewshot.reward_model import NPRewardModel, pack_context, target_accuracy
from steerable.fewshot.tasks import TaskBatch, TaskSource
from steerable.io import atomic_write

CONTEXT_SIZES = (0, 1, 3, 5, 10)
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
    source: TaskSource,
    split: str = "test",
    sizes=CONTEXT_SIZES,
    tasks: int = 1000,
    targets: int = 20,
    seed: int = 0,
) -> list[CurvePoint]:
    """Accuracy of every model at every context size, on the same fresh tasks for all models
    (as many per type; mean +- standard error over tasks)."""
    embeddings = torch.from_numpy(source.embeddings)
    points = []
    for size in sizes:
        rng = np.random.default_rng([seed, size])
        batch = source.sample(split, tasks, rng, targets, int(size), balanced=True)
        for name, margins in models.items():
            accuracy = target_accuracy(margins(embeddings, batch), batch)  # (B,)
            groups = [("all", np.ones(len(batch), dtype=bool))]
            groups += [(t, batch.types == i) for i, t in enumerate(source.types.names)]
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


def simulated_examples(pairs: list[dict], rewards, weights, count: int = 5, seed: int = 0) -> list[dict]:
    """`count` choices of a simulated user whose utility is the `weights`-weighted sum of the
    normalised objectives (`rewards`' statistics): pairs drawn at random among those it is not
    indifferent about (the draw seeded by `seed` and the weights, so a grid point always gets
    the same user), the higher-utility answer chosen. `pairs`: {"prompt", "a", "b",
    "scores_a", "scores_b"} with raw scores per objective, as `train np-dpo` keeps them."""
    from steerable.errors import SteerableError

    weights = np.asarray(weights, dtype=float)
    unscored = sorted(
        {n for p in pairs for n in rewards.names if n not in p["scores_a"] or n not in p["scores_b"]}
    )
    if unscored:
        raise SteerableError(
            f"the held-out pairs have no scores of {unscored}, objectives this model is evaluated on; "
            "train it again with `steerable train np-dpo`, whose pairs keep every --stats objective's"
        )
    raw_a = np.array([[p["scores_a"][n] for n in rewards.names] for p in pairs], dtype=float).reshape(
        -1, len(rewards)
    )
    raw_b = np.array([[p["scores_b"][n] for n in rewards.names] for p in pairs], dtype=float).reshape(
        -1, len(rewards)
    )
    gain = (rewards.normalise(raw_a) - rewards.normalise(raw_b)) @ weights  # (P,) how much a beats b
    decided = np.flatnonzero(np.abs(gain) > 1e-9)
    if len(decided) < count:
        raise SteerableError(
            f"only {len(decided)} held-out pairs tell apart a user with weights {weights.tolist()}; "
            f"{count} examples were asked for"
        )
    rng = np.random.default_rng([seed, *np.round(weights * 1e6).astype(np.int64).tolist()])
    examples = []
    for i in rng.choice(decided, size=count, replace=False):
        pair = pairs[i]
        first, second = (pair["a"], pair["b"]) if gain[i] > 0 else (pair["b"], pair["a"])
        examples.append({"prompt": pair["prompt"], "chosen": first, "rejected": second})
    return examples

"""Evaluation results on disk: JSON (the record), CSV (one row per grid point), a PNG of the
fronts, and a Markdown report. One result per method; `compare` overlays several. A method with
a base model (RiC on images) records the base model's point beside its front; a method that
makes images draws each point of the front as a thumbnail of its images.

A result records what it was measured on (a hash of the prompts in order, the sampling settings,
samples per prompt), so results measured differently are refused rather than overlaid: a front
sampled with 32 tokens is not comparable with one sampled with 96.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.evaluation.pareto import beats_base, hypervolume, non_dominated
from steerable.evaluation.steerability import steerability
from steerable.evaluation.sweep import (
    SweepPoint,
    mean_inner_product,
    points_to_rows,
    ranking_notes,
    requested_controllability,
    seconds_per_token,
)
from steerable.io import atomic_write, atomic_write_text

RESULT_FILE = "result.json"
FRONT_FILE = "front.json"  # a model's measured front, beside it (`steerable serve` plots it)
# SamplingConfig fields that change what is sampled; batch size and seed do not change the
# distribution, so results that differ only in them stay comparable.
# An image model's result records guidance and steps instead of the text settings.
COMPARED_SAMPLING = ("max_new_tokens", "temperature", "top_p", "top_k", "guidance", "steps")
# Fields a result may lack and still be compared (added after results recorded their prompts).
OPTIONAL = ("levels", "requested_controllability", "baseline", "inner_product", "variant")
TOLERANCE_STD = 0.5  # what the front may lose on another objective and still beat the base point


def prompts_digest(prompts: Sequence[str]) -> str:
    """sha256 of the prompts in order: the same prompts in another order are other results."""
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()


@dataclass
class EvaluationResult:
    """What one method achieved over a preference grid, and what it was measured on.

    prompts_sha256 / num_prompts: the prompts (`prompts_digest`); prompt_split / prompt_limit:
        where they came from, when known (embedded split, first N).
    sampling: the SamplingConfig as a dict; samples: responses per prompt at each point.
    resolution: the grid's resolution; None when the grid was given (MORLHF's own vectors).
    dtype: the dtype the model ran in.
    levels: the level sweep of a MOSLIM model or its tags floor (None for other methods).
    requested_controllability: Spearman, per objective, of what each point asked for (a target
        or level) against its mean; None for a method that asks nothing but the weights.
    baseline: the base model's point and how the front fares against it (`versus_baseline`);
        None for a method without one.
    compute: train_seconds, trained_tokens, generated_tokens (the training record of the model
        directory evaluated), eval_seconds, and, for a text method, forwards_per_token (forwards
        of the base model a generated token takes) and seconds_per_token (measured over the grid).
    inner_product: the grid's mean of weights . normalised mean rewards (`sweep.mean_inner_product`);
        None where the rewards have no statistics (and in results written before it).
    variant: the name a comparison gave this evaluation of `method` under other settings (its
        `variants:`); None for the method as such. Reports show `label`, the variant or the method.
    """

    method: str
    model: str
    names: list[str]
    rewards: dict  # RewardSet.to_dict(): specs and statistics, checked equal across a comparison
    points: list[SweepPoint]
    controllability: dict[str, float]
    prompts_sha256: str
    num_prompts: int
    sampling: dict
    samples: int
    resolution: int | None
    prompt_split: str | None = None
    prompt_limit: int | None = None
    dtype: str = "float32"
    compute: dict = field(default_factory=dict)  # train/eval seconds and tokens, generation cost
    levels: dict | None = None  # MOSLIM's level sweep (evaluation.levels.level_record)
    requested_controllability: dict[str, float | None] | None = None
    baseline: dict | None = None
    inner_product: float | None = None
    variant: str | None = None

    @property
    def label(self) -> str:
        return self.variant or self.method

    @property
    def means(self) -> np.ndarray:
        return np.array([p.mean for p in self.points])

    def stats_key(self) -> str:
        """A fingerprint of the objectives and their statistics."""
        return hashlib.sha256(json.dumps(self.rewards, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def base(self) -> SweepPoint | None:
        """The base model's point (`baseline`), None without one."""
        return None if self.baseline is None else self.baseline["point"]

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        atomic_write_text(directory / RESULT_FILE, json.dumps(asdict(self), indent=2) + "\n")
        return directory / RESULT_FILE

    @classmethod
    def load(cls, path: str | Path) -> EvaluationResult:
        path = Path(path)
        if path.is_dir():
            path = path / RESULT_FILE
        try:
            data = json.loads(path.read_text())
            missing = [f.name for f in fields(cls) if f.name not in data and f.name not in OPTIONAL]
            if "points" in data and missing:
                raise SteerableError(
                    f"{path} does not record {', '.join(missing)}: it was written before results "
                    "recorded their prompts and sampling, so it cannot be compared; re-run the evaluation"
                )
            data["points"] = [SweepPoint(**p) for p in data["points"]]
            # written before a correlation without a ranking was null: NaN there means the same
            data["controllability"] = {n: finite(v) for n, v in data["controllability"].items()}
            if data.get("baseline") is not None:
                data["baseline"]["point"] = SweepPoint(**data["baseline"]["point"])
            result = cls(**data)
        except FileNotFoundError:
            raise SteerableError(f"{path} does not exist; run `steerable evaluate` first")
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise SteerableError(f"{path} is corrupt ({err!r}); delete it and re-run the evaluation")
        if not result.points or any(len(p.mean) != len(result.names) for p in result.points):
            raise SteerableError(f"{path} is corrupt: points do not match objectives {result.names}")
        return result


def record_front(result: EvaluationResult, model_dir: str | Path) -> Path:
    """The measured front beside the model it measures, so the playground can draw it: each
    grid point's weights, mean raw scores and whether it is non-dominated, with how many
    prompts and samples measured it."""
    on_front = non_dominated(result.means)
    points = [
        {"weights": p.weights, "mean": p.mean, "on_front": bool(front)}
        for p, front in zip(result.points, on_front, strict=True)
    ]
    record = {
        "objectives": result.names,
        "num_prompts": result.num_prompts,
        "samples": result.samples,
        "points": points,
    }
    return atomic_write_text(Path(model_dir) / FRONT_FILE, json.dumps(record, indent=2) + "\n")


def read_front(model_dir: str | Path, rewards) -> dict | None:
    """The measured front recorded beside a model (`record_front`), each point also in the
    normalised units of `rewards` (a RewardSet); None when there is none, or when it was
    measured on other objectives or is unreadable (it is only shown, never steered by)."""
    file = Path(model_dir) / FRONT_FILE
    try:
        record = json.loads(file.read_text())
        raw = np.array([p["mean"] for p in record["points"]], dtype=float)  # (points, K)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("objectives") != rewards.names or raw.ndim != 2 or raw.shape[1] != len(rewards.names):
        return None
    for point, normalised in zip(record["points"], rewards.normalise(raw).tolist(), strict=True):
        point["normalised"] = normalised
    return record


def reference_point(rewards: dict, quantile: float = 0.05) -> list[float]:
    """The documented hypervolume reference: each objective's `quantile` (default 5%) of the raw
    scores in the training statistics. It depends only on the shared statistics, so every
    method in a comparison is measured against the same point."""
    from steerable.objectives import RewardSet

    reward_set = RewardSet.from_dict(rewards)
    return [o.stats.quantile(quantile) for o in reward_set.objectives]


def versus_baseline(base: SweepPoint, points: Sequence[SweepPoint], rewards: dict) -> dict:
    """The base model's point as a result records it: the point (no weights), the hypervolume
    of it alone and of the front, against the same reference point, and, per objective, the
    grid point that beats it there losing least on the others (`pareto.beats_base`, in units
    of the training std): `beats` where one is above it and loses at most TOLERANCE_STD."""
    from steerable.objectives import RewardSet

    reference = reference_point(rewards)
    means = np.array([p.mean for p in points])
    objectives = RewardSet.from_dict(rewards).objectives
    scale = [o.stats.std if o.stats.std > 0 else 1.0 for o in objectives]
    margins = beats_base(means, base.mean, scale)
    return {
        "point": base,
        "hypervolume": hypervolume([base.mean], reference),
        "front_hypervolume": hypervolume(means, reference),
        "reference": reference,
        "tolerance_std": TOLERANCE_STD,
        "beats_baseline": {
            name: {
                "beats": m["index"] is not None and m["loss"] <= TOLERANCE_STD,
                "weights": None if m["index"] is None else points[m["index"]].weights,
                "gain_std": m["gain"],
                "loss_std": m["loss"],
            }
            for name, m in zip([o.name for o in objectives], margins, strict=True)
        },
    }


def describe_prompts(result: EvaluationResult) -> str:
    """``48 prompts (heldout, first 48), sha256 3f2a...``: for reports and refusals."""
    source = [result.prompt_split] if result.prompt_split is not None else []
    if result.prompt_limit is not None:
        source.append(f"first {result.prompt_limit}")
    where = f" ({', '.join(source)})" if source else ""
    return f"{result.num_prompts} prompts{where}, sha256 {result.prompts_sha256[:12]}"


def check_comparable(results: list[EvaluationResult]) -> None:
    """Refuse to compare results on other objectives, statistics, prompts or sampling: their
    fronts would differ for reasons that are not the methods."""
    first = results[0]
    for other in results[1:]:
        if other.names != first.names:
            raise SteerableError(
                f"cannot compare {first.label} (objectives {first.names}) with "
                f"{other.label} (objectives {other.names})"
            )
        if other.stats_key() != first.stats_key():
            raise SteerableError(
                f"cannot compare {first.label} and {other.label}: their objective specs or "
                "normalisation statistics differ; evaluate every method with the same statistics"
            )
        if other.prompts_sha256 != first.prompts_sha256:
            raise SteerableError(
                f"cannot compare {first.label} and {other.label}: they were evaluated on other prompts "
                f"({describe_prompts(first)} vs {describe_prompts(other)}); evaluate every method on the "
                "same prompts"
            )
        settings = [(name, first.sampling.get(name), other.sampling.get(name)) for name in COMPARED_SAMPLING]
        for name, mine, theirs in [*settings, ("samples per prompt", first.samples, other.samples)]:
            if mine != theirs:
                raise SteerableError(
                    f"cannot compare {first.label} and {other.label}: {name} differs ({mine} vs "
                    f"{theirs}); evaluate every method with the same sampling settings"
                )


def _pairs(a: dict, b: dict):
    return ((name, (a[name], b[name])) for name in a)


def finite(value: float | None) -> float | None:
    """A correlation, or None where it has no value (NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


def undefined_notes(result: EvaluationResult) -> dict[str, str]:
    """Why each of `result`'s correlations without a value has none: {column: why}, columns
    named as in `summary` (controllability_NAME, requested_NAME)."""
    notes = {f"controllability_{n}": why for n, why in ranking_notes(result.points, result.names).items()}
    requested = ranking_notes(result.points, result.names, requested=True)
    return notes | {f"requested_{n}": why for n, why in requested.items()}


def notes_lines(rows: list[dict]) -> list[str]:
    """The `notes` of `summary` rows as lines under a table: "ric, controllability of brief:
    constant: ...". Empty when every correlation has a value."""
    named = {"controllability": "controllability of {}", "requested": "{} vs requested"}
    lines = []
    for row in rows:
        for column, why in row["notes"].items():
            kind, _, name = column.partition("_")
            lines.append(f"{row['method']}, {named[kind].format(name)}: {why}")
    return lines


def summary(results: list[EvaluationResult]) -> list[dict]:
    """One row per method: hypervolume against the shared reference, front size,
    controllability, the mean inner product of weights and normalised rewards, gain,
    orthogonality and miscalibration (`steerability`), compute
    (training; generation per token: forwards of the base model, measured seconds, and those
    relative to the base model's row, prompting, where the results hold one), and `notes`: why a
    correlation has no value (an objective every answer scored the same, say)."""
    check_comparable(results)
    ref = reference_point(results[0].rewards)
    base_cost = next((seconds_per_token(r.points) for r in results if on_base_model(r.method)), None)
    rows = []
    for r in results:
        hv = hypervolume(r.means, ref)
        hours = r.compute.get("train_seconds", 0.0) / 3600
        requested = requested_controllability(r.points, r.names) or {}
        cost = seconds_per_token(r.points)  # as evaluate records it; results before it have the points
        rows.append(
            {
                "method": r.label,
                "points": len(r.points),
                "front": int(non_dominated(r.means).sum()),
                "hypervolume": hv,
                **{f"controllability_{n}": finite(v) for n, v in r.controllability.items()},
                **{f"requested_{n}": finite(requested.get(n)) for n in r.names},
                "inner_product": mean_inner_product(r.points),
                **steerability(r.points, targets=asks_targets(r.method)),
                "train_seconds": r.compute.get("train_seconds", 0.0),
                "trained_tokens": r.compute.get("trained_tokens", 0),
                "train_generated_tokens": r.compute.get("generated_tokens", 0),
                "eval_seconds": sum(p.seconds for p in r.points),
                "forwards_per_token": r.compute.get("forwards_per_token"),
                "seconds_per_token": cost,
                "relative_seconds_per_token": cost / base_cost if cost is not None and base_cost else None,
                "hypervolume_per_train_hour": hv / hours if hours > 0 else None,
                "base_hypervolume": None if r.baseline is None else r.baseline["hypervolume"],
                "notes": undefined_notes(r),
            }
        )
    return rows


def asks_targets(method: str) -> bool:
    """Whether a result's method records, at each point, the targets it asked for in units of
    the training std (RiC), against which its miscalibration is measured."""
    from steerable import methods

    entry = methods.METHODS.get(method)
    return entry is not None and "targets" in entry.steering


def on_base_model(method: str) -> bool:
    """Whether a result's method answers with the untrained base model (the prompting floor),
    the row a comparison's generation cost is measured against."""
    from steerable import methods

    entry = methods.METHODS.get(method)
    return entry is not None and not entry.own_directory


def per_token(row: dict) -> list[str]:
    """A summary row's generation cost as the tables show it: forwards of the base model per
    token, measured ms per token, and that relative to the base model's row ('-': unknown)."""
    forwards, cost, relative = (row[k] for k in ("forwards_per_token", "seconds_per_token",
                                                 "relative_seconds_per_token"))  # fmt: skip
    return [
        "-" if forwards is None else str(forwards),
        "-" if cost is None else f"{1000 * cost:.3g}",
        "-" if relative is None else f"{relative:.2f}x",
    ]


def signed(value: float | None, undefined: bool = False) -> str:
    """A correlation as +0.123; where there is none, 'n/a' when it is `undefined` (measured,
    without a ranking: `undefined_notes` says why), else '-' (not measured)."""
    value = None if value is None else finite(value)
    return ("n/a" if undefined else "-") if value is None else f"{value:+.3f}"


def plot_fronts(results: list[EvaluationResult], path: str | Path) -> None:
    """`front_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = front_figure(results)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def front_figure(results: list[EvaluationResult]):
    """Achieved means of every method with their standard errors, and the HV reference. K = 2:
    one plane, each method's sweep joined in weight order with the weights written beside its
    points, its non-dominated points ringed. K >= 3: one panel per pair of objectives, points only:
    the projection of a K-dimensional front is not a front (a point on it can be dominated in the
    plane), so a line joining it would mislead. A base model's point is a star. The points of
    an image method show thumbnails of their images, joined to them by lines (`draw_thumbnails`):
    for K = 2 in a row above the plot, in weight order; for K >= 3 beside each point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_comparable(results)
    names = results[0].names
    ref = reference_point(results[0].rewards)
    pairs = list(itertools.combinations(range(len(names)), 2))
    cols = min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    pictured = any(p.thumbnail is not None for r in results for p in [*r.points, *filter(None, [r.base])])
    size = (6, 4.5) if len(pairs) == 1 else (4 * cols, 3.6 * rows)
    size = (size[0] * 1.5, size[1] * 1.5) if pictured else size
    fig, axes = plt.subplots(rows, cols, figsize=size, dpi=120, squeeze=False)
    for ax, (i, j) in zip(axes.flat[: len(pairs)], pairs, strict=True):
        for r in results:
            means = r.means
            err = np.array([p.stderr for p in r.points])
            drawn = ax.errorbar(
                means[:, i],
                means[:, j],
                xerr=err[:, i],
                yerr=err[:, j],
                fmt="o",
                ms=4,
                alpha=0.8,
                label=r.label,
                capsize=2,
            )
            if len(names) == 2:
                color = drawn.lines[0].get_color()
                order = np.argsort([p.weights[0] for p in r.points], kind="stable")  # the sweep, in order
                ax.plot(means[order, 0], means[order, 1], "-", alpha=0.5, color=color)
                for k in order:
                    ax.annotate(f"{r.points[k].weights[0]:.1f}", means[k, :2], xytext=(3, 3),
                                textcoords="offset points", fontsize=6, color=color)  # fmt: skip
                front = means[non_dominated(means)]
                ax.scatter(
                    front[:, 0], front[:, 1], s=90, facecolors="none", edgecolors=color, linewidths=1.2
                )
            if r.base is not None:
                ax.errorbar(*np.array(r.base.mean)[[i, j]], xerr=r.base.stderr[i], yerr=r.base.stderr[j],
                            fmt="*", ms=12, color=drawn.lines[0].get_color(), mec="k", capsize=2,
                            label=f"{r.label}: base model")  # fmt: skip
            if pictured:
                draw_thumbnails(ax, r, i, j, results.index(r) if len(pairs) == 1 else None)
        ax.plot(ref[i], ref[j], "kx", label="HV reference")
        ax.set_xlabel(f"{names[i]} (mean raw score)")
        ax.set_ylabel(f"{names[j]} (mean raw score)")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(pairs) :]:
        ax.remove()
    axes.flat[0].legend(fontsize=8)
    if len(names) == 2:
        title = (
            f"each sweep joined in weight order, labelled with the weight on {names[0]}; "
            "rings: non-dominated points"
        )
        if pictured:  # the thumbnails' row is above the plot: the title goes above them
            fig.suptitle(title + "; above: a few images of each point, by their weights", fontsize=7)
        else:
            axes.flat[0].set_title(title, fontsize=7)
    fig.tight_layout()
    return fig


def draw_thumbnails(ax, result: EvaluationResult, i: int, j: int, row: int | None = None) -> None:
    """Each point's thumbnail (`evaluation.images`), joined by a line to the point it came from on
    the plane of objectives i, j; the base model's framed in red. With `row` (one plane, K = 2):
    in a row above the plot, in weight order, each labelled with its weights, so that points
    close together keep their thumbnails apart (`row` counts up for the results overlaid).
    Without: beside each point, alternately up-right and down-left."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    from steerable.evaluation.images import thumbnail_pixels

    placed = [(p, "0.5") for p in sorted(result.points, key=lambda p: p.weights) if p.thumbnail is not None]
    if result.base is not None and result.base.thumbnail is not None:
        placed.append((result.base, "red"))
    side = 40 if row is None else min(64, 0.7 * ax.figure.bbox.width / max(len(placed), 1))
    for n, (point, edge) in enumerate(placed):
        pixels = thumbnail_pixels(point.thumbnail)
        image = OffsetImage(pixels, zoom=side / max(pixels.shape[:2]), cmap="gray", interpolation="nearest")
        image.get_children()[0].set_clim(0, 255)  # grayscale as stored, not stretched
        if row is None:
            offset = (34, -34) if edge == "red" else (34, 34) if n % 2 else (-34, -34)
            where = {"xybox": offset, "boxcoords": "offset points"}
        else:
            where = {"xybox": ((n + 0.5) / len(placed), 1.04 + 0.28 * row), "boxcoords": "axes fraction",
                     "box_alignment": (0.5, 0)}  # fmt: skip
            label = "base" if not point.weights else "/".join(f"{w:g}" for w in point.weights)
            ax.annotate(label, where["xybox"], xycoords="axes fraction", ha="center", va="top", fontsize=6,
                        xytext=(0, -1), textcoords="offset points", color=edge)  # fmt: skip
        box = AnnotationBbox(image, (point.mean[i], point.mean[j]), pad=0.1, bboxprops={"edgecolor": edge},
                             arrowprops={"arrowstyle": "-", "color": "0.75", "lw": 0.5}, **where)  # fmt: skip
        ax.add_artist(box)
    if row is None:
        ax.margins(0.2)  # room for the thumbnails of the outermost points


def markdown(results: list[EvaluationResult]) -> str:
    rows = summary(results)
    first = results[0]
    names = first.names
    ref = reference_point(first.rewards)
    lines = [
        "# Evaluation report",
        "",
        f"Objectives: {', '.join(names)}. Hypervolume reference point (5% quantile of the raw "
        f"training scores): {', '.join(f'{n}={v:.4g}' for n, v in zip(names, ref, strict=True))}.",
        "",
        f"Measured on {describe_prompts(first)}, {first.samples} sample(s) per prompt, sampling "
        + ", ".join(f"{name} {first.sampling[name]}" for name in COMPARED_SAMPLING if name in first.sampling)
        + ".",
        "",
        "Controllability: Spearman, per objective, of the weight (and, for a model steered by tags, "
        "of the target or level the tag asked for) against the achieved mean score over the grid. "
        "w . z: the mean over the grid of each point's weights . its mean normalised scores (in "
        "training standard deviations). Moves, each point's mean normalised scores relative to the "
        "method's mean over the grid, against what the point asked relative to the grid's centre: "
        "gain, training stds moved along the asked direction per unit of weight; orthogonality, "
        "the mean share of a move that went sideways of the asked direction (0: none; 1: all); "
        "miscalibration, for a method asked for targets, how much further (+) or less far (-) the "
        "answers moved than the targets did ('-': asked by weights alone, no size of move to "
        "miss). Per token: forwards of the base model a generated token "
        "takes, measured milliseconds per generated token over the grid, and those relative to the "
        "base model's (prompting) row.",
        "",
        "| method | points | on front | hypervolume | "
        + " | ".join(f"controllability {n}" for n in names)
        + " | "
        + " | ".join(f"vs requested {n}" for n in names)
        + " | w . z | gain | orthogonality | miscalibration | train s | trained tokens | eval s | "
        "forwards / token | ms / token | vs base |",
        "|---|---|---|---|" + "---|" * (2 * len(names)) + "---|" * 10,
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['points']} | {row['front']} | {row['hypervolume']:.4g} | "
            + " | ".join(
                signed(row[f"controllability_{n}"], f"controllability_{n}" in row["notes"]) for n in names
            )
            + " | "
            + " | ".join(signed(row[f"requested_{n}"], f"requested_{n}" in row["notes"]) for n in names)
            + f" | {signed(row['inner_product'])} | {signed(row['gain'])}"
            + f" | {'-' if row['orthogonality'] is None else format(row['orthogonality'], '.3f')}"
            + f" | {signed(row['miscalibration'])}"
            + f" | {row['train_seconds']:.0f} | {row['trained_tokens']} | {row['eval_seconds']:.0f} | "
            + " | ".join(per_token(row))
            + " |"
        )
    undefined = notes_lines(rows)
    if undefined:
        lines += ["", "No value (n/a) where the scores give no ranking:", ""]
        lines += [f"- {line}" for line in undefined]
    based = [r for r in results if r.baseline is not None]
    if based:
        lines += ["", "## The base model's point", ""]
        for r in based:
            lines += [*baseline_markdown(r), ""]
    levelled = [r for r in results if r.levels is not None]
    if levelled:
        from steerable.evaluation.levels import level_markdown

        lines += ["", "## Controllability by requested level", ""]
        for r in levelled:
            lines += [*level_markdown(r.label, r.levels), ""]
    for r in results:
        lines += ["", f"## {r.label} ({r.model}, {r.dtype})", ""]
        pictured = any(p.images is not None for p in r.points)
        lines.append(
            "| "
            + " | ".join(f"w_{n}" for n in names)
            + " | "
            + " | ".join(f"{n} mean ± se" for n in names)
            + (" | images |" if pictured else " |")
        )
        lines.append("|" + "---|" * (2 * len(names) + pictured))
        base = [] if r.base is None else [r.base]
        for point in [*r.points, *base]:
            weights = [f"{w:.2f}" for w in point.weights] or ["base model", *[""] * (len(names) - 1)]
            scores = [f"{m:.4g} ± {e:.2g}" for m, e in zip(point.mean, point.stderr, strict=True)]
            images = [point.images or ""] if pictured else []
            lines.append("| " + " | ".join([*weights, *scores, *images]) + " |")
    return "\n".join(lines) + "\n"


def baseline_markdown(result: EvaluationResult) -> list[str]:
    """The lines saying how `result`'s front fares against its base model's point."""
    record, base = result.baseline, result.base
    scores = ", ".join(
        f"{n} {m:.4g} ± {e:.2g}" for n, m, e in zip(result.names, base.mean, base.stderr, strict=True)
    )
    lines = [
        f"{result.label}: the base model scores {scores} ({base.n} answers). Hypervolume against the "
        f"same reference: base point {record['hypervolume']:.4g}, front {record['front_hypervolume']:.4g}.",
        "",
    ]
    tolerance = record["tolerance_std"]
    for name, beat in record["beats_baseline"].items():
        if beat["weights"] is None:
            best = f"{beat['gain_std']:+.2f}"
            lines.append(f"- {name}: no grid point is above the base point (best {best} std)")
            continue
        verdict = "beats it" if beat["beats"] else f"loses more than {tolerance:g} std"
        weights = ", ".join(f"{w:.2f}" for w in beat["weights"])
        lines.append(
            f"- {name}: weights ({weights}) are {beat['gain_std']:+.2f} std above the base point, "
            f"losing {beat['loss_std']:.2f} std on the others: {verdict}"
        )
    return lines


def write_report(results: list[EvaluationResult], directory: str | Path) -> Path:
    """report.md, front.png, summary.csv and points.csv in `directory`."""
    import pandas as pd

    directory = Path(directory)
    check_comparable(results)
    atomic_write_text(directory / "report.md", markdown(results))
    plot_fronts(results, directory / "front.png")
    rows = [
        {**row, "notes": "; ".join(f"{k}: {v}" for k, v in row["notes"].items())} for row in summary(results)
    ]
    atomic_write(directory / "summary.csv", lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    points = [{"method": r.label, **row} for r in results for row in points_to_rows(r.points, r.names)]
    atomic_write(directory / "points.csv", lambda tmp: pd.DataFrame(points).to_csv(tmp, index=False))
    return directory / "report.md"

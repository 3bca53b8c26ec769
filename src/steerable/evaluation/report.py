"""Evaluation results on disk: JSON (the record), CSV (one row per grid point), a PNG of the
fronts, and a Markdown report. One result per method; `compare` overlays several."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.evaluation.pareto import hypervolume, non_dominated
from steerable.evaluation.sweep import SweepPoint, points_to_rows
from steerable.io import atomic_write, atomic_write_text

RESULT_FILE = "result.json"


@dataclass
class EvaluationResult:
    """What one method achieved over a preference grid."""

    method: str
    model: str
    names: list[str]
    rewards: dict  # RewardSet.to_dict(): specs and statistics, checked equal across a comparison
    points: list[SweepPoint]
    controllability: dict[str, float]
    compute: dict = field(default_factory=dict)  # train/eval seconds and tokens

    @property
    def means(self) -> np.ndarray:
        return np.array([p.mean for p in self.points])

    def stats_key(self) -> str:
        """A fingerprint of the objectives and their statistics."""
        return hashlib.sha256(json.dumps(self.rewards, sort_keys=True).encode()).hexdigest()[:16]

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
            data["points"] = [SweepPoint(**p) for p in data["points"]]
            result = cls(**data)
        except FileNotFoundError:
            raise SteerableError(f"{path} does not exist; run `steerable evaluate` first")
        except (json.JSONDecodeError, TypeError, KeyError) as err:
            raise SteerableError(f"{path} is corrupt ({err!r}); delete it and re-run the evaluation")
        if not result.points or any(len(p.mean) != len(result.names) for p in result.points):
            raise SteerableError(f"{path} is corrupt: points do not match objectives {result.names}")
        return result


def reference_point(rewards: dict, quantile: float = 0.05) -> list[float]:
    """The documented hypervolume reference: each objective's `quantile` (default 5%) of the raw
    scores in the training statistics. It depends only on the shared statistics, so every
    method in a comparison is measured against the same point."""
    from steerable.objectives import RewardSet

    reward_set = RewardSet.from_dict(rewards)
    return [o.stats.quantile(quantile) for o in reward_set.objectives]


def check_comparable(results: list[EvaluationResult]) -> None:
    first = results[0]
    for other in results[1:]:
        if other.names != first.names:
            raise SteerableError(
                f"cannot compare {first.method} (objectives {first.names}) with "
                f"{other.method} (objectives {other.names})"
            )
        if other.stats_key() != first.stats_key():
            raise SteerableError(
                f"cannot compare {first.method} and {other.method}: their objective specs or "
                "normalisation statistics differ; evaluate every method with the same statistics"
            )


def summary(results: list[EvaluationResult]) -> list[dict]:
    """One row per method: hypervolume against the shared reference, front size, compute."""
    check_comparable(results)
    ref = reference_point(results[0].rewards)
    rows = []
    for r in results:
        hv = hypervolume(r.means, ref)
        hours = r.compute.get("train_seconds", 0.0) / 3600
        rows.append(
            {
                "method": r.method,
                "points": len(r.points),
                "front": int(non_dominated(r.means).sum()),
                "hypervolume": hv,
                **{f"controllability_{n}": v for n, v in r.controllability.items()},
                "train_seconds": r.compute.get("train_seconds", 0.0),
                "trained_tokens": r.compute.get("trained_tokens", 0),
                "train_generated_tokens": r.compute.get("generated_tokens", 0),
                "eval_seconds": sum(p.seconds for p in r.points),
                "hypervolume_per_train_hour": hv / hours if hours > 0 else None,
            }
        )
    return rows


def plot_fronts(results: list[EvaluationResult], path: str | Path) -> None:
    """Achieved means of every method (first two objectives), fronts joined, ref marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_comparable(results)
    names = results[0].names
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for r in results:
        means = r.means
        err = np.array([p.stderr for p in r.points])
        ax.errorbar(
            means[:, 0],
            means[:, 1],
            xerr=err[:, 0],
            yerr=err[:, 1],
            fmt="o",
            ms=4,
            alpha=0.8,
            label=r.method,
            capsize=2,
        )
        front = means[non_dominated(means)]
        front = front[np.argsort(front[:, 0])]
        ax.plot(front[:, 0], front[:, 1], "-", alpha=0.6, color=ax.lines[-1].get_color())
    ref = reference_point(results[0].rewards)
    ax.plot(*ref[:2], "kx", label="HV reference")
    ax.set_xlabel(f"{names[0]} (mean raw score)")
    ax.set_ylabel(f"{names[1]} (mean raw score)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def markdown(results: list[EvaluationResult]) -> str:
    rows = summary(results)
    names = results[0].names
    ref = reference_point(results[0].rewards)
    lines = [
        "# Evaluation report",
        "",
        f"Objectives: {', '.join(names)}. Hypervolume reference point (5% quantile of the raw "
        f"training scores): {', '.join(f'{n}={v:.4g}' for n, v in zip(names, ref, strict=True))}.",
        "",
        "| method | points | on front | hypervolume | "
        + " | ".join(f"controllability {n}" for n in names)
        + " | train s | trained tokens | eval s |",
        "|---|---|---|---|" + "---|" * len(names) + "---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['points']} | {row['front']} | {row['hypervolume']:.4g} | "
            + " | ".join(f"{row[f'controllability_{n}']:+.3f}" for n in names)
            + f" | {row['train_seconds']:.0f} | {row['trained_tokens']} | {row['eval_seconds']:.0f} |"
        )
    for r in results:
        lines += ["", f"## {r.method} ({r.model})", ""]
        table = points_to_rows(r.points, names)
        lines.append(
            "| "
            + " | ".join(f"w_{n}" for n in names)
            + " | "
            + " | ".join(f"{n} mean ± se" for n in names)
            + " |"
        )
        lines.append("|" + "---|" * (2 * len(names)))
        for row in table:
            lines.append(
                "| "
                + " | ".join(f"{row[f'w_{n}']:.2f}" for n in names)
                + " | "
                + " | ".join(f"{row[f'mean_{n}']:.4g} ± {row[f'stderr_{n}']:.2g}" for n in names)
                + " |"
            )
    return "\n".join(lines) + "\n"


def write_report(results: list[EvaluationResult], directory: str | Path) -> Path:
    """report.md, front.png, summary.csv and points.csv in `directory`."""
    import pandas as pd

    directory = Path(directory)
    check_comparable(results)
    atomic_write_text(directory / "report.md", markdown(results))
    plot_fronts(results, directory / "front.png")
    atomic_write(
        directory / "summary.csv", lambda tmp: pd.DataFrame(summary(results)).to_csv(tmp, index=False)
    )
    points = [{"method": r.method, **row} for r in results for row in points_to_rows(r.points, r.names)]
    atomic_write(directory / "points.csv", lambda tmp: pd.DataFrame(points).to_csv(tmp, index=False))
    return directory / "report.md"

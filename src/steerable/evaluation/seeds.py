"""A comparison over several training seeds (`compare`'s `seeds:`): each seed's comparison in
OUT/seed-S/, and here the spread of their numbers. A method's front depends on its training
seed (which pairs it drew, its LoRA's start); the evaluation's sampling seed stays fixed, so the
spread is the training's, not the sampling's.

    OUT/seeds.csv, seeds.md   every summary number (hypervolume, controllability, w . z, gain,
                              orthogonality, miscalibration, training seconds) per method: its
                              mean, standard error over the seeds, and each seed's value
    OUT/ladder.csv, .md, .png with budgets: each rung's mean over the seeds (compute and
                              hypervolume) with the hypervolume's standard error, and the
                              compute claims on the mean curves
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from steerable.evaluation.report import EvaluationResult, reference_point, summary

NUMBERS = ("hypervolume", "inner_product", "gain", "orthogonality", "miscalibration", "train_seconds")


def mean_stderr(values) -> tuple[float | None, float | None]:
    """`fewshot.mean_and_stderr` of the values that are not None or NaN, with None (a blank in the
    CSV) where it has no value: (None, None) without any value, stderr None with one."""
    from steerable.evaluation.fewshot import mean_and_stderr

    found = [v for v in values if v is not None and np.isfinite(v)]
    if not found:
        return None, None
    mean, stderr = mean_and_stderr(np.array(found, dtype=float))
    return mean, stderr if np.isfinite(stderr) else None


def seed_rows(runs: Mapping[int, list[EvaluationResult]]) -> list[dict]:
    """One row per (method, number): its mean, standard error and value at every seed."""
    tables = {seed: {row["method"]: row for row in summary(results)} for seed, results in runs.items()}
    first = next(iter(runs.values()))
    columns = [*NUMBERS[:1], *[f"controllability_{n}" for n in first[0].names], *NUMBERS[1:]]
    rows = []
    for method in [r.label for r in first]:
        for column in columns:
            values = {seed: table[method].get(column) for seed, table in tables.items() if method in table}
            mean, stderr = mean_stderr(values.values())
            rows.append(
                {"method": method, "number": column, "mean": mean, "stderr": stderr}
                | {f"seed_{seed}": value for seed, value in values.items()}
            )
    return rows


def seeds_markdown(rows: list[dict], seeds: list[int], reference) -> str:
    def shown(value, stderr=None):
        if value is None:
            return "-"
        return f"{value:.4g}" + ("" if stderr is None else f" ± {stderr:.2g}")

    lines = [
        "# The comparison over training seeds",
        "",
        f"Seeds {', '.join(map(str, seeds))} (each comparison in seed-S/); mean ± standard error over "
        "them, then each seed's value. Hypervolume reference point: "
        f"{', '.join(f'{v:.4g}' for v in reference)}.",
        "",
        "| method | number | mean ± se | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---|---|" + "---|" * len(seeds),
    ]
    for row in rows:
        values = " | ".join(shown(row.get(f"seed_{s}")) for s in seeds)
        spread = shown(row["mean"], row["stderr"])
        lines.append(f"| {row['method']} | {row['number']} | {spread} | {values} |")
    return "\n".join(lines) + "\n"


def write_seeds(
    runs: Mapping[int, list[EvaluationResult]],
    out: Path,
    folders: Mapping[int, Path],
    ladder: dict | None = None,
) -> None:
    """seeds.csv and seeds.md in `out`, and with a budget ladder (`ladder`: the base model's
    `parameters` and the claims' `baseline`) the ladder of the seeds' means (`write_ladder`)."""
    import pandas as pd

    from steerable.io import atomic_write, atomic_write_text

    rows = seed_rows(runs)
    reference = reference_point(next(iter(runs.values()))[0].rewards)
    atomic_write(out / "seeds.csv", lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    atomic_write_text(out / "seeds.md", seeds_markdown(rows, list(runs), reference))
    if ladder is not None:
        tables = [pd.read_csv(folder / "ladder.csv") for folder in folders.values()]
        write_mean_ladder(tables, out, reference, **ladder)


def write_mean_ladder(
    tables: list, out: Path, reference, parameters: int, baseline: str, command: str | None = None
) -> None:
    """The seeds' ladders averaged rung by rung (a rung every seed has), written as one ladder
    whose hypervolume carries its standard error over the seeds."""
    import pandas as pd

    from steerable.evaluation.ladder import RungResult, write_ladder
    from steerable.rungs import Rung

    stacked = pd.concat([t.assign(seed=i) for i, t in enumerate(tables)])
    found = []
    for (method, rung), group in stacked.groupby(["method", "rung"], sort=False):
        if len(group) != len(tables):
            continue  # a rung not every seed reached
        mean = group.mean(numeric_only=True)
        _, stderr = mean_stderr(group["hypervolume"])
        named = ("gain", "orthogonality", "miscalibration")
        steer = {k: None if pd.isna(mean.get(k)) else float(mean[k]) for k in named}
        found.append(
            RungResult(
                Rung(
                    method,
                    rung,
                    "",
                    float(mean["seconds"]),
                    float(mean["trained_tokens"]),
                    float(mean["generated_tokens"]),
                ),
                float(mean["hypervolume"]),
                float(mean["flops"]),
                steer,
                stderr,
                len(tables),
            )  # fmt: skip
        )
    write_ladder(found, out, parameters, reference, baseline=baseline, command=command)

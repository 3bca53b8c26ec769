"""Hypervolume against compute: every method of a comparison evaluated at several budgets along
its one training run (a budget ladder), so a user can read off which method gives the best front
for what they can spend. A rung is a model the run saved on its way (`training.stage_clock`, at
the steps `steerable compare`'s `budgets: {rl_steps: [...], sft_steps: [...]}` name): a
per-policy method's policies at step N, MOSLIM's policy at step N (paying its reward model too),
NP-DPO's policy and context encoder at step N (paying the NP-BTL it started from), RiC's
offline SFT at step N and after each of its stages; and every method's finished model (a save
at a stage's last step is that model, not a rung of its own)
(the registry's `Method.rungs` says which a method has). Each rung
is evaluated as the finished model is (same prompts, grid, statistics, reference point), as a
stage of its own, so an interrupted ladder resumes where it stopped.

Compute per rung: the wall seconds its training took on this machine (summed over the policies
or stages it needed), the tokens it trained on and generated, and FLOPs estimated from them,
6 N per trained token and 2 N per generated one for a base model of N parameters (a LoRA run
still runs the whole model forward and backward; its optimiser touches only the adapter). A
method trained on the scored answers of a method before it (Rewarded Soups' and MOSLIM's DPO on
RiC's offline data, MOSLIM's reward model, NP-DPO) pays for that pool at every rung: the seconds
and generated tokens of the stage that sampled and scored it.

    OUT/ladder/METHOD/step-N/      a per-policy method's rung, as a model directory
    OUT/stages/rung_METHOD_NAME/   each rung's result.json
    OUT/ladder.csv, ladder.png, ladder.md
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.rungs import FINAL, Rung, final_rung, made, paying

CLAIMS_BASELINE = "morlhf"  # the seed papers' compute claims (RiC's, MOSLIM's) are against MORLHF


def rungs_for(method: str, directory: Path, out: Path) -> list[Rung]:
    """`method`'s rungs on `directory`, by the rungs hook of the method that wrote it (MOD and
    LoRA output mixing are evaluated on the rungs of Rewarded Soups' experts)."""
    from steerable import methods
    from steerable.methods.base import resolve
    from steerable.policy import load_manifest

    writer = methods.get(load_manifest(directory).method)
    if writer.rungs is None:
        return [final_rung(method, directory)]
    return resolve(writer.rungs)(method, directory, out)


def base_parameters(model: str, trust_remote_code: bool = False) -> int:
    """The parameters of a causal LM, counted on its config without loading its weights."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from steerable.defaults import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return int(sum(p.numel() for p in empty.parameters()))


@dataclass
class RungResult:
    """A rung and what its evaluation measured (over several training seeds: their means, and
    the hypervolume's standard error over them)."""

    rung: Rung
    hypervolume: float
    flops: float
    steerability: dict
    hypervolume_stderr: float | None = None
    seeds: int = 1


def rung_stage(rung: Rung) -> str:
    """The comparison's stage that holds `rung`'s evaluation (OUT/stages/STAGE/result.json, its
    inputs in done.json): the finished model's, or the rung's own."""
    return f"eval_{rung.method}" if rung.name == FINAL else f"rung_{rung.method}_{rung.name}"


def ladder_rows(results: Sequence[RungResult]) -> list[dict]:
    return [
        {
            "method": r.rung.method,
            "rung": r.rung.name,
            # where its evaluation is kept (not for the seeds' mean ladder: each seed has its own)
            **(
                {"stage": rung_stage(r.rung), "model": r.rung.model, "adapter": r.rung.adapter or ""}
                if r.rung.model
                else {}
            ),
            "seconds": r.rung.seconds,
            "trained_tokens": r.rung.trained_tokens,
            "generated_tokens": r.rung.generated_tokens,
            "flops": r.flops,
            "hypervolume": r.hypervolume,
            **({"hypervolume_stderr": r.hypervolume_stderr, "seeds": r.seeds} if r.seeds > 1 else {}),
            **r.steerability,
        }
        for r in results
    ]


def first_reaching(results: Sequence[RungResult], method: str, target: float, cost: str) -> float | None:
    """The least `cost` ("seconds" or "flops") at which `method`'s hypervolume reaches `target`."""
    rows = [r for r in ladder_rows(results) if r["method"] == method]
    reached = [r[cost] for r in rows if r["hypervolume"] >= target]
    return min(reached) if reached else None


def best_within(results: Sequence[RungResult], method: str, budget: float, cost: str) -> float | None:
    """`method`'s best hypervolume at a cost of at most `budget` (None: no rung that cheap)."""
    found = [r["hypervolume"] for r in ladder_rows(results) if r["method"] == method and r[cost] <= budget]
    return max(found) if found else None


def plateau(results: Sequence[RungResult], method: str, cost: str) -> str | None:
    """Whether `method`'s hypervolume stopped rising: its last two rungs within one standard
    error of each other (the larger of the two; over training seeds), in a sentence. None with
    fewer than two rungs."""
    rows = sorted((r for r in ladder_rows(results) if r["method"] == method), key=lambda r: r[cost])
    if len(rows) < 2:
        return None
    before, last = rows[-2], rows[-1]
    said = (
        f"its last two rungs: {before['hypervolume']:.4g} ({before['rung']}), "
        f"{last['hypervolume']:.4g} ({last['rung']})"
    )
    errors = [before.get("hypervolume_stderr"), last.get("hypervolume_stderr")]
    if any(e is None or not np.isfinite(e) for e in errors):
        return f"{said}; one training seed: no standard error to tell a plateau by"
    step, error = last["hypervolume"] - before["hypervolume"], max(errors)
    if abs(step) <= error:
        return f"{said}, within one standard error ({error:.2g}): it stopped rising"
    return f"{said}, {step:+.3g}, beyond one standard error ({error:.2g}): " + (
        "still rising" if step > 0 else "falling"
    )


def claims(results: Sequence[RungResult], baseline: str, cost: str = "seconds") -> list[str]:
    """The seed papers' compute claims as this ladder answers them, in lines: `baseline`'s final
    hypervolume (MORLHF's by default: RiC and MOSLIM each claim a front as good for less),
    whether it had stopped rising (`plateau`) and its compute over each method's final; the
    cost at which each method first reaches it and that cost over the baseline's; then each
    method's rank at each of its rungs, among every method's best front at no more cost."""
    rows = ladder_rows(results)
    names = list(dict.fromkeys(r["method"] for r in rows))
    unit = "s" if cost == "seconds" else " FLOPs"
    lines = []
    theirs = [r for r in rows if r["method"] == baseline]
    if theirs:
        final = max(theirs, key=lambda r: r[cost])
        target, spent = final["hypervolume"], final[cost]
        lines.append(f"{baseline}'s final hypervolume: {target:.4g}, at {spent:.4g}{unit}.")
        stopped = plateau(results, baseline, cost)
        lines += [f"{baseline}, {stopped}."] if stopped else []
        finals = {m: max(r[cost] for r in rows if r["method"] == m) for m in names if m != baseline}
        over = [f"{spent / c:.3g}x {m}'s" for m, c in finals.items() if c > 0]
        lines += [f"{baseline}'s compute over each method's final: {', '.join(over)}."] if over else []
        lines.append(f"The compute at which each method first reaches {baseline}'s final hypervolume:")
        for method in names:
            at = first_reaching(results, method, target, cost)
            budget = max(r[cost] for r in rows if r["method"] == method)
            if at is None:
                lines.append(f"- {method}: not reached within {budget:.4g}{unit}")
            else:
                ratio = f", {at / spent:.3g}x {baseline}'s" if spent > 0 else ""
                lines.append(f"- {method}: at {at:.4g}{unit}{ratio}")
        lines.append("")
    lines.append("Rank at equal compute (1: no method has a better front for no more compute):")
    for method in names:
        ranks = []
        for row in (r for r in rows if r["method"] == method):
            others = [best_within(results, m, row[cost], cost) for m in names if m != method]
            present = [v for v in others if v is not None]
            rank = 1 + sum(v > row["hypervolume"] for v in present)
            ranks.append(f"{rank}/{1 + len(present)} at {row[cost]:.3g}{unit} ({row['rung']})")
        lines.append(f"- {method}: " + ", ".join(ranks))
    return lines


def plot_ladder(results: Sequence[RungResult], path: Path) -> None:
    """Hypervolume against wall seconds and against estimated FLOPs, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steerable.io import atomic_write

    rows = ladder_rows(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {"seconds": "training wall seconds", "flops": "training FLOPs (estimated)"}
    for ax, (cost, label) in zip(axes, labels.items(), strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r[cost])
            xs = [r[cost] for r in mine]
            errors = [r.get("hypervolume_stderr") or 0.0 for r in mine]
            ax.errorbar(
                xs, [r["hypervolume"] for r in mine], yerr=errors, marker="o", capsize=3, label=method
            )
        positive = [r[cost] for r in rows if r[cost] > 0]
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)  # a rung at no cost stays on
        ax.set_xlabel(label)
        ax.set_ylabel("hypervolume")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def write_ladder(
    results: Sequence[RungResult],
    out: Path,
    parameters: int,
    reference: Sequence[float],
    notes: Sequence[str] = (),
    baseline: str = CLAIMS_BASELINE,
    command: str | None = None,
) -> Path:
    """OUT/ladder.csv, ladder.png and ladder.md (the table, `notes` and the claims against
    `baseline`'s final hypervolume; `command`, the one that made it, to run again)."""
    import pandas as pd

    from steerable.io import atomic_write, atomic_write_text

    if not results:
        raise SteerableError("a budget ladder needs at least one evaluated rung")
    rows = ladder_rows(results)

    def within_out(path: str) -> str:  # a directory it trained, relative to OUT (which can move)
        return os.path.relpath(path, out) if path and Path(path).exists() else path

    table = [{**row, **{k: within_out(row[k]) for k in ("model", "adapter") if k in row}} for row in rows]
    atomic_write(out / "ladder.csv", lambda tmp: pd.DataFrame(table).to_csv(tmp, index=False))
    plot_ladder(results, out / "ladder.png")

    def cell(value, form):
        missing = value is None or (isinstance(value, float) and not np.isfinite(value))
        return "-" if missing else format(value, form)

    made = [f"Made by `{command}` (its configuration: compare.json); run again, it resumes.", ""]
    lines = [
        "# Hypervolume against compute",
        "",
        *(made if command else []),
        *(
            [
                "Each rung's evaluation is the stage its row of ladder.csv names (stages/STAGE/result.json, "
                "its inputs in done.json).",
                "",
            ]
            if "stage" in rows[0]
            else ["Each seed's own ladder, with the stages of its rungs: seed-S/ladder.csv.", ""]
        ),
        f"Every rung evaluated on the same prompts, grid and statistics; hypervolume reference point "
        f"{', '.join(f'{v:.4g}' for v in reference)}. FLOPs: 6 N per trained token + 2 N per generated "
        f"token, N = {parameters:,} parameters of the base model."
        + (
            f" Means over {rows[0]['seeds']} training seeds; hypervolume ± its standard error."
            if "seeds" in rows[0]
            else ""
        ),
        "",
        "| method | rung | train s | trained tokens | generated tokens | FLOPs | hypervolume | gain | "
        "orthogonality |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        spread = row.get("hypervolume_stderr")
        volume = f"{row['hypervolume']:.4g}" + ("" if spread is None else f" ± {spread:.2g}")
        lines.append(
            f"| {row['method']} | {row['rung']} | {row['seconds']:.0f} | {row['trained_tokens']:.0f} | "
            f"{row['generated_tokens']:.0f} | {row['flops']:.3g} | {volume} | "
            f"{cell(row['gain'], '+.3f')} | {cell(row['orthogonality'], '.3f')} |"
        )
    lines += ["", *[f"- {note}" for note in notes]] if notes else []
    for cost, title in (("seconds", "wall seconds"), ("flops", "estimated FLOPs")):
        said = claims(results, baseline, cost)
        if said:
            lines += ["", f"## The compute claims, in {title}", "", *said]
    atomic_write_text(out / "ladder.md", "\n".join(lines) + "\n")
    return out / "ladder.md"


@dataclass
class Climbed:
    """One method's rungs and what each one's evaluation measured (the finished model's
    evaluation for its final rung), and a note when it had no saves on the way."""

    method: str
    rungs: list[tuple[Rung, object]]  # (rung, its EvaluationResult)
    note: str | None = None


def climb(config, plan, method: str, result, trained: dict, out: Path, evaluated) -> Climbed:
    """`method`'s rungs (a variant's by its name) evaluated with `evaluated(stage, method,
    model, own, options, rung, adapter)`, compare's cached evaluation; the finished model's
    `result` is its final rung's. A method on the base model (prompting) is one rung at no
    training compute. Called as each method finishes, so an interrupted comparison has
    evaluated the rungs of every method trained before the stop."""
    from steerable import methods
    from steerable.policy import load_manifest

    note = None
    if not methods.get(plan.method(method)).own_directory:
        rungs = [Rung(method, FINAL, config.model, 0.0, 0, 0)]
    else:
        rungs = rungs_for(method, Path(trained[method]), out)
        if len(rungs) == 1 and methods.get(load_manifest(trained[method]).method).rungs is not None:
            note = (
                f"{method}: no saves on the way to its finished model: none of the budgets' steps falls "
                "before its last step (a save at the last step is the finished model), or its training "
                "finished before these budgets were asked (the saves are made while it trains; train it "
                "into a fresh output directory to have them)"
            )
    training = plan.trainings.get(method)
    options = dict(training.options or {}) if training is not None else {}
    pool = plan.pools.get(training.evaluates or method) if training is not None else None
    if pool is not None:  # the scored answers it trains on are part of what it costs
        rungs = paying(rungs, made(pool))
    measured = []
    for rung in rungs:
        if rung.name == FINAL:
            measured.append((rung, result))
            continue
        measured.append(
            (rung, evaluated(rung_stage(rung), method, rung.model, True, options, rung.name, rung.adapter))
        )
    return Climbed(method, measured, note)


def run_ladder(config, plan, climbed: Sequence[Climbed], out: Path, command: str | None = None) -> Path:
    """The ladder of every method's evaluated rungs (`climb`), in the comparison's order, on one
    reference point: hypervolume, FLOPs and steerability per rung, written (`write_ladder`)."""
    from steerable.evaluation.pareto import hypervolume
    from steerable.evaluation.report import asks_targets, reference_point
    from steerable.evaluation.steerability import steerability

    climbed = sorted(climbed, key=lambda c: plan.methods.index(c.method))
    reference = reference_point(climbed[0].rungs[0][1].rewards)
    parameters = base_parameters(config.model, config.trust_remote_code)
    found = [
        RungResult(
            rung,
            hypervolume(result.means, reference),
            rung.flops(parameters),
            steerability(result.points, targets=asks_targets(plan.method(c.method))),
        )
        for c in climbed
        for rung, result in c.rungs
    ]
    notes = [c.note for c in climbed if c.note is not None]
    baseline = config.budgets.get("baseline", CLAIMS_BASELINE)
    return write_ladder(found, out, parameters, reference, notes, baseline, command)

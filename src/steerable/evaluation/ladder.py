"""Hypervolume against compute: every method of a comparison evaluated at several budgets along
its one training run (a budget ladder), so a user can read off which method gives the best front
for what they can spend. A rung is a model the run saved on its way: a per-policy method's
policies at step N (`training.rung_saves`: `steerable compare` asks for them with `budgets:
{rl_steps: [...]}`), RiC after each of its stages, and every method's finished model. Each rung
is evaluated as the finished model is (same prompts, grid, statistics, reference point), as a
stage of its own, so an interrupted ladder resumes where it stopped.

Compute per rung: the wall seconds its training took on this machine (summed over the policies
or stages it needed), the tokens it trained on and generated, and FLOPs estimated from them,
6 N per trained token and 2 N per generated one for a base model of N parameters (a LoRA run
still runs the whole model forward and backward; its optimiser touches only the adapter). The
data a method takes from another (a pool of scored answers) is counted where it was made.

    OUT/ladder/METHOD/step-N/      a per-policy method's rung, as a model directory
    OUT/stages/rung_METHOD_NAME/   each rung's result.json
    OUT/ladder.csv, ladder.png, ladder.md
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.training import RUNG_FILE, RUNGS

FINAL = "final"


@dataclass
class Rung:
    """One budget of a method: the model directory `model` (with `adapter`: that adapter of it
    instead of its own, RiC's earlier stages) and the compute that made it."""

    method: str
    name: str
    model: str
    seconds: float
    trained_tokens: int
    generated_tokens: int
    adapter: str | None = None

    def flops(self, parameters: int) -> float:
        return float(parameters) * (6.0 * self.trained_tokens + 2.0 * self.generated_tokens)


def final_rung(method: str, directory: Path) -> Rung:
    """The finished model, with the training record of its directory."""
    from steerable.evaluation.evaluate import compute_record
    from steerable.policy import load_manifest

    compute = compute_record(load_manifest(directory))
    return Rung(
        method,
        FINAL,
        str(directory),
        compute["train_seconds"],
        int(compute["trained_tokens"]),
        int(compute["generated_tokens"]),
    )


def policy_rungs(method: str, directory: Path, out: Path) -> list[Rung]:
    """A per-policy directory's rungs (Rewarded Soups' experts, MORLHF's policies): the steps
    every policy saved (stages/policy_I/rungs/step-N), each written as a model directory in
    OUT/ladder/METHOD/step-N whose policies are those saves, with the compute of all of them
    (the policies train one after another); then the finished model."""
    from steerable.defaults import load_tokenizer
    from steerable.manifest import write_model_directory
    from steerable.policy import load_manifest

    manifest = load_manifest(directory)
    folders = [directory / Path(p["adapter"]).parent for p in manifest.policies]
    saved = [{int(r.parent.name.removeprefix("step-")) for r in (f / RUNGS).glob(f"*/{RUNG_FILE}")}
             for f in folders]  # fmt: skip
    steps = sorted(set.intersection(*saved)) if saved else []
    rungs = []
    for step in steps:
        records = [json.loads((f / RUNGS / f"step-{step}" / RUNG_FILE).read_text()) for f in folders]
        target = out / "ladder" / method / f"step-{step}"
        if not (target / "steerable.json").is_file():
            policies = [
                {**p, "adapter": os.path.relpath(f / RUNGS / f"step-{step}", target)}
                for p, f in zip(manifest.policies, folders, strict=True)
            ]
            training = {
                **manifest.training,
                "rung": step,
                "compute": {
                    "seconds": {f"policy_{i}": r["seconds"] for i, r in enumerate(records)},
                    "trained_tokens": sum(r["trained_tokens"] for r in records),
                    "generated_tokens": sum(r.get("generated_tokens", 0) for r in records),
                },
            }
            rung = replace(manifest, policies=policies, training=training)
            write_model_directory(target, rung, load_tokenizer(str(directory)))
        rungs.append(
            Rung(
                method,
                f"step-{step}",
                str(target),
                sum(r["seconds"] for r in records),
                sum(r["trained_tokens"] for r in records),
                sum(r.get("generated_tokens", 0) for r in records),
            )
        )
    return [*rungs, final_rung(method, directory)]


def stage_rungs(method: str, directory: Path, out: Path) -> list[Rung]:
    """A staged method's rungs (RiC): in each stage, in the order its training record lists
    them, the saves on the way (stages/NAME/rungs/step-N: RiC's offline SFT at `sft_rungs`),
    then the stage's own weights, each evaluated with that adapter at the compute of the stages
    before it and of the stage so far; the last is the finished model."""
    from steerable.policy import load_manifest

    manifest = load_manifest(directory)
    seconds = manifest.training.get("compute", {}).get("seconds", {})
    rungs, spent, trained, generated = [], 0.0, 0, 0
    for name, stage_seconds in seconds.items():
        folder = directory / "stages" / name
        for save in sorted((folder / RUNGS).glob(f"*/{RUNG_FILE}"), key=lambda f: int(f.parent.name[5:])):
            record = json.loads(save.read_text())
            rungs.append(
                Rung(
                    method,
                    f"{name}-{save.parent.name}",
                    str(directory),
                    spent + record["seconds"],
                    trained + record["trained_tokens"],
                    generated + record.get("generated_tokens", 0),
                    adapter=str(save.parent),
                )
            )
        info = (
            json.loads((folder / "done.json").read_text())["info"] if (folder / "done.json").is_file() else {}
        )
        spent += float(stage_seconds)
        trained += int(info.get("trained_tokens", 0))
        generated += int(info.get("generated_tokens", 0))
        if (folder / "weights" / "adapter_config.json").is_file():
            rungs.append(
                Rung(method, name, str(directory), spent, trained, generated, adapter=str(folder / "weights"))
            )
    if rungs and rungs[-1].adapter == str(directory / "stages" / list(seconds)[-1] / "weights"):
        rungs = rungs[:-1]  # the last stage's weights are the finished model's
    return [*rungs, final_rung(method, directory)]


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
    """A rung and what its evaluation measured."""

    rung: Rung
    hypervolume: float
    flops: float
    steerability: dict


def ladder_rows(results: Sequence[RungResult]) -> list[dict]:
    return [
        {
            "method": r.rung.method,
            "rung": r.rung.name,
            "seconds": r.rung.seconds,
            "trained_tokens": r.rung.trained_tokens,
            "generated_tokens": r.rung.generated_tokens,
            "flops": r.flops,
            "hypervolume": r.hypervolume,
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


def claims(results: Sequence[RungResult], cost: str = "seconds") -> list[str]:
    """The seed papers' compute claims as this ladder answers them, in sentences: the cost at
    which each method first reaches MORLHF's final hypervolume, RiC's over MORLHF's, and
    MOSLIM's rank at each of its rungs' costs against every method's best at no more cost."""
    rows = ladder_rows(results)
    methods_here = list(dict.fromkeys(r["method"] for r in rows))
    lines = []
    unit = "s" if cost == "seconds" else " FLOPs"
    morlhf = [r for r in rows if r["method"] == "morlhf"]
    if morlhf:
        final = max(morlhf, key=lambda r: r[cost])
        target, spent = final["hypervolume"], final[cost]
        lines.append(f"MORLHF's final hypervolume: {target:.4g}, at {spent:.4g}{unit}.")
        for method in methods_here:
            at = first_reaching(results, method, target, cost)
            budget = max(r[cost] for r in rows if r["method"] == method)
            missed = f"not reached within {budget:.4g}{unit}"
            said = f"reached at {at:.4g}{unit}" if at is not None else missed
            lines.append(f"- {method}: {said}")
        ric = first_reaching(results, "ric", target, cost) if "ric" in methods_here else None
        if ric is not None and spent > 0:
            lines.append(f"RiC / MORLHF, the cost of reaching MORLHF's final hypervolume: {ric / spent:.3g}.")
    if "moslim" in methods_here:
        for row in (r for r in rows if r["method"] == "moslim"):
            best = {m: best_within(results, m, row[cost], cost) for m in methods_here}
            ranked = sorted((v for v in best.values() if v is not None), reverse=True)
            rank = ranked.index(row["hypervolume"]) + 1 if row["hypervolume"] in ranked else None
            lines.append(
                f"MOSLIM at {row[cost]:.4g}{unit} ({row['rung']}): rank {rank} of {len(ranked)} methods "
                "with a rung at no more cost"
            )
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
            xs = [max(r[cost], 1e-9) for r in mine]
            ax.plot(xs, [r["hypervolume"] for r in mine], marker="o", label=method)
        ax.set_xscale("symlog" if cost == "seconds" else "log")
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
) -> Path:
    """OUT/ladder.csv, ladder.png and ladder.md (the table, `notes` and the claims)."""
    import pandas as pd

    from steerable.io import atomic_write, atomic_write_text

    if not results:
        raise SteerableError("a budget ladder needs at least one evaluated rung")
    rows = ladder_rows(results)
    atomic_write(out / "ladder.csv", lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    plot_ladder(results, out / "ladder.png")

    def cell(value, form):
        missing = value is None or (isinstance(value, float) and not np.isfinite(value))
        return "-" if missing else format(value, form)

    lines = [
        "# Hypervolume against compute",
        "",
        f"Every rung evaluated on the same prompts, grid and statistics; hypervolume reference point "
        f"{', '.join(f'{v:.4g}' for v in reference)}. FLOPs: 6 N per trained token + 2 N per generated "
        f"token, N = {parameters:,} parameters of the base model.",
        "",
        "| method | rung | train s | trained tokens | generated tokens | FLOPs | hypervolume | gain | "
        "orthogonality |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['rung']} | {row['seconds']:.0f} | {row['trained_tokens']} | "
            f"{row['generated_tokens']} | {row['flops']:.3g} | {row['hypervolume']:.4g} | "
            f"{cell(row['gain'], '+.3f')} | {cell(row['orthogonality'], '.3f')} |"
        )
    lines += ["", *[f"- {note}" for note in notes]] if notes else []
    for cost, title in (("seconds", "wall seconds"), ("flops", "estimated FLOPs")):
        said = claims(results, cost)
        if said:
            lines += ["", f"## The compute claims, in {title}", "", *said]
    atomic_write_text(out / "ladder.md", "\n".join(lines) + "\n")
    return out / "ladder.md"


def run_ladder(config, plan, results, trained: dict, out: Path, evaluated) -> Path:
    """Every compared method's rungs evaluated with `evaluated(stage, method, model, own,
    options, rung)` (compare's cached evaluation; the finished models' `results` are reused),
    and the ladder written (`write_ladder`). A method on the base model (prompting) is one rung
    at no training compute."""
    from steerable import methods
    from steerable.evaluation.pareto import hypervolume
    from steerable.evaluation.report import asks_targets, reference_point
    from steerable.evaluation.steerability import steerability
    from steerable.policy import load_manifest

    reference = reference_point(results[0].rewards)
    parameters = base_parameters(config.model, config.trust_remote_code)
    found, notes = [], []
    for method, result in zip(plan.methods, results, strict=True):
        if not methods.get(method).own_directory:
            rungs = [Rung(method, FINAL, config.model, 0.0, 0, 0)]
        else:
            rungs = rungs_for(method, Path(trained[method]), out)
            if len(rungs) == 1 and methods.get(load_manifest(trained[method]).method).rungs is not None:
                notes.append(
                    f"{method}: no saves on the way to its finished model: its training finished before "
                    "these budgets were asked (the saves are made while it trains); train it into a fresh "
                    "output directory to have them"
                )
        training = plan.trainings.get(method)
        options = dict(training.options or {}) if training is not None else {}
        for rung in rungs:
            measured = result
            if rung.name != FINAL:
                stage = f"rung_{method}_{rung.name}"
                measured = evaluated(stage, method, rung.model, True, options, rung.name, rung.adapter)
            found.append(
                RungResult(
                    rung,
                    hypervolume(measured.means, reference),
                    rung.flops(parameters),
                    steerability(measured.points, targets=asks_targets(method)),
                )
            )
    return write_ladder(found, out, parameters, reference, notes)

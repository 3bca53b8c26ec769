"""What a training run saves on its way, read back as the rungs of a budget ladder: the models
`training.stage_clock` wrote at chosen steps (stages/NAME/rungs/step-N, each with rung.json: the
step, the training seconds so far, the tokens trained on and generated), each stage's own
weights, and the finished model, each with the compute that made it. A method's registry entry
names the reader that fits its directory (`Method.rungs`); `evaluation.ladder` evaluates them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

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

    @classmethod
    def spending(cls, method: str, name: str, model: str, spent: Spent, adapter: str | None = None) -> Rung:
        return cls(method, name, model, spent.seconds, spent.trained_tokens, spent.generated_tokens, adapter)


@dataclass(frozen=True)
class Spent:
    """Training compute: wall seconds, tokens trained on, tokens generated; summed with +."""

    seconds: float = 0.0
    trained_tokens: int = 0
    generated_tokens: int = 0

    @classmethod
    def read(cls, record: dict, seconds: float | None = None) -> Spent:
        """From a rung.json record or a stage's done.json info (`seconds`: instead of its own)."""
        return cls(
            float(record.get("seconds", 0.0) if seconds is None else seconds),
            int(record.get("trained_tokens", 0)),
            int(record.get("generated_tokens", 0)),
        )

    def __add__(self, other: Spent) -> Spent:
        return Spent(
            self.seconds + other.seconds,
            self.trained_tokens + other.trained_tokens,
            self.generated_tokens + other.generated_tokens,
        )


def final_rung(method: str, directory: Path) -> Rung:
    """The finished model, with the training record of its directory."""
    from steerable.manifest import compute_record
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


def paying(rungs: list[Rung], spent: Spent) -> list[Rung]:
    """`rungs`, each also paying `spent`: what its method needed before its own run (MOSLIM's
    reward model, the NP-BTL that starts NP-DPO's encoder, the pool of scored answers it trains
    on, `made`)."""
    return [
        replace(
            rung,
            seconds=rung.seconds + spent.seconds,
            trained_tokens=rung.trained_tokens + spent.trained_tokens,
            generated_tokens=rung.generated_tokens + spent.generated_tokens,
        )
        for rung in rungs
    ]


def made(path: str | Path) -> Spent:
    """What the stage that wrote `path` spent (the done.json in its folder: RiC's offline
    stage for its scored.jsonl, sampling and scoring the pool); nothing for a file no stage
    wrote (a user's own table)."""
    done = Path(path).parent / "done.json"
    return Spent.read(json.loads(done.read_text())["info"]) if done.is_file() else Spent()


def saves(folder: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every save `training.stage_clock` made in a stage's folder, by step: the
    adapters only (a run that trains the whole model saves no rungs a stage can load), and not
    a save at the stage's last step (a rung at max_steps): that is the stage's own model, a
    rung of its own already, and a ladder would read the two as a plateau."""
    done = folder / "done.json"
    last = json.loads(done.read_text())["info"].get("steps") if done.is_file() else None
    found = [
        (int(path.parent.name.removeprefix("step-")), path.parent)
        for path in (folder / RUNGS).glob(f"step-*/{RUNG_FILE}")
        if (path.parent / "adapter_config.json").is_file()
    ]
    return sorted((step, save) for step, save in found if last is None or step < last)


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
    saved = [{step for step, _ in saves(f)} for f in folders]
    steps = sorted(set.intersection(*saved)) if saved else []
    rungs = []
    for step in steps:
        records = [json.loads((f / RUNGS / f"step-{step}" / RUNG_FILE).read_text()) for f in folders]
        target = out / "ladder" / method / f"step-{step}"
        # written every time: the experts may have been trained again into the same OUT
        policies = [
            {**p, "adapter": os.path.relpath(f / RUNGS / f"step-{step}", target)}
            for p, f in zip(manifest.policies, folders, strict=True)
        ]
        spent = sum(map(Spent.read, records), Spent())
        training = {
            **manifest.training,
            "rung": step,
            "compute": {
                "seconds": {f"policy_{i}": r["seconds"] for i, r in enumerate(records)},
                "trained_tokens": spent.trained_tokens,
                "generated_tokens": spent.generated_tokens,
            },
        }
        rung = replace(manifest, policies=policies, training=training)
        write_model_directory(target, rung, load_tokenizer(str(directory)))
        rungs.append(Rung.spending(method, f"step-{step}", str(target), spent))
    return [*rungs, final_rung(method, directory)]


def stage_rungs(method: str, directory: Path, out: Path) -> list[Rung]:
    """A staged method's rungs (RiC): in each stage, in the order its training record lists
    them, the saves on the way (stages/NAME/rungs/step-N: RiC's offline SFT at `sft_rungs`),
    then the stage's own weights, each evaluated with that adapter at the compute of the stages
    before it and of the stage so far; the last is the finished model."""
    from steerable.policy import load_manifest

    manifest = load_manifest(directory)
    seconds = manifest.training.get("compute", {}).get("seconds", {})
    rungs, spent = [], Spent()
    for name, stage_seconds in seconds.items():
        folder = directory / "stages" / name
        for _, save in saves(folder):
            so_far = spent + Spent.read(json.loads((save / RUNG_FILE).read_text()))
            rungs.append(Rung.spending(method, f"{name}-{save.name}", str(directory), so_far, str(save)))
        done = folder / "done.json"
        info = json.loads(done.read_text())["info"] if done.is_file() else {}
        spent = spent + Spent.read(info, seconds=float(stage_seconds))
        if (folder / "weights" / "adapter_config.json").is_file():
            rungs.append(Rung.spending(method, name, str(directory), spent, str(folder / "weights")))
    if rungs and rungs[-1].adapter == str(directory / "stages" / list(seconds)[-1] / "weights"):
        rungs = rungs[:-1]  # the last stage's weights are the finished model's
    return [*rungs, final_rung(method, directory)]

"""Does a TRL / transformers training option make RiC's SFT stage faster here? One run, one option
after another, each on a fresh model, timed per optimiser step.

    python benchmarks/sft_options.py runs/ric [--examples 64] [--options default padding_free ...]

The data is the first N tagged examples of a finished RiC run's offline stage; the stage is
`steerable.methods.ric.recipe.run_sft` at RiC's defaults (LoRA r=64, batches of 4 accumulated twice,
fp32 on a CPU), with one field of its SFTConfig changed:

    default        as `steerable train ric` runs it
    padding_free   TRL's padding-free batches (one flattened sequence, position ids; max_length
                   off, as TRL requires without packing)
    torch_compile  transformers' torch.compile of the model (inductor)
    bf16           bf16 mixed precision (refused where the CPU has no native bf16)

Prints tokens/s over the whole run and the median step after the first three (compilation and
warm-up excluded), as Markdown. `default` twice (first and last) shows the drift of the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import TrainerCallback  # noqa: E402

from steerable.conditioning import TagFormat  # noqa: E402
from steerable.data import read_table  # noqa: E402
from steerable.defaults import load_causal_lm  # noqa: E402
from steerable.errors import SteerableError  # noqa: E402
from steerable.methods.ric import recipe as ric  # noqa: E402
from steerable.objectives import RewardSet  # noqa: E402
from steerable.stages import Stages  # noqa: E402

CHANGES = {
    "default": {},
    "padding_free": {"padding_free": True, "max_length": None},
    "torch_compile": {"torch_compile": True},
    "bf16": {},  # through RiCConfig.bf16, which checks the hardware
}


class StepTimes(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def run(option: str, examples: list[dict]) -> tuple[int, float, float]:
    """(trained tokens, seconds, median seconds per step after the third) for one option."""
    times = StepTimes()
    original = ric.sft_args

    def sft_args(config, output_dir, offline):
        args = original(config, output_dir, offline)
        for name, value in CHANGES[option].items():
            setattr(args, name, value)
        return args

    def stage_bar(trainer, desc):
        trainer.add_callback(times)
        return trainer

    ric.sft_args, bar = sft_args, ric.stage_bar
    ric.stage_bar = stage_bar
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = replace(
                ric.RiCConfig(num_epochs=1, output_dir=tmp), bf16=True if option == "bf16" else None
            )
            model, tokenizer = load_causal_lm(config.model)
            started = time.perf_counter()
            _, info = ric.run_sft(model, tokenizer, examples, config, Stages(tmp), "sft", {}, True)
            seconds = time.perf_counter() - started
    finally:
        ric.sft_args, ric.stage_bar = original, bar
    steps = [b - a for a, b in zip(times.times, times.times[1:], strict=False)][2:]
    return info["trained_tokens"], seconds, statistics.median(steps) if steps else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a RiC output directory with a finished offline stage")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument(
        "--options", nargs="+", default=["default", "padding_free", "torch_compile", "bf16", "default"]
    )
    args = parser.parse_args()
    stage = Path(args.run) / "stages" / "offline"
    names = RewardSet.load(stage / "stats.json").names
    rows = read_table(stage / "scored.jsonl")[: args.examples]
    examples = [
        ric.sft_example(r["prompt"], r["response"], {n: r[f"z_{n}"] for n in names}, TagFormat())
        for r in rows
    ]
    lines = []
    for option in args.options:
        try:
            tokens, seconds, step = run(option, examples)
        except SteerableError as err:
            lines.append(f"| {option} | - | - | - | refused: {err} |")
            continue
        lines.append(f"| {option} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | {step:.2f} |")
        print(lines[-1], flush=True)
    print(f"\n{len(examples)} examples, one epoch\n")
    print("| option | trained tokens | s | tokens/s | median s per step (after the 3rd) |")
    print("|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

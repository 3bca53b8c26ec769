"""SFT tokens/s: our RiC training stage vs. a plain TRL SFTTrainer run on the same data, model,
LoRA shape and batch size, measured in one run.

    python benchmarks/sft_throughput.py runs/ric [--examples 32]

Two plain-TRL baselines, `TRL defaults` (bf16 and gradient checkpointing on) and `TRL fp32`
(defaults plus bf16=False), against our SFT stage as it runs by default and with bf16 asked
for. The data is the first N tagged examples of a finished RiC run's offline stage.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from steerable.conditioning import TagFormat  # noqa: E402
from steerable.data import read_table  # noqa: E402
from steerable.defaults import load_causal_lm  # noqa: E402
from steerable.methods.ric.recipe import RiCConfig, run_sft, sft_example  # noqa: E402
from steerable.objectives import RewardSet  # noqa: E402
from steerable.stages import Stages  # noqa: E402
from steerable.training import lora_config  # noqa: E402


def plain_trl(model, tokenizer, examples, config: RiCConfig, output_dir: str, bf16: bool | None) -> int:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=1,
        learning_rate=config.learning_rate,
        report_to=[],
        save_strategy="no",
        include_num_input_tokens_seen="non_padding",
        use_cpu=not torch.cuda.is_available(),
        max_length=config.max_length,
        **({} if bf16 is None else {"bf16": bf16}),
    )
    peft = lora_config(config.lora_r, config.lora_alpha, config.lora_dropout)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=peft,
    )
    trainer.train()
    return int(trainer.state.num_input_tokens_seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a RiC output directory with a finished offline stage")
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args()
    stage = Path(args.run) / "stages" / "offline"
    names = RewardSet.load(stage / "stats.json").names
    rows = read_table(stage / "scored.jsonl")[: args.examples]
    examples = [
        sft_example(r["prompt"], r["response"], {n: r[f"z_{n}"] for n in names}, TagFormat()) for r in rows
    ]
    config = RiCConfig(model=args.model, num_epochs=1)
    runs = {  # label: (plain TRL?, bf16 setting)
        "TRL defaults": (True, None),
        "TRL fp32": (True, False),
        "steerable (default)": (False, None),
        "steerable --bf16 true": (False, True),
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (plain, bf16) in runs.items():
            model, tokenizer = load_causal_lm(args.model)
            started = time.perf_counter()
            if plain:
                tokens = plain_trl(model, tokenizer, examples, config, f"{tmp}/{len(results)}", bf16)
            else:
                run_config = replace(config, output_dir=f"{tmp}/{len(results)}", bf16=bf16)
                _, info = run_sft(
                    model, tokenizer, examples, run_config, Stages(run_config.output_dir), "sft", {}, True
                )
                tokens = info["trained_tokens"]
            seconds = time.perf_counter() - started
            results[label] = tokens / seconds
            print(
                f"{label}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tokens/s", flush=True
            )
    defaults, fp32 = results["TRL defaults"], results["TRL fp32"]
    print("\n| examples | run | tokens/s | ratio vs TRL defaults | ratio vs TRL fp32 |")
    print("|---|---|---|---|---|")
    for label, rate in results.items():
        print(f"| {len(examples)} | {label} | {rate:.1f} | {rate / defaults:.2f}x | {rate / fp32:.2f}x |")


if __name__ == "__main__":
    main()

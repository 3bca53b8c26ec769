"""The scale path: `accelerate launch` with two CPU processes (gloo) runs RiC and a GRPO
baseline end to end; training is sharded, everything else runs once on the main process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from steerable.policy import SteerablePolicy

pytestmark = pytest.mark.slow

LAUNCH = [
    str(Path(sys.executable).with_name("accelerate")),
    "launch",
    "--multi_gpu",  # accelerate's torchrun launcher; without a GPU each process runs on the CPU (gloo)
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
    "-m",
    "steerable.cli",
]


def launch(*args) -> str:
    result = subprocess.run(
        [*LAUNCH, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_two_processes_train_ric_and_soups(tiny_path, tmp_path):
    ric = tmp_path / "ric"
    common = ["--model", tiny_path, "--lora_r", "4", "--lora_alpha", "8"]
    log = launch(
        "train", "ric", *common, "--output_dir", ric, "--prompt_limit", "8", "--max_new_tokens", "8",
        "--num_epochs", "1", "--batch_size", "2", "--online_samples", "8", "--online_quantile", "0.5",
    )  # fmt: skip
    assert log.count("steerable model directory") == 2  # both processes finished
    # the offline samples were generated once, by the main process (16 = 8 prompts x 2)
    assert log.count("generating:   0%|          | 0/16") == 1
    offline = (ric / "stages/offline/scored.jsonl").read_text().splitlines()
    assert len({json.loads(line)["response"] for line in offline}) == len(offline) > 0
    # SFT was sharded: 16 examples, batches of 2 per process accumulated twice -> 2 steps, not 4
    sft = json.loads((ric / "stages/sft/done.json").read_text())["info"]
    assert sft["steps"] == 2 and sft["examples"] == 16
    assert SteerablePolicy.from_pretrained(ric, device="cpu").names == ["brief", "positive"]

    soups = tmp_path / "soups"
    launch(
        "train", "soups", *common, "--stats", ric, "--output_dir", soups, "--max_steps", "2",
        "--batch_size", "4", "--num_generations", "2", "--max_completion_length", "4", "--prompt_limit", "4",
    )  # fmt: skip
    manifest = json.loads((soups / "steerable.json").read_text())
    assert len(manifest["policies"]) == 2
    info = json.loads((soups / "stages/policy_0/done.json").read_text())["info"]
    # two processes x 2 steps x 4 completions each, counted over both processes
    assert info["steps"] == 2 and info["generated_completions"] == 16

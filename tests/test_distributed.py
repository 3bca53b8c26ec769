"""The scale path: `accelerate launch` with two CPU processes (gloo) runs RiC and a GRPO
baseline end to end; training is sharded, everything else runs once on the main process. The
GRPO stage's own collective is also checked on processes whose device is not the CPU, as under
NCCL, which no CPU run can show."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from steerable.methods.rl import RLConfig, train_grpo
from steerable.policy import SteerablePolicy
from steerable.stages import Stages

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


@pytest.mark.slow
def test_two_processes_train_ric_and_soups(tiny_path, tmp_path):
    ric = tmp_path / "ric"
    common = ["--model", tiny_path, "--lora_r", "4", "--lora_alpha", "8"]
    log = launch(
        "train", "ric", *common, "--output_dir", ric, "--prompt_limit", "8", "--max_new_tokens", "8",
        "--num_epochs", "1", "--batch_size", "2", "--online_samples", "8", "--online_quantile", "0.5",
    )  # fmt: skip
    assert log.count("steerable model directory") == 2  # both processes finished
    # the offline samples were generated once, by the main process: 8 prompts x 2 answers x 8 tokens
    assert log.count("generating:   0%|          | 0/128") == 1
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


def grpo_stage(monkeypatch, tiny_path, tmp_path, error: str | None = None):
    """train_grpo with TRL's GRPOTrainer replaced by its shape, trained as one of two processes on
    a device that is not the CPU (as a GPU is), whose reduce, like NCCL's, refuses a tensor on
    another device: training counts 8 completions of 30 tokens on this process, saving writes the
    weights folder. Returns (the call that runs the stage, the calls made)."""
    import accelerate
    import accelerate.utils
    import trl

    calls, counter = [], {"completions": 0, "tokens": 0}

    class Processes:
        num_processes, device = 2, torch.device("meta")  # a meta tensor has a shape but no values

    def reduce(tensor, reduction="mean"):
        if tensor.device != Processes.device:
            raise RuntimeError(f"No backend type associated with device type {tensor.device.type}")
        if error:
            raise RuntimeError(error)
        calls.append(f"reduce {reduction}")
        return torch.tensor([16.0, 60.0], dtype=tensor.dtype)  # both processes counted as many

    class Trainer:
        def __init__(self, **_):
            self.state = SimpleNamespace(global_step=2, num_input_tokens_seen=100)

        def remove_callback(self, callback):
            pass

        def add_callback(self, callback):
            pass

        def train(self, resume_from_checkpoint=None):
            counter.update(completions=8, tokens=30)
            monkeypatch.setattr(accelerate, "PartialState", lambda *a, **k: Processes())
            monkeypatch.setattr(accelerate.utils, "reduce", reduce)

        def save_model(self, folder):
            calls.append("save")
            Path(folder).mkdir(parents=True)

    monkeypatch.setattr(trl, "GRPOTrainer", Trainer)
    config = RLConfig(model=tiny_path, stats=str(tmp_path / "stats.json"), output_dir=str(tmp_path))
    rows = [{"prompt": [{"role": "user", "content": "Hi"}]}]
    stages = Stages(tmp_path, "train morlhf")
    return lambda: train_grpo(config, stages, "policy_0", {}, None, rows, [], [1.0], counter), calls


def test_the_grpo_counts_are_summed_on_the_processes_device_before_the_stage_saves(
    monkeypatch, tiny_path, tmp_path
):
    run, calls = grpo_stage(monkeypatch, tiny_path, tmp_path)
    info = run()
    assert (info["generated_completions"], info["generated_tokens"]) == (16, 60)
    assert calls == ["reduce sum", "save"]


def test_a_failing_collective_leaves_no_saved_policy_behind(monkeypatch, tiny_path, tmp_path):
    run, calls = grpo_stage(monkeypatch, tiny_path, tmp_path, error="NCCL watchdog timeout")
    with pytest.raises(RuntimeError, match="NCCL watchdog timeout"):
        run()
    assert calls == [] and not (tmp_path / "stages/policy_0/weights").exists()


@pytest.mark.slow
def test_a_grpo_stage_resumed_from_its_last_checkpoint_reports_the_whole_runs_generations(
    tiny_path, scored_table, tmp_path
):
    """A run stopped after its last checkpoint, before the stage was marked finished, resumes
    there with no step left: its record still counts the completions generated before the stop."""
    import shutil

    from steerable.methods.rl import train_policies

    config = RLConfig(
        model=tiny_path, stats=str(scored_table.with_name("stats.json")), output_dir=str(tmp_path / "morlhf"),
        max_steps=2, batch_size=4, num_generations=2, max_completion_length=4, prompt_limit=4, lora_r=4,
        lora_alpha=8,
    )  # fmt: skip
    out = train_policies(config, "morlhf", [[1.0, 0.0]])
    stage = out / "stages" / "policy_0"
    first = json.loads((stage / "done.json").read_text())["info"]
    assert first["generated_completions"] == 8 and first["generated_tokens"] > 0  # 2 steps x 4
    for gone in (stage / "done.json", out / "steerable.json"):
        gone.unlink()
    shutil.rmtree(stage / "weights")
    train_policies(config, "morlhf", [[1.0, 0.0]])
    again = json.loads((stage / "done.json").read_text())["info"]
    assert again["steps"] == 2
    assert (again["generated_completions"], again["generated_tokens"]) == (8, first["generated_tokens"])

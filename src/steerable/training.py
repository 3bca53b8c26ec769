"""Pieces every trainer recipe shares: the LoRA shape, the TRL arguments that depend on the
device rather than on the method, and the stage's progress bar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import ProgressCallback, TrainerCallback
from transformers.trainer_callback import ExportableState, PrinterCallback

from steerable.errors import SteerableError


def lora_config(r: int, alpha: int, dropout: float, task_type: str = "CAUSAL_LM"):
    """LoRA on every linear layer of a causal LM (or of a reward model: task_type SEQ_CLS)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type=task_type
    )


def bf16_supported() -> bool:
    """Whether this machine computes in bf16 natively: a GPU that supports it, or a CPU with
    oneDNN's bf16 kernels (AVX-512 or Arm bf16)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def device_args(bf16: bool | None = None) -> dict:
    """TRL config fields set by the hardware. `bf16` (mixed precision): None = on where a GPU
    supports it, off on a CPU; True = on wherever it is native, a CPU with oneDNN bf16 kernels
    too; False = off. On a CPU, bf16 made RiC's SFT somewhat faster but raised the run's peak
    memory well past a small machine's budget, so a CPU does not get it unasked. Each recipe sets
    gradient checkpointing itself."""
    if bf16 is None:
        bf16 = torch.cuda.is_available() and bf16_supported()
    elif bf16 and not bf16_supported():
        raise SteerableError(
            "bf16 was asked for, but this machine has no native bf16 (a GPU that supports it, or a "
            "CPU with oneDNN bf16 kernels); leave bf16 unset"
        )
    return {
        "use_cpu": not torch.cuda.is_available(),
        "bf16": bf16,
        "report_to": [],
        "include_num_input_tokens_seen": "non_padding",  # trained tokens = real tokens
    }


def summed_over_processes(values: np.ndarray) -> np.ndarray:
    """`values` summed over the training processes (every process must call it; a single one
    gets them back as they are). The tensor goes on the processes' device, as the trainer's own
    collectives do: NCCL, the GPU backend, reduces only CUDA tensors."""
    from accelerate.utils import reduce

    from steerable.stages import process_state

    state = process_state()
    if state.num_processes == 1:
        return values
    tensor = torch.as_tensor(values, dtype=torch.float64, device=state.device)
    return reduce(tensor, reduction="sum").cpu().numpy()


def checkpoint_args(save_steps: int = 10) -> dict:
    """How a policy stage logs and checkpoints: a log every 5 steps, a checkpoint every
    `save_steps` (the point an interrupted run resumes from), only the newest kept."""
    return {"logging_steps": 5, "save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 1}


def last_complete_checkpoint(folder: str | Path) -> str | None:
    """The newest `checkpoint-N` in `folder` that was saved whole. transformers writes
    trainer_state.json last, so a run killed while saving leaves a folder without it; resuming
    from that one would fail, and the one before it is still there (the rotation deletes old
    checkpoints only after a new one is saved)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    numbered = [
        (int(path.name.split("-", 1)[1]), path)
        for path in folder.glob("checkpoint-*")
        if path.is_dir() and path.name.split("-", 1)[1].isdigit()
    ]
    for _, path in sorted(numbered, reverse=True):
        if (path / "trainer_state.json").is_file():
            return str(path)
    return None


class CheckpointedState(TrainerCallback, ExportableState):
    """A callback whose `state()` goes into every checkpoint's trainer_state.json under its class
    name (transformers' ExportableState), read back with `saved_callback_state`. It enters its
    entry when training begins: a run resumed from a checkpoint written before the callback
    existed loads a state without that entry, and the trainer's save looks the entry up."""

    def on_train_begin(self, args, state, control, **kwargs):
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())


def saved_callback_state(checkpoint: str | Path, name: str) -> dict | None:
    """The attributes the callback class `name` (a `CheckpointedState`) saved in `checkpoint`'s
    trainer_state.json; None when the checkpoint holds none (one written before it was kept)."""
    trainer_state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    saved = trainer_state.get("stateful_callbacks", {}).get(name)
    return None if saved is None else saved["attributes"]


class StageBar(ProgressCallback):
    """transformers' training bar named after the stage, the loss shown as its postfix. A run
    resumed from a checkpoint says so first ("resuming sft from step 40")."""

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:  # a resumed run starts where its checkpoint left off
            if state.global_step:
                from steerable.stages import say

                say(f"resuming {self.desc} from step {state.global_step} of {state.max_steps}")
            self.training_bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc=self.desc,
                unit="step",
                dynamic_ncols=True,
            )
        self.current_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{float(logs['loss']):.3g}", refresh=False)


def stage_bar(trainer, desc: str):
    """Give `trainer` one bar named `desc` in place of its own bar and printed logs; returns it."""
    from transformers.trainer import DEFAULT_PROGRESS_CALLBACK  # the notebook bar in Jupyter

    for callback in {ProgressCallback, PrinterCallback, DEFAULT_PROGRESS_CALLBACK}:
        trainer.remove_callback(callback)
    trainer.add_callback(StageBar(desc))
    return trainer

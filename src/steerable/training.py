"""Pieces every trainer recipe shares: the model and LoRA arguments of its config, the LoRA
shape, the TRL arguments that depend on the device rather than on the method, the stage's
progress bar, and `train_stage`, the one way a stage trains (start, resume, train, save,
record, finish)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import Field, asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import ProgressCallback, TrainerCallback
from transformers.trainer_callback import ExportableState, PrinterCallback

from steerable.defaults import DEFAULT_MODEL, DTYPE_NAMES
from steerable.errors import SteerableError


@dataclass
class ModelArguments:
    """The model a trainer starts from; every trainer's config has these fields.

    model: the base policy (`smollm2`, `tiny`, a hub id or a local directory of a causal
        LM; a local path is stored absolute, so a run can be resumed from another directory).
        A reward model's config declares its own (an encoder backbone, `minilm` by default).
    dtype: the dtype its weights are loaded and trained in, and the one the saved model
        records (float32; bfloat16 or float16 halve the memory).
    trust_remote_code: let a hub model run its own modelling code (off, as it should stay
        unless you trust the model's author).
    """

    model: str = field(
        default=DEFAULT_MODEL, metadata={"help": "Base policy: smollm2, tiny, a hub id or a local directory."}
    )
    dtype: str = field(
        default="float32", metadata={"help": "Dtype of the model weights.", "choices": DTYPE_NAMES}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Let a hub model run its own code (off unless you trust it)."}
    )


@dataclass
class LoraArguments:
    """The LoRA adapter a trainer trains on every linear layer (`lora_config`).

    lora_r / lora_alpha / lora_dropout: its rank, scaling and dropout (RiC's reference shape,
        64 / 128 / 0.05, by default; a config sets its own defaults with `with_default`).
    """

    lora_r: int = field(default=64, metadata={"help": "LoRA rank.", "ge": 1})
    lora_alpha: int = field(default=128, metadata={"help": "LoRA alpha.", "ge": 1})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout.", "ge": 0, "lt": 1})


def with_default(arguments: type, name: str, default, **metadata) -> Field:
    """The field `name` of the dataclass `arguments` with another default, its help and
    bounds kept (or changed by `metadata`): a config that wants a different default declares
    the field again with this instead of writing its help a second time."""
    return field(default=default, metadata={**arguments.__dataclass_fields__[name].metadata, **metadata})


def config_inputs(
    config,
    names: Iterable[str] | None = None,
    exclude: Collection[str] = (),
    files: Collection[str] = (),
    later: Mapping[str, object] | None = None,
) -> dict:
    """What a stage depends on in `config` (a dataclass), the one way every recipe computes
    it: the fields `names` (None: every field) but `exclude` (where outputs go, what only an
    evaluation reads); the fields in `files` by content (`steerable.stages.file_digest`) where
    they name an existing file or directory, so one edited in place is noticed (unset, or a hub
    id, as it is); and `later`, fields added after stages were first recorded with the value
    every run had before, only where they differ from it, so a stage recorded before they
    existed still matches. The recipe adds the keys of the stages it builds on."""
    from steerable.stages import file_digest

    values, later = asdict(config), later or {}
    inputs = {}
    for name in values if names is None else names:
        value = values[name]
        if name in exclude or (name in later and value == later[name]):
            continue
        inputs[name] = file_digest(value) if name in files and value and Path(value).exists() else value
    return inputs


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


RUNGS = "rungs"  # a stage's folder of its budget ladder's saves: rungs/step-N
RUNG_FILE = "rung.json"


def check_rungs(rungs: Collection[int], max_steps: int) -> None:
    """Refuse rungs a run never reaches (beyond its last step)."""
    beyond = [step for step in rungs if step > max_steps]
    if beyond:
        raise SteerableError(
            f"--rungs {beyond} are beyond --max_steps ({max_steps}) (in a comparison: budgets.rl_steps "
            "beyond the max_steps of rl: or of the method's own section): a model is saved at its rungs on "
            "the way to its last step; lower the rungs or raise max_steps"
        )


def stage_clock(
    folder: Path, checkpoint: str | None, rungs: Collection[int] = (), counts=None, save_rung=None
):
    """A callback that counts the seconds a stage has trained, summed over resumed runs (every
    checkpoint keeps them; `carried`: those of the runs before this one), and saves the model
    being trained at each of `rungs` into folder/rungs/step-N (an adapter, or the whole model)
    beside rung.json: the step, the seconds trained so far, the tokens trained on, and what
    `counts()` adds (GRPO: its generated completions and tokens; every process calls it);
    `save_rung(model, folder)` saves a model that is not a PEFT model alone (NP-DPO's adapter and
    context encoder). These are the rungs of a budget ladder (`steerable compare`'s budgets):
    one training run, evaluated at several budgets without training again."""

    class StageClock(CheckpointedState):
        carried = 0.0  # the seconds of the runs before this one (a resume's checkpoint keeps them)

        def __init__(self):
            self.seconds, self.base, self.started = before, before, time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            self.base, self.started = self.seconds, time.perf_counter()  # restored on a resume
            type(self).carried = self.seconds

        def on_step_end(self, args, state, control, model=None, **kwargs):
            now = self.base + time.perf_counter() - self.started
            if control.should_save:  # before the checkpoint is written
                self.seconds = now
            if state.global_step not in wanted:
                return
            record = {
                "step": state.global_step,
                "seconds": now,
                "trained_tokens": int(state.num_input_tokens_seen),
            }
            record.update(counts() if counts is not None else {})
            if state.is_world_process_zero:
                from steerable.io import atomic_write_text

                target = folder / RUNGS / f"step-{state.global_step}"
                if save_rung is not None:
                    save_rung(model, target)
                else:
                    model.save_pretrained(str(target))
                atomic_write_text(target / RUNG_FILE, json.dumps(record, indent=2) + "\n")

        def state(self) -> dict:
            return {"args": {}, "attributes": {"seconds": float(self.seconds)}}

    wanted = set(rungs)
    # RungSaves: its name while it ran only with rungs (checkpoints of runs started then)
    names = ("StageClock", "RungSaves") if checkpoint is not None else ()
    saved = next(filter(None, (saved_callback_state(checkpoint, name) for name in names)), None)
    before = 0.0 if saved is None else float(saved["seconds"])
    StageClock.carried = before
    # transformers replaces a restored callback with a new instance of its class, so what the
    # stage reads at the end (`carried`) is kept on the class
    return StageClock()


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


def save_model(trainer, folder: Path, info: dict) -> None:
    """The usual save: the trainer's model (an adapter, or the whole model) into folder/weights."""
    trainer.save_model(str(folder / "weights"))


def train_stage(
    stages,
    name: str,
    inputs: dict,
    trainer_for: Callable[[Path], object],
    label: str,
    describe: Callable[[object, object], dict] | None = None,
    save: Callable[[object, Path, dict], None] = save_model,
    drop_checkpoints: bool = False,
    finish: bool = True,
    rungs: Collection[int] = (),
    counts: Callable[[], dict] | None = None,
    save_rung: Callable[[object, Path], None] | None = None,
):
    """Train one stage of `stages` (a `steerable.stages.Stages`) and finish it; returns
    (trainer, the stage's info). Every process trains (under `accelerate launch`).

    The stage is started (partial work of the same inputs kept), `trainer_for(folder)` builds
    the trainer, whose checkpoints go to folder/checkpoints, and it trains under a bar named
    `label`, resumed from the last complete checkpoint there. The info holds the steps, the
    tokens trained on (as the trainer counts them), what `describe(trainer, result)` adds, and
    the seconds; every process calls `describe`, before anything is saved, so a sum over the
    processes belongs there. `save(trainer, folder, info)` writes the weights where the stage's
    readers expect them (default: folder/weights) and may add to `info` what it measures on
    them. With `drop_checkpoints` the checkpoints are removed once the stage is marked finished:
    resuming a finished stage never happens, so they are spent. With `finish=False` the caller
    finishes the stage, adding its own record to the info. `rungs`: steps at which the model is
    also saved for a budget ladder (`stage_clock`, with `counts` and `save_rung`). The seconds count the
    training of the runs before a resume too, up to the checkpoint resumed from (`stage_clock`:
    the checkpoint keeps them; not those runs' setup, nor their steps after it), so a finished
    model never costs less than a rung on its way. The caller checks `stages.done` first."""
    started = time.perf_counter()
    folder = stages.start(name, inputs)
    trainer = trainer_for(folder)
    checkpoint = last_complete_checkpoint(folder / "checkpoints")
    clock = stage_clock(folder, checkpoint, rungs, counts, save_rung)
    trainer.add_callback(clock)
    result = stage_bar(trainer, label).train(resume_from_checkpoint=checkpoint)
    info = {"steps": trainer.state.global_step, "trained_tokens": int(trainer.state.num_input_tokens_seen)}
    info.update(describe(trainer, result) if describe is not None else {})
    save(trainer, folder, info)
    info["seconds"] = time.perf_counter() - started + clock.carried
    if not finish:
        return trainer, info
    info = stages.finish(name, inputs, info)
    if drop_checkpoints:
        from steerable.stages import is_main_process

        if is_main_process():
            shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    return trainer, info

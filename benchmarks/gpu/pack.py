"""Pack a moslim_matrix run for the trip back (at most 8 files of 16 MB): the summary, every
run's logs, level records and training logs, and the LoRA adapters in bf16 (or, for a run
stopped by the time limit, its last checkpoint's), split into 15.9 MB parts.

    python benchmarks/gpu/pack.py MATRIX_DIR OUT_DIR
    # here: cat OUT/adapters.tar.* > adapters.tar && tar xf adapters.tar
"""

import json
import sys
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PART = 15_900_000


def adapter_folder(run: Path) -> Path | None:
    """The trained adapter, or the last checkpoint saved whole (a run killed while saving
    leaves a partial one behind)."""
    from steerable.training import last_complete_checkpoint

    weights = run / "stages" / "policy" / "weights"
    if (weights / "adapter_model.safetensors").is_file():
        return weights
    checkpoint = last_complete_checkpoint(run / "stages" / "policy" / "checkpoints")
    return Path(checkpoint) if checkpoint else None


def main() -> None:
    matrix, out = Path(sys.argv[1]), Path(sys.argv[2])
    summary = matrix / "summary.json"
    if summary.is_file():
        (out / "summary.json").write_text(summary.read_text())
    with (
        tarfile.open(out / "logs.tar.gz", "w:gz") as logs,
        tarfile.open(matrix / "adapters.tar", "w") as adapters,
    ):
        for run in sorted(p for p in matrix.iterdir() if p.is_dir()):
            for name in ("train.log", "sweep.log", "levels.json", "steerable.json"):
                if (run / name).is_file():
                    logs.add(run / name, arcname=f"{run.name}/{name}")
            folder = adapter_folder(run)
            if folder is None:
                continue
            bf16 = run / "adapter.bf16.safetensors"
            try:
                tensors = load_file(folder / "adapter_model.safetensors")
            except Exception as err:  # keep the other runs' adapters
                print(f"{run.name}: no adapter packed ({err})")
                continue
            save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, bf16)
            adapters.add(bf16, arcname=f"{run.name}/adapter.bf16.safetensors")
            for name in ("adapter_config.json", "trainer_state.json", "moslim_reward_stats.json"):
                if (folder / name).is_file():
                    adapters.add(folder / name, arcname=f"{run.name}/{folder.name}/{name}")
    data = (matrix / "adapters.tar").read_bytes()
    for i in range(0, len(data), PART):
        (out / f"adapters.tar.{i // PART:02d}").write_bytes(data[i : i + PART])
    print(json.dumps(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()

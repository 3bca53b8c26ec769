"""Pieces every trainer recipe shares: the LoRA shape and the TRL arguments that depend on the
device rather than on the method."""

from __future__ import annotations

import torch


def lora_config(r: int, alpha: int, dropout: float):
    """LoRA on every linear layer of a causal LM."""
    from peft import LoraConfig

    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM"
    )


def bf16_supported() -> bool:
    """Whether this machine computes in bf16 natively: a GPU that supports it, or a CPU with
    oneDNN's bf16 kernels (AVX-512 or Arm bf16). Elsewhere bf16 autocast is emulated, and on a
    2-core CPU without AVX-512 it trained ~10x slower than fp32 (benchmarks/RESULTS.md)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def device_args() -> dict:
    """TRL config fields set by the hardware: bf16 mixed precision where it is native (on this
    project's AVX-512 CPU it trains ~1.5x faster than fp32, benchmarks/sft_throughput.py); each
    recipe sets gradient checkpointing itself."""
    return {
        "use_cpu": not torch.cuda.is_available(),
        "bf16": bf16_supported(),
        "report_to": [],
        "include_num_input_tokens_seen": "non_padding",  # trained tokens = real tokens
    }

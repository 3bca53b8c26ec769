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


def device_args() -> dict:
    """TRL config fields set by the hardware. TRL's defaults (bf16 on, gradient checkpointing
    on) train ~10x slower on a 2-core CPU (benchmarks/sft_throughput.py), so bf16 is used only
    where the GPU supports it; each recipe sets gradient checkpointing itself."""
    return {
        "use_cpu": not torch.cuda.is_available(),
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "report_to": [],
        "include_num_input_tokens_seen": "non_padding",  # trained tokens = real tokens
    }

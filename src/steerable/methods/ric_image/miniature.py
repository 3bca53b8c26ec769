"""The embedded text-to-image model, built here rather than downloaded: a diffusers pipeline
folder (model_index.json, tokenizer/, text_encoder/, unet/, scheduler/) the same loader reads
as a Stable Diffusion folder, in pixel space (16x16 grayscale digits, no VAE).

- tokenizer: a `CLIPTokenizer` (CLIP's byte-pair rules, so numbers split into single digits and
  `<rm1>` into `<`, `rm`, `1`, `>`, as Stable Diffusion's tokenizer sees RiC's tags) over a
  vocabulary built from the captions' words, the tag pieces and every character.
- text_encoder: a small `CLIPTextModel`, randomly initialised from a fixed seed and frozen, as
  Stable Diffusion's is; the UNet learns to read it.
- unet: a `UNet2DConditionModel` of about 1.7M parameters cross-attending to the text encoder.
- scheduler: DDPM with the cosine schedule, which suits small images.
"""

from __future__ import annotations

import json
from pathlib import Path

from steerable.data.digits import CLASS_NAMES, SIZE

NAME = "miniature"
MAX_TOKENS = 40  # the miniature's token budget (Stable Diffusion's is 77)
_WORDS = ("a", "handwritten", "digit", "rm", *CLASS_NAMES)
_CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789<>.-_,!?'\" "


def _vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP-style vocabulary and merges: every character alone and word-final (`x</w>`), and
    each caption word merged left to right into one token."""
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    for char in _CHARACTERS.strip():
        tokens += [char, f"{char}</w>"]
    merges = []
    for word in _WORDS:
        if len(word) < 2:
            continue
        piece = word[0]
        for i, char in enumerate(word[1:], start=1):
            char = f"{char}</w>" if i == len(word) - 1 else char
            merges.append((piece, char))
            piece += char
            tokens.append(piece)
    unique = list(dict.fromkeys(tokens))
    return {token: i for i, token in enumerate(unique)}, list(dict.fromkeys(merges))


def build_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = _vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = MAX_TOKENS
    return tokenizer


def build_miniature(directory: str | Path, seed: int = 0) -> Path:
    """Write the embedded pipeline folder to `directory` (the same weights for the same seed)."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    directory = Path(directory)
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    tokenizer.save_pretrained(directory / "tokenizer")
    text_encoder.save_pretrained(directory / "text_encoder")
    unet.save_pretrained(directory / "unet")
    scheduler.save_pretrained(directory / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_steerable": NAME,
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "vae": [None, None],
    }
    (directory / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return directory

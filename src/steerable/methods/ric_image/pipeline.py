"""A text-to-image diffusion model as RiC trains and samples it: the parts of a diffusers
pipeline folder (tokenizer, text encoder, UNet, scheduler, and a VAE when it has one), the
captions encoded by the frozen text encoder, the epsilon-prediction loss, and sampling with
classifier-free guidance.

A Stable Diffusion folder works as it is (latent space, through its VAE); the embedded
miniature (`miniature.py`) has no VAE and denoises pixels directly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steerable.errors import SteerableError


def guided(unconditional: torch.Tensor, conditional: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: eps_u + s (eps_c - eps_u); scale 1 is the conditional
    prediction, scale 0 the unconditional one (written so that both hold exactly in floats)."""
    return scale * conditional + (1 - scale) * unconditional


def check_guidance(scale: float) -> float:
    """A guidance scale is a finite number >= 0."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise SteerableError(f"guidance scale {scale!r} is not a number")
    if not np.isfinite(scale) or scale < 0:
        raise SteerableError(f"guidance scale must be a finite number >= 0, got {scale}")
    return scale


@dataclass
class DiffusionParts:
    """The parts of a text-to-image pipeline folder RiC uses."""

    tokenizer: object
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    scheduler: object
    vae: torch.nn.Module | None

    @classmethod
    def load(cls, folder: str | Path, unet: str | Path | None = None) -> DiffusionParts:
        """Read a diffusers pipeline folder (model_index.json with tokenizer, text_encoder, unet,
        scheduler and optionally vae); `unet` loads the UNet from another folder (a trained one)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        folder = Path(folder)
        index = folder / "model_index.json"
        if not index.is_file():
            raise SteerableError(
                f"{folder} is not a diffusers pipeline folder (no model_index.json); give a local "
                "Stable Diffusion folder or 'miniature'"
            )
        parts = json.loads(index.read_text())
        missing = [p for p in ("tokenizer", "text_encoder", "unet", "scheduler") if not (folder / p).is_dir()]
        if missing:
            raise SteerableError(f"{folder} lacks the pipeline part(s) {missing}")
        has_vae = parts.get("vae", [None])[0] is not None and (folder / "vae").is_dir()
        vae = AutoencoderKL.from_pretrained(folder / "vae").eval().requires_grad_(False) if has_vae else None
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder").eval().requires_grad_(False)
        return cls(
            tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
            text_encoder=text_encoder,
            unet=UNet2DConditionModel.from_pretrained(unet or folder / "unet"),
            scheduler=DDPMScheduler.from_pretrained(folder / "scheduler"),
            vae=vae,
        )

    @property
    def max_tokens(self) -> int:
        return min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)

    def token_ids(self, prompts: list[str], what: str = "prompt") -> torch.Tensor:
        """The prompts' token ids padded to the token budget, (B, T); a prompt over the budget is
        an error naming it as `what` and its number (its tags would be cut off and the model
        steered by half a request)."""
        budget = self.max_tokens
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=budget, truncation=False)
        for i, row in enumerate(ids.input_ids):
            if len(row) > budget:
                raise SteerableError(
                    f"{what} {i + 1} ({prompts[i][:50]!r}...) is {len(row)} tokens with its tags; the "
                    f"text encoder reads {budget}: shorten the caption"
                )
        return torch.tensor(ids.input_ids)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """The frozen text encoder's hidden states, (B, T, d)."""
        device = next(self.unet.parameters()).device
        return self.text_encoder(self.token_ids(prompts).to(device)).last_hidden_state

    def to(self, device) -> DiffusionParts:
        """Every part on `device` (the frozen ones too, which a trainer does not move)."""
        for module in (self.unet, self.text_encoder, self.vae):
            if module is not None:
                module.to(device)
        return self

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] to what the UNet denoises (the VAE's scaled latents, or the pixels)."""
        if self.vae is None:
            return pixels
        return self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """What the UNet denoises back to images in [-1, 1]."""
        if self.vae is None:
            return latents
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the UNet denoises."""
        config = self.unet.config
        return config.in_channels, config.sample_size, config.sample_size

    @property
    def image_size(self) -> int:
        """The side, in pixels, of the images it makes: the UNet's sample size, times the VAE's
        downsampling (2 per block after the first) where there is one."""
        side = self.unet.config.sample_size
        return side if self.vae is None else side * 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_channels(self) -> int:
        """Channels of the images it makes: RGB through a VAE, else what the UNet denoises."""
        return 3 if self.vae is not None else self.unet.config.in_channels

    @torch.no_grad()
    def sample(
        self,
        prompts: list[str],
        guidance: float = 7.5,
        steps: int = 50,
        seed: int | Sequence[int] = 0,
        batch_size: int = 64,
    ) -> list:
        """One image per prompt (PIL), by DDIM in `steps` steps with classifier-free guidance at
        `guidance` (the unconditional branch reads the empty prompt, as training dropped captions
        and tags together). `seed`: one for all (row i starts from the noise of seed + i), or one
        per prompt, so a row's image does not depend on what it is batched with."""
        from diffusers import DDIMScheduler

        guidance = check_guidance(guidance)
        if steps < 1:
            raise SteerableError(f"sampling steps must be >= 1, got {steps}")
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        device = next(self.unet.parameters()).device
        seeds = [seed + i for i in range(len(prompts))] if isinstance(seed, int) else list(seed)
        if len(seeds) != len(prompts):
            raise SteerableError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        images = []
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start : start + batch_size])
            noise = torch.cat(
                [torch.randn((1, *self.shape), generator=torch.Generator().manual_seed(s)) for s in
                 seeds[start : start + batch_size]]
            ).to(device)  # (B, C, H, W)  # fmt: skip
            condition = torch.cat([self.encode([""] * len(batch)), self.encode(batch)])  # (2B, T, d)
            scheduler.set_timesteps(steps)
            x = noise * scheduler.init_noise_sigma
            for t in scheduler.timesteps:
                both = self.unet(torch.cat([x, x]), t, condition).sample  # (2B, C, H, W)
                unconditional, conditional = both.chunk(2)
                x = scheduler.step(guided(unconditional, conditional, guidance), t, x).prev_sample
            images += to_pil(self.decode(x))
        return images


def to_pil(pixels: torch.Tensor) -> list:
    """Images in [-1, 1], (B, C, H, W), as PIL images (grayscale for one channel)."""
    from PIL import Image

    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    array = array[:, 0] if array.shape[1] == 1 else array.transpose(0, 2, 3, 1)
    return [Image.fromarray(image) for image in array]


def images_to_tensor(images: Sequence, channels: int, size: int) -> torch.Tensor:
    """PIL images (or arrays of pixels) as a (B, C, H, W) tensor in [-1, 1] at `size`."""
    from steerable.reward_models.hf_image import as_image

    mode = "L" if channels == 1 else "RGB"
    rows = []
    for i, image in enumerate(images):
        picture = as_image(image, i).convert(mode).resize((size, size))
        array = np.asarray(picture, dtype=np.float32) / 127.5 - 1
        rows.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
    return torch.tensor(np.stack(rows))

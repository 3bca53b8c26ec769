"""`ImagePolicy`: a RiC text-to-image model directory loaded for steering. A preference (or
explicit normalised targets) becomes tags appended to each caption, `caption <rm1> z1 <rm2> z2`,
and images are sampled with classifier-free guidance against the empty prompt.

Model directory (written by `steerable train ric-image`):

    steerable.json                  method ric-image, objectives with statistics, tag decimals,
                                    the default mapping, the sampling defaults (`image`)
    model_index.json, tokenizer/,   the pipeline folder the run started from (its frozen parts)
    text_encoder/, scheduler/, vae/
    unet/                           the reward-conditioned UNet (EMA weights)
    base_unet/                      the caption-only base model's UNet, the point RiC is
                                    compared against
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from steerable.conditioning import format_tags
from steerable.errors import SteerableError
from steerable.manifest import MANIFEST, MappingConfig, load_manifest
from steerable.methods.ric_image.pipeline import DiffusionParts, check_guidance
from steerable.objectives import RewardSet
from steerable.policy import TargetSteering


def tag_text(caption: str, z: Sequence[float], decimals: int = 1) -> str:
    """`caption <rm1> z1 <rm2> z2 ...`: the caption with each objective's normalised score, in
    the objectives' order, as `format_tags` writes tags."""
    return f"{caption} {format_tags({f'rm{k + 1}': value for k, value in enumerate(z)}, decimals)}"


def check_manifest(manifest, path) -> None:
    """A ric-image steerable.json's `image` entry: a finite guidance scale >= 0, a whole number of
    sampling steps >= 1, and the base model's UNet folder beside it; else one error naming the
    field."""
    image = manifest.image if isinstance(manifest.image, dict) else {}
    guidance, steps, base = image.get("guidance"), image.get("steps"), image.get("base_unet")
    fix = "re-run `steerable train ric-image` to rewrite it"
    number = isinstance(guidance, (int, float)) and not isinstance(guidance, bool)
    if not number or not math.isfinite(guidance) or guidance < 0:
        raise SteerableError(f"{path}: image.guidance must be a finite number >= 0, got {guidance!r}; {fix}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SteerableError(f"{path}: image.steps must be a whole number >= 1, got {steps!r}; {fix}")
    if not isinstance(base, str) or not (Path(path).parent / base).is_dir():
        raise SteerableError(f"{path}: image.base_unet {base!r} is not a folder beside it; {fix}")


class ImagePolicy(TargetSteering):
    """Images steered by a preference over the objectives, or by explicit targets; `base=True`
    loads the caption-only base model of the same directory instead (no tags)."""

    levels = None  # steered by targets, never by MOSLIM's levels (what a served model's card lists)

    def __init__(self, parts: DiffusionParts, manifest, directory: Path, base: bool = False,
                 trust_remote_code: bool = False):  # fmt: skip
        self.parts, self.manifest, self.directory, self.base = parts, manifest, Path(directory), base
        self.rewards = RewardSet.from_dict(
            manifest.rewards, where=MANIFEST, trust_remote_code=trust_remote_code
        )
        self.mapping = MappingConfig(**manifest.mapping)
        self.decimals = int(manifest.tags.get("decimals", 1))
        self.guidance = float(manifest.image["guidance"])
        self.steps = int(manifest.image["steps"])

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        base: bool = False,
        trust_remote_code: bool = False,
        device: str | None = None,
        parts: DiffusionParts | None = None,
    ) -> ImagePolicy:
        """Load `directory`'s tagged model (`base=True`: its caption-only base model). `parts`: a
        loaded policy's parts whose frozen ones (tokenizer, text encoder, scheduler, VAE) are
        shared, so only the UNet is read."""
        import dataclasses

        import torch
        from diffusers import UNet2DConditionModel

        directory = Path(directory)
        manifest = load_manifest(directory, method="ric-image")
        unet = directory / (manifest.image["base_unet"] if base else "unet")
        if parts is None:
            parts = DiffusionParts.load(directory, unet=unet)
            parts.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        else:
            device = device or next(parts.unet.parameters()).device
            parts = dataclasses.replace(parts, unet=UNet2DConditionModel.from_pretrained(unet).to(device))
        parts.unet.eval()
        return cls(parts, manifest, directory, base, trust_remote_code)

    @property
    def size(self) -> int:
        """The side, in pixels, of the square images it makes (the UNet's sample size, times the
        VAE's downsampling where there is one)."""
        return self.parts.image_size

    @property
    def max_steps(self) -> int:
        """The most sampling steps it can take (its scheduler's training timesteps)."""
        return int(self.parts.scheduler.config.num_train_timesteps)

    # --- steering -------------------------------------------------------------------------
    def steering_for(self, preference=None, targets=None, levels=None, mapping=None) -> dict[str, float]:
        """The normalised targets a request asks for, checked: explicit, or mapped from the
        preference (none: equal weights)."""
        if levels is not None:
            raise SteerableError(
                "levels steer MOSLIM models; steer a ric-image model with targets or weights"
            )
        if preference is not None and targets is not None:
            raise SteerableError("give one of a preference or targets")
        if targets is None:
            targets = self.targets_for(
                preference if preference is not None else [1] * len(self.names), mapping
            )
        return self.check_targets(targets)

    def request(self, steering: Mapping) -> tuple[dict, dict]:
        """A request's `steering` (weights, mapping, targets), checked: (the targets, the echo)."""
        from steerable.methods.tagged import request

        targets, _, echo = request(self, steering, key="targets")
        return targets, echo

    def prompt(self, caption: str, targets: Mapping[str, float] | None) -> str:
        """What the text encoder reads: the caption, with the tags unless this is the base model."""
        if self.base or targets is None:
            return caption
        return tag_text(caption, [targets[n] for n in self.names], self.decimals)

    def generate(
        self,
        prompts: Sequence[str],
        preference=None,
        targets: Mapping[str, float] | None = None,
        mapping: str | None = None,
        guidance: float | None = None,
        steps: int | None = None,
        seed: int | Sequence[int] = 0,
        batch_size: int = 64,
    ) -> list:
        """One image (PIL) per prompt, steered by `preference` (through `mapping`) or `targets`;
        `guidance` and `steps` default to the model's; `seed` as `DiffusionParts.sample` takes
        it (one, or one per prompt)."""
        prompts = list(prompts)
        if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
            raise SteerableError("every prompt must be non-empty text")
        steering = None if self.base else self.steering_for(preference, targets, None, mapping)
        texts = [self.prompt(p, steering) for p in prompts]
        return self.sample(texts, guidance, steps, seed, batch_size)

    def sample(self, texts: Sequence[str], guidance=None, steps=None, seed=0, batch_size: int = 64):
        """Images for prompts that already carry their tags (rows of different steering mix in
        one batch); `seed` as `DiffusionParts.sample` takes it (one, or one per row)."""
        guidance = self.guidance if guidance is None else check_guidance(guidance)
        return self.parts.sample(
            list(texts), guidance, self.steps if steps is None else steps, seed, batch_size
        )

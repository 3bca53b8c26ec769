"""RiC for text-to-image diffusion: score the training images with each objective, train a
caption-only base model, then fine-tune it on captions carrying the images' normalised scores
as tags (`caption <rm1> z1 <rm2> z2`, both dropped together for 10% of the rows, the
unconditional branch of classifier-free guidance), keeping an EMA of the UNet's weights. At
inference a preference becomes target tags (`policy.py`).

    miniature  the embedded pipeline folder, built from the seed (only with --model miniature)
    data    the images and captions (the embedded digits, or a folder of yours), scored, with
            the statistics of every objective
    base    the caption-only model: the point RiC is compared against
    tagged  the reward-conditioned fine-tune, starting from the base model's EMA weights

Each stage trains through `transformers.Trainer` (the shared `train_stage`: checkpoints,
resumption, the stage's bar), so an interrupted stage resumes from its last checkpoint, and
`accelerate launch` spreads a real Stable Diffusion folder over GPUs. The text encoder (and a
VAE) stay frozen, as in the reference.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from steerable.configs import SEED, check_config
from steerable.errors import SteerableError
from steerable.manifest import MANIFEST, MappingConfig, PolicyManifest, training_record, write_model_directory
from steerable.methods.ric_image.miniature import NAME as MINIATURE
from steerable.methods.ric_image.pipeline import DiffusionParts, check_guidance, images_to_tensor, to_pil
from steerable.methods.ric_image.policy import tag_text
from steerable.objectives import RewardSet
from steerable.scorers import check_modality
from steerable.stages import Stages, fingerprint, is_main_process, say
from steerable.training import config_inputs, device_args, last_complete_checkpoint, train_stage

DEFAULT_OBJECTIVES = (
    "recognizability=builtin:recognizability",
    "compressibility=builtin:jpeg_compressibility",
)
IMAGE_MAPPINGS = ("quantile", "linf", "l2", "linear")
PIPELINE_PARTS = ("model_index.json", "tokenizer", "text_encoder", "scheduler", "vae")


@dataclass
class RiCImageConfig:
    """Configuration of a RiC text-to-image run.

    Model and data:
        model: `miniature` (the embedded pixel-space model, built here) or a local diffusers
            pipeline folder (model_index.json, tokenizer, text_encoder, unet, scheduler, vae),
            e.g. a Stable Diffusion folder.
        data: a folder of your images with a metadata.jsonl of `file_name` and `text` (the
            caption) per image, as diffusers' own text-to-image training reads; unset: the
            embedded digits.
        copies: augmented copies of each embedded digit (stroke width, gamma and contrast,
            blur, noise), which widen the rewards' spread; ignored with `data`.
        resolution: the side images are resized to (unset: the UNet's own sample size, times
            the VAE's downsampling when there is one).
        output_dir: the model directory to write (stages go to output_dir/stages).
        objectives: image objective specs, NAME=KIND:TARGET[?opt=v] (K >= 2); their order
            numbers the tags `<rm1>`, `<rm2>`, ...

    Training (both stages):
        base_steps: optimiser steps of the caption-only base model (0: the given pipeline is the
            base, as Stable Diffusion 1.5 is the reference's).
        steps: optimiser steps of the reward-tagged fine-tune.
        batch_size: images per step.
        base_learning_rate / learning_rate: the stages' constant learning rates (the reference
            fine-tunes Stable Diffusion at 1e-5; the miniature learns from scratch, so faster).
        drop_probability: share of rows whose caption and tags are both dropped (the empty
            prompt), which teaches the unconditional prediction guidance needs.
        ema_decay: decay of the exponential moving average of the UNet's weights, which is
            what is saved and sampled.
        tag_decimals: decimals of the tag values (the reference rounds to one).
        save_steps: checkpoint every N steps (the resume point).

    Inference defaults, stored with the model:
        mapping: how a preference becomes targets: `linf` (default), `l2`, `linear` between
            the stats' lo and hi quantiles, as for language models, or `quantile` (the
            reference's: the dominant objective asks for its training maximum, each other for
            its empirical quantile at K w_i). On the miniature the maximum is a rare outlier
            the model seldom saw tagged, and linf followed the requests more closely
            (benchmarks/RESULTS.md).
        lo_quantile / hi_quantile: those lo and hi quantiles.
        guidance: classifier-free guidance scale. The reference samples Stable Diffusion at
            7.5; the miniature's images saturate and lose their digit far below that, so its
            default is lower (benchmarks/RESULTS.md compares scales).
        sampling_steps: DDIM steps per image (the reference's 50).

    seed: seeds the data's augmentations, the noise and the drops.
    """

    output_dir: str = field(default="runs/ric-image", metadata={"help": "Model directory to write."})
    model: str = field(
        default=MINIATURE, metadata={"help": "miniature, or a local diffusers pipeline folder."}
    )
    data: str | None = field(
        default=None, metadata={"help": "Folder of images + metadata.jsonl; unset = the digits."}
    )
    copies: int = field(default=6, metadata={"help": "Augmented copies per embedded digit.", "ge": 1})
    resolution: int | None = field(
        default=None, metadata={"help": "Image side (unset: the UNet's).", "ge": 8}
    )
    objectives: list[str] = field(
        default_factory=lambda: list(DEFAULT_OBJECTIVES),
        metadata={"help": "Image objective specs NAME=KIND:TARGET[?opt=v] (K >= 2)."},
    )
    base_steps: int = field(default=1200, metadata={"help": "Steps of the caption-only base.", "ge": 0})
    steps: int = field(default=2400, metadata={"help": "Steps of the reward-tagged fine-tune.", "ge": 1})
    batch_size: int = field(default=64, metadata={"help": "Images per step.", "ge": 1})
    base_learning_rate: float = field(default=1e-3, metadata={"help": "Base stage lr.", "gt": 0})
    learning_rate: float = field(default=5e-4, metadata={"help": "Tagged stage lr.", "gt": 0})
    drop_probability: float = field(
        default=0.1, metadata={"help": "Share of rows with caption and tags dropped.", "ge": 0, "lt": 1}
    )
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay of the UNet.", "ge": 0, "lt": 1})
    tag_decimals: int = field(default=1, metadata={"help": "Decimals of tag values.", "ge": 0, "le": 4})
    save_steps: int = field(default=200, metadata={"help": "Checkpoint every N steps.", "ge": 1})
    mapping: str = field(
        default="linf", metadata={"help": "Default preference mapping.", "choices": IMAGE_MAPPINGS}
    )
    lo_quantile: float = field(default=0.05, metadata={"help": "lo target quantile.", "ge": 0, "le": 1})
    hi_quantile: float = field(default=0.95, metadata={"help": "hi target quantile.", "ge": 0, "le": 1})
    guidance: float = field(default=2.0, metadata={"help": "Classifier-free guidance scale.", "ge": 0})
    sampling_steps: int = field(default=50, metadata={"help": "DDIM steps per image.", "ge": 1})
    seed: int = field(default=0, metadata={"help": "Random seed.", **SEED})

    def __post_init__(self):
        check_config(self)
        if len(self.objectives) < 2:
            raise SteerableError("RiC needs at least two objectives (--objectives a=... b=...)")
        check_guidance(self.guidance)
        if not 0 <= self.lo_quantile < self.hi_quantile <= 1:
            raise SteerableError("need 0 <= lo_quantile < hi_quantile <= 1")
        if self.model != MINIATURE:
            self.model = str(Path(self.model).resolve())
            if not (Path(self.model) / "model_index.json").is_file():
                raise SteerableError(
                    f"--model {self.model}: not a diffusers pipeline folder (no model_index.json); "
                    f"give a local Stable Diffusion folder or '{MINIATURE}'"
                )
        if self.data is not None:
            self.data = str(Path(self.data).resolve())
        self.objectives = [str(o.spec) for o in RewardSet.from_specs(self.objectives).objectives]
        check_modality(self.objectives, "image", "train ric-image")


# --- pure pieces (tested directly) -------------------------------------------------------------
def drop_rows(rows: Sequence, probability: float, generator: torch.Generator | None = None, empty="") -> list:
    """Each row replaced by `empty` (the empty prompt, or its token ids) with `probability`:
    caption and tags go together, so the model also learns the unconditional prediction of
    classifier-free guidance."""
    keep = torch.rand(len(rows), generator=generator) >= probability
    return [row if kept else empty for row, kept in zip(rows, keep.tolist(), strict=True)]


# --- the model trained by transformers.Trainer --------------------------------------------------
class DenoisingLoss(torch.nn.Module):
    """The UNet with what the epsilon-MSE loss needs: the captions dropped with `drop_probability`,
    a random timestep per image, the noised image, the frozen text encoder's reading of the
    captions. Its `forward` is what `transformers.Trainer` calls with each batch. Every random
    draw happens here, not in the data collator: the trainer restores the random state of a
    checkpoint only after fetching the first batch of a resumed run, so a drop drawn while
    collating would differ from the uninterrupted run's."""

    def __init__(self, parts: DiffusionParts, drop_probability: float):
        super().__init__()
        self.unet = parts.unet
        self.parts = parts  # the frozen parts, outside the trained modules (the trainer moves the UNet only)
        self.empty = parts.token_ids([""])[0]  # (T,) the empty prompt a dropped row reads
        self.timesteps = parts.scheduler.config.num_train_timesteps
        self.drop_probability = drop_probability

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> dict:
        device = pixel_values.device
        if self.parts.text_encoder.device != device:  # once: the frozen parts join the UNet
            self.parts.to(device)
        input_ids = torch.stack(drop_rows(input_ids.cpu(), self.drop_probability, empty=self.empty))  # (B, T)
        latents = self.parts.encode_images(pixel_values)  # (B, C, H, W)
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.timesteps, (len(latents),), device=latents.device)
        noisy = self.parts.scheduler.add_noise(latents, noise, t)
        with torch.no_grad():
            hidden = self.parts.text_encoder(input_ids.to(device)).last_hidden_state  # (B, T, d)
        prediction = self.unet(noisy, t, hidden).sample
        if self.parts.scheduler.config.prediction_type == "v_prediction":
            target = self.parts.scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        return {"loss": torch.nn.functional.mse_loss(prediction.float(), target.float())}


class EMA(TrainerCallback):
    """The EMA of the UNet's weights (diffusers' `EMAModel`), updated after every optimiser
    step and saved as ema.pt in every checkpoint, so a resumed stage continues the same average."""

    def __init__(self, unet: torch.nn.Module, decay: float, checkpoint: str | None):
        from diffusers.training_utils import EMAModel

        self.ema = EMAModel(unet.parameters(), decay=decay, use_ema_warmup=True, power=3 / 4)
        if checkpoint is not None:
            self.ema.load_state_dict(torch.load(Path(checkpoint) / "ema.pt", weights_only=True))
        self.unet = unet

    def on_train_begin(self, args, state, control, **kwargs):
        self.ema.to(next(self.unet.parameters()).device)  # where the trainer put the UNet

    def on_step_end(self, args, state, control, **kwargs):
        self.ema.step(self.unet.parameters())

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero:
            torch.save(self.ema.state_dict(), folder / "ema.pt")

    def averaged(self) -> torch.nn.Module:
        """A copy of the UNet holding the averaged weights."""
        import copy

        unet = copy.deepcopy(self.unet)
        self.ema.copy_to(unet.parameters())
        return unet


class ImageRows(torch.utils.data.Dataset):
    """The training rows: each image (PIL, or an array of pixels) made a tensor only when the
    loader asks for it, and its text's token ids, tokenised once."""

    def __init__(self, images: list, input_ids: torch.Tensor, channels: int, side: int):
        self.images, self.input_ids, self.channels, self.side = images, input_ids, channels, side

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        pixels = images_to_tensor([self.images[i]], self.channels, self.side)[0]  # (C, H, W)
        return {"pixel_values": pixels, "input_ids": self.input_ids[i]}


def _collate(rows: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([r["pixel_values"] for r in rows]),  # (B, C, H, W)
        "input_ids": torch.stack([r["input_ids"] for r in rows]),  # (B, T)
    }


def train_unet(
    parts: DiffusionParts,
    rows: ImageRows,
    config: RiCImageConfig,
    stages: Stages,
    name: str,
    inputs: dict,
    steps: int,
    learning_rate: float,
) -> dict:
    """One stage: `steps` steps of the epsilon loss on `rows`, then the EMA UNet saved to
    STAGE/unet."""
    from transformers import Trainer, TrainingArguments

    holder = {}

    def trainer_for(folder: Path):
        checkpoint = last_complete_checkpoint(folder / "checkpoints")
        while checkpoint is not None and not (Path(checkpoint) / "ema.pt").is_file():
            # stopped between the trainer's save and the average's: an older one, or start over
            shutil.rmtree(checkpoint)
            checkpoint = last_complete_checkpoint(folder / "checkpoints")
        ema = EMA(parts.unet, config.ema_decay, checkpoint)
        holder["ema"] = ema
        args = TrainingArguments(
            output_dir=str(folder / "checkpoints"),
            max_steps=steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            weight_decay=1e-2,
            max_grad_norm=1.0,
            seed=config.seed,
            remove_unused_columns=False,
            dataloader_drop_last=True,
            logging_steps=10,
            save_strategy="steps",
            save_steps=config.save_steps,
            save_total_limit=2,  # ema.pt joins a checkpoint after the trainer rotated the older one
            **{k: v for k, v in device_args().items() if k != "include_num_input_tokens_seen"},
        )
        trainer = Trainer(
            model=DenoisingLoss(parts, config.drop_probability),
            args=args,
            train_dataset=rows,
            data_collator=_collate,
        )
        trainer.add_callback(ema)
        return trainer

    def save(trainer, folder: Path, info: dict) -> None:
        if is_main_process():
            holder["ema"].averaged().save_pretrained(folder / "unet")
        info["images"] = int(trainer.state.global_step * config.batch_size)

    _, info = train_stage(
        stages, name, inputs, trainer_for, f"train ric-image: {name}", save=save, drop_checkpoints=True
    )
    return info


# --- the recipe -----------------------------------------------------------------------------
def source_folder(config: RiCImageConfig, stages: Stages) -> Path:
    """The pipeline folder training starts from: the user's, or the miniature built from the
    seed (the `miniature` stage)."""
    if config.model != MINIATURE:
        return Path(config.model)
    from steerable.methods.ric_image.miniature import build_miniature

    def build(folder: Path) -> dict:
        build_miniature(folder, seed=config.seed)
        return {"seed": config.seed}

    stages.run("miniature", {"seed": config.seed}, build)
    return stages.path("miniature")


def load_images(config: RiCImageConfig) -> tuple[list, list[str], str]:
    """The training images (PIL, or uint8 arrays of pixels), their captions, and where they came
    from."""
    if config.data is None:
        from steerable.data.digits import digit_images

        images, captions = digit_images("train", copies=config.copies, seed=config.seed)
        return list(images), captions, f"embedded digits, {config.copies} copies"
    from steerable.data.images import load_image_folder

    images, captions = load_image_folder(config.data)
    return images, captions, config.data


def score_data(
    images: list, captions: list[str], origin: str, config, folder: Path, channels: int, side: int
) -> dict:
    """The `data` stage: every training image scored with every objective, as the model sees it
    (`channels` at `side` pixels: a folder's images may differ in size); the statistics fitted."""
    started = time.perf_counter()
    rewards = RewardSet.from_specs(config.objectives)
    seen = [to_pil(images_to_tensor(images[i : i + 256], channels, side)) for i in range(0, len(images), 256)]
    raw = rewards.score(captions, [image for batch in seen for image in batch], progress=True)
    flat = [o.name for k, o in enumerate(rewards.objectives) if np.ptp(raw[:, k]) == 0]
    if flat:
        raise SteerableError(
            f"objective(s) {flat} give every training image the same score (zero spread): their "
            "tags would carry nothing to learn; choose objectives that vary over your images"
        )
    rewards.fit_stats(raw)
    np.save(folder / "scores.npy", raw)
    rewards.save(folder / "stats.json")
    return {"images": len(images), "origin": origin, "seconds": time.perf_counter() - started}


def train_ric_image(config: RiCImageConfig) -> Path:
    """Run (or resume) the recipe; returns the model directory (steerable.json written last)."""
    out = Path(config.output_dir)
    stages = Stages(out, "train ric-image")
    # what the images are (the base stage reads nothing else of the data)
    images_key = config_inputs(
        config, ["model", "data", *(["copies"] if config.data is None else []), "resolution", "seed"],
        files=["data"],
    )  # fmt: skip
    data_inputs = {**images_key, **config_inputs(config, ["objectives"])}
    base_inputs = {
        **images_key,
        **config_inputs(config, ["base_steps", "batch_size", "base_learning_rate", "drop_probability",
                                 "ema_decay"]),
    }  # fmt: skip
    tagged_inputs = {
        **config_inputs(config, ["steps", "batch_size", "learning_rate", "drop_probability", "ema_decay",
                                 "tag_decimals"]),
        "base": fingerprint(base_inputs),
        "data": fingerprint(data_inputs),
    }  # fmt: skip
    plan = {"data": data_inputs, "base": base_inputs, "tagged": tagged_inputs}
    for name, inputs in plan.items():
        stages.done(name, inputs)  # a stale stage is refused before any work
    source = source_folder(config, stages)
    parts = DiffusionParts.load(source)
    side, channels = config.resolution or parts.image_size, parts.image_channels
    images, captions, origin = load_images(config)
    caption_ids = parts.token_ids(
        captions, what="training row"
    )  # (N, T) every caption within the budget, before any work
    infos = {
        "data": stages.run(
            "data",
            data_inputs,
            lambda folder: score_data(images, captions, origin, config, folder, channels, side),
        )
    }
    rewards = RewardSet.from_specs(config.objectives)
    fitted = RewardSet.load(stages.path("data") / "stats.json")
    for objective, stats in zip(rewards.objectives, fitted.objectives, strict=True):
        objective.stats = stats.stats
    z = rewards.normalise(np.load(stages.path("data") / "scores.npy"))  # (N, K)
    texts = [tag_text(c, row, config.tag_decimals) for c, row in zip(captions, z, strict=True)]
    tagged_ids = parts.token_ids(
        texts, what="training row"
    )  # (N, T) the tags within the budget too, before training
    torch.manual_seed(config.seed)

    # the caption-only base model
    if config.base_steps == 0:
        base_unet = Path(source) / "unet"
        infos["base"] = stages.run("base", base_inputs, lambda folder: {"steps": 0, "seconds": 0.0})
    else:
        infos["base"] = stages.done("base", base_inputs) or train_unet(
            parts, ImageRows(images, caption_ids, channels, side), config, stages, "base", base_inputs,
            config.base_steps, config.base_learning_rate,
        )  # fmt: skip
        base_unet = stages.path("base") / "unet"

    # the reward-tagged fine-tune, from the base model's averaged weights
    parts = DiffusionParts.load(source, unet=base_unet)
    infos["tagged"] = stages.done("tagged", tagged_inputs) or train_unet(
        parts, ImageRows(images, tagged_ids, channels, side), config, stages, "tagged", tagged_inputs,
        config.steps, config.learning_rate,
    )  # fmt: skip
    return write_image_model(out, source, base_unet, stages.path("tagged") / "unet", config, rewards, infos,
                             {n: fingerprint(i) for n, i in plan.items()})  # fmt: skip


def write_image_model(
    out: Path, source: Path, base_unet: Path, unet: Path, config, rewards, infos, keys
) -> Path:
    """The model directory: a pipeline folder (the source's frozen parts, the tagged UNet) with
    the base model's UNet beside it in base_unet/, and steerable.json last (removed first, so an
    interrupted rewrite leaves an unfinished directory, never a finished one with mixed parts)."""
    if is_main_process():
        (out / MANIFEST).unlink(missing_ok=True)
        for part in PIPELINE_PARTS:
            target = out / part
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            if (source / part).is_dir():
                shutil.copytree(source / part, target)
            elif (source / part).is_file():
                shutil.copy(source / part, target)
        for name, folder in (("unet", unet), ("base_unet", base_unet)):
            shutil.rmtree(out / name, ignore_errors=True)
            shutil.copytree(folder, out / name)
    manifest = PolicyManifest(
        method="ric-image",
        base_model=config.model,
        rewards=rewards.to_dict(),
        tags={"decimals": config.tag_decimals},  # after the caption, always
        mapping=asdict(MappingConfig(config.mapping, config.lo_quantile, config.hi_quantile)),
        weights="model",
        image={"guidance": config.guidance, "steps": config.sampling_steps, "base_unet": "base_unet"},
        training=training_record(config, keys, infos),
    )
    say(f"ric-image model written to {out}")
    return write_model_directory(out, manifest)

"""Hugging Face image models as rewards: how every image scorer reads its images (`as_images`),
and `HFImageScorer`, the batched scorer behind `hf:` objectives that score images
(``NAME=hf:MODEL?input=image`` or ``?input=clip``).

An image is a PIL image, a uint8 array of pixel values (H, W) or (H, W, C), or a float array of
those shapes in [0, 1]. One batch holds images of one size: a mixed batch is a mistake upstream.

    input=image  an image classifier (`AutoModelForImageClassification`): the score is the
                 logit or the probability of label `index`
    input=clip   a CLIP-style model (`AutoModel` whose output has `logits_per_image`, as
                 `CLIPModel`'s): the score is CLIP's logit of the image against its prompt,
                 cosine(image, text) x exp(logit_scale)

Options (in the spec's ``?opt=value`` part):
    index       input=image only: which label is the reward (default 0)
    score       input=image only: probability (default; softmax over the labels) or logit
    batch_size  images per forward pass (default 16)
    device      cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)
    dtype       float32 (default), bfloat16 or float16
    trust_remote_code
                true runs modelling code that comes with the model (default false)

Images are prepared by the image processor saved with the model (`AutoImageProcessor`); a model
saved without one gets its images resized to the config's `image_size`, with pixels in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from steerable.defaults import DTYPE_NAMES, resolve_model, torch_dtype
from steerable.errors import SteerableError, first_line
from steerable.reward_models.hf import IMAGE_INPUTS, check_options, scorer_device

_IMAGE_HELP = "give a PIL image, or an (H, W) or (H, W, C) array: uint8 pixels or floats in [0, 1]"


def as_image(image, row: int):
    """`image` as a PIL image; anything that is not one (or an array of pixels) is an error
    naming the row."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    try:
        array = np.asarray(image)
    except (TypeError, ValueError):  # e.g. ragged nested lists
        array = np.asarray(None)
    shaped = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not shaped or array.dtype.kind not in "uf" or (array.dtype.kind == "u" and array.dtype != np.uint8):
        what = f"shape {array.shape}, dtype {array.dtype}" if hasattr(image, "shape") else repr(image)[:40]
        raise SteerableError(
            f"row {row + 1}: an image scorer was given {type(image).__name__} ({what}), not an image; "
            + _IMAGE_HELP
        )
    if array.dtype != np.uint8:
        array = np.clip(np.round(array * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)


def as_images(images: Sequence) -> list:
    """Every image as a PIL image (errors name the row), all of one size."""
    pictures = [as_image(image, i) for i, image in enumerate(images)]
    sizes = sorted({p.size for p in pictures})
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sizes)
        raise SteerableError(
            f"an image scorer was given images of different sizes ({shown}); score one size at a time"
        )
    return pictures


SCORES = ("probability", "logit")
_COMMON = {
    "input": IMAGE_INPUTS,
    "dtype": DTYPE_NAMES,
    "trust_remote_code": ("true", "false"),
    "device": None,
}


def check_image_options(options: dict[str, str], origin: object) -> None:
    """An image hf: spec's options (which depend on `input`), else one line naming the bad one."""
    if options["input"] == "image":
        choices, integers = {**_COMMON, "score": SCORES}, {"index": 0, "batch_size": 1}
    else:
        choices, integers = _COMMON, {"batch_size": 1}
    check_options(f"hf input={options['input']}", options, origin, choices, integers)


def _load(model_id: str, options: dict[str, str]):
    """(model, image processor or None, tokenizer or None) of an image hf: scorer."""
    from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoTokenizer

    path = resolve_model(model_id)
    clip = options["input"] == "clip"
    trust = options.get("trust_remote_code") == "true"
    kind = "a CLIP-style model" if clip else "an image classifier (AutoModelForImageClassification)"
    try:
        model = (AutoModel if clip else AutoModelForImageClassification).from_pretrained(
            path, dtype=torch_dtype(options.get("dtype", "float32")), trust_remote_code=trust
        )
        if clip and not hasattr(model, "logit_scale"):
            raise SteerableError(
                f"hf scorer {model_id!r}: input=clip, but {type(model).__name__} is not a CLIP-style "
                "model (it has no logit_scale); give a CLIPModel directory, or input=image for a classifier"
            )
        saved = Path(path).is_dir() and (Path(path) / "preprocessor_config.json").is_file()
        processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust) if saved else None
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust) if clip else None
    except (OSError, ValueError) as err:
        raise SteerableError(
            f"hf scorer {model_id!r} could not be loaded as {kind} ({first_line(err)}); give a model "
            "directory (with config.json, weights"
            + (" and a tokenizer" if clip else "")
            + ") or a hub id that is in the local cache"
        )
    return model, processor, tokenizer


@dataclass
class HFImageScorer:
    """An image classifier or CLIP-style model used as a reward: one float per (prompt, image)."""

    model: torch.nn.Module
    processor: object | None  # an image processor; None: resize to `image_size`, pixels in [0, 1]
    tokenizer: object | None  # input=clip: reads the prompts
    input: str = "image"
    index: int = 0
    score: str = "probability"
    batch_size: int = 16

    @classmethod
    def from_options(cls, model_id: str, options: dict[str, str]) -> HFImageScorer:
        check_image_options(options, model_id)
        device = scorer_device(options, model_id)
        model, processor, tokenizer = _load(model_id, options)
        index = int(options.get("index", 0))
        if options["input"] == "image" and index >= model.config.num_labels:
            raise SteerableError(
                f"hf scorer {model_id!r}: index {index}, but the classifier has "
                f"{model.config.num_labels} labels"
            )
        vision = getattr(model.config, "vision_config", model.config)
        if processor is None and not getattr(vision, "image_size", None):
            raise SteerableError(
                f"hf scorer {model_id!r} has no image processor (preprocessor_config.json) and its config "
                "no image_size; save the model's image processor beside it with save_pretrained"
            )
        return cls(
            model=model.to(device).eval(),
            processor=processor,
            tokenizer=tokenizer,
            input=options["input"],
            index=index,
            score=options.get("score", "probability"),
            batch_size=int(options.get("batch_size", 16)),
        )

    def _pixels(self, pictures: list) -> torch.Tensor:
        vision = getattr(self.model.config, "vision_config", self.model.config)
        mode = "L" if getattr(vision, "num_channels", 3) == 1 else "RGB"
        pictures = [p.convert(mode) for p in pictures]
        if self.processor is not None:
            return self.processor(images=pictures, return_tensors="pt")["pixel_values"]
        side = vision.image_size
        arrays = [np.asarray(p.resize((side, side)), dtype=np.float32) / 255.0 for p in pictures]
        pixels = torch.from_numpy(np.stack(arrays))  # (B, H, W) or (B, H, W, C)
        return pixels[:, None] if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)  # (B, C, H, W)

    def _max_tokens(self) -> int:
        """The longest prompt the text tower reads (longer ones lose their end, as in CLIP)."""
        positions = self.model.config.text_config.max_position_embeddings
        return min(self.tokenizer.model_max_length, positions)

    @torch.inference_mode()
    def __call__(self, prompts: list[str], images: list) -> list[float]:
        pictures = as_images(images)
        device, dtype = self.model.device, self.model.dtype
        scores: list[float] = []
        for start in range(0, len(pictures), self.batch_size):
            stop = start + self.batch_size
            pixels = self._pixels(pictures[start:stop]).to(device, dtype)
            if self.input == "clip":
                text = self.tokenizer(
                    list(prompts[start:stop]),
                    padding=True,
                    truncation=True,
                    max_length=self._max_tokens(),
                    return_tensors="pt",
                )
                output = self.model(pixel_values=pixels, **{k: v.to(device) for k, v in text.items()})
                values = output.logits_per_image.diagonal()  # (B,): each image against its own prompt
            else:
                logits = self.model(pixel_values=pixels).logits.float()  # (B, labels)
                chosen = logits.softmax(-1) if self.score == "probability" else logits
                values = chosen[:, self.index]
            scores += values.float().tolist()
        return scores

"""The embedded image task: scikit-learn's bundled handwritten digits (1,797 8x8 images, no
download), upsampled to 16x16 and captioned "a handwritten digit seven".

`digit_images` draws augmented copies (stroke width, gamma and contrast, blur, noise) so that
the image rewards (recognizability, compressibility, brightness) spread widely and pull
against each other: a faint or blurred digit compresses well and is hard to recognise.

The digits are split once, by a fixed permutation, into `train` (what a model learns from)
and `heldout` (what the recognizability classifier is fitted on, never trained on by a
policy), so the reward is not judged by a classifier that saw the training images.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from steerable.errors import SteerableError

SIZE = 16  # pixels per side
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SPLITS = ("train", "heldout")
HELDOUT_FRACTION = 0.3
_CAPTION = re.compile(r"\bdigit (" + "|".join(CLASS_NAMES) + r")\b")


def caption(label: int) -> str:
    """The caption of digit `label`: "a handwritten digit seven"."""
    return f"a handwritten digit {CLASS_NAMES[label]}"


def label_of(text: str) -> int | None:
    """The digit a caption (or a prompt holding one) names, None when it names none."""
    found = _CAPTION.search(text.lower())
    return None if found is None else CLASS_NAMES.index(found.group(1))


@cache
def _upsampled() -> tuple[np.ndarray, np.ndarray]:
    """Every digit at 16x16 in [0, 1] (bilinear upsampling of the 8x8 originals), and labels."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]  # (N, 1, 8, 8)
    big = torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return big[:, 0].clamp(0, 1).numpy(), digits.target.astype(int)


def split_indices(split: str) -> np.ndarray:
    """The digits of `split` (a fixed permutation, the same on every machine)."""
    if split not in SPLITS:
        raise SteerableError(f"digit split {split!r} unknown; choose from {SPLITS}")
    count = len(_upsampled()[1])
    order = np.random.default_rng(0).permutation(count)
    cut = int(count * HELDOUT_FRACTION)
    return np.sort(order[cut:] if split == "train" else order[:cut])


def clean_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The unaugmented 16x16 digits of `split` in [0, 1], (N, 16, 16), and their labels."""
    images, labels = _upsampled()
    index = split_indices(split)
    return images[index], labels[index]


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image with its own random stroke width, gamma, contrast, blur and noise, in [0, 1]."""
    import torch

    x = torch.tensor(images, dtype=torch.float32)[:, None]  # (N, 1, 16, 16)
    n = len(images)
    stroke = rng.integers(0, 3, n)  # 0 thinner, 1 as drawn, 2 thicker
    thick = torch.nn.functional.max_pool2d(x, 3, 1, 1)
    thin = -torch.nn.functional.max_pool2d(-x, 3, 1, 1)
    pick = torch.tensor(stroke)[:, None, None, None]
    x = torch.where(pick == 2, thick, torch.where(pick == 0, 0.5 * (x + thin), x))
    blurred = rng.random(n) < 0.4
    if blurred.any():
        kernel = torch.tensor([1.0, 2.0, 1.0])
        kernel = (kernel[:, None] * kernel[None, :] / 16)[None, None]
        soft = torch.nn.functional.conv2d(x, kernel, padding=1)
        soft = torch.nn.functional.conv2d(soft, kernel, padding=1)
        x = torch.where(torch.tensor(blurred)[:, None, None, None], soft, x)
    gamma = torch.tensor(np.exp(rng.uniform(np.log(0.5), np.log(2.0), n)), dtype=torch.float32)
    contrast = torch.tensor(rng.uniform(0.2, 1.0, n), dtype=torch.float32)
    x = x.clamp(0, 1) ** gamma[:, None, None, None] * contrast[:, None, None, None]
    noisy = torch.tensor(rng.random(n) < 0.2)[:, None, None, None]
    noise = (
        torch.tensor(rng.normal(0, 1, x.shape), dtype=torch.float32)
        * torch.tensor(rng.uniform(0.01, 0.05, n), dtype=torch.float32)[:, None, None, None]
    )
    x = torch.where(noisy, x + noise, x)
    return x[:, 0].clamp(0, 1).numpy()


def digit_images(split: str = "train", copies: int = 4, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """`copies` augmented versions of every digit of `split` as uint8 images (N, 16, 16) with
    their captions; the same `seed` gives the same images."""
    if copies < 1:
        raise SteerableError(f"copies must be >= 1, got {copies}")
    images, labels = clean_digits(split)
    rng = np.random.default_rng(seed)
    out = np.concatenate([augment(images, rng) for _ in range(copies)])
    captions = [caption(int(label)) for label in np.tile(labels, copies)]
    return np.round(out * 255).astype(np.uint8), captions


def to_pil(images: np.ndarray) -> list:
    """uint8 arrays (N, H, W) as grayscale PIL images."""
    from PIL import Image

    return [Image.fromarray(image) for image in images]

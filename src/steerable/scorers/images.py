"""Built-in image scorers: `(prompts, images) -> one float per image`, batched, offline. An
image is a PIL image (what `steerable.methods.ric_image` generates) or an array of pixels
(`steerable.reward_models.hf_image.as_images` says which); higher is always "more of it".

    jpeg_compressibility  minus the JPEG size in kilobytes after resizing to 512x512 and saving
                          at quality 95 (RiC's compressibility)
    brightness            mean pixel value, in [0, 1]
    contrast              standard deviation of the pixel values, in [0, 1]
    recognizability       probability of the digit the prompt names ("a handwritten digit seven")
                          under a classifier fitted on the held-out digits
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache

import numpy as np

from steerable.errors import SteerableError


def pictures_of(images: Sequence) -> list:
    """The images as PIL images of one size, else one error naming the row or the sizes
    (`as_images`, imported only when scoring, so that reading a spec does not import torch)."""
    from steerable.reward_models.hf_image import as_images

    return as_images(images)


def gray_pixels(images: Sequence, size: int | None = None) -> np.ndarray:
    """The images as grayscale floats in [0, 1] (resized to `size` x `size` when given), one row
    of pixels per image: (N, H*W)."""
    pictures = [p.convert("L") for p in pictures_of(images)]
    if size is not None:
        pictures = [p.resize((size, size)) for p in pictures]
    if not pictures:
        return np.zeros((0, 1), dtype=np.float32)
    return np.stack([np.asarray(p, dtype=np.float32).ravel() / 255.0 for p in pictures])


def _jpeg_compressibility(size: str = "512", quality: str = "95"):
    side, level = int(size), int(quality)

    def score(prompts: list[str], images: list) -> list[float]:
        kilobytes = []
        for image in pictures_of(images):
            if image.mode not in ("RGB", "L"):  # JPEG has no alpha or palette
                image = image.convert("RGB")
            buffer = io.BytesIO()
            image.resize((side, side)).save(buffer, "JPEG", quality=level)
            kilobytes.append(-buffer.tell() / 1000.0)
        return kilobytes

    return score


def _brightness():
    return lambda prompts, images: gray_pixels(images).mean(axis=1).tolist()


def _contrast():
    return lambda prompts, images: gray_pixels(images).std(axis=1).tolist()


@cache
def digit_classifier():
    """Logistic regression on the held-out digits (16x16, lightly augmented copies, so a faint
    or blurred digit gets a lower, not a random, probability); fitted once per process."""
    from sklearn.linear_model import LogisticRegression

    from steerable.data.digits import digit_images, label_of

    images, captions = digit_images("heldout", copies=4, seed=1)
    labels = [label_of(c) for c in captions]
    model = LogisticRegression(C=0.05, max_iter=2000)
    model.fit(images.reshape(len(images), -1) / 255.0, labels)
    return model


def _recognizability():
    from steerable.data.digits import SIZE, label_of

    def score(prompts: list[str], images: list) -> list[float]:
        labels = []
        for i, prompt in enumerate(prompts):
            label = label_of(prompt)
            if label is None:
                raise SteerableError(
                    f"row {i + 1}: recognizability needs a prompt naming a digit "
                    f"('a handwritten digit seven'), got {prompt[:60]!r}"
                )
            labels.append(label)
        if not labels:
            return []
        probabilities = digit_classifier().predict_proba(gray_pixels(images, SIZE))  # (N, 10)
        return probabilities[np.arange(len(labels)), labels].tolist()

    return score


# name -> (factory, allowed options, one-line description), merged into the built-in table
IMAGE_BUILTINS = {
    "jpeg_compressibility": (
        _jpeg_compressibility,
        ("size", "quality"),
        "minus the JPEG kilobytes at 512x512, quality 95 (RiC's compressibility)",
    ),
    "brightness": (_brightness, (), "mean pixel value of the image, in [0, 1]"),
    "contrast": (_contrast, (), "standard deviation of the image's pixel values"),
    "recognizability": (
        _recognizability,
        (),
        "probability of the digit the prompt names, under a classifier of held-out digits",
    ),
}

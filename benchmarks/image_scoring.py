"""Batched image scoring against one image at a time (the reference scores each generated
image in a Python loop), in one run: the same augmented digits scored by each default image
objective both ways; the scores must agree.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/image_scoring.py [--images 1024]

Prints images/s each way and the ratio, per objective.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from steerable.data.digits import digit_images, to_pil
from steerable.objectives import RewardSet

SPECS = (
    "recognizability=builtin:recognizability",
    "compressibility=builtin:jpeg_compressibility",
    "brightness=builtin:brightness",
)


def main() -> None:
    images, captions = digit_images("train", copies=2, seed=3)
    images, captions = to_pil(images[: ARGS.images]), captions[: ARGS.images]
    print(f"{len(images)} images of {images[0].size[0]}x{images[0].size[1]}")
    print("| objective | batched images/s | one at a time images/s | batched vs one at a time |")
    print("|---|---|---|---|")
    for spec in SPECS:
        objective = RewardSet.from_specs([spec]).objectives[0]
        objective.score(captions[:8], images[:8])  # build and warm the scorer
        started = time.perf_counter()
        batched = objective.score(captions, images)
        batched_s = time.perf_counter() - started
        started = time.perf_counter()
        single = np.concatenate([objective.score([c], [i]) for c, i in zip(captions, images, strict=True)])
        single_s = time.perf_counter() - started
        assert np.allclose(batched, single, atol=1e-6), spec
        rate, one = len(images) / batched_s, len(images) / single_s
        print(f"| {objective.name} | {rate:.0f} | {one:.0f} | {rate / one:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024)
    ARGS = parser.parse_args()
    main()

"""What an evaluation of an image method keeps of its images, a handful per point, never all of
them: a grid PNG per point in the output folder (prompts as rows, samples as columns) and a
small thumbnail embedded in the result, which the front plot draws at the point it came from.

Every point's images are sampled from the same seeds on the same prompts, so the same cell of
two points' grids differs by the steering alone. `generate` and the server draw their grids and
score their images with the same pieces (`readable_grid`, `image_scores`).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.io import atomic_write

GRID_ROWS = 10  # prompts shown in a point's grid (spread over the prompts)
GRID_COLUMNS = 8  # samples of each prompt shown
GRID_PIXELS = 64  # smaller images are enlarged to about this side in a grid, to be seen
GRID_LARGEST = 256  # larger ones are shrunk to this side in a grid
THUMBNAIL_IMAGES = 4  # a 2x2 thumbnail
THUMBNAIL_PIXELS = 48  # an image's longer side in a thumbnail (smaller images are kept as they are)
IMAGE_FOLDER = "images"
# an interactive evaluation of more UNet passes asks first (`ImagePlan.long`): e.g. 1,000 images
# of 50 guided steps, a long run for a Stable Diffusion UNet
ASK_ABOVE_UNET_PASSES = 100_000


@dataclass
class ImagePlan:
    """What an evaluation of an image method will make, said before it starts (as `cost.Plan`
    says a text method's answers): `images` images (`what`: where the count comes from), each of
    `steps` denoising steps, two UNet passes a step (classifier-free guidance: the caption and
    the empty prompt)."""

    images: int
    steps: int
    what: str
    note: str | None = None

    @property
    def unet_passes(self) -> int:
        return self.images * self.steps * 2

    def line(self) -> str:
        return (
            f"this run makes {self.images:,} images ({self.what}) of {self.steps} denoising steps each: "
            f"{self.unet_passes:,} UNet passes (2 a step, for classifier-free guidance)"
        )

    @property
    def long(self) -> bool:
        return self.unet_passes > ASK_ABOVE_UNET_PASSES


def spread(count: int, keep: int) -> list[int]:
    """At most `keep` of range(count), evenly spread from the first to the last."""
    return sorted({int(i) for i in np.linspace(0, count - 1, min(count, keep)).round()})


def picked(prompts: int, samples: int, keep: int) -> list[int]:
    """Indices into a point's images (each prompt's `samples` in a row, as the sweep asks for
    them) of `keep` images: the first sample of prompts spread over the set, then their second
    samples, and so on, so a thumbnail shows as many prompts as it can."""
    chosen = spread(prompts, keep)
    order = [p * samples + s for s in range(samples) for p in chosen]
    return order[:keep]


def image_grid(rows: Sequence[Sequence], scale: int = 1):
    """PIL images (all one size and mode) pasted row by row into one image, 1 px of gray apart,
    each enlarged `scale` times (pixels repeated, not smoothed)."""
    from PIL import Image

    first = rows[0][0]
    width, height = first.width * scale, first.height * scale
    columns = max(len(row) for row in rows)
    grid = Image.new(first.mode, (columns * (width + 1) - 1, len(rows) * (height + 1) - 1), "gray")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            image = image.resize((width, height), Image.Resampling.NEAREST) if scale > 1 else image
            grid.paste(image, (c * (width + 1), r * (height + 1)))
    return grid


def point_grid(images: Sequence, prompts: int, samples: int):
    """A point's images as a grid: up to GRID_ROWS prompts spread over the set, one a row, with
    up to GRID_COLUMNS of each prompt's samples (`readable_grid`)."""
    columns = min(samples, GRID_COLUMNS)
    return readable_grid(
        [[images[p * samples + s] for s in range(columns)] for p in spread(prompts, GRID_ROWS)]
    )


def readable_grid(rows: Sequence[Sequence]):
    """`image_grid` of rows of images at a size to look at: images under GRID_PIXELS a side
    enlarged, over GRID_LARGEST shrunk (a grid of 80 Stable Diffusion images at full size is 5k
    pixels a side)."""
    if max(rows[0][0].size) > GRID_LARGEST:
        rows = [[shrunk(image, GRID_LARGEST) for image in row] for row in rows]
    return image_grid(rows, scale=max(1, GRID_PIXELS // max(rows[0][0].size)))


def shrunk(image, side: int):
    """A copy of `image` at most `side` pixels a side, its proportions kept."""
    image = image.copy()
    image.thumbnail((side, side))
    return image


def thumbnail(images: Sequence, prompts: int, samples: int) -> str:
    """A few of a point's images (`picked`) in a square grid, each at most THUMBNAIL_PIXELS a
    side, as a base64 PNG (small enough to live in result.json)."""
    chosen = [shrunk(images[i], THUMBNAIL_PIXELS) for i in picked(prompts, samples, THUMBNAIL_IMAGES)]
    side = math.ceil(math.sqrt(len(chosen)))
    grid = image_grid([chosen[i : i + side] for i in range(0, len(chosen), side)])
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_pixels(encoded: str) -> np.ndarray:
    """A `thumbnail` as an array (H, W) or (H, W, C) of uint8, for plotting."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


def keep_images(images: Sequence, prompts: int, samples: int, folder: Path | None, name: str) -> dict:
    """What a point keeps of its images: the thumbnail, and, given a `folder`, its grid written
    there as NAME.png ({"thumbnail", "images": the grid's path relative to the folder's parent})."""
    kept = {"thumbnail": thumbnail(images, prompts, samples), "images": None}
    if folder is not None:
        grid = point_grid(images, prompts, samples)
        atomic_write(Path(folder) / f"{name}.png", lambda tmp: grid.save(tmp, format="PNG"))
        kept["images"] = f"{Path(folder).name}/{name}.png"
    return kept


def image_scores(rewards, prompts: Sequence[str], images: Sequence) -> tuple[np.ndarray | None, str | None]:
    """(the objectives' raw scores of the images, a row each; None) or (None, why not): a scorer
    that may not run here (an untrusted py: scorer, `RewardSet.refusal`) or that fails leaves
    the scores out, and the images are still given."""
    if rewards.refusal is not None:
        return None, rewards.refusal
    try:
        return rewards.score(list(prompts), list(images)), None
    except SteerableError as err:
        return None, str(err)

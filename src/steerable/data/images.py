"""Your own training images for `steerable train ric-image --data FOLDER`, in the folder layout
diffusers' text-to-image training and the Hugging Face `imagefolder` loader read:

    FOLDER/metadata.jsonl   one JSON object a line: {"file_name": "cat.png", "text": "a cat"}
    FOLDER/cat.png          the images, any size (the recipe resizes them), any format PIL reads

The caption column may also be called `caption`. Every problem is one error naming the line
of metadata.jsonl and the fix, before anything is trained.
"""

from __future__ import annotations

import json
from pathlib import Path

from steerable.errors import SteerableError

METADATA = "metadata.jsonl"
CAPTION_COLUMNS = ("text", "caption")


def load_image_folder(folder: str | Path) -> tuple[list, list[str]]:
    """The images (PIL, loaded into memory) and their captions, in metadata.jsonl's order."""
    folder = Path(folder)
    metadata = folder / METADATA
    if not folder.is_dir():
        raise SteerableError(f"--data {folder}: not a folder; give a folder of images with a {METADATA}")
    if not metadata.is_file():
        raise SteerableError(
            f"--data {folder}: no {METADATA}; write one line per image, "
            '{"file_name": "image.png", "text": "its caption"}'
        )
    images, captions = [], []
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{metadata}, line {number}"
        image, caption = _row(folder, line, where)
        images.append(image)
        captions.append(caption)
    if not images:
        raise SteerableError(f"{metadata} lists no images; write one line per image")
    return images, captions


def _row(folder: Path, line: str, where: str) -> tuple[object, str]:
    """One line of metadata.jsonl: the image it names, opened, and its caption."""
    from PIL import Image, UnidentifiedImageError

    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise SteerableError(f"{where}: not valid JSON ({err.msg}); write one JSON object a line")
    if not isinstance(row, dict):
        raise SteerableError(f"{where}: expected a JSON object with 'file_name' and 'text'")
    name = row.get("file_name")
    if not isinstance(name, str) or not name.strip():
        raise SteerableError(f"{where}: needs a 'file_name' (the image's path inside {folder})")
    column = next((c for c in CAPTION_COLUMNS if c in row), None)
    if column is None:
        raise SteerableError(f"{where}: needs a 'text' (or 'caption') column with the image's caption")
    caption = row[column]
    if not isinstance(caption, str) or not caption.strip():
        raise SteerableError(f"{where}: the {column!r} of {name} is empty; give every image a caption")
    path = folder / name
    if not path.is_file():
        raise SteerableError(f"{where}: {path} does not exist; fix file_name or add the image")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise SteerableError(f"{where}: {path} is not an image PIL can read ({err}); remove its line")
    return image, caption

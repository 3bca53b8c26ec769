"""RiC on images through the command line: `train ric-image` on a tiny configuration, its resume,
`generate` of a grid with each image's scores, and bad input (one line, exit 2, nothing written)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from steerable.data.images import load_image_folder
from steerable.errors import SteerableError
from steerable.objectives import RewardSet
from test_cli import invoke

TINY = ["--base_steps", "4", "--steps", "4", "--batch_size", "8", "--copies", "1", "--sampling_steps", "2"]
TINY += ["--save_steps", "10"]
SEVEN = "a handwritten digit seven"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ric-image model trained through the CLI; (its directory, the command's arguments)."""
    out = tmp_path_factory.mktemp("ric_image") / "model"
    args = ["train", "ric-image", "--output_dir", out, *TINY]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert (out / "steerable.json").is_file() and "steerable model directory" in result.output
    return out, args


def refused(args, *expected) -> str:
    """The one-line refusal of a command: exit status 2, no traceback, the `expected` words."""
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1, result.output
    # after progress bars, if any; the console wraps a long line
    message = " ".join(result.output[result.output.index("error:") :].split())
    assert "Traceback" not in result.output
    for word in expected:
        assert word in message, message
    return message


def test_generate_writes_a_grid_and_each_image_with_its_scores(trained, tmp_path):
    model, _ = trained
    out = tmp_path / "seven"
    prefer = "recognizability=0.8,compressibility=0.2"
    result = invoke(["generate", "--model", model, SEVEN, "--prefer", prefer, "--n", "2", "--out", out])
    assert result.exit_code == 0, result.output
    assert "weights: recognizability=+0.80, compressibility=+0.20" in result.output
    assert "targets: recognizability=" in result.output and "mapping: linf" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["1-1.png", "1-2.png", "grid.png", "images.jsonl"]
    rows = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["file"], r["seed"]) for r in rows] == [
        (SEVEN, "1-1.png", 0),
        (SEVEN, "1-2.png", 1),
    ]
    assert rows[0]["weights"] == {"recognizability": 0.8, "compressibility": 0.2}
    assert rows[0]["targets"]["recognizability"] > rows[0]["targets"]["compressibility"]
    # each row's scores are the model's objectives on the image written beside it
    images = [Image.open(out / r["file"]) for r in rows]
    assert all(image.size == (16, 16) for image in images)
    rewards = RewardSet.from_specs(["recognizability=builtin:recognizability",
                                    "compressibility=builtin:jpeg_compressibility"])  # fmt: skip
    expected = rewards.score([SEVEN] * 2, images)
    found = np.array([[r["score_recognizability"], r["score_compressibility"]] for r in rows])
    np.testing.assert_allclose(found, expected)
    # the grid: one row (the prompt), two columns (its images), each 16 px scaled to 64, 1 px apart
    assert Image.open(out / "grid.png").size == (2 * 64 + 1, 64)


def test_generate_replaces_its_own_folder_and_keeps_the_same_noise_per_column(trained, tmp_path):
    model, _ = trained
    out = tmp_path / "digits"
    first = invoke(["generate", "--model", model, SEVEN, "a handwritten digit two", "--n", "2", "--out", out])
    assert first.exit_code == 0, first.output
    seven = [(out / f"1-{j}.png").read_bytes() for j in (1, 2)]
    again = invoke(["generate", "--model", model, SEVEN, "--n", "1", "--out", out, "--target",
                    "recognizability=0.0,compressibility=0.0"])  # fmt: skip
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in out.iterdir()) == ["1-1.png", "grid.png", "images.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]  # nothing beside it
    assert (out / "1-1.png").read_bytes() != seven[0]  # other tags, same noise
    row = json.loads((out / "images.jsonl").read_text())
    assert row["targets"] == {"recognizability": 0.0, "compressibility": 0.0} and "weights" not in row
    # the same steering again, without the second prompt: column j's noise is seed + j whatever the
    # other prompts, so the same bytes
    same = invoke(["generate", "--model", model, SEVEN, "--n", "2", "--out", tmp_path / "same"])
    assert same.exit_code == 0, same.output
    assert [(tmp_path / "same" / f"1-{j}.png").read_bytes() for j in (1, 2)] == seven


def test_generate_says_it_cannot_score_with_an_untrusted_scorer_and_writes_no_scores(trained, tmp_path):
    model = tmp_path / "copied"
    shutil.copytree(trained[0], model, ignore=shutil.ignore_patterns("stages"))
    scorer = tmp_path / "flat.py"
    scorer.write_text("def f(prompts, images):\n    return [0.0] * len(images)\n")
    manifest = json.loads((model / "steerable.json").read_text())
    manifest["rewards"]["objectives"][1]["spec"] = {"kind": "py", "target": f"{scorer}:f", "options": {}}
    (model / "steerable.json").write_text(json.dumps(manifest))  # as if from another machine
    out = tmp_path / "out"
    result = invoke(["generate", "--model", model, SEVEN, "--n", "1", "--out", out])
    assert result.exit_code == 0, result.output
    assert "not scored" in result.output and "--trust-remote-code" in " ".join(result.output.split())
    row = json.loads((out / "images.jsonl").read_text())
    assert row["file"] == "1-1.png" and not [key for key in row if key.startswith("score_")]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--guidance", "-1"], ["--guidance must be >= 0"]),
        (["--guidance", "nan"], ["--guidance must be a finite number"]),
        (["--n", "0"], ["--n must be >= 1"]),
        (["--prefer", "recognizability=0.5,sharpness=0.5"], ["unknown objective", "sharpness"]),
        (["--target", "sharpness=1.0"], ["sharpness"]),
        (["--system", "Be brief.", "--max-new-tokens", "8"], ["--system, --max-new-tokens", "makes images"]),
        (["--temperature", "0.5"], ["--temperature", "makes images"]),
        (["--dtype", "float32"], ["--dtype", "makes images"]),
        (["--levels", "recognizability=2"], ["--levels", "ric-image model"]),
    ],
)
def test_generate_refuses_bad_options_with_one_line_and_writes_nothing(trained, tmp_path, options, expected):
    refused(["generate", "--model", trained[0], SEVEN, *options, "--out", tmp_path / "out"], *expected)
    assert list(tmp_path.iterdir()) == []


def test_generate_refuses_a_caption_over_the_token_budget(trained, tmp_path):
    long = "a handwritten digit seven " + "drawn very carefully " * 40
    refused(["generate", "--model", trained[0], long, "--out", tmp_path / "out"], "prompt 1", "shorten")
    assert list(tmp_path.iterdir()) == []


def test_generate_needs_an_empty_or_own_out_folder_for_images(trained, tmp_path):
    refused(["generate", "--model", trained[0], SEVEN], "give --out FOLDER")
    (tmp_path / "notes.txt").write_text("mine")
    refused(["generate", "--model", trained[0], SEVEN, "--out", tmp_path], "holds other files")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_image_options_on_a_text_model_are_refused(trained, tmp_path):
    text_model = tmp_path / "text"
    text_model.mkdir()
    manifest = json.loads((trained[0] / "steerable.json").read_text())
    manifest.update(method="ric", image=None)
    (text_model / "steerable.json").write_text(json.dumps(manifest))
    refused(["generate", "--model", text_model, "Hi", "--guidance", "2", "--n", "3"],
            "--n, --guidance apply to image models (ric-image)", "ric model")  # fmt: skip


def test_train_again_reuses_the_finished_stages_and_refuses_a_changed_learning_rate(trained):
    model, args = trained
    marks = sorted((model / "stages").glob("*/done.json"))
    assert [p.parent.name for p in marks] == ["base", "data", "miniature", "tagged"]
    finished = {path: path.stat().st_mtime_ns for path in marks}
    again = invoke(args)
    assert again.exit_code == 0, again.output
    assert "steerable model directory" in again.output and "train ric-image: base" not in again.output
    assert {path: path.stat().st_mtime_ns for path in marks} == finished  # no stage ran again
    refused([*args, "--learning_rate", "0.001"], "stages/tagged", "learning_rate", "differ")
    assert {path: path.stat().st_mtime_ns for path in marks} == finished


def test_train_refuses_a_text_objective(tmp_path):
    out = tmp_path / "model"
    refused(
        ["train", "ric-image", "--output_dir", out, "--objectives", "brief=builtin:brevity",
         "x=builtin:brightness"],
        "'brief'", "scores texts, but train ric-image scores images",
    )  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize("guidance", ["-1", "nan"])
def test_train_refuses_a_bad_guidance_scale(tmp_path, guidance):
    refused(["train", "ric-image", "--output_dir", tmp_path / "model", "--guidance", guidance], "guidance")
    assert not (tmp_path / "model").exists()


def no_finished_stage(out) -> bool:
    """Nothing scored or trained (the miniature, built from the seed, may be)."""
    finished = [p for p in out.glob("stages/*/done.json") if p.parent.name != "miniature"]
    return not (out / "steerable.json").exists() and not finished


def test_train_refuses_an_objective_with_zero_spread_naming_it(tmp_path):
    scorer = tmp_path / "flat.py"
    scorer.write_text("def f(prompts, images):\n    return [1.0] * len(images)\n")
    out = tmp_path / "model"
    objectives = ["--objectives", "recognizability=builtin:recognizability", f"flat=py:{scorer}:f"]
    refused(["train", "ric-image", "--output_dir", out, *TINY, *objectives], "['flat']", "zero spread")
    assert no_finished_stage(out)


def write_folder(folder, lines, pictures=()):
    folder.mkdir(exist_ok=True)
    for name, size in pictures:
        Image.new("L", size, color=200).save(folder / name)
    (folder / "metadata.jsonl").write_text("".join(line + "\n" for line in lines))
    return folder


def test_an_image_folder_reads_captions_from_text_or_caption_at_any_size(tmp_path):
    folder = write_folder(
        tmp_path / "mine",
        ['{"file_name": "a.png", "text": "a circle"}', "", '{"file_name": "b.png", "caption": "a square"}'],
        [("a.png", (16, 16)), ("b.png", (20, 12))],
    )
    images, captions = load_image_folder(folder)
    assert captions == ["a circle", "a square"]
    assert [image.size for image in images] == [(16, 16), (20, 12)]


GOOD = '{"file_name": "a.png", "text": "a circle"}'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{oops", ["line 2: not valid JSON"]),
        ('["a.png"]', ["line 2: expected a JSON object"]),
        ('{"text": "a cat"}', ["line 2: needs a 'file_name'"]),
        ('{"file_name": "a.png"}', ["line 2: needs a 'text' (or 'caption')"]),
        ('{"file_name": "a.png", "text": "  "}', ["line 2: the 'text' of a.png is empty"]),
        ('{"file_name": "gone.png", "text": "a cat"}', ["line 2:", "gone.png does not exist"]),
        ('{"file_name": "notes.txt", "text": "a cat"}', ["line 2:", "notes.txt is not an image"]),
    ],
)
def test_an_image_folder_with_a_bad_line_is_one_error_naming_it(tmp_path, line, expected):
    folder = write_folder(tmp_path / "mine", [GOOD, line], [("a.png", (16, 16))])
    (folder / "notes.txt").write_text("not a picture")
    with pytest.raises(SteerableError) as caught:
        load_image_folder(folder)
    assert all(word in str(caught.value) for word in expected), caught.value


def test_an_image_folder_without_metadata_says_what_to_write(tmp_path):
    with pytest.raises(SteerableError, match="no metadata.jsonl"):
        load_image_folder(tmp_path)
    with pytest.raises(SteerableError, match="lists no images"):
        load_image_folder(write_folder(tmp_path / "empty", []))


def test_train_refuses_a_data_folder_with_a_file_that_is_not_an_image(tmp_path):
    folder = write_folder(
        tmp_path / "mine",
        [GOOD, '{"file_name": "notes.txt", "text": "a handwritten digit one"}'],
        [("a.png", (16, 16))],
    )
    (folder / "notes.txt").write_text("not a picture")
    out = tmp_path / "model"
    refused(["train", "ric-image", "--output_dir", out, "--data", folder, *TINY], "line 2", "notes.txt")
    assert no_finished_stage(out)


def test_train_on_a_folder_of_images_of_different_sizes(tmp_path):
    from steerable.data.digits import digit_images, to_pil

    pixels, captions = digit_images("train", copies=1, seed=0)
    folder = tmp_path / "mine"
    folder.mkdir()
    lines = []
    for i, (image, caption) in enumerate(zip(to_pil(pixels[:8]), captions, strict=False)):
        (image.resize((24, 24)) if i % 2 else image).save(folder / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "caption": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "model"
    small = ["--base_steps", "1", "--steps", "1", "--batch_size", "4", "--sampling_steps", "2"]
    result = invoke(["train", "ric-image", "--output_dir", out, "--data", folder, *small])
    assert result.exit_code == 0, result.output
    assert np.load(out / "stages" / "data" / "scores.npy").shape == (8, 2)  # scored at one size
    made = invoke(["generate", "--model", out, captions[0], "--n", "1", "--out", tmp_path / "images"])
    assert made.exit_code == 0, made.output
    assert Image.open(tmp_path / "images" / "1-1.png").size == (16, 16)  # the model's size

"""`steerable evaluate` on a RiC image model: the grid, the base model's point beside the front,
hypervolumes against one reference, controllability, and a front plot of thumbnails."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from steerable.cli import app
from steerable.errors import SteerableError

FAST = ["--resolution", "2", "--samples", "1", "--sampling-steps", "2"]


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> str:
    """A RiC image model trained for a few steps on the embedded digits (about 10 s)."""
    from steerable.methods.ric_image.recipe import RiCImageConfig, train_ric_image

    out = tmp_path_factory.mktemp("ric_image") / "model"
    config = RiCImageConfig(
        output_dir=str(out), base_steps=4, steps=4, batch_size=8, copies=1, save_steps=10, sampling_steps=2
    )
    return str(train_ric_image(config))


def evaluate(*args):
    result = CliRunner().invoke(app, ["evaluate", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def valid_png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
        return image.size


def test_evaluate_a_ric_image_model_through_the_cli(image_model, tmp_path):
    from matplotlib.offsetbox import AnnotationBbox

    from steerable.evaluation.images import thumbnail_pixels
    from steerable.evaluation.pareto import hypervolume
    from steerable.evaluation.report import EvaluationResult, front_figure, reference_point
    from steerable.objectives import RewardSet

    out = tmp_path / "eval"
    run = evaluate("--method", "ric-image", "--model", image_model, "--limit", 3, *FAST, "--out", out)
    assert run.exit_code == 0, run.output
    # said before it starts: 3 points and the base model's x 3 captions, 2 steps x 2 UNet passes each
    said = " ".join(run.output.split())
    assert "this run makes 12 images (3 grid points and the base model x 3 prompts x 1 sample) of 2 " in said
    assert "denoising steps each: 48 UNet passes" in said and "start it?" not in said
    record = json.loads((out / "result.json").read_text())
    names = ["recognizability", "compressibility"]
    assert record["names"] == names
    assert [p["weights"] for p in record["points"]] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    # the default prompts are the digit captions; --limit 3 keeps the first three
    assert record["num_prompts"] == 3 and record["prompt_split"] == "digit captions"
    # the model's guidance scale (2.0, as trained), the steps asked for
    assert record["sampling"]["guidance"] == 2.0 and record["sampling"]["steps"] == 2
    rewards = RewardSet.from_dict(record["rewards"])
    for point in record["points"]:
        assert point["n"] == 3 and point["generated_tokens"] == 0  # images, not tokens
        assert len(point["requested"]) == 2 and len(point["stderr"]) == 2
        assert np.allclose(point["normalised_mean"], rewards.normalise(np.array([point["mean"]]))[0])
        assert thumbnail_pixels(point["thumbnail"]).shape[:2] == (33, 33)  # 2x2 of 16 px, 1 px apart
    assert set(record["controllability"]) == set(record["requested_controllability"]) == set(names)

    baseline = record["baseline"]
    base = baseline["point"]
    assert base["weights"] == [] and base["n"] == 3 and len(base["mean"]) == 2
    reference = reference_point(record["rewards"])
    means = np.array([p["mean"] for p in record["points"]])
    assert baseline["reference"] == pytest.approx(reference)
    assert baseline["hypervolume"] == pytest.approx(hypervolume([base["mean"]], reference))
    assert baseline["front_hypervolume"] == pytest.approx(hypervolume(means, reference))
    stds = np.array([o.stats.std for o in rewards.objectives])
    for k, name in enumerate(names):
        beat = baseline["beats_baseline"][name]
        gain = (means[:, k] - base["mean"][k]) / stds[k]
        loss = np.clip((base["mean"][1 - k] - means[:, 1 - k]) / stds[1 - k], 0, None)
        above = gain > 0
        assert (beat["weights"] is not None) == bool(above.any())
        assert beat["beats"] == bool((above & (loss <= 0.5)).any())
        if above.any():
            assert beat["loss_std"] == pytest.approx(loss[above].min())

    # the images: one grid per point and the base model's, prompts as rows, enlarged 4x
    for name in ("point_00", "point_01", "point_02", "base"):
        assert valid_png(out / "images" / f"{name}.png") == (64, 3 * 65 - 1)
    assert [p["images"] for p in record["points"]] == [f"images/point_0{i}.png" for i in range(3)]
    assert valid_png(out / "front.png")[0] > 0
    report = (out / "report.md").read_text()
    assert "## The base model's point" in report and "| base model |" in report
    assert "images/base.png" in report and "sampling guidance 2.0, steps 2" in report
    assert (out / "points.csv").read_text().splitlines()[0].endswith(",images")

    # the front plot draws every point's thumbnail and the base model's, framed red
    result = EvaluationResult.load(out)
    figure = front_figure([result])
    boxes = [a for a in figure.axes[0].artists if isinstance(a, AnnotationBbox)]
    assert len(boxes) == 4
    assert [b.patch.get_edgecolor()[:3] for b in boxes].count((1.0, 0.0, 0.0)) == 1


def test_a_prompt_file_replaces_the_captions(image_model, tmp_path):
    from steerable.data.digits import label_of
    from steerable.evaluation.evaluate import evaluation_prompts

    captions, source = evaluation_prompts("ric-image", "heldout", None, None)
    # one caption per digit: --samples 7 makes 70 images per point
    assert [label_of(c) for c in captions] == list(range(10)) and source == "digit captions"
    assert captions[7] == "a handwritten digit seven"
    prompts = tmp_path / "captions.txt"
    prompts.write_text("a handwritten digit seven\na handwritten digit one\n")
    out = tmp_path / "eval"
    options = ["--resolution", 1, "--samples", 2, "--sampling-steps", 1, "--guidance", 2]
    run = evaluate("--method", "ric-image", "--model", image_model, "--prompts", prompts, "--split", "all",
                   *options, "--out", out)  # fmt: skip
    assert run.exit_code == 0, run.output
    record = json.loads((out / "result.json").read_text())
    assert record["num_prompts"] == 2 and record["prompt_split"] == "all of captions.txt"
    assert record["sampling"]["guidance"] == 2.0 and record["sampling"]["steps"] == 1
    assert [p["n"] for p in record["points"]] == [4, 4] and record["baseline"]["point"]["n"] == 4
    assert valid_png(out / "images" / "point_01.png") == (2 * 65 - 1, 2 * 65 - 1)  # 2 prompts x 2 samples


@pytest.mark.parametrize(
    "option, message",
    [
        (["--guidance", "-1"], "guidance scale must be a finite number >= 0"),
        (["--guidance", "nan"], "guidance scale must be a finite number >= 0"),
        (["--sampling-steps", "0"], "--sampling-steps must be >= 1"),
    ],
)
def test_bad_image_sampling_is_refused_before_anything_is_written(image_model, tmp_path, option, message):
    out = tmp_path / "eval"
    run = evaluate("--method", "ric-image", "--model", image_model, *option, "--out", out)
    assert run.exit_code == 2 and message in run.output
    assert not (out / "result.json").exists() and not (out / "images").exists()


@pytest.mark.parametrize("option", [["--guidance", "3"], ["--sampling-steps", "4"]])
def test_image_options_are_refused_for_a_text_method(tmp_path, option):
    run = evaluate("--method", "ric", "--model", tmp_path / "no-model", *option, "--out", tmp_path / "eval")
    flag = option[0]
    assert run.exit_code == 2
    assert f"{flag} applies to RiC (images) models only, not to RiC" in run.output


def test_a_long_image_evaluation_asks_first_unless_yes(image_model, tmp_path, monkeypatch):
    from steerable import cost
    from steerable.evaluation import images

    monkeypatch.setattr(cost, "interactive", lambda: True)
    # (2 points and the base model's) x 1 prompt x 1 sample x 2 steps x 2 passes: 12 UNet passes
    monkeypatch.setattr(images, "ASK_ABOVE_UNET_PASSES", 10)
    out = tmp_path / "eval"
    args = ["--method", "ric-image", "--model", image_model, "--limit", 1, *FAST, "--resolution", 1]
    declined = CliRunner().invoke(app, ["evaluate", *map(str, args), "--out", str(out)], input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "start it?" in declined.output and "12 UNet passes" in " ".join(declined.output.split())
    assert not (out / "result.json").exists() and not (out / "images").exists()
    started = evaluate(*args, "--out", out, "--yes")
    assert started.exit_code == 0, started.output
    assert "start it?" not in started.output and (out / "result.json").is_file()


def test_beats_base_hand_computed():
    from steerable.evaluation.pareto import beats_base

    points = [[1.0, 0.0], [0.5, 0.8], [0.2, 1.0]]
    base = [0.4, 0.9]
    found = beats_base(points, base, scale=[0.5, 0.2])
    # objective 0: points 0 (+1.2 std, loses 4.5 on 1) and 1 (+0.2, loses 0.5): the one losing least
    assert found[0] == {"index": 1, "gain": pytest.approx(0.2), "loss": pytest.approx(0.5)}
    # objective 1: only point 2 is above (+0.5), and it loses 0.4 std on objective 0
    assert found[1] == {"index": 2, "gain": pytest.approx(0.5), "loss": pytest.approx(0.4)}
    nothing = beats_base([[0.0, 0.0]], [1.0, 1.0], scale=[1.0, 2.0])
    assert nothing[0] == {"index": None, "gain": -1.0, "loss": None}
    with pytest.raises(SteerableError, match="scale > 0"):
        beats_base(points, base, scale=[0.0, 1.0])


def test_a_point_keeps_a_few_small_images_and_writes_its_grid(tmp_path):
    from steerable.evaluation.images import keep_images, picked, thumbnail_pixels

    # 10 prompts x 3 samples: the thumbnail shows the first sample of 4 prompts spread over the set
    assert picked(10, 3, 4) == [0, 9, 18, 27]
    # 1 prompt x 4 samples: its samples
    assert picked(1, 4, 4) == [0, 1, 2, 3]
    assert picked(1, 1, 4) == [0]
    images = [Image.new("RGB", (120, 60), (10 * i, 0, 0)) for i in range(6)]  # 3 prompts x 2 samples
    kept = keep_images(images, 3, 2, tmp_path / "images", "point_07")
    pixels = thumbnail_pixels(kept["thumbnail"])
    assert pixels.shape == (2 * 24 + 1, 2 * 48 + 1, 3)  # 2x2, each at most 48 px a side
    assert pixels[0, 0, 0] == 0 and pixels[0, -1, 0] == 20  # prompt 0, then prompt 1, first samples
    assert kept["images"] == "images/point_07.png"
    assert valid_png(tmp_path / "images" / "point_07.png") == (2 * 121 - 1, 3 * 61 - 1)  # not enlarged
    large = [Image.new("RGB", (512, 512)) for _ in range(2)]  # Stable Diffusion's size: shrunk to 256
    keep_images(large, 1, 2, tmp_path / "images", "large")
    assert valid_png(tmp_path / "images" / "large.png") == (2 * 257 - 1, 256)


def fake_image_result(guidance: float = 7.5):
    """A K = 3 image result built by hand: 6 lattice points and the base model's, each with a
    thumbnail of flat gray images as bright as its first mean."""
    from steerable.evaluation.images import keep_images
    from steerable.evaluation.report import EvaluationResult, versus_baseline
    from steerable.evaluation.sweep import SweepPoint, controllability, preference_grid
    from steerable.objectives import RewardSet

    specs = ["a=builtin:brightness", "b=builtin:contrast", "c=builtin:jpeg_compressibility"]
    rewards = RewardSet.from_specs(specs)
    rewards.fit_stats(np.array([[float(i), float(-i), float(i % 5)] for i in range(21)]))
    grid = preference_grid(3, 2)

    def point(weights, mean):
        images = [Image.new("L", (16, 16), int(12 * mean[0])) for _ in range(2)]
        kept = keep_images(images, 2, 1, None, "unused")
        return SweepPoint(list(weights), list(mean), [0.1] * 3, 2, 1.0, 0, 1, **kept)

    points = [point(w, [10 * w[0] + 5, -10 * w[1] - 5, 4 * w[2]]) for w in grid]
    base = point([], [6.0, -6.0, 1.0])
    return EvaluationResult(
        method="ric-image", model="fake", names=rewards.names, rewards=rewards.to_dict(), points=points,
        controllability=controllability(points, rewards.names), prompts_sha256="0" * 64, num_prompts=2,
        sampling={"guidance": guidance, "steps": 2, "seed": 0, "batch_size": 16}, samples=1, resolution=2,
        baseline=versus_baseline(base, points, rewards.to_dict()),
    )  # fmt: skip


def test_three_objectives_plot_thumbnails_in_every_panel_and_report_the_base_point(tmp_path):
    from matplotlib.offsetbox import AnnotationBbox

    from steerable.evaluation.report import EvaluationResult, check_comparable, front_figure, write_report

    result = fake_image_result()
    # w = (0.5, 0, 0.5) scores (10, -5, 2) against the base's (6, -6, 1): above it everywhere, so
    # it is the point that beats it on each objective losing nothing on the others
    stds = [o["stats"]["std"] for o in result.rewards["objectives"]]
    beat = result.baseline["beats_baseline"]
    for k, name in enumerate("abc"):
        assert beat[name]["weights"] == [0.5, 0.0, 0.5] and beat[name]["loss_std"] == 0
        assert beat[name]["beats"] and beat[name]["gain_std"] == pytest.approx([4, 1, 1][k] / stds[k])
    result.save(tmp_path / "eval")
    loaded = EvaluationResult.load(tmp_path / "eval")
    assert loaded.base.mean == [6.0, -6.0, 1.0] and loaded.base.thumbnail == result.base.thumbnail
    figure = front_figure([loaded])
    assert len(figure.axes) == 3  # a-b, a-c, b-c
    for ax in figure.axes:
        assert len([a for a in ax.artists if isinstance(a, AnnotationBbox)]) == 7  # 6 points + base
    write_report([loaded], tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| base model |  |  | 6 ± 0.1 | -6 ± 0.1 | 1 ± 0.1 |" in text
    assert "base point" in text and "sampling guidance 7.5, steps 2" in text
    with pytest.raises(SteerableError, match="guidance differs"):
        check_comparable([loaded, fake_image_result(guidance=3.0)])


@pytest.mark.parametrize("option", [["--max-new-tokens", 8], ["--temperature", 0.2], ["--dtype", "float16"]])
def test_text_sampling_options_are_refused_for_an_image_method(tmp_path, option):
    model = tmp_path / "no-model"
    run = evaluate("--method", "ric-image", "--model", model, *option, "--out", tmp_path / "eval")
    assert run.exit_code == 2
    assert f"{option[0]} steer text generation; ric-image makes images: leave them out" in run.output

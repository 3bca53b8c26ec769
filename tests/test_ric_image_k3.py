"""RiC on images with three objectives (K = 3) through the command line: one tiny `train ric-image`,
then the tags `<rm1>`..`<rm3>`, `generate` steered by three weights, and `evaluate` over the
simplex lattice of three objectives; and the miniature's benchmark recipe being the defaults."""

import json
from pathlib import Path

import numpy as np
import pytest

from test_cli import invoke

NAMES = ["recognizability", "compressibility", "brightness"]
OBJECTIVES = [
    "recognizability=builtin:recognizability",
    "compressibility=builtin:jpeg_compressibility",
    "brightness=builtin:brightness",
]
TINY = ["--base_steps", "2", "--steps", "4", "--batch_size", "8", "--copies", "1", "--sampling_steps", "2"]
TINY += ["--save_steps", "10"]
THREE = "a handwritten digit three"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A ric-image model of three objectives trained through the CLI for a few steps."""
    out = tmp_path_factory.mktemp("ric_image_k3") / "model"
    result = invoke(["train", "ric-image", "--objectives", *OBJECTIVES, *TINY, "--output_dir", out])
    assert result.exit_code == 0, result.output
    return out


def test_three_objectives_are_scored_fitted_and_tagged(model):
    from steerable.data.digits import caption
    from steerable.methods.ric_image.policy import ImagePolicy, tag_text
    from steerable.objectives import RewardSet

    manifest = json.loads((model / "steerable.json").read_text())
    rewards = RewardSet.from_dict(manifest["rewards"])
    assert rewards.names == NAMES
    assert all(o.stats is not None and o.stats.std > 0 for o in rewards.objectives)
    # every training image was scored by all three, and the tags the tagged stage read carry three
    scores = np.load(model / "stages" / "data" / "scores.npy")
    assert scores.ndim == 2 and scores.shape[1] == 3
    z = rewards.normalise(scores)
    text = tag_text(caption(3), z[0], 1)
    assert text.startswith(f"{THREE} <rm1> ") and " <rm2> " in text and " <rm3> " in text
    policy = ImagePolicy.from_pretrained(model)
    assert policy.names == NAMES
    tagged = policy.prompt(THREE, policy.steering_for([0.2, 0.3, 0.5]))
    assert [tag in tagged for tag in ("<rm1>", "<rm2>", "<rm3>", "<rm4>")] == [True, True, True, False]
    assert policy.parts.token_ids([tagged]).shape[0] == 1  # within the text encoder's budget


def test_generate_steers_by_three_weights(model, tmp_path):
    from steerable.objectives import RewardSet

    out = tmp_path / "threes"
    prefer = ["--prefer", "0.2,0.3,0.5", "--mapping", "quantile"]
    result = invoke(["generate", "--model", model, THREE, *prefer, "--n", "2", "--out", out])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "images.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    rewards = RewardSet.from_dict(json.loads((model / "steerable.json").read_text())["rewards"])
    for row in rows:
        assert row["weights"] == pytest.approx(dict(zip(NAMES, [0.2, 0.3, 0.5], strict=True)))
        assert sorted(row["targets"]) == sorted(NAMES)
        assert all(np.isfinite(row[f"score_{name}"]) for name in NAMES)
    # the quantile rule at K = 3: R_i = Q_i(min(3 w_i, 1)), the stored 60% and 90% levels and
    # the third objective's maximum, normalised
    for objective, level in zip(rewards.objectives, ["0.6", "0.9", "1"], strict=True):
        stats = objective.stats
        expected = (stats.quantiles[level] - stats.mean) / stats.std
        assert rows[0]["targets"][objective.name] == pytest.approx(expected, abs=0.05 + 1e-9)


def test_evaluate_sweeps_the_lattice_of_three_objectives(model, tmp_path):
    out = tmp_path / "eval"
    options = ["--resolution", "2", "--samples", "1", "--sampling-steps", "2"]
    result = invoke(["evaluate", "--method", "ric-image", "--model", model, *options, "--out", out])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["names"] == NAMES
    # resolution 2 on the 3-simplex: the 3 corners and the 3 midpoints of its edges
    weights = sorted(tuple(p["weights"]) for p in record["points"])
    halves = [(0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0)]
    assert weights == sorted([(0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0), *halves])
    for point in record["points"]:
        assert len(point["mean"]) == 3 and len(point["requested"]) == 3 and point["n"] == 10
    base = record["baseline"]["point"]
    assert base["weights"] == [] and len(base["mean"]) == 3 and base["n"] == 10


def test_the_benchmark_recipe_is_the_default_miniature():
    """benchmarks/ric_image.yaml restates the defaults: its header's command (no --config) and
    `--config benchmarks/ric_image.yaml` train the same model."""
    from steerable.configs import parse_config
    from steerable.methods.ric_image.recipe import RiCImageConfig

    recipe = Path(__file__).resolve().parents[1] / "benchmarks" / "ric_image.yaml"
    header = [line for line in recipe.read_text().splitlines() if line.startswith("#")]
    command = "steerable train ric-image --output_dir runs/ric-image"
    assert any(line.rstrip().endswith(command) for line in header)
    parsed = parse_config(RiCImageConfig, ["--config", str(recipe)], prog="steerable train ric-image")
    assert parsed == RiCImageConfig()

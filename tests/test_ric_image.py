"""RiC for text-to-image diffusion as a user relies on it: the tags the text encoder reads, the
10% drop of caption and tags together, classifier-free guidance, the empirical-quantile mapping,
a stage that resumes to the same weights, training that changes them, and bad configurations
refused before anything runs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from steerable.cli import app
from steerable.conditioning import preference_to_levels, preference_to_targets
from steerable.errors import SteerableError
from steerable.manifest import MappingConfig
from steerable.methods.ric_image.miniature import build_miniature, build_tokenizer
from steerable.methods.ric_image.pipeline import DiffusionParts, guided
from steerable.methods.ric_image.policy import tag_text
from steerable.methods.ric_image.recipe import RiCImageConfig, drop_rows, train_ric_image
from steerable.objectives import RewardSet
from steerable.policy import TargetSteering
from steerable.preferences import Preference

CAPTION = "a handwritten digit seven"


def tiny_config(out, **overrides) -> RiCImageConfig:
    """A run small enough to train in seconds on one thread."""
    settings = dict(
        output_dir=str(out), base_steps=4, steps=4, batch_size=8, copies=1, save_steps=10, sampling_steps=2
    )
    return RiCImageConfig(**{**settings, **overrides})


def unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "diffusion_pytorch_model.safetensors")


def same_weights(a: dict, b: dict, atol: float = 0.0) -> bool:
    assert a.keys() == b.keys()
    return all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ric_image") / "model"
    return train_ric_image(tiny_config(out))


@pytest.fixture(scope="module")
def miniature(tmp_path_factory) -> Path:
    return build_miniature(tmp_path_factory.mktemp("miniature") / "pipeline", seed=0)


# --- tags -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "z, decimals, expected",
    [
        ([0.74, -1.25], 1, f"{CAPTION} <rm1> 0.7 <rm2> -1.2"),
        ([0.75, 1.26], 1, f"{CAPTION} <rm1> 0.8 <rm2> 1.3"),
        ([-0.04, 0.0], 1, f"{CAPTION} <rm1> 0.0 <rm2> 0.0"),  # -0.04 rounds to -0.0, written 0.0
        ([-0.0, 2], 1, f"{CAPTION} <rm1> 0.0 <rm2> 2.0"),
        ([1.234, -0.004, 3], 2, f"{CAPTION} <rm1> 1.23 <rm2> 0.00 <rm3> 3.00"),
        ([1.6, -1.4], 0, f"{CAPTION} <rm1> 2 <rm2> -1"),
    ],
)
def test_tags_are_the_rounded_scores_after_the_caption(z, decimals, expected):
    assert tag_text(CAPTION, z, decimals) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_tag_value_that_is_not_finite_is_refused(bad):
    with pytest.raises(SteerableError, match="finite"):
        tag_text(CAPTION, [0.5, bad], 1)


def test_the_miniature_tokenizer_splits_tags_and_numbers_as_clips_bpe_does():
    tokens = build_tokenizer().tokenize(f"{CAPTION} <rm1> 0.7 <rm2> -12.5")
    pieces = [t.removesuffix("</w>") for t in tokens]
    assert pieces == ["a", "handwritten", "digit", "seven", "<", "rm", "1", ">", "0", ".", "7",
                      "<", "rm", "2", ">", "-", "1", "2", ".", "5"]  # fmt: skip
    assert build_tokenizer().unk_token not in tokens


# --- the drop of caption and tags together ----------------------------------------------------
def tagged_rows(count: int) -> list[str]:
    return [tag_text(CAPTION, [i % 7 - 3.0, 0.5], 1) for i in range(count)]


def test_the_drop_removes_caption_and_tags_together():
    rows = tagged_rows(400)
    dropped = drop_rows(rows, 0.1, torch.Generator().manual_seed(0))
    assert len(dropped) == len(rows)
    assert all(d in ("", r) for d, r in zip(dropped, rows, strict=True))  # whole or empty
    assert 0 < dropped.count("") < len(rows)
    assert not any("<rm" in d and CAPTION not in d for d in dropped)


def test_the_drop_takes_a_tenth_of_the_rows_and_repeats_with_its_seed():
    rows = tagged_rows(10_000)
    dropped = drop_rows(rows, 0.1, torch.Generator().manual_seed(1))
    assert abs(dropped.count("") / len(rows) - 0.1) <= 0.01
    assert drop_rows(rows, 0.1, torch.Generator().manual_seed(1)) == dropped
    assert drop_rows(rows, 0.1, torch.Generator().manual_seed(2)) != dropped


def test_a_drop_probability_of_zero_keeps_every_row():
    rows = tagged_rows(1000)
    assert drop_rows(rows, 0.0, torch.Generator().manual_seed(0)) == rows


# --- classifier-free guidance -----------------------------------------------------------------
def test_guidance_one_is_the_conditional_prediction_and_zero_the_unconditional():
    generator = torch.Generator().manual_seed(0)
    unconditional = torch.randn(10_000, generator=generator) * 3
    conditional = torch.randn(10_000, generator=generator)
    assert torch.equal(guided(unconditional, conditional, 1.0), conditional)
    assert torch.equal(guided(unconditional, conditional, 0.0), unconditional)
    formula = unconditional + 7.5 * (conditional - unconditional)
    assert torch.allclose(guided(unconditional, conditional, 7.5), formula, atol=1e-5)


def conditional_only(parts: DiffusionParts, prompts: list[str], steps: int, seed: int) -> torch.Tensor:
    """DDIM with the conditional prediction alone (no unconditional branch), from the noise the
    sampler draws for each row."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(parts.scheduler.config)
    scheduler.set_timesteps(steps)
    noise = [torch.randn((1, *parts.shape), generator=torch.Generator().manual_seed(seed + i)) for i in
             range(len(prompts))]  # fmt: skip
    x = torch.cat(noise) * scheduler.init_noise_sigma
    condition = parts.encode(prompts)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(parts.unet(x, t, condition).sample, t, x).prev_sample
    return x


def test_sampling_at_guidance_one_equals_sampling_from_the_conditional_branch_alone(miniature, monkeypatch):
    import steerable.methods.ric_image.pipeline as pipeline

    parts = DiffusionParts.load(miniature)
    prompts = [tag_text(CAPTION, [1.0, -0.5]), tag_text("a handwritten digit two", [-1.0, 0.5])]
    steps_seen = []
    original = pipeline.guided

    def recorded(unconditional, conditional, scale):
        eps = original(unconditional, conditional, scale)
        steps_seen.append(torch.equal(eps, conditional) and not torch.equal(unconditional, conditional))
        return eps

    monkeypatch.setattr(pipeline, "guided", recorded)
    images = parts.sample(prompts, guidance=1.0, steps=3, seed=5)
    assert steps_seen == [True, True, True]  # every step's eps is the conditional one
    expected = pipeline.to_pil(conditional_only(parts, prompts, steps=3, seed=5))
    for image, want in zip(images, expected, strict=True):
        difference = np.abs(np.asarray(image, dtype=int) - np.asarray(want, dtype=int))
        assert difference.max() <= 1  # batched with the empty prompt: float rounding only
    guided_images = parts.sample(prompts, guidance=7.5, steps=3, seed=5)
    assert any(
        not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(guided_images, images, strict=True)
    )


# --- the empirical-quantile mapping -----------------------------------------------------------
def recording_quantile(calls: list):
    """Q_i(q) = 10 i + q, recording each (i, q) asked."""

    def quantile(i: int, q: float) -> float:
        calls.append((i, q))
        return 10 * i + q

    return quantile


@pytest.mark.parametrize(
    "weights, asked",
    [
        ((0.3, 0.7), [(0, 0.6), (1, 1.0)]),  # the minor objective at 2 w, the dominant at its max
        ((0.5, 0.5), [(0, 1.0), (1, 1.0)]),  # both at their maximum
        ((1.0, 0.0), [(0, 1.0), (1, 0.0)]),  # the ignored objective at its minimum
        ((0.0, 1.0), [(0, 0.0), (1, 1.0)]),
    ],
)
def test_the_quantile_mapping_asks_each_objective_for_its_quantile_at_k_w(weights, asked):
    calls = []
    targets = preference_to_targets(
        Preference.parse(weights, ["a", "b"]), [0, 0], [1, 1], "quantile", quantile=recording_quantile(calls)
    )
    assert [i for i, _ in calls] == [i for i, _ in asked]
    assert [q for _, q in calls] == pytest.approx([q for _, q in asked], abs=1e-12)
    assert targets == pytest.approx({"a": asked[0][1], "b": 10 + asked[1][1]}, abs=1e-12)


def test_the_quantile_mapping_for_three_objectives_caps_k_w_at_one():
    calls = []
    preference_to_targets(
        Preference.parse((0.2, 0.5, 0.3), ["a", "b", "c"]), [0] * 3, [1] * 3, "quantile",
        quantile=recording_quantile(calls),
    )  # fmt: skip
    assert [q for _, q in calls] == pytest.approx([0.6, 1.0, 0.9])


def test_the_quantile_mapping_without_statistics_is_refused():
    with pytest.raises(SteerableError, match="statistics"):
        preference_to_targets(Preference.parse((0.5, 0.5), ["a", "b"]), [0, 0], [1, 1], "quantile")


def test_levels_refuse_the_quantile_mapping():
    with pytest.raises(SteerableError, match="quantile"):
        preference_to_levels(Preference.parse((0.5, 0.5), ["a", "b"]), 5, "quantile")


class Steered(TargetSteering):
    def __init__(self, rewards: RewardSet, mapping: MappingConfig):
        self.rewards, self.mapping = rewards, mapping


def test_the_quantile_mapping_reads_the_fitted_statistics():
    """Scores 0..20 and 3 x (0..20): every 5% quantile is a whole score, the mean 10 (30) and
    the population std sqrt(770 / 21) (three times that)."""
    rewards = RewardSet.from_specs(["bright=builtin:brightness", "sharp=builtin:contrast"])
    x = np.arange(21, dtype=float)
    rewards.fit_stats(np.stack([x, 3 * x], axis=1))
    std = math.sqrt(770 / 21)
    steering = Steered(rewards, MappingConfig("quantile"))
    # (0.3, 0.7): bright at Q(0.6) = 12, sharp at its maximum 60
    assert steering.targets_for([0.3, 0.7]) == pytest.approx({"bright": 2 / std, "sharp": 10 / std})
    # (0.2625, 0.7375): Q(0.525) = 10.5, between the stored 50% and 55% quantiles
    assert steering.targets_for([0.2625, 0.7375])["bright"] == pytest.approx(0.5 / std)
    assert steering.targets_for([1, 0]) == pytest.approx({"bright": 10 / std, "sharp": -10 / std})
    assert steering.targets_for([1, 1]) == pytest.approx({"bright": 10 / std, "sharp": 10 / std})
    # the language-model path's linf on the same statistics: lo/hi at the 5% and 95% quantiles (1, 19)
    linf = steering.targets_for([1, 0], mapping="linf")
    assert linf == pytest.approx({"bright": 9 / std, "sharp": -9 / std})


def test_a_trained_model_steers_with_linf_by_default_and_the_quantile_rule_when_asked(trained):
    from steerable.methods.ric_image.policy import ImagePolicy

    policy = ImagePolicy.from_pretrained(trained, device="cpu")
    assert policy.mapping.default == "linf"
    low, high = (o.stats for o in policy.rewards.objectives)

    def z(stats, raw):
        return float(stats.normalise(np.array([raw]))[0])

    lo = [z(s, s.quantile(0.05)) for s in (low, high)]
    hi = [z(s, s.quantile(0.95)) for s in (low, high)]
    linf = [lo[0] + 0.5 * (hi[0] - lo[0]), hi[1]]  # min(K w, 1) = 0.5 and 1
    assert list(policy.steering_for([0.25, 0.75]).values()) == pytest.approx(linf)
    quantile = [z(low, low.quantile(0.5)), z(high, high.max)]
    assert list(policy.steering_for([0.25, 0.75], mapping="quantile").values()) == pytest.approx(quantile)
    with pytest.raises(SteerableError, match="levels"):
        policy.steering_for(levels={"recognizability": 2})


# --- training ---------------------------------------------------------------------------------
def test_training_changes_the_weights(trained):
    initial = unet_weights(trained / "stages" / "miniature" / "unet")
    base = unet_weights(trained / "base_unet")
    tagged = unet_weights(trained / "unet")
    assert not same_weights(base, initial, atol=1e-6)
    assert not same_weights(tagged, base, atol=1e-6)


def interrupt_stage_at(monkeypatch, stage: str, step: int | None) -> list:
    """The trainer of `stage` raises KeyboardInterrupt before optimiser step `step` (1-based;
    None: never); returns the list of the steps that stage took."""
    from transformers import Trainer

    original = Trainer.training_step
    steps_run = []

    def interrupted(self, *args, **kwargs):
        if self.args.output_dir.endswith(f"{stage}/checkpoints"):
            steps_run.append(self.state.global_step + 1)
            if steps_run[-1] == step:
                raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", interrupted)
    return steps_run


RESUMED = dict(base_steps=2, steps=6, save_steps=3)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    return train_ric_image(tiny_config(tmp_path_factory.mktemp("whole") / "model", **RESUMED))


def test_an_interrupted_stage_resumes_to_the_weights_of_an_uninterrupted_one(
    uninterrupted, tmp_path, monkeypatch
):
    """torchtune's check: the tagged stage stopped after its checkpoint at step 3 and run again
    with the same command ends with the same EMA weights as a run that never stopped (the EMA,
    the drop, the noise and the data order all continue from the checkpoint)."""
    out = tmp_path / "run"
    interrupt_stage_at(monkeypatch, "tagged", 5)
    with pytest.raises(KeyboardInterrupt):
        train_ric_image(tiny_config(out, **RESUMED))
    assert not (out / "steerable.json").exists()
    assert (out / "stages/tagged/checkpoints/checkpoint-3/ema.pt").is_file()
    monkeypatch.undo()
    steps_run = interrupt_stage_at(monkeypatch, "tagged", None)
    assert train_ric_image(tiny_config(out, **RESUMED)) == out
    assert steps_run == [4, 5, 6]  # resumed from step 3
    assert same_weights(unet_weights(out / "unet"), unet_weights(uninterrupted / "unet"), atol=1e-6)
    assert same_weights(unet_weights(out / "base_unet"), unet_weights(uninterrupted / "base_unet"))


def test_a_checkpoint_saved_without_its_average_is_not_resumed_from(uninterrupted, tmp_path, monkeypatch):
    """Stopped after the trainer saved checkpoint-3 but before the EMA's ema.pt: resuming from it
    would restart the average from the current weights, so the stage starts over instead."""
    out = tmp_path / "run"
    interrupt_stage_at(monkeypatch, "tagged", 5)
    with pytest.raises(KeyboardInterrupt):
        train_ric_image(tiny_config(out, **RESUMED))
    (out / "stages/tagged/checkpoints/checkpoint-3/ema.pt").unlink()
    monkeypatch.undo()
    steps_run = interrupt_stage_at(monkeypatch, "tagged", None)
    train_ric_image(tiny_config(out, **RESUMED))
    assert steps_run == [1, 2, 3, 4, 5, 6]
    assert same_weights(unet_weights(out / "unet"), unet_weights(uninterrupted / "unet"), atol=1e-6)


# --- bad configurations -----------------------------------------------------------------------
def test_a_text_objective_is_refused_by_name(tmp_path):
    with pytest.raises(SteerableError, match="'brief'.*scores text"):
        tiny_config(tmp_path, objectives=["brief=builtin:brevity", "sharp=builtin:contrast"])


def test_fewer_than_two_objectives_are_refused(tmp_path):
    with pytest.raises(SteerableError, match="at least two objectives"):
        tiny_config(tmp_path, objectives=["sharp=builtin:contrast"])


def test_a_model_folder_without_model_index_is_refused(tmp_path):
    (tmp_path / "sd").mkdir()
    with pytest.raises(SteerableError, match="model_index.json"):
        tiny_config(tmp_path / "out", model=str(tmp_path / "sd"))


def test_the_cli_refuses_a_bad_configuration_in_one_line_with_exit_2(tmp_path):
    (tmp_path / "sd").mkdir()
    result = CliRunner().invoke(
        app, ["train", "ric-image", "--output-dir", str(tmp_path / "out"), "--model", str(tmp_path / "sd")]
    )
    assert result.exit_code == 2, result.output
    assert "model_index.json" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_finished_run_is_not_retrained(trained, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(trained, moved)
    before = (moved / "stages" / "tagged" / "done.json").read_text()
    assert train_ric_image(tiny_config(moved)) == moved
    assert (moved / "stages" / "tagged" / "done.json").read_text() == before


# --- what the trainer is fed, and what it saves -------------------------------------------------
@pytest.fixture(scope="module")
def spied(tmp_path_factory) -> dict:
    """A tagged-only run (the miniature's own UNet is the base) with a third of the rows dropped,
    recording the token ids each step's loss reads (after the drop) and the raw UNet weights after
    each optimiser step."""
    import steerable.methods.ric_image.recipe as recipe

    fed, raw = [], []
    original_drop, original_step = recipe.drop_rows, recipe.EMA.on_step_end

    def drop(rows, *args, **kwargs):
        kept = original_drop(rows, *args, **kwargs)
        fed.extend(row.tolist() for row in kept)
        return kept

    def step_end(self, *args, **kwargs):
        raw.append({k: v.detach().clone() for k, v in self.unet.named_parameters()})
        return original_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe, "drop_rows", drop)
        patch.setattr(recipe.EMA, "on_step_end", step_end)
        out = train_ric_image(
            tiny_config(tmp_path_factory.mktemp("spied") / "model", base_steps=0, drop_probability=0.3)
        )
    return {"out": out, "fed": fed, "raw": raw}


def test_the_trainer_reads_each_caption_with_its_rounded_normalised_scores_or_the_empty_prompt(spied):
    from steerable.data.digits import digit_images

    out = spied["out"]
    _, captions = digit_images("train", copies=1, seed=0)
    scores = np.load(out / "stages" / "data" / "scores.npy")
    stats = RewardSet.load(out / "stages" / "data" / "stats.json")
    mean = np.array([o.stats.mean for o in stats.objectives])
    std = np.array([o.stats.std for o in stats.objectives])
    z = (scores - mean) / std
    texts = [f"{c} <rm1> {round(a, 1):.1f} <rm2> {round(b, 1):.1f}".replace("-0.0", "0.0") for c, (a, b) in
             zip(captions, z, strict=True)]  # fmt: skip
    parts = DiffusionParts.load(out)
    tagged = {tuple(row) for row in parts.token_ids(texts).tolist()}
    empty = tuple(parts.token_ids([""])[0].tolist())
    fed = [tuple(row) for row in spied["fed"]]
    assert len(fed) == 4 * 8  # every row of every step
    assert all(row == empty or row in tagged for row in fed)
    assert 0 < fed.count(empty) < len(fed)
    assert len({row for row in fed if row != empty}) > 1


def test_the_saved_unet_is_the_exponential_average_of_the_trained_weights(spied):
    """diffusers' EMA with warmup: decay d_n = min(0.999, 1 - n ** -0.75) after the first step,
    which copies the weights; the saved UNet is that average, not the last weights."""
    raw = spied["raw"]
    assert len(raw) == 4
    average = {k: v.clone() for k, v in raw[0].items()}
    for n, weights in enumerate(raw[1:], start=1):
        decay = min(0.999, 1 - (1 + n) ** -0.75)
        for k in average:
            average[k] = decay * average[k] + (1 - decay) * weights[k]
    saved = unet_weights(spied["out"] / "unet")
    assert same_weights(saved, average, atol=1e-6)
    assert not same_weights(saved, raw[-1], atol=1e-6)


def test_a_caption_over_the_token_budget_is_refused_before_any_stage_runs(tmp_path):
    from PIL import Image

    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for i, caption in enumerate(["a handwritten digit one", "a handwritten digit two " * 12]):
        Image.new("L", (16, 16), color=40 * i).save(data / f"{i}.png")
        rows.append(f'{{"file_name": "{i}.png", "text": "{caption.strip()}"}}')
    (data / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    with pytest.raises(SteerableError, match=r"training row 2 \('a handwritten digit two"):
        train_ric_image(tiny_config(out, data=str(data)))
    assert not any((out / "stages" / name / "done.json").exists() for name in ("data", "base", "tagged"))
    assert not (out / "steerable.json").exists()


def test_a_manifest_with_a_bad_image_entry_is_refused_naming_the_field(trained, tmp_path):
    import json

    from steerable.manifest import load_manifest

    for field_name, value in (("guidance", -1), ("steps", 0), ("steps", 2.5), ("base_unet", "nowhere")):
        moved = tmp_path / f"{field_name}-{value}"
        shutil.copytree(trained, moved, ignore=shutil.ignore_patterns("stages"))
        manifest = json.loads((moved / "steerable.json").read_text())
        manifest["image"][field_name] = value
        (moved / "steerable.json").write_text(json.dumps(manifest))
        with pytest.raises(SteerableError, match=f"image.{field_name}"):
            load_manifest(moved)

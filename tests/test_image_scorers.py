"""Image objectives: the image built-ins, py: functions and hf: image classifiers and CLIP models
all score PIL images through the same RewardSet as text, and each objective says what it scores."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from steerable import RewardSet, SteerableError
from steerable.data.digits import caption, digit_images, label_of, to_pil
from steerable.scorers import ScorerSpec, build_scorer, check_modality, modality

IMAGE_BUILTINS = ["jpeg_compressibility", "brightness", "contrast", "recognizability"]


def gradient(width: int = 40, height: int = 30) -> Image.Image:
    """A hand-built RGB picture with detail, so its JPEG size depends on every setting."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    rgb = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("name", IMAGE_BUILTINS)
def test_image_builtins_parse_build_and_say_they_score_images(name):
    spec = ScorerSpec.parse(f"builtin:{name}")
    assert spec == ScorerSpec(name, "builtin", name)
    assert modality(spec) == "image"
    assert callable(build_scorer(spec))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("builtin:brevity", "text"),
        ("builtin:relevance", "text"),
        ("rm=hf:org/model?input=pair", "text"),
        ("rm=hf:org/model", "text"),
        ("digit=hf:./classifier?input=image&index=3", "image"),
        ("match=hf:./clip?input=clip", "image"),
        ("honest=moslim:runs/rm?objective=honest", "text"),
        ("mine=py:pkg.mod:func", None),
    ],
)
def test_modality_of_each_kind(spec, expected):
    assert modality(spec) == expected


def test_check_modality_refuses_the_other_modality_naming_the_objective():
    check_modality(["builtin:brightness", "mine=py:pkg.mod:func"], "image", "ric-image")
    check_modality(["builtin:brevity", "mine=py:pkg.mod:func"], "text", "ric")
    with pytest.raises(
        SteerableError, match=r"objective 'brief' .* scores texts, but ric-image scores images"
    ):
        check_modality(["builtin:contrast", "brief=builtin:brevity"], "image", "ric-image")
    with pytest.raises(SteerableError, match=r"objective 'small' .* scores images, but ric scores texts"):
        check_modality(["small=builtin:jpeg_compressibility"], "text", "ric")


def test_image_builtins_have_no_text_instruction():
    """The prompting floor writes a preference in words only for text built-ins."""
    from steerable.methods.prompting.sweep import preference_instruction
    from steerable.scorers.builtin import INSTRUCTIONS

    assert not set(INSTRUCTIONS) & set(IMAGE_BUILTINS)
    rewards = RewardSet.from_specs(["builtin:brightness", "builtin:brevity"])
    assert preference_instruction(rewards, [0.5, 0.5]).endswith(
        "brightness 50%; brevity 50% (keep the answer short)."
    )


def test_jpeg_compressibility_is_rics():
    """Resized to 512x512 with PIL's default filter, saved at JPEG quality 95: minus kilobytes."""
    picture = gradient()
    buffer = io.BytesIO()
    picture.resize((512, 512)).save(buffer, format="JPEG", quality=95)
    expected = -len(buffer.getvalue()) / 1000
    score = build_scorer(ScorerSpec.parse("builtin:jpeg_compressibility"))
    assert score(["a picture"], [picture]) == [expected]
    # the same pixels as an array score the same; a lower quality compresses better
    assert score(["a picture"], [np.asarray(picture)]) == [expected]
    lower = build_scorer(ScorerSpec.parse("builtin:jpeg_compressibility?quality=50"))
    assert lower(["a picture"], [picture])[0] > expected


def jpeg_kilobytes(picture: Image.Image) -> float:
    buffer = io.BytesIO()
    picture.resize((512, 512)).save(buffer, format="JPEG", quality=95)
    return -len(buffer.getvalue()) / 1000


def test_jpeg_compressibility_of_grayscale_and_rgba_images():
    """A grayscale ('L') image is saved as it is; an RGBA one (JPEG has no alpha) as its RGB."""
    score = build_scorer(ScorerSpec.parse("builtin:jpeg_compressibility"))
    gray = gradient(16, 16).convert("L")
    rgba = gradient()
    rgba.putalpha(Image.fromarray(np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)))
    assert gray.mode == "L" and rgba.mode == "RGBA"
    assert score([""], [gray]) == [jpeg_kilobytes(gray)]
    assert score([""], [rgba]) == [jpeg_kilobytes(rgba.convert("RGB"))]
    assert jpeg_kilobytes(gray) != jpeg_kilobytes(gray.convert("RGB"))  # the mode is kept


def test_jpeg_options_are_checked():
    with pytest.raises(SteerableError, match="quality must be at most 100"):
        ScorerSpec.parse("builtin:jpeg_compressibility?quality=101")
    with pytest.raises(SteerableError, match="size must be a positive integer"):
        ScorerSpec.parse("builtin:jpeg_compressibility?size=0")
    with pytest.raises(SteerableError, match="no option"):
        ScorerSpec.parse("builtin:brightness?size=8")


def test_brightness_and_contrast_read_pixels():
    white = np.full((8, 8), 255, dtype=np.uint8)
    halves = np.zeros((8, 8), dtype=np.float32)
    halves[:, 4:] = 1.0  # float arrays are read in [0, 1]
    brightness = build_scorer(ScorerSpec.parse("builtin:brightness"))
    contrast = build_scorer(ScorerSpec.parse("builtin:contrast"))
    assert brightness(["", ""], [white, halves]) == pytest.approx([1.0, 0.5])
    assert contrast(["", ""], [Image.fromarray(white), halves]) == pytest.approx([0.0, 0.5])


def test_recognizability_prefers_the_digit_the_prompt_names():
    images, captions = digit_images("train", copies=1, seed=0)
    pictures, labels = to_pil(images[:40]), [label_of(c) for c in captions[:40]]
    score = build_scorer(ScorerSpec.parse("builtin:recognizability"))
    right = np.asarray(score([caption(n) for n in labels], pictures))
    wrong = np.asarray(score([caption((n + 1) % 10) for n in labels], pictures))
    assert right.mean() > 0.5 > wrong.mean()
    # by hand: grayscale, resized to 16x16, in [0, 1], the classifier's probability of the named digit
    from steerable.scorers.images import digit_classifier

    odd = [gradient(40, 40), pictures[0].convert("RGB").resize((40, 40))]
    pixels = np.stack([np.asarray(p.convert("L").resize((16, 16)), np.float32).ravel() / 255 for p in odd])
    expected = digit_classifier().predict_proba(pixels)[[0, 1], [3, labels[0]]]
    assert score([caption(3), caption(labels[0])], odd) == pytest.approx(expected.tolist())
    with pytest.raises(SteerableError, match=r"row 2: recognizability needs a prompt naming a digit"):
        score([caption(1), "a cat"], pictures[:2])


@pytest.mark.parametrize("name", IMAGE_BUILTINS)
@pytest.mark.parametrize("bad", ["a response", None, [[1, 2], [3]], 7, np.zeros((2, 2, 2, 2))])
def test_a_row_that_is_not_an_image_is_one_error_naming_the_row(name, bad):
    score = build_scorer(ScorerSpec.parse(f"builtin:{name}"))
    with pytest.raises(SteerableError, match=r"row 2: an image scorer was given .*, not an image"):
        score([caption(1), caption(2)], [gradient(), bad])


@pytest.mark.parametrize("name", IMAGE_BUILTINS)
def test_images_of_different_sizes_are_an_error_naming_the_sizes(name):
    score = build_scorer(ScorerSpec.parse(f"builtin:{name}"))
    with pytest.raises(SteerableError, match=r"different sizes \(16x16, 40x30\)"):
        score([caption(1), caption(2)], [gradient(), gradient(16, 16)])


@pytest.mark.parametrize("name", IMAGE_BUILTINS)
def test_no_images_no_scores(name):
    assert build_scorer(ScorerSpec.parse(f"builtin:{name}"))([], []) == []


def test_text_through_an_image_objective_is_one_error_from_the_reward_set():
    rewards = RewardSet.from_specs(["builtin:brightness"])
    with pytest.raises(SteerableError, match="row 1: an image scorer was given str"):
        rewards.score(["q"], ["a text answer"])


def test_a_py_function_scores_images_through_the_reward_set(tmp_path):
    (tmp_path / "redness.py").write_text(
        "import numpy as np\n\n"
        "def redness(prompts, images):\n"
        "    return [float(np.asarray(im.convert('RGB'))[..., 0].mean()) / 255 for im in images]\n"
    )
    rewards = RewardSet.from_specs(["builtin:brightness", f"red=py:{tmp_path}/redness.py:redness"])
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    black = Image.new("RGB", (8, 8), (0, 0, 0))
    raw = rewards.score(["a red square", "a black square"], [red, black])
    assert raw.shape == (2, 2)
    assert raw[:, 1].tolist() == [1.0, 0.0]
    assert raw[0, 0] == pytest.approx(76 / 255)  # PIL's luma of pure red


# --- hf: image classifiers and CLIP-style models, tiny and randomly initialised -----------------


@pytest.fixture(scope="module")
def vit_classifier(tmp_path_factory):
    """A tiny ViT image classifier with 4 labels and its image processor, saved to a folder."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=4,
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    """A tiny CLIP model with the miniature pipeline's tokenizer and an image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from steerable.methods.ric_image.miniature import MAX_TOKENS, build_tokenizer

    folder = tmp_path_factory.mktemp("clip")
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1)
    text |= dict(num_attention_heads=2, max_position_embeddings=MAX_TOKENS)
    text |= dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = dict(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32)
    vision |= dict(num_hidden_layers=1, num_attention_heads=2)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=8)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size=16).save_pretrained(folder)
    return folder


def _vit_logits(folder, pictures) -> torch.Tensor:
    from transformers import ViTForImageClassification, ViTImageProcessor

    model = ViTForImageClassification.from_pretrained(folder).eval()
    pixels = ViTImageProcessor.from_pretrained(folder)(images=pictures, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return model(pixel_values=pixels).logits


def test_hf_image_classifier_scores_the_probability_or_logit_of_a_label(vit_classifier):
    pictures = [gradient(), gradient().rotate(90, expand=False), Image.new("RGB", (40, 30), "white")]
    logits = _vit_logits(vit_classifier, pictures)
    spec = f"digit=hf:{vit_classifier}?input=image&index=3&batch_size=2"
    assert modality(spec) == "image"
    raw = RewardSet.from_specs([spec, f"raw=hf:{vit_classifier}?input=image&index=1&score=logit"]).score(
        ["", "", ""], pictures
    )
    assert raw[:, 0] == pytest.approx(logits.softmax(-1)[:, 3].numpy(), abs=1e-5)
    assert raw[:, 1] == pytest.approx(logits[:, 1].numpy(), abs=1e-5)


def test_hf_image_classifier_without_a_processor_resizes_to_its_image_size(vit_classifier, tmp_path):
    from transformers import ViTForImageClassification

    ViTForImageClassification.from_pretrained(vit_classifier).save_pretrained(tmp_path)
    score = build_scorer(ScorerSpec.parse(f"d=hf:{tmp_path}?input=image&score=logit"))
    pictures = [gradient(), Image.new("L", (40, 30), 128)]
    values = score(["", ""], pictures)
    # by hand: RGB, resized to the config's 16x16, pixels in [0, 1], label 0's logit
    model = ViTForImageClassification.from_pretrained(tmp_path).eval()
    arrays = [np.asarray(p.convert("RGB").resize((16, 16)), np.float32) / 255 for p in pictures]
    with torch.no_grad():
        logits = model(pixel_values=torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)).logits
    assert values == pytest.approx(logits[:, 0].tolist(), abs=1e-5)
    assert score([], []) == []


def test_hf_clip_scores_each_image_against_its_own_prompt(clip_model):
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    prompts = [caption(3), caption(7), "a handwritten digit one, thick strokes"]
    pictures = [gradient(), Image.new("RGB", (40, 30), "white"), gradient().transpose(0)]
    model = CLIPModel.from_pretrained(clip_model).eval()
    tokenizer = CLIPTokenizer.from_pretrained(clip_model)
    processor = CLIPImageProcessor.from_pretrained(clip_model)
    expected = []
    with torch.no_grad():  # one pair at a time, as CLIP's own forward computes it
        for prompt, picture in zip(prompts, pictures, strict=True):
            text = tokenizer([prompt], return_tensors="pt")
            pixels = processor(images=[picture], return_tensors="pt")["pixel_values"]
            expected.append(model(pixel_values=pixels, **text).logits_per_image[0, 0].item())
    raw = RewardSet.from_specs([f"match=hf:{clip_model}?input=clip&batch_size=2"]).score(prompts, pictures)
    assert raw[:, 0] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("input=image&max_length=8", r"hf input=image scorers have no option\(s\) \['max_length'\]"),
        ("input=clip&index=1", r"hf input=clip scorers have no option\(s\) \['index'\]"),
        ("input=image&score=rank", r"score must be one of \['probability', 'logit'\]"),
        ("input=video", r"input must be one of \['pair', 'response', 'chat', 'image', 'clip'\]"),
        ("input=pair&score=logit", r"hf scorers have no option\(s\) \['score'\]"),
    ],
)
def test_hf_image_options_are_checked_when_the_spec_is_read(options, message):
    with pytest.raises(SteerableError, match=message):
        ScorerSpec.parse(f"d=hf:./somewhere?{options}")


def test_hf_image_scorers_refuse_what_they_cannot_score(vit_classifier, tmp_path):
    with pytest.raises(SteerableError, match="index 4, but the classifier has 4 labels"):
        build_scorer(ScorerSpec.parse(f"d=hf:{vit_classifier}?input=image&index=4"))
    with pytest.raises(SteerableError, match="is not a CLIP-style model"):
        build_scorer(ScorerSpec.parse(f"d=hf:{vit_classifier}?input=clip"))
    with pytest.raises(SteerableError, match="could not be loaded as an image classifier"):
        build_scorer(ScorerSpec.parse(f"d=hf:{tmp_path}?input=image"))
    score = build_scorer(ScorerSpec.parse(f"d=hf:{vit_classifier}?input=image"))
    with pytest.raises(SteerableError, match="row 1: an image scorer was given str"):
        score([""], ["not a picture"])


def test_steerable_score_refuses_an_image_objective_for_its_text_table(tmp_path):
    from typer.testing import CliRunner

    from steerable.cli import app

    data = tmp_path / "answers.jsonl"
    data.write_text('{"prompt": "Say hi", "response": "Hi!"}\n')
    out = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(app, ["score", str(data), "--out", str(out), "-o", "builtin:brightness"])
    assert result.exit_code == 2
    assert "objective 'brightness' (brightness=builtin:brightness) scores images" in result.output
    assert not out.exists()

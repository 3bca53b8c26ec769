"""How a request's steering reaches the model, as pure functions.

RiC conditions on numeric reward tags, e.g. ``<brief> 0.7 <relevant> -1.2``: each objective's
normalised score, rounded to `decimals`. `TagFormat.placement` says where the tags go in a chat:

    user_end  appended to the end of the user turn, after a blank line (default)
    system    the system message is the tags (after the user's own system text, if any)

`user_end` is the default because a small chat model attends to its user turn far more than to
its system message: SmolLM2-135M trained with the tags in the system message hardly moved its
answers' length with the brief tag (ending the answer after the first sentence with probability
0.53-0.68 at any tag), and trained the same way on the same data with them at the end of the
user turn, 0.03 (brief -1.6) to 0.90 (brief +1.5) (benchmarks/stop_probe.py; runs/ric14 vs.
runs/ric18 in benchmarks/RESULTS.md). Models keep the placement they were
trained with: it is stored in their steerable.json.

`preference_to_targets` maps a `Preference` to target tags (DESIGN.md §2.4):

    linf    R_i = lo_i + min(K * w_i, 1) * (hi_i - lo_i)     (default, the paper's closed form)
    l2      R_i = lo_i + (w_i / ||w||_2) * (hi_i - lo_i)
    linear  R_i = lo_i + w_i * (hi_i - lo_i)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from steerable.errors import SteerableError
from steerable.preferences import Preference

PLACEMENTS = ("system", "user_end")
MAPPINGS = ("linf", "l2", "linear")
_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9_]*)>\s*(-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class TagFormat:
    """Where and how precisely reward tags are written."""

    placement: str = "user_end"
    decimals: int = 1

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise SteerableError(f"tag placement {self.placement!r} unknown; choose from {PLACEMENTS}")
        if not 0 <= self.decimals <= 4:
            raise SteerableError(f"tag decimals must be in 0..4, got {self.decimals}")

    def to_dict(self) -> dict:
        return asdict(self)


def format_tags(targets: Mapping[str, float], decimals: int = 1) -> str:
    """``{"brief": 0.74, "relevant": -1.2}`` -> ``"<brief> 0.7 <relevant> -1.2"``."""
    parts = []
    for name, value in targets.items():
        if not math.isfinite(value):
            raise SteerableError(f"target for {name!r} is {value}; targets must be finite")
        text = f"{round(float(value), decimals):.{decimals}f}"
        if text.startswith("-") and float(text) == 0:
            text = text[1:]  # "-0.0" -> "0.0"
        parts.append(f"<{name}> {text}")
    return " ".join(parts)


def parse_tags(text: str) -> dict[str, float]:
    """Inverse of `format_tags`: every ``<name> value`` pair found in `text`."""
    return {name: float(value) for name, value in _TAG.findall(text)}


def tagged_messages(
    prompt: str, tags: str, fmt: TagFormat, system: str | None = None
) -> list[dict[str, str]]:
    """Chat messages carrying `tags` in the place `fmt` says."""
    if fmt.placement == "system":
        system_text = f"{system}\n{tags}" if system else tags
        return [{"role": "system", "content": system_text}, {"role": "user", "content": prompt}]
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": f"{prompt}\n\n{tags}"}]


def preference_to_targets(
    preference: Preference, lo: Sequence[float], hi: Sequence[float], mapping: str = "linf"
) -> dict[str, float]:
    """Map simplex weights to per-objective target tags between lo_i and hi_i."""
    if mapping not in MAPPINGS:
        raise SteerableError(f"mapping {mapping!r} unknown; choose from {MAPPINGS}")
    w = preference.weights
    k = len(w)
    if len(lo) != k or len(hi) != k:
        raise SteerableError(f"lo/hi need {k} values each, got {len(lo)} and {len(hi)}")
    if mapping == "linf":
        scale = [min(k * wi, 1.0) for wi in w]
    elif mapping == "l2":
        norm = math.sqrt(sum(wi * wi for wi in w))
        scale = [wi / norm for wi in w]
    else:
        scale = list(w)
    return {
        name: lo_i + s * (hi_i - lo_i)
        for name, lo_i, hi_i, s in zip(preference.names, lo, hi, scale, strict=True)
    }

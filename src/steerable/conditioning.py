"""How a request's steering reaches the model, as pure functions.

RiC conditions on numeric reward tags, e.g. ``<brief> 0.7 <relevant> -1.2``: each objective's
normalised score, rounded to `decimals`. `TagFormat.placement` says where the tags go in a chat:

    user_end  appended to the end of the user turn, after a blank line (default)
    system    the system message is the tags (after the user's own system text, if any)

`user_end` is the default because a small chat model attends to its user turn far more than to
its system message: SmolLM2-135M trained with the tags in the system message hardly changed how
soon it ended its answer with the brief tag, while trained the same way on the same data with
them at the end of the user turn it went from almost never to almost always stopping after the
first sentence across the tag's range (benchmarks/stop_probe.py measures this). Models keep the
placement they were trained with: it is stored in their steerable.json.

`preference_to_targets` maps a `Preference` to target tags (RiC, Yang et al. 2024):

    linf    R_i = lo_i + min(K * w_i, 1) * (hi_i - lo_i)     (default, the paper's closed form)
    l2      R_i = lo_i + (w_i / ||w||_2) * (hi_i - lo_i)
    linear  R_i = lo_i + w_i * (hi_i - lo_i)
    quantile R_i = Q_i(min(K * w_i, 1)), Q_i the objective's empirical quantile function on the
            training data (normalised): the reference's rule for images, where the dominant
            objective asks for its training maximum and each other one for its quantile at
            2 w_i (K = 2); the same as linf with quantiles in place of a straight line

MOSLIM conditions on intensity tags, e.g. ``<brief 4> <positive 2>``: a level in 1..L for any
non-empty subset of the objectives (those not named are masked out), in the same places as
RiC's tags. `preference_to_levels` maps a preference to levels with the same mappings, between
level 1 and level L, rounded to the nearest level: with linf and K = 2, weights (1, 0) ask for
(L, 1) and (0.5, 0.5) for (L, L).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

from steerable.errors import SteerableError
from steerable.preferences import Preference

PLACEMENTS = ("system", "user_end")
MAPPINGS = ("linf", "l2", "linear", "quantile")
_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9_]*)>\s*(-?\d+(?:\.\d+)?)")
_LEVEL_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9_]*) (\d+)>")


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
    messages = [{"role": "system", "content": system}] if system else []
    return tag_chat([*messages, {"role": "user", "content": prompt}], tags, fmt)


def tag_chat(messages: Sequence[Mapping[str, str]], tags: str, fmt: TagFormat) -> list[dict[str, str]]:
    """A whole conversation carrying `tags` where `fmt` says: at the end of the system message
    (one is added first when there is none), or at the end of the last user turn."""
    messages = [dict(m) for m in messages]
    if fmt.placement == "system":
        if messages and messages[0]["role"] == "system":
            messages[0]["content"] = f"{messages[0]['content']}\n{tags}"
            return messages
        return [{"role": "system", "content": tags}, *messages]
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
        raise SteerableError("the conversation has no user message to carry the tags")
    messages[last]["content"] = f"{messages[last]['content']}\n\n{tags}"
    return messages


def preference_to_targets(
    preference: Preference,
    lo: Sequence[float],
    hi: Sequence[float],
    mapping: str = "linf",
    quantile: Callable[[int, float], float] | None = None,
) -> dict[str, float]:
    """Map simplex weights to per-objective target tags between lo_i and hi_i; the `quantile`
    mapping reads `quantile(i, q)`, objective i's (normalised) q-quantile, instead."""
    if mapping not in MAPPINGS:
        raise SteerableError(f"mapping {mapping!r} unknown; choose from {MAPPINGS}")
    w = preference.weights
    k = len(w)
    if len(lo) != k or len(hi) != k:
        raise SteerableError(f"lo/hi need {k} values each, got {len(lo)} and {len(hi)}")
    if mapping == "quantile":
        if quantile is None:
            raise SteerableError(
                "the quantile mapping needs the objectives' statistics; use linf, l2 or linear"
            )
        pairs = enumerate(zip(preference.names, w, strict=True))
        return {name: quantile(i, min(k * wi, 1.0)) for i, (name, wi) in pairs}
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


def check_levels(levels: Mapping[str, object], names: Sequence[str], count: int) -> dict[str, int]:
    """Validate requested intensity levels: a non-empty subset of `names`, each an integer in
    1..count. Returns them in the objectives' order."""
    if not isinstance(levels, Mapping) or not levels:
        raise SteerableError(f"levels must name at least one of the objectives {list(names)}")
    unknown = [n for n in levels if n not in names]
    if unknown:
        raise SteerableError(f"levels name unknown objective(s) {unknown}; the objectives are {list(names)}")
    out = {}
    for name in names:
        if name not in levels:
            continue
        value = levels[name]
        number = isinstance(value, int) and not isinstance(value, bool)
        number = number or isinstance(value, float) and math.isfinite(value)
        if not number or value != int(value):
            raise SteerableError(f"level for {name!r} is {value!r}; levels are integers 1..{count}")
        if not 1 <= int(value) <= count:
            raise SteerableError(f"level for {name!r} is {int(value)}; levels are 1..{count}")
        out[name] = int(value)
    return out


def format_levels(levels: Mapping[str, int]) -> str:
    """``{"brief": 4, "positive": 2}`` -> ``"<brief 4> <positive 2>"`` (in the given order)."""
    if not levels:
        raise SteerableError("intensity tags need at least one objective")
    return " ".join(f"<{name} {int(level)}>" for name, level in levels.items())


def parse_levels(text: str) -> dict[str, int]:
    """Inverse of `format_levels`: every ``<name n>`` tag found in `text`."""
    return {name: int(value) for name, value in _LEVEL_TAG.findall(text)}


def parse_levels_text(text: str) -> dict[str, int]:
    """Levels typed by a user, ``brief=4,positive=2``; the names and range are checked by
    `check_levels` against the model."""
    levels = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().lstrip("-").isdigit():
            raise SteerableError(f"levels {text!r}: write them as NAME=LEVEL,NAME=LEVEL (e.g. brief=4)")
        if name.strip() in levels:
            raise SteerableError(f"levels {text!r} name {name.strip()!r} twice")
        levels[name.strip()] = int(value)
    if not levels:
        raise SteerableError("levels are empty; write them as NAME=LEVEL,NAME=LEVEL (e.g. brief=4)")
    return levels


def preference_to_levels(preference: Preference, count: int, mapping: str = "linf") -> dict[str, int]:
    """Map simplex weights to a level 1..count for every objective: the RiC mapping between
    level 1 and level `count`, rounded to the nearest level (halves up)."""
    if mapping == "quantile":
        raise SteerableError("levels have no quantiles; map a preference to levels with linf, l2 or linear")
    k = len(preference.weights)
    targets = preference_to_targets(preference, [1.0] * k, [float(count)] * k, mapping)
    return {name: min(count, max(1, int(math.floor(v + 0.5 + 1e-9)))) for name, v in targets.items()}

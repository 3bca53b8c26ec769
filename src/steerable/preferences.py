"""`Preference`: a user's weights over the objectives, validated and normalised to the simplex."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steerable.errors import SteerableError


@dataclass(frozen=True)
class Preference:
    """Non-negative weights over named objectives that sum to one.

    Build it with `Preference.parse`, which accepts weights by name (a mapping, or the CLI form
    ``"brief=0.7,relevant=0.3"``) or by position (a sequence, or ``"0.7,0.3"``). Objectives left
    out of a by-name preference get weight zero. Negative, NaN, infinite or all-zero weights,
    weights whose sum overflows, a wrong number of positional weights and unknown names are errors.
    """

    names: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def parse(
        cls, value: Mapping[str, float] | Sequence[float] | str, names: Sequence[str], signed: bool = False
    ) -> Preference:
        """`signed`: negative weights are allowed ("less of this", where a method defines them),
        as long as the weights add up to more than zero; they are divided by their sum."""
        names = tuple(names)
        if isinstance(value, str):
            value = _parse_text(value)
        if isinstance(value, Mapping):
            unknown = [key for key in value if key not in names]
            if unknown:
                raise SteerableError(
                    f"preference names unknown objective(s) {unknown}; the objectives are {list(names)}"
                )
            raw = [value.get(name, 0.0) for name in names]
        else:
            raw = list(value)
            if len(raw) != len(names):
                raise SteerableError(
                    f"preference has {len(raw)} weight(s) but there are {len(names)} objectives "
                    f"{list(names)}; give one weight per objective, in that order"
                )
        weights = []
        for name, weight in zip(names, raw, strict=True):
            try:
                weight = float(weight)
            except (TypeError, ValueError):
                raise SteerableError(f"preference weight for {name!r} is not a number: {weight!r}")
            except OverflowError:  # an int no float holds
                raise SteerableError(f"preference weight for {name!r} is too large; use a finite number")
            if not math.isfinite(weight):
                raise SteerableError(f"preference weight for {name!r} is {weight}; use a finite number")
            if weight < 0 and not signed:
                raise SteerableError(
                    f"preference weight for {name!r} is negative ({weight}); weights must be >= 0"
                )
            weights.append(weight)
        total = sum(weights)
        if total <= 0:
            if signed and any(weights):
                raise SteerableError(
                    f"preference weights add up to {total:g}; signed weights must add up to more than zero"
                )
            raise SteerableError("preference weights are all zero; give at least one positive weight")
        if not math.isfinite(total):  # normalised by an infinite sum, every weight would be zero
            given = ", ".join(f"{n}={w:g}" for n, w in zip(names, weights, strict=True))
            raise SteerableError(
                f"preference weights {given} are too large to add up; scale them down "
                "(only their ratios count)"
            )
        return cls(names, tuple(w / total for w in weights))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.weights, strict=True))

    def __str__(self) -> str:
        return ",".join(f"{n}={w:.3g}" for n, w in zip(self.names, self.weights, strict=True))


def check_weights_text(text: str) -> None:
    """Check a preference's numbers before its objective names are known (e.g. a config)."""
    values = _parse_text(text)
    names = list(values) if isinstance(values, dict) else [f"weight {i + 1}" for i in range(len(values))]
    Preference.parse(values, names)


def parse_targets(text: str) -> dict[str, float]:
    """Explicit targets from the CLI form ``"brief=1.0,positive=-0.5"`` (any finite numbers,
    negative ones included; which names are allowed is the model's to check)."""
    values = _parse_text(text, "targets")
    if not isinstance(values, dict):
        raise SteerableError(f"targets {text!r} must name each objective: name=value,...")
    targets = {}
    for name, value in values.items():
        try:
            targets[name] = float(value)
        except ValueError:
            raise SteerableError(f"target {name}={value!r} is not a number; write e.g. {name}=0.5")
    return targets


def _parse_text(text: str, what: str = "preference") -> dict[str, str] | list[str]:
    """Parse ``"a=0.7,b=0.3"`` into a mapping or ``"0.7,0.3"`` into a list (values unchecked)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise SteerableError(f"{what} is empty; write it as name=value,... or v1,v2,...")
    if all("=" in p for p in parts):
        pairs = [p.split("=", 1) for p in parts]
        names = [k.strip() for k, _ in pairs]
        if len(set(names)) != len(names):
            raise SteerableError(f"{what} {text!r} names an objective twice")
        return {k.strip(): v.strip() for k, v in pairs}
    if any("=" in p for p in parts):
        raise SteerableError(f"{what} {text!r} mixes name=value and bare values; use one form")
    return parts

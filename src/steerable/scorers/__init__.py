"""Scorers: turn (prompts, responses) into one float per pair. A response is text, or an image
for an image scorer (`modality` says which a spec scores).

A scorer is chosen by a short spec, on the CLI or in YAML:

    NAME=KIND:TARGET[?OPTION=VALUE&...]

    brief=builtin:brevity
    helpful=hf:OpenAssistant/reward-model-deberta-v3-large-v2?input=pair&index=0
    mine=py:my_package.rewards:politeness        (or py:path/to/file.py:function)
    small=builtin:jpeg_compressibility           (an image scorer)
    digit=hf:./my-classifier?input=image&index=3 (an image classifier; input=clip for CLIP)
    honest=moslim:runs/moslim-rm?objective=honest   (a head of a `steerable train moslim-rm` model)

`NAME=` may be left out for a built-in (the name is then the built-in's). In YAML an objective
is either such a string or a mapping ``{name, kind, target, options}``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from steerable.errors import SteerableError
from steerable.names import OBJECTIVE_NAME

KINDS = ("builtin", "hf", "py", "moslim")
_SPEC_HELP = "write it as NAME=KIND:TARGET[?opt=value&...] with KIND one of builtin, hf, py, moslim"


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed scorer spec: the objective's name, the scorer kind, its target and options."""

    name: str
    kind: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | dict | ScorerSpec) -> ScorerSpec:
        if isinstance(spec, ScorerSpec):
            return spec
        if isinstance(spec, dict):
            return cls._from_mapping(spec)
        if not isinstance(spec, str) or not spec.strip():
            raise SteerableError(f"objective spec {spec!r} is empty; {_SPEC_HELP}")
        text = spec.strip()
        name = None
        head = text.split(":", 1)[0]
        if "=" in head:
            name, text = text.split("=", 1)
            name = name.strip()
        kind, sep, rest = text.partition(":")
        if not sep or not rest:
            raise SteerableError(f"objective spec {spec!r} has no KIND:TARGET part; {_SPEC_HELP}")
        target, _, query = rest.partition("?")
        try:
            options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
        except ValueError:
            raise SteerableError(f"objective spec {spec!r}: options must look like ?opt=value&opt2=value")
        return cls._checked(spec, name, kind.strip(), target.strip(), options)

    @classmethod
    def _from_mapping(cls, data: dict) -> ScorerSpec:
        unknown = set(data) - {"name", "kind", "target", "options"}
        if unknown or "kind" not in data or "target" not in data:
            raise SteerableError(
                f"objective {data!r}: a mapping needs keys kind and target "
                f"(and optionally name, options); unexpected: {sorted(unknown)}"
            )
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise SteerableError(f"objective {data!r}: options must be a mapping")
        return cls._checked(
            data,
            data.get("name"),
            str(data["kind"]),
            str(data["target"]),
            {str(k): str(v) for k, v in options.items()},
        )

    @classmethod
    def _checked(cls, origin, name, kind, target, options) -> ScorerSpec:
        if kind not in KINDS:
            raise SteerableError(f"objective spec {origin!r}: unknown scorer kind {kind!r}; {_SPEC_HELP}")
        if not target:
            raise SteerableError(f"objective spec {origin!r} has an empty target")
        if kind == "builtin":
            from steerable.scorers.builtin import check_builtin

            check_builtin(target, options, origin)
            name = name or target
        elif kind == "hf":
            from steerable.reward_models.hf import check_hf_options

            check_hf_options(options, origin)
        elif kind == "py":
            if target.count(":") != 1 or not all(target.split(":")):
                raise SteerableError(
                    f"objective spec {origin!r}: a py scorer target is MODULE:FUNCTION "
                    "or path/to/file.py:FUNCTION"
                )
            if options:
                raise SteerableError(f"objective spec {origin!r}: py scorers take no options")
        elif kind == "moslim":
            from steerable.scorers.moslim import check_moslim_options

            check_moslim_options(options, origin)
        if not name:
            raise SteerableError(f"objective spec {origin!r} needs a name: NAME={kind}:{target}")
        if not OBJECTIVE_NAME.match(name):
            raise SteerableError(
                f"objective name {name!r} is not valid; use letters, digits and _ (starting with a letter)"
            )
        return cls(name, kind, target, dict(options))

    @property
    def runs_code(self) -> bool:
        """Whether building this scorer runs code that comes with it (a py: module, or an hf: or
        moslim: model's own modelling code), which a spec read from someone else's file must not do
        unless the user trusts it."""
        trusting = self.options.get("trust_remote_code") == "true"
        return self.kind == "py" or (self.kind in ("hf", "moslim") and trusting)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target": self.target, "options": dict(self.options)}

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.name}={self.kind}:{self.target}" + (f"?{query}" if query else "")

    def with_absolute_paths(self) -> ScorerSpec:
        """The spec with a local target (an hf: or moslim: model directory, a py: file) made
        absolute, so it still resolves from another working directory; hub ids and modules are
        unchanged (a py: module stays one even where a folder here has its name)."""
        from dataclasses import replace
        from pathlib import Path

        where, sep, function = self.target.rpartition(":") if self.kind == "py" else (self.target, "", "")
        if not Path(where).exists() or (self.kind == "py" and not where.endswith(".py")):
            return self
        return replace(self, target=str(Path(where).resolve()) + sep + function)


MODALITIES = ("text", "image")


def modality(spec: str | dict | ScorerSpec) -> str | None:
    """What an objective scores: "text", "image", or None where the spec does not say (a py:
    function may score either)."""
    spec = ScorerSpec.parse(spec)
    if spec.kind == "builtin":
        from steerable.scorers.builtin import builtin_modality

        return builtin_modality(spec.target)
    if spec.kind == "hf":
        from steerable.reward_models.hf import IMAGE_INPUTS

        return "image" if spec.options.get("input") in IMAGE_INPUTS else "text"
    return "text" if spec.kind == "moslim" else None


def check_modality(specs: Sequence[str | dict | ScorerSpec], wanted: str, who: str) -> None:
    """Refuse, in one line naming the objective, a spec that scores another modality than
    `wanted` ("text" or "image"); `who` names what refuses it (a method, a command)."""
    if wanted not in MODALITIES:
        raise ValueError(f"modality {wanted!r} is not one of {MODALITIES}")
    for spec in specs:
        spec = ScorerSpec.parse(spec)
        found = modality(spec)
        if found not in (None, wanted):
            examples = "builtin:jpeg_compressibility, builtin:recognizability, hf:DIR?input=image"
            if wanted == "text":
                examples = "builtin:sentiment, builtin:brevity, hf:MODEL"
            raise SteerableError(
                f"objective {spec.name!r} ({spec}) scores {found}s, but {who} scores {wanted}s; "
                f"give {wanted} objectives such as {examples}"
            )


def build_scorer(spec: ScorerSpec) -> Callable[[list[str], list[str]], Sequence[float]]:
    """Instantiate the scorer a spec names (loads models; may take seconds)."""
    if spec.kind == "builtin":
        from steerable.scorers.builtin import build_builtin

        return build_builtin(spec.target, spec.options)
    if spec.kind == "hf" and modality(spec) == "image":
        from steerable.reward_models.hf_image import HFImageScorer

        return HFImageScorer.from_options(spec.target, spec.options)
    if spec.kind == "hf":
        from steerable.reward_models.hf import HFRewardModel

        return HFRewardModel.from_options(spec.target, spec.options)
    if spec.kind == "moslim":
        from steerable.scorers.moslim import MOSLIMScorer

        return MOSLIMScorer.from_options(spec.name, spec.target, spec.options)
    from steerable.scorers.python_callable import load_callable

    return load_callable(spec.name, spec.target)

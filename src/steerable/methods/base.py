"""What a method is to the rest of steerable: one `Method` record in the registry
(`steerable.methods`), and the `Steering` a `SteerablePolicy` of it delegates to.

The record names its heavy pieces as "module:attribute" strings, resolved only when used, so
importing the registry imports neither torch nor TRL.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from steerable.errors import SteerableError


@dataclass(frozen=True)
class Method:
    """One steering method, as every command sees it.

    Identity:
        name: what the user types (`steerable train NAME`, `--method NAME`) and what a model
            directory's steerable.json records as its `method`.
        title: how prose writes it (RiC, MOSLIM), in messages.
        summary: one line, shown by `steerable train --help`.
        examples: runnable `steerable train NAME ...` lines its `--help` ends with (none given:
            `steerable train NAME --help`, which lists every option).

    Steering (what a request may carry; `GET /v1/models` lists it as the card's `steering`):
        steering: the request keys it takes, among `weights` (a preference), `mapping` (how
            weights become tags), `targets` (RiC's normalised targets), `levels` (MOSLIM's
            intensity levels) and `examples` (NP-DPO's {prompt, chosen, rejected} choices).
        in_prompt: its steering is text in the prompt (tags), so a server can render it and
            proxy the request to an engine serving the merged model (`serve --upstream`,
            `steerable export`).
        policy: the module implementing its `Steering`, when a `SteerablePolicy` loads its directory;
            None when it does not (the RL baselines answer through their `sweep` builder).
        images: "module:attr" of the class that loads its model directory when it makes images,
            not text (RiC on images: `ImagePolicy`, with `from_pretrained(directory, base=...)`,
            `request(steering)`, `generate(prompts, ...)` and `sample(texts, ...)`); None for a
            text method. `generate`, `serve` and `evaluate` ask `modality`.

    Training (`steerable train NAME`; both None for a method that is only evaluated):
        config: "module:attr" of its config dataclass (every field a command-line option).
        recipe: "module:attr" of `recipe(config) -> Path`, the model directory it wrote.
        plan: "module:attr" of `plan(config) -> cost.Plan`: what a run will cost, printed
            (and asked about, unless --yes) before it starts (None: it starts at once).
        report: "module:attr"s of functions applied in turn to the model directory, the last
            giving the rich renderables printed after training (empty: only the path).

    Comparison (`steerable compare`, `steerable demo`):
        compare: "module:attr" of `compare(inputs: CompareInputs) -> Comparing`: the stages that
            train it inside a comparison (or, for one that trains nothing, the method whose
            directory it is evaluated on: `Comparing.evaluates`), built (and so checked) from the
            comparison's shared inputs before anything trains (None: a comparison does not train
            it).
        uses_scored: its hook takes the scored data a method before it made (RiC's offline
            data) by default, so a comparison plans and trains it after the methods that do not.

    Model directories:
        reads: the other methods whose model directories it loads as its own (MOD, LoRA output
            mixing: the experts `steerable train soups` writes); `--method NAME --model DIR`.
        mixture: "module:attr" of `mix(peft_model, expert_names, merge) -> experts.mixture.Mixture`:
            its policy mixes the directory's experts (its `policies` adapters, loaded unmerged) at
            every decoding step instead of loading one adapter (None: one adapter, or none).
        rungs: "module:attr" of `rungs(method, directory, out) -> list[rungs.Rung]`:
            the models its training saved on the way to the finished one, a budget ladder's
            rungs (`evaluation.ladder`; None: the finished model only). A method evaluated on
            another's directory (MOD on Soups') is evaluated on that method's rungs.
        budgets: the keys of a comparison's `budgets:` section its training reads (the steps at
            which it saves itself: rl_steps, sft_steps).
        forwards: (a, b): a generated token costs a * K + b forwards of the base model with K
            objectives (MOD: (1, 0); GenARM, the base besides: (1, 1); one model: (0, 1)); what
            a comparison's estimate counts its sweep at.
        check: "module:attr" of `check(manifest, path)`, raising SteerableError for a
            steerable.json that lacks what this method needs (None: nothing beyond the shared
            checks of `policy.load_manifest`).

    Evaluation (`steerable evaluate --method NAME`):
        sweep: "module:attr" of `sweep(model, sampling, **options) -> Generator`; `options`
            are method (the name it was asked by, which a builder shared by several methods
            checks the directory against), stats, adapter, mapping, dtype, trust_remote_code,
            examples, guidance, steps and divergence (each builder takes what applies to it and
            ignores the rest).
        own_directory: `--model` is a model directory this method wrote (False: a base model,
            as for the prompting floor).
        evaluate_options: the evaluate options beyond the shared ones that apply to it
            (`adapter`, `mapping`; an image method's `guidance`, `sampling_steps`); any other
            given is refused before a model loads.
    """

    name: str
    title: str
    summary: str
    steering: tuple[str, ...]
    sweep: str
    examples: tuple[str, ...] = ()
    in_prompt: bool = False
    policy: str | None = None
    images: str | None = None
    config: str | None = None
    recipe: str | None = None
    plan: str | None = None
    report: tuple[str, ...] = ()
    compare: str | None = None
    uses_scored: bool = False
    reads: tuple[str, ...] = ()
    mixture: str | None = None
    forwards: tuple[int, int] = (0, 1)
    rungs: str | None = None
    budgets: tuple[str, ...] = ()
    check: str | None = None
    own_directory: bool = True
    evaluate_options: tuple[str, ...] = ()

    @property
    def trainable(self) -> bool:
        return self.recipe is not None

    def forwards_per_token(self, k: int) -> int:
        """Forwards of the base model a generated token costs with K objectives (`forwards`)."""
        return self.forwards[0] * k + self.forwards[1]

    @property
    def modality(self) -> str:
        """What its models make: "image" or "text"."""
        return "image" if self.images is not None else "text"

    def image_policy(self) -> type:
        """The class loading its image model directories (`images`)."""
        if self.images is None:
            raise SteerableError(f"a {self.name} model makes text, not images")
        return resolve(self.images)

    def steering_of(self) -> Steering:
        if self.policy is None:
            raise SteerableError(f"a {self.name} model is not loaded as a SteerablePolicy")
        return resolve(self.policy)

    def check_reads(self, written_by: str, path) -> None:
        """Refuse a directory written by a method it does not load (its own, or `reads`)."""
        if written_by != self.name and written_by not in self.reads:
            takes = " or ".join(repr(m) for m in (self.name, *self.reads))
            raise SteerableError(
                f"{path} holds a {written_by!r} model; --method {self.name} loads {takes} directories "
                f"(use --method {written_by})"
            )

    def mix(self, model, experts: list[str], merge: bool = True):
        """Its mixture of a directory's experts (`mixture`); `merge`: run them merged where the
        mixing allows it."""
        if self.mixture is None:
            raise SteerableError(f"a {self.name} model does not mix experts")
        return resolve(self.mixture)(model, experts, merge=merge)

    def check_manifest(self, manifest, path) -> None:
        if self.check is not None:
            resolve(self.check)(manifest, path)


def resolve(reference: str) -> Any:
    """The object a "module:attr" reference names (a bare "module": the module), imported now."""
    module, _, attr = reference.partition(":")
    found = importlib.import_module(module)
    return getattr(found, attr) if attr else found


class Step(NamedTuple):
    """One training stage of a comparison: its folder's `name` under the comparison's output
    directory (also its config section's, in messages), its checked `config`, and "module:attr"
    of the function `train(config)` that runs it and returns the directory it wrote."""

    name: str
    config: Any
    train: str


class Comparing(NamedTuple):
    """How a comparison trains one method: `steps` run in turn, the last writing the model
    directory that is evaluated.

    What it gives the methods after it (registry order):
        stats: its model directory, the comparison's statistics when `stats:` is not given.
        scored: its scored offline data (a table), the default data of methods trained on one.
    What it adds to the comparison's cost (`evaluation.compare.compare_cost`):
        objectives: K, when its config names the objectives (the grid is built on K).
        points: K -> the grid points its evaluation sweeps (None: the whole grid).
        uncounted: what its training generates that the estimate leaves out.
    A method that trains nothing of its own (MOD, LoRA output mixing: no `steps`):
        evaluates: the method whose model directory it is evaluated on (one of its `reads`,
            e.g. "soups"); the comparison refuses it unless that method is in it too.
        options: the `evaluate` options its section gives (MOD's divergence; None: none).
    """

    steps: tuple[Step, ...]
    stats: str | None = None
    scored: str | None = None
    objectives: int | None = None
    points: Callable[[int], int] | None = None
    uncounted: str | None = None
    evaluates: str | None = None
    options: Mapping[str, Any] | None = None


@dataclass
class CompareInputs:
    """What a comparison shares with each method's `compare` hook: its configuration (`model`,
    `prompts`, `trust_remote_code` and the sections; a variant's, with its sections over them),
    its output directory, the folder the hook writes into (`folder`), and what the methods
    before it gave (`made_stats`, `made_scored`)."""

    config: Any  # evaluation.compare.CompareConfig
    out: Path
    made_stats: str | None = None
    made_scored: str | None = None
    variant: str | None = None  # a variant's name: its folders are OUT/VARIANT/NAME

    def folder(self, name: str) -> Path:
        """Where the hook's directory `name` (its model directory, a reward model's) goes:
        OUT/NAME, or OUT/VARIANT/NAME for a variant, so a variant never trains into the
        directories of the method it varies."""
        return self.out / name if self.variant is None else self.out / self.variant / name

    @property
    def stats(self) -> str:
        """The comparison's statistics: as given, else those of a method before this one."""
        stats = self.config.stats or self.made_stats
        if stats is None:
            raise SteerableError(
                "without ric in the methods, the config needs stats: (a stats JSON or model dir)"
            )
        return stats

    def scored(self, given: str | None, missing: str) -> str:
        """A section's scored data: as `given`, else what a method before this one scored
        (`missing`: the error when there is neither)."""
        if given is None and self.made_scored is None:
            raise SteerableError(missing)
        return given or self.made_scored

    def shared(self, **section) -> dict:
        """`section` with the comparison's model, trust and prompts (a prompt file given to the
        comparison is every method's)."""
        prompts = {"prompts": self.config.prompts} if self.config.prompts is not None else {}
        return {
            **section,
            "model": self.config.model,
            "trust_remote_code": self.config.trust_remote_code,
            **prompts,
        }

    def rl(self) -> dict:
        """The rl: section, shared by the GRPO-trained methods (the same RL budget), with the
        comparison's statistics and its budget ladder's steps (`budgets: {rl_steps: [...]}`:
        each policy is also saved there)."""
        steps = self.config.budgets.get("rl_steps")
        return {**self.shared(**self.config.rl), "stats": self.stats, **({"rungs": steps} if steps else {})}


class Generator(NamedTuple):
    """What `evaluate` sweeps for one method: `generate(prompts, weights) -> responses`, and the
    objectives (with statistics), tokenizer and dtype it is measured with. `manifest`: the
    trained directory's (its training compute is recorded), None for an untrained floor.

    What some methods add:
        grid: the only weight vectors it answers at (MORLHF's; the evaluation grid does not
            apply), an array [points, K].
        requested: weights -> what each objective was asked for ([K]: a tagged method's target
            or level), recorded at each point for the controllability against requests.
        levels: what a level sweep needs (`moslim.steering.level_steering`): count, generate,
            others, classify; None: it reads no levels.
        baseline: prompts -> what the model it was fine-tuned from makes for them, unsteered (RiC
            on images: the caption-only base model), evaluated beside the grid as its own point.
        forwards: what a generated token costs, in forwards of the base model (a mixture of K
            experts by log-probabilities: K; one model, or LoRA output mixing: 1).
    """

    generate: Callable[[list[str], Any], list[str]]
    rewards: Any
    tokenizer: Any
    manifest: Any
    dtype: str
    grid: Any = None
    requested: Callable[[Any], list[float]] | None = None
    levels: dict | None = None
    baseline: Callable[[list[str]], list] | None = None
    forwards: int = 1


class Steering(Protocol):
    """How a `SteerablePolicy` of one method is steered; the policy passes itself as `policy`.
    A module of these functions implements it (e.g. `methods/ric/steering.py`)."""

    def levels(self, manifest) -> int | None:
        """L, the number of intensity levels it reads (None: it reads no levels)."""

    def adapter(self, manifest) -> str:
        """The adapter folder, inside the model directory, loaded by default."""

    def attach(self, policy, directory) -> None:
        """After the weights are loaded: what else the directory holds (NP-DPO's context path)."""

    def steering_for(self, policy, preference, targets, levels, mapping) -> dict | None:
        """A request's steering checked and made concrete (at most one of preference, targets,
        levels is given; none: equal weights)."""

    def tags(self, policy, steering: Mapping | None) -> str | None:
        """The tag text `steering` renders to in the prompt (None: no tags)."""

    def request(self, policy, steering: Mapping) -> tuple[dict | None, Any, dict]:
        """A served request's `steering` body, checked: (what `tags` renders, the condition the
        model is conditioned on besides the prompt or None, what the response echoes as applied)."""

    def conditioner(self, policy) -> Callable[[Sequence[Any]], AbstractContextManager] | None:
        """What the server enters around each forward pass of a batch, given its rows'
        conditions (each what `request` returned for the row's request) in row order, so that
        every row is conditioned on its own (NP-DPO: FiLM on the rows' z, stacked). None: the
        model is steered by the prompt alone, and `request` returns no condition."""

    def generate(
        self, policy, prompts: Sequence[str], sampling, system, progress: bool, **steering
    ) -> list[str]:
        """Responses steered by `steering` (preference, targets, levels, examples, mapping)."""


def needs_policies(manifest, path) -> None:
    """A model directory of one or more trained policies lists them in its manifest."""
    if not manifest.policies:
        raise SteerableError(f"{path}: a {manifest.method} model needs its 'policies' list")

"""What a long run will cost, said before it starts: how many answers it generates and about how
long that takes at the generation rate measured on this machine.

Every generation records its rate (`rates.record_rate`, called by `generate_texts`) in
`$STEERABLE_HOME/rates.json`: decoded tokens per second, per model and device, the newest
measurement of each. A command's `Plan` (how many answers of how many tokens) becomes an
`Estimate` at that rate, or at a stated default where this machine has not measured the model
yet. A run expected to take over a minute says so before it starts; over ten minutes, in an
interactive shell, it asks first (the command line's `confirm_cost`). Generation is most of a
run's time on a small model; training steps are shown by their own bars as they go.

The time is an upper estimate: it counts every answer at max_new_tokens, and a batch stops
early when all its answers have ended.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from steerable import rates

# Assumed where nothing was measured: SmolLM2-135M decoding 64 answers at once on 2 CPU
# cores makes about 150 tokens/s; one GPU, an order of magnitude more.
DEFAULT_TOKENS_PER_SECOND = {"cpu": 150.0, "cuda": 2000.0}
SAY_ABOVE_SECONDS = 60.0  # a run expected to take longer says so before it starts
ASK_ABOVE_SECONDS = 600.0  # an interactive one expected to take longer asks first


def model_key(name_or_path: str) -> str:
    """The name a rate is filed under (`rates.model_key`), an alias (smollm2, tiny) read as its
    cached directory."""
    from steerable.defaults import DEFAULT_MODEL, TINY_MODEL, resolve_model

    return rates.model_key(
        name_or_path, lambda name: resolve_model(name) if name in (DEFAULT_MODEL, TINY_MODEL) else name
    )


def this_device() -> str:
    """The device generation will run on here, named as `generation.device_name` names it."""
    import torch

    from steerable.generation import device_name

    return device_name(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


@dataclass
class Plan:
    """What a command will generate: `generations` answers of up to `max_new_tokens` tokens
    from `model`; `what` says where the count comes from ("66 grid points x 42 prompts x 1
    sample")."""

    generations: int
    max_new_tokens: int
    model: str
    what: str
    note: str | None = None  # a cheaper way to run it, said beside the estimate
    tokens: int | None = None  # token slots where answers differ in length (default: all at max)
    trains: bool = False  # the run trains too, which the estimate does not count

    @property
    def slots(self) -> int:
        return self.tokens if self.tokens is not None else self.generations * self.max_new_tokens


@dataclass
class Estimate:
    plan: Plan
    seconds: float
    tokens_per_second: float
    measured: str | None  # when the rate was measured here; None: the default was assumed

    def line(self) -> str:
        plan = self.plan
        if self.measured is not None:
            rate = (
                f"{self.tokens_per_second:.3g} tokens/s, measured for {model_key(plan.model)} on this "
                f"machine on {self.measured[:10]}"
            )
        else:
            rate = (
                f"{self.tokens_per_second:.3g} tokens/s assumed: {model_key(plan.model)} was not measured "
                "on this machine yet"
            )
        return (
            f"this run generates {plan.generations:,} answers ({plan.what}) of up to "
            f"{plan.max_new_tokens} tokens: at most about {duration(self.seconds)} of generation at {rate}"
            + ("; training takes its own time besides" if plan.trains else "")
        )

    @property
    def worth_saying(self) -> bool:
        return self.seconds > SAY_ABOVE_SECONDS

    @property
    def long(self) -> bool:
        return self.seconds > ASK_ABOVE_SECONDS


def estimate(plan: Plan, device: str | None = None) -> Estimate:
    """`plan` at this machine's measured rate for its model, else the stated default."""
    device = device or this_device()
    found = rates.read_rates().get(f"{model_key(plan.model)} on {device}")
    try:
        rate, measured = float(found["tokens_per_second"]), str(found["measured"])
    except (TypeError, KeyError, ValueError):
        rate = DEFAULT_TOKENS_PER_SECOND["cpu" if device.startswith("cpu") else "cuda"]
        measured = None
    if not rate > 0:
        rate, measured = DEFAULT_TOKENS_PER_SECOND["cpu"], None
    seconds = plan.slots / rate
    return Estimate(plan, seconds, rate, measured)


def duration(seconds: float) -> str:
    """A time as a person says it: 40 s, 12 min, 3.5 h."""
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    if seconds < 90 * 60:
        return f"{math.ceil(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def interactive() -> bool:
    """Whether someone can answer a question: standard input is a terminal."""
    return sys.stdin is not None and sys.stdin.isatty()


def grid_points(k: int, resolution: int) -> int:
    """Points of `evaluation.sweep.preference_grid(k, resolution)`: C(resolution + k - 1, k - 1)."""
    return math.comb(resolution + k - 1, k - 1)


def coarser_lattice(k: int, resolution: int, option: str = "--resolution {}") -> str | None:
    """For K >= 3: the grid's size, and the size a coarser resolution would give, set with
    `option` (a format with the resolution's place)."""
    if k < 3 or resolution <= 2:
        return None
    options = [r for r in (resolution // 2, 4, 3) if 1 < r < resolution]
    coarse = max(options) if options else resolution - 1
    return (
        f"{k} objectives at {option.format(resolution)} make {grid_points(k, resolution):,} grid points; "
        f"{option.format(coarse)} gives {grid_points(k, coarse):,}"
    )


def sweep_plan(
    points: int,
    k: int,
    resolution: int | None,
    prompts: int,
    samples: int,
    level_prompts: int,
    sampling,
    model: str,
) -> Plan:
    """What `evaluate` generates: every grid point answers every prompt `samples` times, and a
    model steered by levels answers `level_prompts` more (objectives x levels x prompts x its
    samples). K >= 3 at a given resolution notes the coarser lattice."""
    what = f"{points:,} grid points x {prompts} prompts x {samples} sample{'s' * (samples != 1)}"
    generations = points * prompts * samples
    if level_prompts:
        what += f", and {level_prompts * prompts:,} for the level sweep"
        generations += level_prompts * prompts
    note = coarser_lattice(k, resolution) if resolution is not None else None
    return Plan(generations, sampling.max_new_tokens, model, what, note)


def ric_plan(config) -> Plan:
    """What `train ric` generates: the offline answers (prompts x samples_per_prompt, none when
    `data` is given) and every MORS round's `online_samples`. Finished stages are not counted
    off: a resumed run says which it skips as it starts."""
    from steerable.data import load_prompts

    parts, generations = [], 0
    if config.data is None:
        prompts = len(load_prompts(config.prompt_split, config.prompt_limit, config.prompts))
        generations += prompts * config.samples_per_prompt
        samples = config.samples_per_prompt
        parts.append(f"offline: {prompts} prompts x {samples} sample{'s' * (samples != 1)}")
    if config.stop_after is None and config.online_iterations:
        generations += config.online_iterations * config.online_samples
        rounds = config.online_iterations
        parts.append(f"MORS: {rounds} round{'s' * (rounds != 1)} x {config.online_samples}")
    what = "; ".join(parts) or "none: the data is given"
    return Plan(generations, config.max_new_tokens, config.model, what, trains=config.stop_after != "offline")

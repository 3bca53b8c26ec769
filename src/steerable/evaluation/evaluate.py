"""Evaluate any method over a preference grid with the same prompts, objectives and statistics.

A method is turned into a function ``generate(prompts, weights) -> responses`` by its registry
entry's `sweep` (`steerable.methods`):

    ric        a RiC model directory: weights -> tags through the model's stored mapping
    moslim     a MOSLIM model directory: weights -> intensity levels through the same mappings;
               also swept level by level (`evaluation.levels`)
    tags       the base model of a MOSLIM directory given the same intensity tags, untrained
               (MOSLIM's floor)
    prompting  the base model, with the preference written into the system prompt (the floor
               every trained method must beat); needs the statistics of the comparison
    soups      a Rewarded Soups directory of experts (one LoRA adapter per objective): the
               adapters averaged in weight space with each point's weights (merged ones cached)
    mod        the same directory, its experts mixed per token: sum_k w_k log pi_k (MOD; K
               forwards of the base model a token)
    lora-mix   the same directory, every LoRA layer adding sum_k w_k B_k A_k x (one forward)
    genarm     a GenARM directory: the base model's log-probabilities plus sum_k w_k those of
               reward model k, at temperature 1 / (1 + sum_k w_k) (1 + K forwards a token)
    morlhf     a MORLHF directory: one policy per weight vector, so it is evaluated at its own
               vectors only (the grid does not apply)
    np-dpo     an NP-DPO directory: weights -> `examples` choices of a simulated user whose
               utility is the weighted normalised objectives, drawn from the held-out pairs the
               directory keeps (`methods.np_dpo.steering.simulated_examples`)
    ric-image  a RiC text-to-image directory: weights -> target tags on the captions; its
               caption-only base model's images are scored as one more point, the baseline

A method whose models make images (`Method.modality`) answers the digit captions by default,
counts images, not tokens, and keeps a few images of each point (`evaluation.images`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from steerable import methods
from steerable.cost import Plan, sweep_plan
from steerable.data.prompts import load_prompts, prompt_source, refuse_trained_on
from steerable.errors import SteerableError
from steerable.evaluation.images import IMAGE_FOLDER, ImagePlan, keep_images
from steerable.evaluation.report import EvaluationResult, finite, prompts_digest, versus_baseline
from steerable.evaluation.sweep import (
    SweepPoint,
    check_samples,
    controllability,
    mean_inner_product,
    preference_grid,
    requested_controllability,
    seconds_per_token,
    summarise,
    sweep,
)
from steerable.generation import SamplingConfig, count_tokens
from steerable.manifest import compute_record
from steerable.methods.base import Generator, resolve
from steerable.methods.np_dpo.steering import EXAMPLES as FEWSHOT_EXAMPLES

Generate = Callable[[list[str], np.ndarray], list[str]]


def method_generator(
    method: str,
    model: str,
    sampling: SamplingConfig,
    stats: str | None,
    adapter: str | None = None,
    mapping: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    examples: int = FEWSHOT_EXAMPLES,
    guidance: float | None = None,
    sampling_steps: int | None = None,
    divergence: float | None = None,
) -> Generator:
    """What `evaluate` sweeps for one method, built by its registry entry (`methods.base.Method`):
    `adapter` evaluates another stage's adapter, e.g. DIR/stages/sft/weights for the model
    before online MORS; `mapping` (linf, l2, linear, quantile) overrides the model's stored mapping;
    `guidance` and `sampling_steps` override an image model's guidance scale and denoising
    steps, `divergence` MOD's alpha-divergence (0: reverse KL; each where the method takes it,
    else refused). `dtype` overrides the dtype a model
    directory records (float32 for the prompting floor); `trust_remote_code` lets models and the
    objectives' py: scorers run their own code. NP-DPO only: `examples` choices of the simulated
    user per grid point."""
    entry = methods.get(method)
    given = {
        "adapter": adapter,
        "mapping": mapping,
        "guidance": guidance,
        "sampling_steps": sampling_steps,
        "divergence": divergence,
    }
    for option, value in given.items():
        if value is not None and option not in entry.evaluate_options:
            takes = [  # the methods whose models it applies to (not their untrained floors)
                m.title
                for m in methods.METHODS.values()
                if (m.trainable or m.reads) and option in m.evaluate_options
            ]
            flag, who = "--" + option.replace("_", "-"), ", ".join(takes[:-1])
            who = f"{who} and {takes[-1]}" if who else takes[-1]
            raise SteerableError(f"{flag} applies to {who} models only, not to {entry.title}; leave it out")
    return resolve(entry.sweep)(
        model,
        sampling,
        method=method,
        stats=stats,
        adapter=adapter,
        mapping=mapping,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        examples=examples,
        guidance=guidance,
        steps=sampling_steps,
        divergence=divergence,
    )


def evaluation_prompts(method: str, split: str, limit: int | None, path) -> tuple[list[str], str]:
    """The prompts an evaluation answers, the first `limit`, and where they came from: `split`
    of the prompt file at `path`, else of the embedded set; for a method that makes images the
    embedded set is the digit captions, one per class (the recognizability classifier was
    fitted on held-out digits of each)."""
    if path is None and methods.get(method).modality == "image":
        from steerable.data.digits import CLASS_NAMES, caption

        return [caption(label) for label in range(len(CLASS_NAMES))][:limit], "digit captions"
    return load_prompts(split, limit, path), prompt_source(split, path)


def answer_relevance():
    """The level sweep's check that answers are still answers: the built-in `relevance`
    scorer (MiniLM cosine of question and answer, offline)."""
    from steerable.scorers.builtin import build_builtin

    return build_builtin("relevance", {})


def evaluate(
    method: str,
    model: str,
    prompts: Sequence[str],
    resolution: int = 10,
    sampling: SamplingConfig | None = None,
    stats: str | None = None,
    grid: np.ndarray | None = None,
    progress: bool = True,
    adapter: str | None = None,
    mapping: str | None = None,
    samples: int = 1,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    prompt_split: str | None = None,
    prompt_limit: int | None = None,
    levels: bool = True,
    level_samples: int | None = None,
    examples: int = FEWSHOT_EXAMPLES,
    before_sweep: Callable[[Plan | ImagePlan], None] | None = None,
    guidance: float | None = None,
    sampling_steps: int | None = None,
    images_to: str | Path | None = None,
    divergence: float | None = None,
) -> EvaluationResult:
    """Sweep the grid, score with the shared objectives, and summarise; `samples` responses
    per prompt at each point. MOSLIM models (and their tags floor) are also swept level by level
    with `level_samples` responses per prompt (default: `samples`), unless `levels` is False.
    `dtype` / `trust_remote_code`: see `method_generator`. The result records the prompts (a
    hash; `prompt_split` and `prompt_limit` say where they came from) and the sampling, so
    that `steerable report` compares only results measured the same way. `before_sweep` is
    given what the sweep will generate once the grid is known, before it starts: a text
    method's `cost.Plan` (its estimate is in tokens), an image method's `images.ImagePlan`.

    A method that makes images: `guidance` and `sampling_steps` override the model's; each
    point keeps a thumbnail and writes its grid PNG under `images_to` (`evaluation.images`); a
    method with a base model (`Generator.baseline`) has it answer the same prompts and samples
    from the same seed, recorded as the result's `baseline` beside the front.

    `divergence`: a MOD model's alpha-divergence (0: reverse KL, the default). The result
    records, beside the training compute of the directory the model was loaded from (for MOD
    and LoRA output mixing, the soups directory's experts), what generation cost: the forwards
    of the base model a token takes (`Generator.forwards`) and the seconds per generated token
    measured over the grid."""
    from dataclasses import asdict

    from steerable.progress import advance_to, stage_bar

    check_samples(samples)  # before any model is loaded
    level_samples = samples if level_samples is None else level_samples
    check_samples(level_samples)
    prompts = list(prompts)
    refuse_trained_on(prompts, model)  # held-out prompts the model trained on would flatter it
    sampling = sampling or SamplingConfig(max_new_tokens=64, temperature=0.7)
    images = methods.get(method).modality == "image"
    built = method_generator(
        method, model, sampling, stats, adapter, mapping, dtype, trust_remote_code, examples, guidance,
        sampling_steps, divergence=divergence,
    )  # fmt: skip
    generate, rewards, tokenizer, manifest, dtype = built[:5]
    compute = compute_record(manifest)
    if grid is None:
        grid = built.grid  # MORLHF can only be asked for the vectors it was trained at
    if grid is None:
        grid = preference_grid(len(rewards), resolution)
    else:
        grid, resolution = np.asarray(grid, float), None  # a given grid has no resolution
    steering = built.levels
    if before_sweep is not None and images:
        steps = image_sampling(manifest, sampling, guidance, sampling_steps)["steps"]
        before_sweep(image_plan(len(grid), built.baseline is not None, len(prompts), samples, steps))
    elif before_sweep is not None:
        by_level = len(rewards) * steering["count"] * level_samples if steering is not None and levels else 0
        before_sweep(
            sweep_plan(len(grid), len(rewards), resolution, len(prompts), samples, by_level, sampling,
                       tokenizer.name_or_path)
        )  # fmt: skip
    folder = None if images_to is None or not images else Path(images_to) / IMAGE_FOLDER
    if images:  # the bar counts images; a point records the images it kept, and no tokens
        per_point, unit, tokens = len(prompts) * samples, "img", lambda answers: 0
        kept: list[dict] = []

        def answer(texts, weights):
            made = generate(texts, weights)
            kept.append(keep_images(made, len(prompts), samples, folder, f"point_{len(kept):02d}"))
            return made
    else:
        per_point, unit, answer = len(prompts) * samples * sampling.max_new_tokens, "tok", generate
        tokens = lambda texts: count_tokens(tokenizer, texts)  # noqa: E731 -- as the sweep takes it
    base_points = 1 if built.baseline is not None else 0
    started = time.perf_counter()
    total = (len(grid) + base_points) * per_point
    with stage_bar(total, f"evaluating {method}", unit, disable=not progress) as bar:

        def point_done(i: int, n: int) -> None:
            advance_to(bar, i * per_point)
            bar.set_postfix_str(f"{i}/{n} points", refresh=False)

        points = sweep(
            answer,
            rewards,
            prompts,
            grid,
            count_tokens=tokens,
            progress=point_done,
            samples=samples,
            requested=built.requested,
        )
        if images:
            for point, point_images in zip(points, kept, strict=True):
                point.thumbnail, point.images = point_images["thumbnail"], point_images["images"]
        baseline = None
        if built.baseline is not None:
            baseline = base_point(built.baseline, rewards, prompts, samples, images, folder)
            advance_to(bar, total)
    level_result = None
    if steering is not None and levels:
        from steerable.evaluation.levels import level_record, level_sweep

        count = steering["count"]
        per_level = len(prompts) * level_samples * sampling.max_new_tokens
        total = len(rewards) * count
        with stage_bar(total * per_level, f"{method} by level", "tok", disable=not progress) as bar:
            finished = iter(range(1, total + 1))

            def level_done() -> None:
                advance_to(bar, next(finished) * per_level)

            level_points = level_sweep(
                steering["generate"],
                rewards,
                prompts,
                count,
                level_samples,
                classify=steering["classify"],
                count_tokens=lambda texts: count_tokens(tokenizer, texts),
                progress=level_done,
                others=steering["others"],
                quality=answer_relevance(),
            )
        level_result = level_record(level_points, rewards.names, count, steering["others"])
    compute["eval_seconds"] = time.perf_counter() - started
    if not images:
        compute["forwards_per_token"] = built.forwards
        compute["seconds_per_token"] = seconds_per_token(points)
    requested = requested_controllability(points, rewards.names)
    return EvaluationResult(
        method=labelled(method, mapping, divergence),
        model=str(model) if adapter is None else f"{model}, adapter {adapter}",
        names=rewards.names,
        rewards=rewards.to_dict(),
        points=points,
        controllability=controllability(points, rewards.names),
        prompts_sha256=prompts_digest(prompts),
        num_prompts=len(prompts),
        sampling=image_sampling(manifest, sampling, guidance, sampling_steps) if images else asdict(sampling),
        samples=samples,
        resolution=resolution,
        prompt_split=prompt_split,
        prompt_limit=prompt_limit,
        dtype=dtype,
        compute=compute,
        levels=level_result,
        requested_controllability=None if requested is None else {n: finite(v) for n, v in requested.items()},
        baseline=None if baseline is None else versus_baseline(baseline, points, rewards.to_dict()),
        inner_product=mean_inner_product(points),
    )


def labelled(method: str, mapping: str | None, divergence: float | None) -> str:
    """How a result names its method: with the mapping or divergence it was evaluated at when
    one was given (ric-linf, mod-alpha0.5), so that a report tells them apart."""
    if mapping is not None:
        return f"{method}-{mapping}"
    return method if divergence is None else f"{method}-alpha{divergence:g}"


def image_sampling(manifest, sampling: SamplingConfig, guidance: float | None, steps: int | None) -> dict:
    """How an image model sampled, as its result records it: the guidance scale and denoising
    steps it used (given, else the model directory's), the seed and the batch size."""
    return {
        "guidance": float(manifest.image["guidance"] if guidance is None else guidance),
        "steps": int(manifest.image["steps"] if steps is None else steps),
        "seed": sampling.seed,
        "batch_size": sampling.batch_size,
    }


def image_plan(points: int, baseline: bool, prompts: int, samples: int, steps: int) -> ImagePlan:
    """What an image method's evaluation makes: every grid point's images and, with a base
    model, its own, `samples` of each prompt, `steps` denoising steps each."""
    what = f"{points:,} grid points{' and the base model' * baseline} x {prompts} prompts x {samples} "
    what += f"sample{'s' * (samples != 1)}"
    return ImagePlan((points + baseline) * prompts * samples, steps, what)


def base_point(
    baseline: Callable[[list[str]], list],
    rewards,
    prompts: list[str],
    samples: int,
    images: bool,
    folder: Path | None,
) -> SweepPoint:
    """The base model's answers to the sweep's prompts and samples, scored as a point without
    weights; `images`: it keeps a thumbnail, and writes its grid as base.png in `folder`."""
    started = time.perf_counter()
    made = baseline([p for p in prompts for _ in range(samples)])
    seconds = time.perf_counter() - started
    point = SweepPoint([], **summarise(rewards, prompts, samples, made), n=len(made), seconds=seconds,
                       generated_tokens=0, samples=samples)  # fmt: skip
    if images:
        kept = keep_images(made, len(prompts), samples, folder, "base")
        point.thumbnail, point.images = kept["thumbnail"], kept["images"]
    return point

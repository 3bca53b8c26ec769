"""Evaluate any method over a preference grid with the same prompts, objectives and statistics.

A method is turned into a function ``generate(prompts, weights) -> responses``:

    ric        a RiC model directory: weights -> tags through the model's stored mapping
    moslim     a MOSLIM model directory: weights -> intensity levels through the same mappings;
               also swept level by level (`evaluation.levels`)
    tags       the base model of a MOSLIM directory given the same intensity tags, untrained
               (MOSLIM's floor)
    prompting  the base model, with the preference written into the system prompt (the floor
               every trained method must beat); needs the statistics of the comparison
    soups      a Rewarded Soups directory: per-objective adapters interpolated with the weights
    morlhf     a MORLHF directory: one policy per weight vector, so it is evaluated at its own
               vectors only (the grid does not apply)
    np-dpo     an NP-DPO directory: weights -> `examples` choices of a simulated user whose
               utility is the weighted normalised objectives, drawn from the held-out pairs the
               directory keeps (`evaluation.fewshot.simulated_examples`)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from steerable.cost import Plan, sweep_plan
from steerable.data.prompts import refuse_trained_on
from steerable.errors import SteerableError
from steerable.evaluation.report import EvaluationResult, prompts_digest
from steerable.evaluation.sweep import check_samples, controllability, preference_grid, sweep
from steerable.generation import SamplingConfig, count_tokens, format_chat, generate_texts
from steerable.methods.rl import load_rewards
from steerable.objectives import RewardSet

METHODS = ("ric", "moslim", "tags", "prompting", "soups", "morlhf", "np-dpo")
FEWSHOT_EXAMPLES = 5  # NP-DPO: examples a grid point becomes

Generate = Callable[[list[str], np.ndarray], list[str]]


def preference_instruction(rewards: RewardSet, weights: Sequence[float]) -> str:
    """The system prompt of the prompting baseline: the preference in words."""
    from steerable.scorers.builtin import INSTRUCTIONS

    parts = []
    for objective, weight in zip(rewards.objectives, weights, strict=True):
        spec = objective.spec
        what = INSTRUCTIONS.get(spec.target) if spec.kind == "builtin" else None
        parts.append(f"{objective.name} {round(100 * weight)}%" + (f" ({what})" if what else ""))
    return "Balance these goals in your answer, in proportion to their weights: " + "; ".join(parts) + "."


def compute_record(manifest) -> dict:
    """Training compute of a model directory, summed over its stages (zero for no training)."""
    compute = manifest.training.get("compute", {}) if manifest is not None else {}
    return {
        "train_seconds": float(sum(compute.get("seconds", {}).values())),
        "trained_tokens": compute.get("trained_tokens", 0),
        "generated_tokens": compute.get("generated_tokens", 0),
    }


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
):
    """(generate, rewards, tokenizer, compute, dtype) for one method. RiC only: `adapter`
    evaluates another stage's adapter, e.g. DIR/stages/sft/weights for the model before online
    MORS; `mapping` (linf, l2, linear) overrides the model's stored mapping. `dtype` overrides
    the dtype a model directory records (float32 for the prompting floor); `trust_remote_code`
    lets models and the objectives' py: scorers run their own code. NP-DPO only: `examples`
    choices of the simulated user per grid point."""
    if method not in METHODS:
        raise SteerableError(f"unknown method {method!r}; choose from {list(METHODS)}")
    if method not in ("ric", "moslim", "tags"):
        for option, value in (("--adapter", adapter), ("--mapping", mapping)):
            if value is not None:
                raise SteerableError(f"{option} applies to RiC and MOSLIM models only")
    if method in ("ric", "moslim", "tags"):
        policy = tagged_policy(method, model, adapter, dtype, trust_remote_code)

        def generate(prompts, weights):
            return policy.generate(prompts, preference=list(weights), mapping=mapping, sampling=sampling)

        def requested(weights):
            steering = policy.steering_for(preference=list(weights), mapping=mapping)
            return [steering[name] for name in policy.names]

        generate.requested = requested
        if policy.levels is not None:
            generate.levels = level_steering(policy, sampling)
        return (
            generate,
            policy.rewards,
            policy.tokenizer,
            compute_record(None if method == "tags" else policy.manifest),
            policy.manifest.dtype,
        )
    if method == "np-dpo":
        return fewshot_generator(model, sampling, examples, dtype, trust_remote_code)
    if method == "prompting":
        from steerable.defaults import load_causal_lm

        if stats is None:
            raise SteerableError(
                "the prompting baseline needs --stats (a stats JSON or the model directory of the "
                "method it is compared with) so every method shares objectives and statistics"
            )
        rewards = load_rewards(stats, trust_remote_code)
        dtype = dtype or "float32"
        lm, tokenizer = load_causal_lm(model, dtype, trust_remote_code=trust_remote_code)

        def generate(prompts, weights):
            system = preference_instruction(rewards, weights)
            return generate_texts(
                lm, tokenizer, format_chat(tokenizer, prompts, system), sampling, progress=False
            )

        return generate, rewards, tokenizer, compute_record(None), dtype
    return baseline_generator(method, model, sampling, dtype, trust_remote_code)


def fewshot_generator(model: str, sampling: SamplingConfig, examples: int, dtype, trust_remote_code: bool):
    """NP-DPO's generator: a grid point w becomes `examples` choices of the simulated user with
    utility w . normalised objectives, among the held-out pairs kept in the model directory."""
    from steerable.data.loading import read_table
    from steerable.evaluation.fewshot import simulated_examples
    from steerable.policy import SteerablePolicy

    policy = SteerablePolicy.from_pretrained(model, dtype=dtype, trust_remote_code=trust_remote_code)
    if policy.manifest.method != "np-dpo":
        raise SteerableError(
            f"{model} holds a {policy.manifest.method!r} model (use --method {policy.manifest.method})"
        )
    pairs = read_table(Path(model) / policy.manifest.fewshot["heldout_pairs"])
    seed = sampling.seed or 0

    def generate(prompts, weights):
        chosen = simulated_examples(pairs, policy.rewards, weights, examples, seed)
        return policy.generate(prompts, examples=chosen, sampling=sampling)

    return generate, policy.rewards, policy.tokenizer, compute_record(policy.manifest), policy.manifest.dtype


def tagged_policy(method: str, model: str, adapter: str | None, dtype: str | None, trust_remote_code: bool):
    """The SteerablePolicy of a RiC or MOSLIM directory; for `tags`, the MOSLIM directory's
    base model, untrained, with its tags."""
    from steerable.policy import SteerablePolicy, load_manifest

    if method != "tags":
        policy = SteerablePolicy.from_pretrained(
            model, adapter=adapter, dtype=dtype, trust_remote_code=trust_remote_code
        )
        if policy.manifest.method != method:
            raise SteerableError(
                f"{model} holds a {policy.manifest.method!r} model (use --method {policy.manifest.method})"
            )
        return policy
    from steerable.defaults import load_causal_lm, load_tokenizer

    if adapter is not None:
        raise SteerableError("--adapter does not apply to the tags floor (it is the base model)")
    manifest = load_manifest(model, "moslim")
    manifest.dtype = dtype or manifest.dtype
    lm, _ = load_causal_lm(manifest.base_model, manifest.dtype, trust_remote_code=trust_remote_code)
    return SteerablePolicy(lm, load_tokenizer(str(model), trust_remote_code), manifest, trust_remote_code)


def answer_relevance():
    """The level sweep's check that answers are still answers: the built-in `relevance`
    scorer (MiniLM cosine of question and answer, offline)."""
    from steerable.scorers.builtin import build_builtin

    return build_builtin("relevance", {})


def level_steering(policy, sampling: SamplingConfig) -> dict:
    """What a level sweep needs of a MOSLIM policy: L, a level-steered generator, the level the
    other objectives are tagged at (the middle one for a policy trained with every objective
    tagged, which never saw a tag alone; None otherwise) and, when its reward model is at hand,
    the RM's expected level per head."""
    from pathlib import Path

    path = policy.manifest.moslim.get("reward_model")
    classify = None
    if path is not None and Path(path).is_dir():
        from steerable.reward_models.multihead import MultiHeadRM

        rm = MultiHeadRM.load(path)
        if list(rm.names) == policy.names:
            classify = rm.expected_levels
    return {
        "count": policy.levels,
        "others": (policy.levels + 1) // 2 if policy.manifest.moslim.get("tag_sampling") == "all" else None,
        "generate": lambda prompts, levels: policy.generate(prompts, levels=levels, sampling=sampling),
        "classify": classify,
    }


def baseline_generator(
    method: str, directory: str, sampling: SamplingConfig, dtype: str | None, trust_remote_code: bool
):
    """Generators for the RL baselines' directories (written by `steerable train soups|morlhf`):
    soups interpolates its per-objective adapters with the weights; MORLHF answers only at the
    weight vectors it was trained for (`generate.grid`)."""
    from steerable.defaults import load_causal_lm
    from steerable.policy import load_manifest

    manifest = load_manifest(directory, method)
    rewards = RewardSet.from_dict(manifest.rewards, where=str(directory), trust_remote_code=trust_remote_code)
    dtype = dtype or manifest.dtype
    base, tokenizer = load_causal_lm(manifest.base_model, dtype, trust_remote_code=trust_remote_code)
    adapters = [Path(directory) / p["adapter"] for p in manifest.policies]
    vectors = [p["weights"] for p in manifest.policies]
    if method == "soups":
        from steerable.methods.soups.recipe import set_soup, soup_model

        model = soup_model(base, adapters)

        def generate(prompts, weights):
            set_soup(model, list(weights))
            return generate_texts(model, tokenizer, format_chat(tokenizer, prompts), sampling, progress=False)

    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, adapters[0], adapter_name="0")
        for i, adapter in enumerate(adapters[1:], start=1):
            model.load_adapter(adapter, adapter_name=str(i))

        def generate(prompts, weights):
            matches = [i for i, v in enumerate(vectors) if np.allclose(v, weights)]
            if not matches:
                raise SteerableError(f"MORLHF has no policy for weights {list(weights)}; it has {vectors}")
            model.set_adapter(str(matches[0]))
            return generate_texts(model, tokenizer, format_chat(tokenizer, prompts), sampling, progress=False)

        generate.grid = np.array(vectors)
    return generate, rewards, tokenizer, compute_record(manifest), dtype


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
    before_sweep: Callable[[Plan], None] | None = None,
) -> EvaluationResult:
    """Sweep the grid, score with the shared objectives, and summarise; `samples` responses
    per prompt at each point. MOSLIM models (and their tags floor) are also swept level by level
    with `level_samples` responses per prompt (default: `samples`), unless `levels` is False.
    `dtype` / `trust_remote_code`: see `method_generator`. The result records the prompts (a
    hash; `prompt_split` and `prompt_limit` say where they came from) and the sampling, so
    that `steerable report` compares only results measured the same way. `before_sweep` is
    given what the sweep will generate (a `cost.Plan`) once the grid is known, before it starts."""
    from dataclasses import asdict

    from steerable.progress import advance_to, stage_bar

    check_samples(samples)  # before any model is loaded
    level_samples = samples if level_samples is None else level_samples
    check_samples(level_samples)
    prompts = list(prompts)
    refuse_trained_on(prompts, model)  # held-out prompts the model trained on would flatter it
    sampling = sampling or SamplingConfig(max_new_tokens=64, temperature=0.7)
    generate, rewards, tokenizer, compute, dtype = method_generator(
        method, model, sampling, stats, adapter, mapping, dtype, trust_remote_code, examples
    )
    if grid is None:
        # MORLHF can only be asked for the vectors it was trained at.
        grid = getattr(generate, "grid", None)
    if grid is None:
        grid = preference_grid(len(rewards), resolution)
    else:
        grid, resolution = np.asarray(grid, float), None  # a given grid has no resolution
    steering = getattr(generate, "levels", None)
    if before_sweep is not None:
        by_level = len(rewards) * steering["count"] * level_samples if steering is not None and levels else 0
        before_sweep(
            sweep_plan(len(grid), len(rewards), resolution, len(prompts), samples, by_level, sampling,
                       tokenizer.name_or_path)
        )  # fmt: skip
    per_point = len(prompts) * samples * sampling.max_new_tokens  # token slots, as generation counts
    started = time.perf_counter()
    with stage_bar(len(grid) * per_point, f"evaluating {method}", "tok", disable=not progress) as bar:

        def point_done(i: int, n: int) -> None:
            advance_to(bar, i * per_point)
            bar.set_postfix_str(f"{i}/{n} points", refresh=False)

        points = sweep(
            generate,
            rewards,
            prompts,
            grid,
            count_tokens=lambda texts: count_tokens(tokenizer, texts),
            progress=point_done,
            samples=samples,
        )
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
    return EvaluationResult(
        method=method if mapping is None else f"{method}-{mapping}",
        model=str(model) if adapter is None else f"{model}, adapter {adapter}",
        names=rewards.names,
        rewards=rewards.to_dict(),
        points=points,
        controllability=controllability(points, rewards.names),
        prompts_sha256=prompts_digest(prompts),
        num_prompts=len(prompts),
        sampling=asdict(sampling),
        samples=samples,
        resolution=resolution,
        prompt_split=prompt_split,
        prompt_limit=prompt_limit,
        dtype=dtype,
        compute=compute,
        levels=level_result,
    )

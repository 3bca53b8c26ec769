"""How an NP-DPO model is steered: a user's own choices ({prompt, chosen, rejected}) embedded
by the context encoder into z, which FiLM layers feed to the policy (the prompt carries no
tags). The `Steering` of `methods.base`, the manifest check and what `evaluate` sweeps (a
simulated user per grid point)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.methods.base import Generator, needs_policies

EXAMPLES = 5  # examples a grid point of `evaluate` becomes


def check_manifest(manifest, path) -> None:
    needs_policies(manifest, path)
    if not isinstance((manifest.fewshot or {}).get("context"), str):
        raise SteerableError(f"{path}: an np-dpo model needs 'fewshot': {{'context': FOLDER}}")


def levels(manifest) -> None:
    return None


def adapter(manifest) -> str:
    return manifest.policies[0]["adapter"]


def attach(policy, directory) -> None:
    """The context encoder and FiLM layers, hooked into the loaded model."""
    from steerable.fewshot.policy import ContextPath

    context = Path(directory) / policy.manifest.fewshot["context"]
    policy.fewshot = ContextPath.load(context).to(policy.model.device)
    policy.fewshot.film.attach(policy.model)


def refuse_tags(preference=None, targets=None, levels=None) -> None:
    if any(x is not None for x in (preference, targets, levels)):
        raise SteerableError(
            "an np-dpo model is steered by a user's examples ({prompt, chosen, rejected}), "
            "not by a preference, targets or levels"
        )


def steering_for(policy, preference, targets, levels, mapping) -> None:
    refuse_tags(preference, targets, levels)
    return None


def tags(policy, steering: Mapping | None) -> None:
    return None


def request(policy, steering: Mapping) -> tuple[None, object, dict]:
    examples = steering.get("examples", [])
    z = policy.latent_for(examples)
    # the policy reads the first max_context examples (the rest are never embedded): echo those
    return None, z, {"examples": min(len(examples), policy.fewshot.config.max_context)}


def conditioner(policy):
    """FiLM conditioned on each row's z (what `request` returned, (1, Z) each), stacked (B, Z)."""
    import torch

    film = policy.fewshot.film

    def conditioned(latents):
        return film.conditioned(torch.cat(list(latents)).to(policy.model.device))  # (B, Z)

    return conditioned


def generate(
    policy,
    prompts: Sequence[str],
    sampling,
    system,
    progress: bool,
    preference=None,
    targets=None,
    levels=None,
    examples=None,
    mapping=None,
) -> list[str]:
    from steerable.generation import format_chat, generate_texts

    refuse_tags(preference, targets, levels)
    with policy.fewshot.film.conditioned(policy.latent_for(examples or [])):
        texts = format_chat(policy.tokenizer, prompts, system)
        return generate_texts(policy.model, policy.tokenizer, texts, sampling, progress)


def simulated_examples(pairs: list[dict], rewards, weights, count: int = 5, seed: int = 0) -> list[dict]:
    """`count` choices of a simulated user whose utility is the `weights`-weighted sum of the
    normalised objectives (`rewards`' statistics): pairs drawn at random among those it is not
    indifferent about (the draw seeded by `seed` and the weights, so a grid point always gets
    the same user), the higher-utility answer chosen. `pairs`: {"prompt", "a", "b",
    "scores_a", "scores_b"} with raw scores per objective, as `train np-dpo` keeps them."""
    weights = np.asarray(weights, dtype=float)
    if pairs and "scores_a" not in pairs[0]:
        raise SteerableError(
            "this np-dpo model was trained from users' logs: its held-out pairs are real users' "
            "choices with no objective scores, so no simulated user of a preference can be built "
            "from them; its evaluation is the implicit-reward accuracy `steerable train np-dpo` "
            "reports (stages/evaluation/evaluation.json)"
        )
    unscored = sorted(
        {n for p in pairs for n in rewards.names if n not in p["scores_a"] or n not in p["scores_b"]}
    )
    if unscored:
        raise SteerableError(
            f"the held-out pairs have no scores of {unscored}, objectives this model is evaluated on; "
            "train it again with `steerable train np-dpo`, whose pairs keep every --stats objective's"
        )
    raw_a = np.array([[p["scores_a"][n] for n in rewards.names] for p in pairs], dtype=float).reshape(
        -1, len(rewards)
    )
    raw_b = np.array([[p["scores_b"][n] for n in rewards.names] for p in pairs], dtype=float).reshape(
        -1, len(rewards)
    )
    gain = (rewards.normalise(raw_a) - rewards.normalise(raw_b)) @ weights  # (P,) how much a beats b
    decided = np.flatnonzero(np.abs(gain) > 1e-9)
    if len(decided) < count:
        raise SteerableError(
            f"only {len(decided)} held-out pairs tell apart a user with weights {weights.tolist()}; "
            f"{count} examples were asked for"
        )
    rng = np.random.default_rng([seed, *np.round(weights * 1e6).astype(np.int64).tolist()])
    examples = []
    for i in rng.choice(decided, size=count, replace=False):
        pair = pairs[i]
        first, second = (pair["a"], pair["b"]) if gain[i] > 0 else (pair["b"], pair["a"])
        examples.append({"prompt": pair["prompt"], "chosen": first, "rejected": second})
    return examples


def sweep(
    model: str,
    sampling,
    examples: int = EXAMPLES,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    **_,
) -> Generator:
    """A grid point w becomes `examples` choices of the simulated user with utility
    w . normalised objectives, among the held-out pairs kept in the model directory."""
    from steerable.data.loading import read_table
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

    return Generator(generate, policy.rewards, policy.tokenizer, policy.manifest, policy.manifest.dtype)

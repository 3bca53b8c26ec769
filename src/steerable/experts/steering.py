"""How a mixture of single-objective experts is steered (Rewarded Soups, MOD, LoRA output
mixing, GenARM: `experts.mixture`): a request's weights over the objectives become its row's
`RowWeights`, which the mixture reads around every forward pass (the engine's conditioner
hook); nothing goes into the prompt. The `Steering` of `methods.base`, the loading of an
experts directory, and the batched generation `evaluate` and `SteerablePolicy.generate` use."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from steerable.errors import SteerableError
from steerable.experts.mixture import Mixture, RowWeights


def levels(manifest) -> None:
    return None


def adapter(manifest) -> str:
    return manifest.policies[0]["adapter"]


def attach(policy, directory) -> None:
    """Nothing beyond the experts the mixture already holds."""


def load_experts(directory: str | Path, manifest, load: dict, device):
    """A PeftModel of the directory's base with every expert adapter of its manifest's
    `policies` loaded unmerged, named "0", "1", ... in objective order, in eval mode. Policy k
    must be objective k's expert (one-hot weights on it); an adapter that is missing, or that
    was trained on another base model than the manifest's, is refused by name."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from steerable.defaults import resolve_model

    directory = Path(directory)
    names = [objective["name"] for objective in manifest.rewards["objectives"]]
    if len(manifest.policies) != len(names):
        raise SteerableError(
            f"{directory}: {len(manifest.policies)} experts in 'policies' for {len(names)} objectives "
            f"{names}; a mixture needs one expert per objective, in that order"
        )
    for k, policy in enumerate(manifest.policies):
        if list(policy.get("weights", [])) != [1.0 if j == k else 0.0 for j in range(len(names))]:
            raise SteerableError(
                f"{directory}: policies[{k}].weights is {policy.get('weights')}, not objective "
                f"{names[k]!r} alone; a mixture needs expert k to be objective k's (one-hot weights)"
            )
    folders = [directory / p["adapter"] for p in manifest.policies]
    for k, folder in enumerate(folders):
        config = folder / "adapter_config.json"
        if not config.is_file():
            raise SteerableError(
                f"{directory}: expert {k} ({manifest.policies[k]['adapter']}) is missing: no "
                "adapter_config.json in it; train the experts again or restore the folder"
            )
        trained_on = json.loads(config.read_text()).get("base_model_name_or_path")
        if trained_on and not same_model(trained_on, manifest.base_model):
            raise SteerableError(
                f"{directory}: expert {k} ({manifest.policies[k]['adapter']}) was trained on {trained_on!r}, "
                f"not on the directory's base model {manifest.base_model!r}; experts mixed at decode "
                "time must share one base model and tokenizer"
            )
    check_tokenizers(directory, folders, manifest, load.get("trust_remote_code", False))
    base = AutoModelForCausalLM.from_pretrained(resolve_model(manifest.base_model), **load)
    model = PeftModel.from_pretrained(base, folders[0], adapter_name="0")
    for k, folder in enumerate(folders[1:], start=1):
        model.load_adapter(folder, adapter_name=str(k))
    return model.to(device).eval()


def check_tokenizers(directory: Path, folders: Sequence[Path], manifest, trust_remote_code: bool) -> None:
    """Refuse an expert saved with a tokenizer (its trainer saves one beside the adapter) whose
    vocabulary is not the directory's: its log-probabilities would be over other tokens."""
    from transformers import AutoTokenizer

    own = None
    for k, folder in enumerate(folders):
        if not (folder / "tokenizer_config.json").is_file():
            continue
        own = own or AutoTokenizer.from_pretrained(directory, trust_remote_code=trust_remote_code).get_vocab()
        theirs = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code).get_vocab()
        if theirs != own:
            raise SteerableError(
                f"{directory}: expert {k} ({manifest.policies[k]['adapter']}) was trained with another "
                f"tokenizer than the directory's ({len(theirs)} tokens against {len(own)}, or the same "
                "tokens numbered otherwise); experts mixed at decode time must share one tokenizer"
            )


def same_model(a: str, b: str) -> bool:
    """Whether two model references name one model (an alias, a cached hub id or a path)."""
    from steerable.defaults import resolve_model

    def resolved(name: str) -> str:
        try:
            found = resolve_model(name)
        except SteerableError:
            found = name
        return str(Path(found).resolve()) if Path(found).exists() else str(found)

    return a == b or resolved(a) == resolved(b)


def row_for(policy, weights, divergence=None) -> RowWeights:
    """A request's weights (by name or position; none: equal) and, for MOD, the alpha of the
    divergence family, checked against what the policy's mixture can do: negative weights
    only where the formula is defined (MOD's reverse KL: "less of this")."""
    from steerable.preferences import Preference

    mixture: Mixture = policy.model
    given = weights if weights is not None else [1] * len(policy.names)
    alpha = 0.0
    if divergence is not None:
        if not mixture.divergences:
            raise SteerableError(f"divergence applies to MOD models; a {policy.method} model mixes otherwise")
        alpha = check_alpha(divergence)
    signed = mixture.signed and alpha == 0
    try:
        preference = Preference.parse(given, policy.names, signed=signed)
    except SteerableError as err:
        if mixture.signed and alpha > 0 and "negative" in str(err):
            raise SteerableError(
                f"{err}; negative weights are defined for MOD's reverse KL (divergence 0) only"
            )
        raise
    return RowWeights(preference.weights, alpha)


def check_alpha(value) -> float:
    """MOD's alpha-divergence parameter: a number in [0, 1] (0: reverse KL)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= float(value) <= 1:
        raise SteerableError(
            f"divergence must be the alpha of the alpha-divergence family, a number in [0, 1] "
            f"(0: reverse KL), got {value!r}"
        )
    return float(value)


def refuse_tags(policy, targets=None, levels=None, examples=None) -> None:
    if any(x is not None for x in (targets, levels, examples)):
        raise SteerableError(
            f"a {policy.method} model mixes its experts with weights over the objectives; it takes no "
            "targets, levels or examples"
        )


def steering_for(policy, preference, targets, levels, mapping) -> dict[str, float]:
    refuse_tags(policy, targets, levels)
    return dict(zip(policy.names, row_for(policy, preference).weights, strict=True))


def tags(policy, steering: Mapping | None) -> None:
    return None


def request(policy, steering: Mapping) -> tuple[None, RowWeights, dict]:
    row = row_for(policy, steering.get("weights"), steering.get("divergence"))
    echo = {"weights": dict(zip(policy.names, row.weights, strict=True))}
    if policy.model.divergences:
        echo["divergence"] = row.alpha
    return None, row, echo


def conditioner(policy):
    """The rows' weights, set on the mixture around each forward pass."""
    return policy.model.weighted


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
    divergence=None,
) -> list[str]:
    from steerable.generation import format_chat

    refuse_tags(policy, targets, levels, examples)
    row = row_for(policy, preference, divergence)
    texts = format_chat(policy.tokenizer, prompts, system)
    return decode(policy.model, policy.tokenizer, texts, sampling, [row] * len(texts), progress)


def decode(
    model, tokenizer, texts: Sequence[str], sampling, rows: Sequence[RowWeights], progress: bool
) -> list[str]:
    """Each text continued with its row's weights, `sampling.batch_size` rows at a time (sorted
    by length), by the serving engine's decode loop: row i draws from its own generator, seeded
    by `sampling.seed` and i, so a row's answer does not depend on the rows beside it."""
    from steerable.decoding import Job, run_batch
    from steerable.progress import active_bar, stage_bar

    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False).input_ids]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    greedy = sampling.temperature <= 0
    jobs = [
        Job(
            text,
            sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy else sampling.top_k,
            seed=None if sampling.seed is None else sampling.seed * 1_000_003 + i,
            condition=row,
        )
        for i, (text, row) in enumerate(zip(texts, rows, strict=True))
    ]
    outer = active_bar()
    shown = stage_bar(len(jobs), "generating", "answers", disable=not progress or outer is not None)
    with shown as bar:
        for start in range(0, len(order), sampling.batch_size):
            batch = [jobs[i] for i in order[start : start + sampling.batch_size]]
            run_batch(model, tokenizer, batch, conditioned=model.weighted)
            bar.update(len(batch))
            if outer is not None:
                outer.update(len(batch) * sampling.max_new_tokens)
    return [job.output.strip() for job in jobs]


def sweep(
    model: str,
    sampling,
    method: str,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    divergence: float | None = None,
    **_,
):
    """A directory of experts swept as `method` mixes them: each grid point's weights are every
    row's (`divergence`: MOD's alpha). Its cost per token is the mixture's forwards."""
    from steerable.methods.base import Generator
    from steerable.policy import SteerablePolicy

    if divergence is not None:
        check_alpha(divergence)  # before the experts load
    policy = SteerablePolicy.from_pretrained(
        model, dtype=dtype, trust_remote_code=trust_remote_code, method=method
    )

    def answer(prompts, weights):  # not `generate`: it calls the module's
        system = policy.manifest.system
        return generate(
            policy, prompts, sampling, system, False, preference=list(weights), divergence=divergence
        )

    return Generator(
        answer,
        policy.rewards,
        policy.tokenizer,
        policy.manifest,
        policy.manifest.dtype,
        forwards=policy.model.forwards,
    )

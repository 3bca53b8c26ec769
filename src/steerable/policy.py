"""`SteerablePolicy`: a base model + adapter + tokenizer + conditioning + reward statistics,
loaded from one self-describing directory.

Directory layout (written by the trainers, read by `SteerablePolicy.from_pretrained`):

    steerable.json     method, base model, objectives with their statistics, tag format,
                       default preference mapping and its quantiles
    adapter/           PEFT adapter (LoRA training), or
    model/             full weights (full fine-tune)
    tokenizer files    the tokenizer used in training
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from steerable import methods
from steerable.conditioning import TagFormat, preference_to_levels, preference_to_targets, tag_chat
from steerable.errors import SteerableError
from steerable.generation import SamplingConfig, render_chat
from steerable.manifest import (  # noqa: F401 -- MANIFEST, load_manifest: read from here too
    FORMAT_VERSION,
    MANIFEST,
    MappingConfig,
    PolicyManifest,
    load_manifest,
    write_manifest,
)
from steerable.objectives import RewardSet
from steerable.preferences import Preference


def loadable(method) -> bool:
    """A method whose model directory one SteerablePolicy loads."""
    return method.policy is not None


def sampling_with(sampling: SamplingConfig | None, **options) -> SamplingConfig:
    """`sampling`, or a SamplingConfig of the `options` given (not None), the rest at their
    defaults; refused when both are given, since one would silently override the other."""
    given = {name: value for name, value in options.items() if value is not None}
    if sampling is not None and given:
        raise SteerableError(
            f"give either sampling=SamplingConfig(...) or the sampling options {sorted(given)}, not both"
        )
    return sampling if sampling is not None else SamplingConfig(**given)


class TargetSteering:
    """A preference turned into normalised targets, and targets checked, from a model's objectives
    (`rewards`, with statistics) and its `mapping` (a MappingConfig): what every model steered by
    reward tags shares (a language model's and an image model's RiC)."""

    rewards: RewardSet
    mapping: MappingConfig

    @property
    def names(self) -> list[str]:
        return self.rewards.names

    def target_range(self, lo_q: float | None = None, hi_q: float | None = None):
        """Per-objective (lo, hi) in normalised units, from the stored quantiles."""
        lo_q = self.mapping.lo_quantile if lo_q is None else lo_q
        hi_q = self.mapping.hi_quantile if hi_q is None else hi_q
        ks = range(len(self.rewards.objectives))
        return [self.quantile(k, lo_q) for k in ks], [self.quantile(k, hi_q) for k in ks]

    def targets_for(
        self, preference: Preference | Mapping | Sequence | str, mapping: str | None = None
    ) -> dict[str, float]:
        pref = preference if isinstance(preference, Preference) else Preference.parse(preference, self.names)
        if pref.names != tuple(self.names):
            raise SteerableError(f"preference is over {pref.names}; this model steers {self.names}")
        lo, hi = self.target_range()
        return preference_to_targets(pref, lo, hi, mapping or self.mapping.default, self.quantile)

    def quantile(self, k: int, q: float) -> float:
        """Objective k's q-quantile on the training data, normalised (the quantile mapping's Q_k)."""
        stats = self.rewards.objectives[k].stats
        return float(stats.normalise(np.array([stats.quantile(q)]))[0])

    def check_targets(self, targets: Mapping[str, float]) -> dict[str, float]:
        """Validate explicit targets; clip those outside the trained range, with a warning."""
        unknown = [n for n in targets if n not in self.names]
        missing = [n for n in self.names if n not in targets]
        if unknown or missing:
            raise SteerableError(
                f"targets must name exactly the objectives {self.names}; "
                f"unknown: {unknown}, missing: {missing}"
            )
        out = {}
        for objective in self.rewards.objectives:
            stats, value = objective.stats, float(targets[objective.name])
            if not np.isfinite(value):
                raise SteerableError(f"target for {objective.name!r} is {value}; use a finite number")
            lo, hi = stats.normalise(np.array([stats.min, stats.max]))
            # A small tolerance: preference-mapped targets at a 0/1 quantile equal min/max up to
            # floating-point error, and those are not worth a warning.
            if not lo - 1e-6 <= value <= hi + 1e-6:
                clipped = float(np.clip(value, lo, hi))
                warnings.warn(
                    f"target {objective.name}={value:g} is outside the trained range "
                    f"[{lo:.2f}, {hi:.2f}]; clipped to {clipped:.2f}",
                    stacklevel=2,
                )
                value = clipped
            out[objective.name] = value
        return out


class SteerablePolicy(TargetSteering):
    """Generate responses steered by a preference over the objectives, or by explicit targets."""

    def __init__(
        self,
        model,
        tokenizer,
        manifest: PolicyManifest,
        trust_remote_code: bool = False,
        method: str | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.manifest = manifest
        self.rewards = RewardSet.from_dict(
            manifest.rewards, where=MANIFEST, trust_remote_code=trust_remote_code
        )
        missing = [o.name for o in self.rewards.objectives if o.stats is None]
        if missing:
            raise SteerableError(f"{MANIFEST}: objective(s) {missing} have no statistics")
        self.tag_format = TagFormat(**manifest.tags)
        self.mapping = MappingConfig(**manifest.mapping)
        self.fewshot = None  # NP-DPO: the context encoder and FiLM layers (fewshot.policy.ContextPath)
        # the method it is steered as: its directory's, or one that reads that method's
        # directories (MOD mixes a Rewarded Soups directory's experts); how (methods.base.Steering)
        self.method = method or manifest.method
        self.steering = methods.get(self.method).steering_of()

    @property
    def levels(self) -> int | None:
        """L, the number of intensity levels of a MOSLIM policy (None for RiC)."""
        return self.steering.levels(self.manifest)

    # --- loading and saving -------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | None = None,
        adapter: str | Path | None = None,
        merge: bool = True,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        method: str | None = None,
    ) -> SteerablePolicy:
        """Load a steerable model directory, as `method` (default: the method that wrote it; or
        one that reads its directories, e.g. "mod" for a "soups" directory of experts, see
        `Method.reads`). `adapter` swaps in another adapter trained for
        the same manifest (e.g. an intermediate stage: DIR/stages/sft/weights). `merge` folds a LoRA
        adapter into the base weights (faster generation), but the policy can then not be saved
        or trained further as an adapter; a policy mixing log-probabilities (MOD, GenARM) merges
        each expert into its own copy of the layers it adapts (K copies more; `merge=False`
        keeps one base and routes rows to the adapters, slower). `dtype` overrides the dtype
        recorded in steerable.json (the one the model was trained in). `trust_remote_code` lets
        the base model run its own code and the objectives' `py:` scorers run (both off: a
        directory someone else made should not run their code unasked)."""
        from transformers import AutoModelForCausalLM

        from steerable.defaults import default_device, load_tokenizer, resolve_model, torch_dtype

        directory = Path(directory)
        manifest = load_manifest(directory)
        record = methods.get(method or manifest.method)
        record.check_reads(manifest.method, directory)
        if not loadable(record):
            raise SteerableError(
                f"{directory} holds a {manifest.method!r} model; SteerablePolicy loads "
                f"{', '.join(methods.names(loadable))} models (evaluate the others with --method "
                f"{manifest.method})"
            )
        steering = record.steering_of()
        if dtype is not None:
            torch_dtype(dtype)
            manifest.dtype = dtype
        load = dict(dtype=torch_dtype(manifest.dtype), trust_remote_code=trust_remote_code)
        tokenizer = load_tokenizer(str(directory), trust_remote_code)
        if record.mixture is not None:  # its experts, mixed at every decoding step
            from steerable.experts.steering import load_experts

            if adapter is not None:
                raise SteerableError(
                    f"a {record.name} model mixes every expert of {directory}; it takes no other adapter"
                )

            experts = load_experts(directory, manifest, load, device or default_device())
            model = record.mix(experts, [str(k) for k in range(len(manifest.policies))], merge=merge)
        elif manifest.weights == "model":
            model = AutoModelForCausalLM.from_pretrained(directory / "model", **load)
        else:
            from peft import PeftModel

            adapter = Path(adapter or directory / steering.adapter(manifest))
            if not (adapter / "adapter_config.json").is_file():
                raise SteerableError(f"adapter {adapter} does not exist (no adapter_config.json in it)")
            base = AutoModelForCausalLM.from_pretrained(resolve_model(manifest.base_model), **load)
            model = PeftModel.from_pretrained(base, adapter)
            if merge:
                model = model.merge_and_unload()
        policy = cls(
            model.to(device or default_device()).eval(), tokenizer, manifest, trust_remote_code, record.name
        )
        policy.steering.attach(policy, directory)
        return policy

    def save_pretrained(self, directory: str | Path) -> None:
        if self.manifest.weights == "adapter" and not hasattr(self.model, "peft_config"):
            raise SteerableError(
                "this policy's adapter was merged into the base weights when it was loaded; "
                "load it with SteerablePolicy.from_pretrained(..., merge=False) to save it"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory / self.manifest.weights)
        self.tokenizer.save_pretrained(directory)
        write_manifest(directory, self.manifest)  # last: a directory with steerable.json is complete

    # --- steering ---------------------------------------------------------------------
    def levels_for(
        self, preference: Preference | Mapping | Sequence | str, mapping: str | None = None
    ) -> dict[str, int]:
        """MOSLIM: a preference as levels 1..L (`conditioning.preference_to_levels`)."""
        pref = preference if isinstance(preference, Preference) else Preference.parse(preference, self.names)
        if pref.names != tuple(self.names):
            raise SteerableError(f"preference is over {pref.names}; this model steers {self.names}")
        return preference_to_levels(pref, self.levels, mapping or self.mapping.default)

    def prompts_with_tags(
        self, prompts: Sequence[str], targets: Mapping[str, float], system: str | None = None
    ) -> list[str]:
        """Render prompts with their tags through the chat template, ready to generate: RiC's
        target tags (`targets`: every objective's normalised target) or MOSLIM's intensity
        tags (`targets`: levels of a subset of the objectives)."""
        return [self.chat_text([{"role": "user", "content": p}], targets, system) for p in prompts]

    def chat_text(
        self, messages: Sequence[Mapping[str, str]], steering: Mapping | None, system: str | None = None
    ) -> str:
        """A conversation rendered through the chat template with its steering (what
        `steering_for` returns; None for NP-DPO, steered by its latent instead), ready to
        generate."""
        return render_chat(self.tokenizer, self.steered_messages(messages, steering, system))

    def steered_messages(
        self, messages: Sequence[Mapping[str, str]], steering: Mapping | None, system: str | None = None
    ) -> list[dict[str, str]]:
        """The conversation with its steering's tags where the model was trained to read them;
        `system` (default: the model's own) opens it unless it has a system turn."""
        system = system if system is not None else self.manifest.system
        messages = [dict(m) for m in messages]
        if system and not (messages and messages[0]["role"] == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        tags = self.steering.tags(self, steering)
        return messages if tags is None else tag_chat(messages, tags, self.tag_format)

    def steering_for(
        self,
        preference: Preference | Mapping | Sequence | str | None = None,
        targets: Mapping[str, float] | None = None,
        levels: Mapping[str, int] | None = None,
        mapping: str | None = None,
    ) -> dict:
        """The tags a request asks for, checked: RiC targets (explicit, or mapped from the
        preference) or MOSLIM levels (explicit, or mapped from the preference; ``{}``: no tags,
        the untagged prompt); with neither, equal weights."""
        if sum(x is not None for x in (preference, targets, levels)) > 1:
            raise SteerableError("give one of a preference, targets or levels")
        return self.steering.steering_for(self, preference, targets, levels, mapping)

    def generate(
        self,
        prompts: Sequence[str],
        preference: Preference | Mapping | Sequence | str | None = None,
        targets: Mapping[str, float] | None = None,
        mapping: str | None = None,
        sampling: SamplingConfig | None = None,
        system: str | None = None,
        progress: bool = False,
        levels: Mapping[str, int] | None = None,
        examples: Sequence[Mapping[str, str]] | None = None,
        divergence: float | None = None,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """Responses for `prompts` steered by `preference` (weights over the objectives, mapped
        to tags with `mapping`), by explicit normalised `targets` (RiC), by intensity `levels`
        for any subset of the objectives (MOSLIM, e.g. ``{"brief": 4}``), or by a user's own
        choices, `examples` = [{"prompt", "chosen", "rejected"}, ...] (NP-DPO; none: the
        policy's prior); with none of them, equal weights. `divergence`: MOD's alpha of the
        alpha-divergence family, in [0, 1] (none: 0, reverse KL). Sampling: `sampling`, or the options
        `max_new_tokens` ... `seed` as keywords (as `steerable generate` takes them; the others at
        SamplingConfig's defaults), not both."""
        prompts = list(prompts)
        if not prompts:
            raise SteerableError("no prompts given")
        sampling = sampling_with(
            sampling,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            batch_size=batch_size,
            seed=seed,
        )
        system = system if system is not None else self.manifest.system
        extra = {}  # a key only the methods that take it are given
        if divergence is not None:
            if "divergence" not in methods.get(self.method).steering:
                takes = ", ".join(methods.names(lambda m: "divergence" in m.steering))
                raise SteerableError(f"divergence applies to {takes} models; this is a {self.method} model")
            extra["divergence"] = divergence
        return self.steering.generate(
            self,
            prompts,
            sampling,
            system,
            progress,
            preference=preference,
            targets=targets,
            levels=levels,
            examples=examples,
            mapping=mapping,
            **extra,
        )

    def request(self, steering: Mapping) -> tuple[dict | None, object, dict]:
        """A served request's `steering` body, checked: (the tags' steering for
        `steered_messages`, the latent the model is conditioned on or None, what was applied)."""
        return self.steering.request(self, steering)

    def latent_for(self, examples: Sequence[Mapping[str, str]]):
        """NP-DPO: the z (1, Z) of a user's examples, checked and embedded by the policy's pair
        encoder (beyond max_context, the first max_context, with a warning)."""
        from steerable.fewshot.policy import check_examples, embed_examples

        if self.fewshot is None:
            raise SteerableError(
                f"this {self.manifest.method} model has no context encoder, so it cannot be steered by "
                "examples; train one with `steerable train np-dpo`"
            )
        checked = check_examples(examples, limit=self.fewshot.config.max_context)
        chosen, rejected = embed_examples(checked, self.fewshot.config.encoder)
        return self.fewshot.latent_of(chosen, rejected)

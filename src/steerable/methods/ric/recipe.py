"""Rewards-in-Context (Yang et al., ICML 2024), as a recipe you can read top to bottom.

1. Offline data: prompts with responses (given, or sampled from the base model under varied
   system prompts so the data spans the objective space), scored by every objective;
   normalisation statistics fitted and kept.
2. Reward-conditioned SFT: each example's normalised scores, rounded, become tags in the
   prompt (`steerable.conditioning`); TRL's SFTTrainer trains on the response tokens only
   (the chat template closes the response with its end-of-turn token). LoRA by default.
3. Online multi-objective rejection sampling (MORS), N times: sample target tags, generate,
   score, relabel every sample with the scores it obtained, keep samples where any objective
   reaches its q-quantile, merge with a filtered sample of the offline data, and continue
   training at a lower constant learning rate. Online data accumulates across iterations.
4. The result is a `SteerablePolicy` directory: at inference a preference is mapped to tags.

Every stage writes its outputs under OUTPUT_DIR/stages/ with a record of what produced it
(`steerable.stages`): a re-run skips finished stages, refuses stages made by other settings,
and an interrupted training stage resumes from its last complete checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from steerable.conditioning import (
    MAPPINGS,
    PLACEMENTS,
    TagFormat,
    format_tags,
    preference_to_targets,
    tagged_messages,
)
from steerable.configs import SEED, check_config
from steerable.data import load_pairs, load_prompts, read_table, write_table
from steerable.data.loading import load_placed_pairs
from steerable.data.prompts import SPLITS
from steerable.data.text import sentence_cuts
from steerable.defaults import (
    DEFAULT_OBJECTIVES,
    absolute_if_local,
    load_causal_lm,
    load_tokenizer,
    torch_dtype,
)
from steerable.errors import SteerableError
from steerable.generation import SamplingConfig, count_tokens, generate_texts, render_chat, template_messages
from steerable.manifest import MANIFEST, MappingConfig, PolicyManifest, training_record
from steerable.objectives import RewardSet
from steerable.policy import SteerablePolicy
from steerable.preferences import Preference
from steerable.scorers import check_modality
from steerable.stages import (
    Stages,
    changed_fields,
    fingerprint,
    is_main_process,
    wait_for_everyone,
)
from steerable.training import (
    LoraArguments,
    ModelArguments,
    config_inputs,
    device_args,
    lora_config,
    train_stage,
)

# Tone instructions used when sampling offline data from the base model, placed where
# `offline_instruction_placement` says (default: appended to the user turn). A prompt's samples
# take consecutive entries, so with the default two samples per prompt every prompt is answered
# once joyfully and once gloomily: the pair differs in positivity while the sentence cuts span
# brevity, and the tags are what tells the two apart. The tags, not these texts, are what the
# model is trained on. SmolLM2-135M follows an instruction at the end of the user turn far more
# than a system prompt: these spread the answers' positivity much further apart than cheerful /
# gloomy system prompts did. For other objectives pass instructions that push them apart. ""
# means no instruction.
OFFLINE_INSTRUCTIONS = (
    "Answer with joy and enthusiasm: say what is wonderful, great and fun about it.",
    "Answer with gloom: say what is bad, sad, wrong and dangerous about it.",
)

ONLINE_SCHEMES = ("reference", "simplex")
ONLINE_THRESHOLDS = ("round", "offline")
# transformers' schedules that need nothing beyond a learning rate and a number of steps
LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
STOP_STAGES = ("offline", "sft")


@dataclass
class RiCConfig(LoraArguments, ModelArguments):
    """Configuration of a Rewards-in-Context run.

    Model and objectives:
        model / dtype / trust_remote_code: the base policy (`ModelArguments`).
        chat_template_path: a Jinja chat template file (or a tokenizer directory to take it
            from) for a model without one; RiC refuses a model with no chat template.
        output_dir: the steerable model directory to write (stages go to output_dir/stages).
        objectives: objective specs, NAME=KIND:TARGET[?opt=v] (any number K >= 2).

    Offline data:
        data: a prompt/response table to train on (e.g. `steerable score` output); if unset,
            responses are sampled from the base model for the prompts.
        prompts: your prompt file to sample for (a `prompt` column, an optional `split`
            column; `steerable.data.prompts`); unset: the embedded prompt set.
        prompt_split / prompt_limit: which of the prompts to sample for (when data is unset).
        samples_per_prompt: responses sampled per prompt, each under a different system prompt.
        offline_instructions: instructions cycled through when sampling ("" = none).
        offline_instruction_placement: where they go: `user_end` (after the user's prompt, a
            blank line between) or `system` (as the system message).
        cuts_per_sample: turn each sampled response into up to this many examples, each cut
            after a different random number of whole sentences (0 = keep responses whole), so
            that length-sensitive objectives span their range and are learnable.
        clause_cuts: also let a cut stop after the first clause of the first sentence ("Sure,
            here it is!" -> "Sure!"), so the data holds answers shorter than a sentence.
        max_new_tokens / temperature / top_p / top_k / generation_batch_size: sampling
            settings, used for offline and online sampling alike.

    Conditioning and inference mapping:
        tag_placement: where the tags go: `user_end` (default: the end of the user turn) or
            `system` (the system message); steerable.conditioning says why the user turn.
        tag_decimals: decimals of the tag values (the paper rounds to one).
        mapping: default preference-to-target mapping stored with the model (linf, l2, linear,
            quantile: each objective's training quantile at min(K w_i, 1), `conditioning`).
        lo_quantile / hi_quantile: stats quantiles used as each objective's lo and hi target.

    Offline SFT:
        use_lora: train a LoRA adapter (True) or the full model (False).
        lora_r / lora_alpha / lora_dropout: LoRA shape (`LoraArguments`; reference: 64 / 128 / 0.05).
        learning_rate / lr_scheduler: offline learning rate and its schedule (linear decay).
        num_epochs / batch_size / gradient_accumulation_steps / max_length: the usual.
        The defaults (lr 1e-3, 4 epochs, batches of 4 accumulated twice) are what let
        SmolLM2-135M follow the tags on a 2-core budget: the reference's lr 1.4e-4 for one
        epoch taught it nothing measurable, fewer epochs lost control of one objective, and
        batches of 4 pad less and use less memory than 8.
        activation_checkpointing: recompute activations to save memory (TRL's default is on;
            we default to off, which is faster when memory is not the limit).
        bf16: mixed precision. Unset: on where a GPU supports it, off on a CPU. True: also on a
            CPU with oneDNN bf16 kernels (AVX-512): somewhat faster SFT, but a much higher peak
            memory, so a CPU does not get it unasked.
        train_sampling_strategy: batch order; `group_by_length` (default) batches examples of
            similar length, so fewer tokens are padding than with random batches.
        save_steps: checkpoint every N optimiser steps; an interrupted stage resumes from its
            last checkpoint when the same command is run again.
        sft_rungs: offline SFT steps at which the adapter is also saved, with the compute spent
            so far (stages/sft/rungs/step-N): a budget ladder's rungs, evaluated by `steerable
            compare` without training again (not part of the stage's inputs).

    Online MORS:
        online_iterations: how many MORS rounds after the offline stage (0 = none). One round
            (the default) raised the hypervolume and kept both objectives controllable; a
            second round cost more time and shortened every answer further (the kept samples
            are mostly short, since the reference scheme asks for hi on all but one objective)
            for no controllability gain beyond the evaluation's noise.
        online_samples: generations per round.
        online_scheme: `reference` (one objective uniform in [lo, hi], the others at hi) or
            `simplex` (a random preference from the simplex through the linf mapping).
        online_quantile: keep a sample when any objective reaches this quantile (the paper's
            0.7).
        online_threshold: what that quantile is taken over: `round` (default, the reference
            code's rule) the round's own generations, so a round keeps the best share of what
            the policy now writes; `offline` the offline data, so a round keeps only answers
            that reach the offline data's quantile. The offline rows merged into a round pass
            the offline data's quantile either way, as in the reference.
        online_learning_rate: constant learning rate of the online rounds (the reference uses
            1e-5 after 1.4e-4 offline; ours is a tenth of the offline rate).
        online_epochs: epochs over each round's merged data.
        original_ratio: offline rows (passing the same filter) merged per kept online row.

    seed: seeds sampling, target draws and training.
    stop_after: `offline` or `sft`: run the stages up to that one and stop, without a model
        directory (the offline stage alone is the scored data, e.g. a pool for MOSLIM's DPO);
        the same command without it goes on from there.
    """

    chat_template_path: str | None = field(
        default=None,
        metadata={"help": "Chat template (.jinja file or tokenizer dir) for a model without one."},
    )
    output_dir: str = field(default="runs/ric", metadata={"help": "Steerable model directory to write."})
    objectives: list[str] = field(
        default_factory=lambda: list(DEFAULT_OBJECTIVES),
        metadata={"help": "Objective specs NAME=KIND:TARGET[?opt=v] (K >= 2)."},
    )
    data: str | None = field(
        default=None, metadata={"help": "Prompt/response table; unset = sample the base model."}
    )
    prompts: str | None = field(
        default=None, metadata={"help": "Prompt file to sample for; unset = the embedded prompts."}
    )
    prompt_split: str = field(
        default="train", metadata={"help": "Prompt split to sample for.", "choices": SPLITS}
    )
    prompt_limit: int | None = field(
        default=None, metadata={"help": "Use only the first N prompts.", "ge": 1}
    )
    samples_per_prompt: int = field(default=2, metadata={"help": "Offline responses per prompt.", "ge": 1})
    offline_instructions: list[str] = field(
        default_factory=lambda: list(OFFLINE_INSTRUCTIONS),
        metadata={"help": "Instructions cycled through when sampling offline data ('' = none)."},
    )
    offline_instruction_placement: str = field(
        default="user_end", metadata={"help": "Where offline instructions go.", "choices": PLACEMENTS}
    )
    cuts_per_sample: int = field(
        default=3,
        metadata={"help": "Examples per sampled response, cut at sentence ends (0 = whole).", "ge": 0},
    )
    clause_cuts: bool = field(
        default=True, metadata={"help": "A cut may stop after the first sentence's first clause."}
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Generated tokens per response.", "ge": 1})
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature.", "ge": 0})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling p.", "gt": 0, "le": 1})
    top_k: int = field(
        default=50, metadata={"help": "Sample among the k most likely tokens (0 = all).", "ge": 0}
    )
    generation_batch_size: int = field(default=64, metadata={"help": "Sequences per generate call.", "ge": 1})
    tag_placement: str = field(default="user_end", metadata={"help": "Where tags go.", "choices": PLACEMENTS})
    tag_decimals: int = field(default=1, metadata={"help": "Decimals of tag values.", "ge": 0, "le": 4})
    mapping: str = field(
        default="linf", metadata={"help": "Default preference mapping.", "choices": MAPPINGS}
    )
    lo_quantile: float = field(
        default=0.05, metadata={"help": "Stats quantile used as lo target.", "ge": 0, "le": 1}
    )
    hi_quantile: float = field(
        default=0.95, metadata={"help": "Stats quantile used as hi target.", "ge": 0, "le": 1}
    )
    use_lora: bool = field(default=True, metadata={"help": "LoRA adapter (True) or full fine-tune."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Offline SFT learning rate.", "gt": 0})
    lr_scheduler: str = field(
        default="linear", metadata={"help": "Offline SFT schedule.", "choices": LR_SCHEDULERS}
    )
    num_epochs: float = field(default=4.0, metadata={"help": "Offline SFT epochs.", "gt": 0})
    batch_size: int = field(default=4, metadata={"help": "Training batch size.", "ge": 1})
    gradient_accumulation_steps: int = field(default=2, metadata={"help": "Gradient accumulation.", "ge": 1})
    max_length: int = field(
        default=384, metadata={"help": "Truncate training sequences to this many tokens.", "ge": 1}
    )
    activation_checkpointing: bool = field(
        default=False, metadata={"help": "Trade compute for memory (off: faster for small models)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "Mixed precision (unset: bf16 GPUs only; true: bf16 CPUs too)."}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Batch order (transformers): group_by_length pads less than random.",
            "choices": ["random", "sequential", "group_by_length"],
        },
    )
    save_steps: int = field(
        default=20, metadata={"help": "Checkpoint every N steps (resume point).", "ge": 1}
    )
    sft_rungs: list[int] = field(
        default_factory=list,
        metadata={"help": "Offline SFT steps at which the adapter is also saved (ladder rungs).", "ge": 1},
    )
    online_iterations: int = field(default=1, metadata={"help": "MORS rounds after offline SFT.", "ge": 0})
    online_samples: int = field(default=128, metadata={"help": "Generations per MORS round.", "ge": 1})
    online_scheme: str = field(
        default="reference", metadata={"help": "Target sampling.", "choices": ONLINE_SCHEMES}
    )
    online_quantile: float = field(
        default=0.7, metadata={"help": "Keep if any objective >= this quantile.", "gt": 0, "lt": 1}
    )
    online_threshold: str = field(
        default="round",
        metadata={
            "help": "Quantile of the round's answers or the offline data.",
            "choices": ONLINE_THRESHOLDS,
        },
    )
    online_learning_rate: float = field(
        default=1e-4, metadata={"help": "Constant lr of MORS rounds.", "gt": 0}
    )
    online_epochs: float = field(default=1.0, metadata={"help": "Epochs per MORS round.", "gt": 0})
    original_ratio: float = field(
        default=1.0, metadata={"help": "Offline rows merged per kept online row.", "ge": 0}
    )
    seed: int = field(default=0, metadata={"help": "Random seed.", **SEED})
    stop_after: str | None = field(
        default=None,
        metadata={"help": "Stop after this stage (no model directory).", "choices": STOP_STAGES},
    )

    def __post_init__(self):
        check_config(self)
        if len(self.objectives) < 2:
            raise SteerableError("RiC needs at least two objectives (--objectives a=... b=...)")
        # Local paths are resolved once, here, so a moved run or another working directory
        # still finds them; the specs are parsed (and checked) now, before any stage runs.
        self.model = absolute_if_local(self.model)
        self.data = None if self.data is None else str(Path(self.data).resolve())
        self.prompts = None if self.prompts is None else str(Path(self.prompts).resolve())
        for option, value in (("--prompt_limit", self.prompt_limit), ("--prompts", self.prompts)):
            if self.data is not None and value is not None:
                raise SteerableError(
                    f"{option} is read without --data only (it picks the prompts to sample for); drop one"
                )
        if self.chat_template_path is not None:
            self.chat_template_path = absolute_if_local(self.chat_template_path)
        self.objectives = [str(o.spec) for o in RewardSet.from_specs(self.objectives).objectives]
        check_modality(self.objectives, "text", "train ric")  # images: train ric-image
        TagFormat(self.tag_placement, self.tag_decimals)
        TagFormat(self.offline_instruction_placement)
        MappingConfig(self.mapping, self.lo_quantile, self.hi_quantile)
        self.sampling  # noqa: B018 -- validates the sampling settings before any stage runs

    @property
    def sampling(self) -> SamplingConfig:
        return SamplingConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            batch_size=self.generation_batch_size,
            seed=self.seed,
            top_k=self.top_k,
        )


# --- pure pieces (tested directly) -------------------------------------------------------------
def sample_targets(
    n: int, lo: np.ndarray, hi: np.ndarray, scheme: str, rng: np.random.Generator
) -> np.ndarray:
    """[n, K] target tags. `reference`: one objective uniform in [lo, hi], the others at hi.
    `simplex`: a uniform random preference mapped with linf."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    k = lo.size
    if scheme == "reference":
        targets = np.tile(hi, (n, 1))
        which = rng.integers(k, size=n)
        targets[np.arange(n), which] = rng.uniform(lo[which], hi[which])
        return targets
    names = [str(i) for i in range(k)]
    rows = []
    for weights in rng.dirichlet(np.ones(k), size=n):
        pref = Preference(tuple(names), tuple(float(w) for w in weights))
        rows.append(list(preference_to_targets(pref, lo, hi, "linf").values()))
    return np.asarray(rows)


def instructed_messages(prompt: str, instruction: str, placement: TagFormat) -> list[dict[str, str]]:
    """The chat used to sample an offline response: `instruction` placed as tags would be."""
    if not instruction:
        return [{"role": "user", "content": prompt}]
    return tagged_messages(prompt, instruction, placement)


def mors_keep(z: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Rejection-sampling filter: rows where any objective reaches its threshold."""
    return np.any(np.asarray(z) >= np.asarray(thresholds)[None, :], axis=1)


def sft_example(prompt: str, response: str, tags: dict[str, float], fmt: TagFormat, system=None) -> dict:
    """One conversational prompt-completion example for TRL, with the tags in the prompt."""
    return {
        "prompt": tagged_messages(prompt, format_tags(tags, fmt.decimals), fmt, system),
        "completion": [{"role": "assistant", "content": response}],
    }


# --- the recipe ----------------------------------------------------------------------------------
# The configuration fields each stage depends on (with the keys of the stages before it, so a
# change upstream reaches every later stage). `tests/test_ric.py` checks that every field is
# listed here. No stage depends on where outputs go, the checkpoint cadence, how many rounds
# follow (each round is a stage of its own) or the mapping stored for inference.
SAMPLING_FIELDS = ("max_new_tokens", "temperature", "top_p", "top_k", "generation_batch_size")
OFFLINE_FIELDS = (
    "model",
    "dtype",
    "trust_remote_code",
    "objectives",
    "prompt_split",
    "prompt_limit",
    "samples_per_prompt",
    "offline_instructions",
    "offline_instruction_placement",
    "cuts_per_sample",
    "clause_cuts",
    *SAMPLING_FIELDS,
    "seed",
)
SFT_FIELDS = (
    "tag_placement",
    "tag_decimals",
    "use_lora",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "learning_rate",
    "lr_scheduler",
    "num_epochs",
    "batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "activation_checkpointing",
    "bf16",
    "train_sampling_strategy",
)
ONLINE_DATA_FIELDS = (
    "online_samples",
    "online_scheme",
    "online_quantile",
    "online_threshold",
    "original_ratio",
    "lo_quantile",
    "hi_quantile",
    *SAMPLING_FIELDS,
)
ONLINE_TRAIN_FIELDS = ("online_learning_rate", "online_epochs")
UNSTAGED_FIELDS = ("output_dir", "save_steps", "sft_rungs", "online_iterations", "mapping", "stop_after")
# Files, recorded by content: the --data table and the prompt file (offline) and the chat
# template (SFT).
CONTENT_FIELDS = {"data": "offline", "chat_template_path": "sft", "prompts": "offline"}
# Fields that came after stages were first recorded, with the value every run had before: left
# out while at it, so that runs made before them still match (the prompt file: recorded only
# when given; the MORS threshold rule: only when it is not the one rule there was).
LATER_FIELDS = {"prompts": None, "online_threshold": "offline"}


def stage_plan(config: RiCConfig) -> dict[str, dict]:
    """Every stage's inputs, in the order they run: `offline`, `sft`, then per MORS round i
    `online_i_data` (generations, scores, the merged training set) and `online_i` (training).
    Input files count by content, so a --data file edited in place is noticed, and so do the
    py: scorers of the stages that score (`scorer_hashes`)."""
    scorers = scorer_hashes(config.objectives)

    def pick(stage: str, names: tuple[str, ...]) -> dict:
        files = [name for name, read_by in CONTENT_FIELDS.items() if read_by == stage]
        inputs = config_inputs(config, [*names, *files], files=files, later=LATER_FIELDS)
        return {**inputs, "scorer_sha256": scorers} if scorers and stage in SCORING_STAGES else inputs

    plan = {"offline": pick("offline", OFFLINE_FIELDS), "sft": pick("sft", SFT_FIELDS)}
    plan["sft"]["after"] = fingerprint(plan["offline"])
    previous = "sft"
    for i in range(1, config.online_iterations + 1):
        data = {**pick("online_data", ONLINE_DATA_FIELDS), "round": i, "after": fingerprint(plan[previous])}
        plan[f"online_{i}_data"] = data
        plan[f"online_{i}"] = {**pick("online", ONLINE_TRAIN_FIELDS), "after": fingerprint(data)}
        previous = f"online_{i}"
    return plan


# The stages that run the scorers: a py: scorer's file, edited, makes their scores stale.
SCORING_STAGES = ("offline", "online_data")


def scorer_hashes(objectives: list[str]) -> dict[str, str | None]:
    """{name: sha256 of its file} of the py: objectives (none for other scorers, so the stage
    keys of runs without py: objectives stay as they were)."""
    from steerable.scorers import ScorerSpec
    from steerable.trust import code_file, file_sha256

    specs = [ScorerSpec.parse(spec) for spec in objectives]
    files = {spec.name: code_file(spec.target) for spec in specs if spec.kind == "py"}
    return {name: None if path is None else file_sha256(path) for name, path in files.items()}


def threshold_hint(made: dict | None, inputs: dict) -> str:
    """For a MORS round that differs from this run only in its threshold rule (one made before
    `round` became the default, say): the option that reruns it as it was made."""
    if made is None or changed_fields(made, inputs) != ["online_threshold"]:
        return ""
    rule = made.get("online_threshold", "offline")  # absent: the one rule before the option
    return f"; or pass --online_threshold {rule} (the rule it was made with)"


def train_ric(config: RiCConfig) -> Path:
    """Run (or resume) the whole recipe; returns the steerable model directory.

    Everything that can be checked is checked before any stage runs (the config, the data, the
    model and its chat template). steerable.json is written once, after the last stage: a
    directory without it is an unfinished run, and a re-run with other settings removes the
    old one before it trains anything. With `stop_after`, it returns that stage's folder instead."""
    tokenizer = check_inputs(config)
    out = Path(config.output_dir)
    stages = Stages(out, "train ric")
    plan = stage_plan(config)
    keys = {name: fingerprint(inputs) for name, inputs in plan.items()}
    for name, inputs in plan.items():
        try:
            stages.done(name, inputs)  # refuse a stale stage now, before any work
        except SteerableError as err:
            raise SteerableError(f"{err}{threshold_hint(stages.made_with(name), inputs)}") from None
    discard_stale_manifest(out, keys)
    torch.manual_seed(config.seed)
    fmt = TagFormat(config.tag_placement, config.tag_decimals)

    # 1. offline data ---------------------------------------------------------------------------
    infos = {"offline": stages.run("offline", plan["offline"], lambda folder: offline_data(config, folder))}
    if config.stop_after == "offline":
        return stages.path("offline")
    rewards = offline_rewards(config, stages.path("offline") / "stats.json")
    offline = read_table(stages.path("offline") / "scored.jsonl")
    names = rewards.names

    # 2. reward-conditioned SFT -------------------------------------------------------------------
    model, _ = load_causal_lm(config.model, config.dtype, trust_remote_code=config.trust_remote_code)

    def examples_for(rows: list[dict]) -> list[dict]:
        """SFT examples tagged with each row's normalised scores, in a chat the template accepts."""
        examples = [
            sft_example(r["prompt"], r["response"], {n: r[f"z_{n}"] for n in names}, fmt) for r in rows
        ]
        return [{**e, "prompt": template_messages(tokenizer, e["prompt"])} for e in examples]

    examples = examples_for(offline)
    model, infos["sft"] = run_sft(model, tokenizer, examples, config, stages, "sft", plan["sft"], True)
    if config.stop_after == "sft":
        return stages.path("sft")
    policy = SteerablePolicy(model, tokenizer, manifest(config, rewards, infos, keys, offline))

    # 3. online MORS ----------------------------------------------------------------------------
    for i in range(1, config.online_iterations + 1):
        data, train = f"online_{i}_data", f"online_{i}"
        infos[data] = stages.run(
            data,
            plan[data],
            lambda folder, i=i: mors_round(policy, rewards, offline, config, i, stages, folder),
        )
        examples = examples_for(read_table(stages.path(data) / "merged.jsonl"))
        policy.model, infos[train] = run_sft(
            policy.model, tokenizer, examples, config, stages, train, plan[train], False
        )
    policy.manifest = manifest(config, rewards, infos, keys, offline)
    if is_main_process():
        policy.save_pretrained(out)
    wait_for_everyone()
    return out


def offline_rewards(config: RiCConfig, path: Path) -> RewardSet:
    """This run's own objectives (config.objectives, whose code may run) with the statistics the
    offline stage fitted at `path`; the file's specs only checked, never run: a run directory
    copied from elsewhere could name any scorer there."""
    rewards, fitted = RewardSet.from_specs(config.objectives), RewardSet.load(path)
    made = [(o.name, str(o.spec)) for o in fitted.objectives]
    if made != [(o.name, str(o.spec)) for o in rewards.objectives]:
        raise SteerableError(
            f"{path} holds objectives {[spec for _, spec in made]}, not this run's "
            f"{config.objectives}; delete {path.parent} to score the offline data again"
        )
    for objective, stats in zip(rewards.objectives, fitted.objectives, strict=True):
        objective.stats = stats.stats
    return rewards


def check_inputs(config: RiCConfig):
    """What RiCConfig cannot check without reading files: the data, the model, its chat
    template. Returns the tokenizer that training will use."""
    if config.data is not None:
        load_pairs(config.data)
    else:
        load_prompts(config.prompt_split, config.prompt_limit, config.prompts)
    return load_tokenizer(config.model, config.trust_remote_code, config.chat_template_path)


def discard_stale_manifest(out: Path, keys: dict[str, str]) -> None:
    """Remove a steerable.json that does not describe the stages this run will produce, so an
    interrupted re-run never loads as finished."""
    path = out / MANIFEST
    if is_main_process() and path.is_file():
        try:
            recorded = json.loads(path.read_text()).get("training", {}).get("stages")
        except json.JSONDecodeError:
            recorded = None
        if recorded != keys:
            path.unlink()
    wait_for_everyone()


def offline_data(config: RiCConfig, folder: Path) -> dict:
    """The offline stage: rows (given, or sampled from the base model and cut), scored by every
    objective, statistics fitted; writes scored.jsonl and stats.json."""
    started = time.perf_counter()
    rewards = RewardSet.from_specs(config.objectives)
    generated_tokens = 0
    places = None  # where an error names a row: its line in --data, else "row N"
    if config.data is not None:
        rows, places = load_placed_pairs(config.data)
        places = [f"{config.data}, {place}" for place in places]
    else:
        prompts = load_prompts(config.prompt_split, config.prompt_limit, config.prompts)
        model, tokenizer = load_causal_lm(
            config.model, config.dtype, trust_remote_code=config.trust_remote_code
        )
        repeated = [p for p in prompts for _ in range(config.samples_per_prompt)]
        cycle = config.offline_instructions or [""]
        instructions = [cycle[i % len(cycle)] for i in range(len(repeated))]
        placement = TagFormat(config.offline_instruction_placement)
        responses = generate_texts(
            model,
            tokenizer,
            [
                render_chat(tokenizer, instructed_messages(p, text, placement))
                for p, text in zip(repeated, instructions, strict=True)
            ],
            config.sampling,
        )
        generated_tokens = count_tokens(tokenizer, responses)
        rng = np.random.default_rng(config.seed)
        rows = [
            {"prompt": p, "response": cut, "instruction": text}
            for p, r, text in zip(repeated, responses, instructions, strict=True)
            for cut in (
                sentence_cuts(r, config.cuts_per_sample, rng, config.clause_cuts)
                if config.cuts_per_sample
                else [r]
            )
            if cut.strip()
        ]
        del model
    if not rows:
        raise SteerableError("the offline stage produced no rows to train on (every response was empty)")
    rewards.annotate(rows, fit=True, progress=True, places=places)
    flat = [o.name for o in rewards.objectives if o.stats.std == 0]
    if flat:
        raise SteerableError(
            f"objective(s) {flat} score the same on all {len(rows)} offline rows, so every preference "
            "would map to the same tag; give data (or sampling settings) on which they vary"
        )
    rewards.save(folder / "stats.json")
    write_table(folder / "scored.jsonl", rows)
    return {"rows": len(rows), "generated_tokens": generated_tokens, "seconds": time.perf_counter() - started}


def mors_round(
    policy: SteerablePolicy,
    rewards: RewardSet,
    offline: list[dict],
    config: RiCConfig,
    iteration: int,
    stages: Stages,
    folder: Path,
) -> dict:
    """One MORS round's data: sampled targets, responses relabelled with the scores they
    obtained and marked `kept` by the filter (generated.jsonl), and the round's training set,
    every kept online row so far plus a filtered sample of the offline data (merged.jsonl).
    The round draws from a generator of its own, seeded by (seed, round), so it is the same
    whether or not the run was interrupted before it."""
    started = time.perf_counter()
    names = rewards.names
    rng = np.random.default_rng([config.seed, iteration])
    sampling = replace(
        config.sampling, seed=int(np.random.SeedSequence([config.seed, iteration]).generate_state(1)[0])
    )
    prompts = sorted({r["prompt"] for r in offline})
    lo, hi = policy.target_range()
    chosen = [prompts[i] for i in rng.integers(len(prompts), size=config.online_samples)]
    targets = sample_targets(config.online_samples, np.array(lo), np.array(hi), config.online_scheme, rng)
    texts = [
        policy.prompts_with_tags([p], dict(zip(names, t, strict=True)))[0]
        for p, t in zip(chosen, targets, strict=True)
    ]
    policy.model.eval()
    responses = generate_texts(policy.model, policy.tokenizer, texts, sampling)
    generated = [
        {"prompt": p, "response": r, **{f"target_{n}": float(v) for n, v in zip(names, t, strict=True)}}
        for p, r, t in zip(chosen, responses, targets, strict=True)
        if r.strip()
    ]
    if generated:
        rewards.annotate(generated, progress=True)  # relabel: trained on with the scores each sample obtained

    def z_of(rows: list[dict]) -> np.ndarray:
        return np.array([[r[f"z_{n}"] for n in names] for r in rows]).reshape(len(rows), len(names))

    offline_thresholds = np.array(
        [
            o.stats.normalise(np.array([o.stats.quantile(config.online_quantile)]))[0]
            for o in rewards.objectives
        ]
    )
    thresholds = offline_thresholds
    if config.online_threshold == "round" and generated:
        thresholds = np.quantile(z_of(generated), config.online_quantile, axis=0)  # (K,)
    for row, keep in zip(generated, mors_keep(z_of(generated), thresholds), strict=True):
        row["kept"] = bool(keep)
    online = [
        r
        for j in range(1, iteration)
        for r in read_table(stages.path(f"online_{j}_data") / "generated.jsonl")
    ]
    online = [r for r in online + generated if r["kept"]]  # online data accumulates over rounds
    eligible = [
        r for r, keep in zip(offline, mors_keep(z_of(offline), offline_thresholds), strict=True) if keep
    ]
    n_original = min(len(eligible), int(round(config.original_ratio * len(online))))
    merged = online + [eligible[i] for i in rng.choice(len(eligible), n_original, replace=False)]
    if not merged:
        raise SteerableError(
            f"MORS round {iteration} kept no sample; lower --online_quantile or raise --online_samples"
        )
    write_table(folder / "generated.jsonl", generated)
    write_table(folder / "merged.jsonl", merged)
    return {
        "generated": len(generated),
        "kept": int(sum(r["kept"] for r in generated)),
        "merged_original": n_original,
        "online_threshold": config.online_threshold,
        "thresholds": {n: float(t) for n, t in zip(names, thresholds, strict=True)},
        "generated_tokens": count_tokens(policy.tokenizer, responses),
        "seconds": time.perf_counter() - started,
    }


def run_sft(
    model,
    tokenizer,
    examples: list[dict],
    config: RiCConfig,
    stages: Stages,
    name: str,
    inputs: dict,
    offline: bool,
):
    """(model, info): train with TRL's SFTTrainer (completion-only loss) unless the stage is
    done, resuming from the stage's last complete checkpoint. Every process trains (under
    `accelerate launch`); the main one saves."""
    from datasets import Dataset
    from peft import PeftModel
    from trl import SFTTrainer

    done = stages.done(name, inputs)
    if done is not None:
        return load_stage_weights(model, stages.path(name), config), done
    if not examples:
        raise SteerableError(f"stage {name}: no training examples")
    peft_config = None
    if config.use_lora and not isinstance(model, PeftModel):
        peft_config = lora_config(config.lora_r, config.lora_alpha, config.lora_dropout)
    model.train()

    def trainer_for(stage: Path):
        return SFTTrainer(
            model=model,
            args=sft_args(config, stage / "checkpoints", offline),
            train_dataset=Dataset.from_list(examples),
            processing_class=tokenizer,
            peft_config=peft_config,
        )

    label = "offline SFT" if offline else f"{name} SFT"
    trainer, info = train_stage(
        stages,
        name,
        inputs,
        trainer_for,
        label,
        describe=lambda *_: {"examples": len(examples)},
        rungs=config.sft_rungs if offline else (),
    )
    return trainer.model, info


def sft_args(config: RiCConfig, output_dir: Path, offline: bool):
    """TRL's SFTConfig for the offline stage (`offline`) or an online round."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate if offline else config.online_learning_rate,
        lr_scheduler_type=config.lr_scheduler if offline else "constant",
        num_train_epochs=config.num_epochs if offline else config.online_epochs,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        completion_only_loss=True,
        logging_steps=5,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,
        seed=config.seed,
        activation_checkpointing=config.activation_checkpointing,
        train_sampling_strategy=config.train_sampling_strategy,
        **device_args(config.bf16),
    )


def load_stage_weights(model, stage: Path, config: RiCConfig):
    """Weights of a finished stage onto `model` (a base model or an existing PEFT model), on
    the model's device."""
    from peft import PeftModel, set_peft_model_state_dict
    from peft.utils import load_peft_weights
    from transformers import AutoModelForCausalLM

    if not config.use_lora:
        full = AutoModelForCausalLM.from_pretrained(
            stage / "weights", dtype=torch_dtype(config.dtype), trust_remote_code=config.trust_remote_code
        )
        return full.to(model.device)
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_peft_weights(str(stage / "weights"), device=str(model.device)))
        return model
    return PeftModel.from_pretrained(model, stage / "weights", is_trainable=True)


def manifest(
    config: RiCConfig, rewards: RewardSet, infos: dict[str, dict], keys: dict[str, str], offline: list[dict]
):
    """steerable.json's contents: the compute is summed from the stages' records; the prompts
    trained on (the offline rows', which MORS samples too) are kept as digests."""
    return PolicyManifest(
        method="ric",
        base_model=config.model,
        rewards=rewards.to_dict(),
        tags=TagFormat(config.tag_placement, config.tag_decimals).to_dict(),
        mapping=asdict(MappingConfig(config.mapping, config.lo_quantile, config.hi_quantile)),
        weights="adapter" if config.use_lora else "model",
        dtype=config.dtype,
        training=training_record(config, keys, infos, [r["prompt"] for r in offline]),
    )

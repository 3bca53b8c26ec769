"""A scalar Bradley-Terry reward model trained on preference pairs: `steerable train rm`.

The recipe, top to bottom:
1. read preference pairs (prompt, chosen, rejected) from one of three layouts:
   - columns `prompt`, `chosen`, `rejected`;
   - HH-RLHF `chosen` / `rejected` transcripts, split at their last assistant turn;
   - a scored table (`prompt`, `response`, `score_<NAME>`, as `steerable score` writes it)
     with `objective=NAME`: see `pairs_from_scores`;
2. split them by prompt into train and held-out pairs, so no prompt is in both;
3. tokenise every (prompt, response) exactly as the `hf:` scorer does with `input=pair`:
   `tokenizer(prompt, response)`, truncated to `max_length`, no EOS appended, right padding,
   token type ids kept for encoders that read segments (BERT);
4. train with TRL's `RewardTrainer` (loss -log sigmoid(r_chosen - r_rejected)): the whole model,
   or LoRA adapters merged into the weights afterwards;
5. save model + tokenizer, measure the held-out pairwise accuracy through `HFRewardModel`
   (the path a user scores with), and publish into OUTPUT_DIR: weights and tokenizer,
   `reward_model.json`, and `config.json` last, so a directory with a config.json is whole.

OUTPUT_DIR is then an objective as it is: `-o NAME=hf:OUTPUT_DIR` (with options only where the
training differed from the scorer's defaults: max_length, dtype, trust_remote_code).

Supports any backbone `AutoModelForSequenceClassification` loads (encoders and decoders; a
tokenizer without a pad token gets the hf scorer's dedicated one), `accelerate launch`, and
resuming an interrupted run (run the same command again).

Raises `SteerableError` (before anything is written) for: missing columns, empty text, a pair
whose chosen and rejected are the same, a scored table without `objective`, an `objective`
without its `score_<NAME>` column, a non-finite score, and too few prompts or pairs for a
held-out split.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path

import torch

from steerable.configs import check_field_types
from steerable.data import read_table
from steerable.data.loading import ASSISTANT, require_text, split_by_prompt, split_transcript
from steerable.defaults import DTYPE_NAMES, MINILM_MODEL, absolute_if_local
from steerable.errors import SteerableError
from steerable.io import atomic_write, atomic_write_text
from steerable.methods.training import device_args, last_complete_checkpoint, lora_config, stage_bar
from steerable.scorers.hf import HFRewardModel, load_pair_model
from steerable.stages import Stages, file_digest, fingerprint, is_main_process, wait_for_everyone

STAGE = "train"
RECORD = "reward_model.json"
# The hf scorer's default truncation: training at another length puts ?max_length= in the spec.
SCORER_MAX_LENGTH = 512
# Optimiser steps between checkpoints (the points an interrupted run resumes from).
SAVE_STEPS = 50
# The objective name printed for a pairs table (a scored table's is its objective's).
DEFAULT_NAME = "reward"


@dataclass
class RMConfig:
    """Configuration of a scalar Bradley-Terry reward model (`steerable train rm`).

    Model:
        model: backbone: `minilm` (all-MiniLM-L6-v2, the small local encoder), a hub id or a
            local directory of any encoder or decoder (stored absolute).
        dtype: the dtype the weights are loaded and trained in.
        trust_remote_code: let a hub model run its own code (off unless you trust its author).

    Data:
        data: the preference table (required): columns prompt/chosen/rejected, HH-RLHF
            chosen/rejected transcripts, or a scored table (prompt, response, score_<NAME>)
            with `objective`. Any format `steerable score` reads (stored absolute).
        split: the split to read from a saved DatasetDict with several.
        objective: for a scored table, the NAME whose score_<NAME> ranks responses to the same
            prompt; every two responses with different scores become a pair (see
            `pairs_from_scores`). Only for scored tables.
        heldout_fraction: fraction of the prompts (at least one) whose pairs are held out to
            measure accuracy; the split is by prompt, so no prompt is in both.

    Training:
        num_epochs / learning_rate / batch_size: the usual; batch_size counts pairs per step
            (each step scores 2 x batch_size sequences).
        max_length: truncation length in tokens of each (prompt, response), as the hf scorer's
            `max_length` (its default is 512; another value is put in the objective spec).
        lora_r: 0 trains the whole model (right for the small encoder); > 0 trains LoRA
            adapters of this rank on every linear layer plus the reward head, merged into the
            weights before saving, so the output is a plain model either way.
        lora_alpha: LoRA scaling (used when lora_r > 0).
        seed: seeds the reward head's initialisation, the split and the batch order.

    output_dir: the reward model directory to write (an hf: objective as it is).
    """

    model: str = field(default=MINILM_MODEL, metadata={"help": "Backbone: minilm, hub id or directory."})
    dtype: str = field(
        default="float32", metadata={"help": "Dtype of the model weights.", "choices": DTYPE_NAMES}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Let a hub model run its own code (off unless you trust it)."}
    )
    output_dir: str = field(default="runs/rm", metadata={"help": "Reward model directory to write."})
    data: str | None = field(default=None, metadata={"help": "Preference pairs or scored table (required)."})
    split: str | None = field(default=None, metadata={"help": "Split of a saved DatasetDict."})
    objective: str | None = field(
        default=None, metadata={"help": "Scored tables: rank responses by score_<objective>."}
    )
    heldout_fraction: float = field(default=0.2, metadata={"help": "Fraction of prompts held out."})
    num_epochs: float = field(default=1.0, metadata={"help": "Training epochs."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate."})
    batch_size: int = field(default=8, metadata={"help": "Pairs per step."})
    max_length: int = field(
        default=SCORER_MAX_LENGTH, metadata={"help": "Truncate each (prompt, response) to this many tokens."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (0 = train the whole model)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (with lora_r > 0)."})
    seed: int = field(default=0, metadata={"help": "Random seed."})

    def __post_init__(self):
        check_field_types(self)
        if self.data is None:
            raise SteerableError(
                "--data is required: a table of prompt/chosen/rejected pairs, HH-RLHF transcripts, "
                "or a scored table (with --objective)"
            )
        if self.dtype not in DTYPE_NAMES:
            raise SteerableError(f"dtype must be one of {list(DTYPE_NAMES)}, got {self.dtype!r}")
        if not 0 < self.heldout_fraction < 1:
            raise SteerableError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        if self.num_epochs <= 0 or self.learning_rate <= 0:
            raise SteerableError("num_epochs and learning_rate must be > 0")
        if min(self.batch_size, self.max_length, self.lora_alpha) < 1 or self.lora_r < 0:
            raise SteerableError("batch_size, max_length and lora_alpha must be >= 1, lora_r >= 0")
        if self.objective is not None and not self.objective.strip():
            raise SteerableError("objective is empty; give the NAME of a score_<NAME> column")
        self.model = absolute_if_local(self.model)
        self.data = str(Path(self.data).resolve())


# --- preference pairs ---------------------------------------------------------------------


def read_preference_pairs(
    path: str | Path, objective: str | None = None, split: str | None = None
) -> list[dict]:
    """The (prompt, chosen, rejected) pairs of a table in any of the three layouts (see the
    module docstring). Errors name the file, row and column."""
    rows = read_table(path, split)
    if not rows:
        raise SteerableError(f"{path} has no rows")
    columns = set(rows[0])
    if "response" in columns:
        if "prompt" not in columns:
            raise SteerableError(f"{path}: a scored table needs a 'prompt' column, found {sorted(columns)}")
        scores = sorted(c.removeprefix("score_") for c in columns if c.startswith("score_"))
        if objective is None:
            if not scores:
                raise SteerableError(
                    f"{path} has prompt/response rows but no score_<NAME> column; score it first with "
                    "`steerable score`, or give prompt/chosen/rejected pairs"
                )
            raise SteerableError(
                f"{path} is a scored table: pass --objective NAME to rank its responses by "
                f"score_NAME, NAME one of {scores}"
            )
        if f"score_{objective}" not in columns:
            raise SteerableError(
                f"{path} has no column score_{objective} (objective {objective!r}); its scored "
                f"objectives are {scores}"
            )
        for number, row in enumerate(rows):
            require_text(row, ("prompt", "response"), number, path)
        pairs = pairs_from_scores(rows, objective, where=str(path))
        if not pairs:
            raise SteerableError(
                f"{path}: no pairs, since every two responses to a prompt tie on score_{objective}"
            )
        return pairs
    if objective is not None:
        raise SteerableError(
            f"{path} holds chosen/rejected pairs, which need no --objective (it ranks the responses "
            "of a scored table); drop it"
        )
    if {"prompt", "chosen", "rejected"} <= columns:
        pairs = [{k: row.get(k) for k in ("prompt", "chosen", "rejected")} for row in rows]
    elif {"chosen", "rejected"} <= columns:
        pairs = [_hh_pair(row, number, path) for number, row in enumerate(rows)]
    else:
        raise SteerableError(
            f"{path}: missing columns; need prompt/chosen/rejected, HH-RLHF chosen/rejected, or a "
            f"scored table (prompt, response, score_<NAME>); found {sorted(columns)}"
        )
    for number, pair in enumerate(pairs):
        require_text(pair, ("prompt", "chosen", "rejected"), number, path)
        if pair["chosen"] == pair["rejected"]:
            raise SteerableError(
                f"{path}, row {number}: chosen and rejected are the same text, so the pair prefers "
                "nothing; fix or drop the row"
            )
    return pairs


def _hh_pair(row: dict, number: int, path: str | Path) -> dict:
    """One HH-RLHF row as (prompt, chosen, rejected): both transcripts must share the
    conversation before their last assistant turn."""
    for label in ("chosen", "rejected"):
        if not isinstance(row.get(label), str) or ASSISTANT not in row[label]:
            raise SteerableError(
                f"{path}, row {number}: {label!r} is not an HH-RLHF transcript (no '\\n\\nAssistant:' turn)"
            )
    prompt, chosen = split_transcript(row["chosen"])
    other, rejected = split_transcript(row["rejected"])
    if prompt != other:
        raise SteerableError(
            f"{path}, row {number}: chosen and rejected continue different conversations; a pair "
            "must answer the same prompt"
        )
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def pairs_from_scores(rows: list[dict], objective: str, where: str = "scored table") -> list[dict]:
    """Preference pairs from a scored table: for each prompt, every two different responses
    whose score_<objective> differ, the higher-scored one chosen -- up to n(n-1)/2 pairs for a
    prompt with n responses. Ties (and a response repeated) make no pair. Pairs come in the
    order of the rows. A score that is not a finite number is an error naming its row."""
    column = f"score_{objective}"
    groups: dict[str, list[tuple[str, float]]] = {}
    for number, row in enumerate(rows):
        score = row.get(column)
        if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(score):
            raise SteerableError(
                f"{where}, row {number}: {column} is {score!r}, not a finite number; re-score the "
                "table or drop the row"
            )
        groups.setdefault(row["prompt"], []).append((row["response"], float(score)))
    pairs = []
    for prompt, scored in groups.items():
        for i, (first, a) in enumerate(scored):
            for second, b in scored[i + 1 :]:
                if a != b and first != second:
                    chosen, rejected = (first, second) if a > b else (second, first)
                    pairs.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def pairwise_accuracy(score, pairs: list[dict]) -> float:
    """Fraction of pairs whose chosen response scores strictly higher than its rejected one,
    `score(prompts, responses) -> scores` being any scorer (ties count as wrong)."""
    prompts = [p["prompt"] for p in pairs]
    chosen = score(prompts, [p["chosen"] for p in pairs])
    rejected = score(prompts, [p["rejected"] for p in pairs])
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)


# --- tokenisation shared with the hf scorer -----------------------------------------------


def encode_pairs(tokenizer, pairs: list[dict], max_length: int):
    """TRL's pre-tokenised preference dataset (`chosen_ids`, `rejected_ids`), each side being
    `tokenizer(prompt, response)` truncated to `max_length` -- what the hf scorer feeds the model
    with input=pair. Pre-tokenising is how TRL takes inputs it must not change: from raw text
    it would append an EOS the scorer never sees. Encoders that read segments also get
    `chosen_token_type_ids` / `rejected_token_type_ids` (the response's are 1 in BERT)."""
    from datasets import Dataset

    prompts = [p["prompt"] for p in pairs]
    columns = {}
    for side in ("chosen", "rejected"):
        encoded = tokenizer(prompts, [p[side] for p in pairs], truncation=True, max_length=max_length)
        columns[f"{side}_ids"] = encoded["input_ids"]
        if "token_type_ids" in encoded:
            columns[f"{side}_token_type_ids"] = encoded["token_type_ids"]
    return Dataset.from_dict(columns)


def pair_collator(pad_token_id: int, pad_to_multiple_of: int | None = None):
    """TRL's preference collator (chosen rows, then rejected rows, right-padded) plus the
    token type ids of `encode_pairs`, which the hf scorer passes too: without them BERT would
    train with every token in segment 0 and score with the response in segment 1."""
    from trl.trainer.reward_trainer import DataCollatorForPreference
    from trl.trainer.utils import pad

    preference = DataCollatorForPreference(pad_token_id, pad_to_multiple_of)

    def collate(examples: list[dict]) -> dict:
        batch = preference(examples)
        if "chosen_token_type_ids" in examples[0]:
            sides = ("chosen", "rejected")
            types = [torch.tensor(e[f"{side}_token_type_ids"]) for side in sides for e in examples]
            # (2B, T); padded positions are masked out, so their type does not matter
            batch["token_type_ids"] = pad(types, padding_value=0, pad_to_multiple_of=pad_to_multiple_of)
        return batch

    return collate


# --- training -----------------------------------------------------------------------------


def load_backbone(config: RMConfig):
    """(model with one reward logit, tokenizer) for training. A tokenizer without a pad token
    gets the hf scorer's dedicated one (not EOS: see steerable.scorers.hf), and the tokenizer
    pads on the right, as TRL's collator does, so the saved directory scores as it trained."""
    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(config.seed)  # the reward head is initialised randomly
    model, tokenizer = load_pair_model(
        AutoModelForSequenceClassification,
        config.model,
        role="reward model backbone",
        kind="a sequence-classification model",
        dtype=config.dtype,
        trust_remote_code=config.trust_remote_code,
        num_labels=1,
        ignore_mismatched_sizes=True,  # a classifier with other labels gets a fresh head
    )
    tokenizer.padding_side = "right"
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions is not None and config.max_length > positions:
        raise SteerableError(
            f"max_length {config.max_length} is longer than {config.model!r} reads ({positions} "
            "positions); lower max_length"
        )
    return model, tokenizer


def reward_args(config: RMConfig, output_dir: Path):
    """TRL's RewardConfig: inputs already tokenised (`encode_pairs`), kept whole for
    `pair_collator` (remove_unused_columns would drop the token type ids)."""
    from trl import RewardConfig

    return RewardConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.num_epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        max_length=None,  # encode_pairs truncates; TRL would drop longer pairs instead
        remove_unused_columns=False,
        logging_steps=10,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        save_total_limit=1,
        seed=config.seed,
        activation_checkpointing=False,
        **device_args(),
    )


def scorer_options(config: RMConfig) -> dict[str, str]:
    """The hf scorer options that make it read the model as it was trained: none with the
    defaults."""
    options = {}
    if config.max_length != SCORER_MAX_LENGTH:
        options["max_length"] = str(config.max_length)
    if config.dtype != "float32":
        options["dtype"] = config.dtype
    if config.trust_remote_code:
        options["trust_remote_code"] = "true"
    return options


def objective_spec(config: RMConfig, out: str | Path) -> str:
    """The objective spec that scores with the trained model, e.g. positive=hf:/abs/runs/rm."""
    options = scorer_options(config)
    query = "?" + "&".join(f"{k}={v}" for k, v in options.items()) if options else ""
    return f"{config.objective or DEFAULT_NAME}=hf:{Path(out).resolve()}{query}"


def train_rm(config: RMConfig) -> Path:
    """Train the reward model into config.output_dir (see the module docstring); returns it.
    The pairs are read and checked before anything is written."""
    pairs = read_preference_pairs(config.data, config.objective, config.split)
    train_rows, heldout_rows = split_by_prompt(
        [p["prompt"] for p in pairs], config.heldout_fraction, config.seed
    )
    train, heldout = [pairs[i] for i in train_rows], [pairs[i] for i in heldout_rows]
    out = Path(config.output_dir)
    stages = Stages(out)
    inputs = {
        **{k: v for k, v in asdict(config).items() if k != "output_dir"},
        "data_digest": file_digest(config.data),
    }
    info = stages.done(STAGE, inputs)  # refuses a model trained on other inputs
    if info is None:
        train_stage(config, train, heldout, stages, inputs)
        info = stages.done(STAGE, inputs)
    if is_main_process():
        record = {
            "objective": objective_spec(config, out),
            "config": asdict(config),
            "data_digest": inputs["data_digest"],
            "stage": fingerprint(inputs),
            **info,
        }
        publish(stages.path(STAGE) / "model", out, record)
    wait_for_everyone()
    return out


def train_stage(
    config: RMConfig, train: list[dict], heldout: list[dict], stages: Stages, inputs: dict
) -> None:
    """Train, save to stages/train/model and measure held-out accuracy there, resuming from the
    stage's last complete checkpoint. Every process trains (under `accelerate launch`); the
    main one saves and measures."""
    from peft import PeftModel
    from trl import RewardTrainer

    started = time.perf_counter()
    model, tokenizer = load_backbone(config)  # before anything is written: it may be refused
    stage = stages.start(STAGE, inputs)
    if is_main_process():  # a new model is trained: the old one must not look finished
        for name in ("config.json", RECORD):
            (stages.root / name).unlink(missing_ok=True)
    args = reward_args(config, stage / "checkpoints")
    peft_config = None
    if config.lora_r > 0:
        # TRL disables dropout in the model it trains, LoRA's included: ask for none.
        peft_config = lora_config(config.lora_r, config.lora_alpha, 0.0, task_type="SEQ_CLS")
    trainer = RewardTrainer(
        model=model,
        args=args,
        data_collator=pair_collator(tokenizer.pad_token_id, args.pad_to_multiple_of),
        train_dataset=encode_pairs(tokenizer, train, config.max_length),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    result = stage_bar(trainer, "reward model").train(
        resume_from_checkpoint=last_complete_checkpoint(args.output_dir)
    )
    info = {
        "pairs": {"train": len(train), "heldout": len(heldout)},
        "prompts": {
            "train": len({p["prompt"] for p in train}),
            "heldout": len({p["prompt"] for p in heldout}),
        },
        "steps": trainer.state.global_step,
        "trained_tokens": int(trainer.state.num_input_tokens_seen),
        "metrics": {"train_loss": result.training_loss},
    }
    if is_main_process():
        trained = trainer.model
        if isinstance(trained, PeftModel):
            trained = trained.merge_and_unload()
        trained.save_pretrained(stage / "model")
        tokenizer.save_pretrained(stage / "model")
        scorer = HFRewardModel.from_options(str(stage / "model"), scorer_options(config))
        info["metrics"]["heldout_accuracy"] = pairwise_accuracy(scorer, heldout)
        info["seconds"] = time.perf_counter() - started
    stages.finish(STAGE, inputs, info)
    if is_main_process():  # resuming a finished stage never happens: its checkpoints are spent
        shutil.rmtree(stage / "checkpoints", ignore_errors=True)


def publish(model_dir: Path, out: Path, record: dict) -> None:
    """Copy the saved model into `out`, each file atomically: weights and tokenizer first, then
    reward_model.json, then config.json -- the file that makes a directory a model."""

    def copy(source: Path) -> None:
        atomic_write(out / source.name, lambda tmp: shutil.copyfile(source, tmp))

    for source in sorted(model_dir.iterdir()):
        if source.is_file() and source.name != "config.json":
            copy(source)
    atomic_write_text(out / RECORD, json.dumps(record, indent=2) + "\n")
    copy(model_dir / "config.json")


def summary(out: str | Path) -> str:
    """One line about a trained reward model directory: held-out accuracy and how to use it."""
    record = json.loads((Path(out) / RECORD).read_text())
    return (
        f"held-out pairwise accuracy {record['metrics']['heldout_accuracy']:.3f} on "
        f"{record['pairs']['heldout']} pairs ({record['prompts']['heldout']} prompts); "
        f"score with: -o {record['objective']}"
    )

"""A scalar Bradley-Terry reward model trained on preference pairs: `steerable train rm`.

The recipe, top to bottom:
1. read preference pairs (prompt, chosen, rejected) from one of three layouts:
   - columns `prompt`, `chosen`, `rejected`;
   - HH-RLHF `chosen` / `rejected` transcripts, split at their common start's last assistant
     turn (usually the last turn; see `split_hh_pair`);
   - a scored table (`prompt`, `response`, `score_<NAME>`, as `steerable score` writes it)
     with `objective=NAME`: see `pairs_from_scores`;
   every bad row is named, by its line in the file, in one error (or dropped and counted with
   `skip_invalid`);
2. split them by prompt into train and held-out pairs, so no prompt is in both;
3. tokenise every (prompt, response) exactly as the `hf:` scorer does with `input=pair`
   (`encode_pair_texts`): `tokenizer(prompt, response)` in at most `max_length` tokens, the
   prompt cut from the left so a long conversation keeps its last question and the whole
   answer (an answer too long by itself is cut at its end, and counted), no EOS appended,
   token type ids kept for encoders that read segments (BERT);
4. train with TRL's `RewardTrainer` (loss -log sigmoid(r_chosen - r_rejected)) on batches of
   pairs of similar length, each padded to its longest: the whole model, or LoRA adapters
   merged into the weights afterwards;
5. save model + tokenizer, measure the held-out pairwise accuracy (and that on the `eval` test
   file) through `HFRewardModel` (the path a user scores with), and move them into OUTPUT_DIR,
   so the model is stored once: weights and tokenizer, `reward_model.json`, and `config.json`
   last, so a directory with a config.json is whole.

OUTPUT_DIR is then an objective as it is: `-o NAME=hf:OUTPUT_DIR` (with options only where the
training differed from the scorer's defaults: max_length, dtype, trust_remote_code).

Supports any backbone `AutoModelForSequenceClassification` loads (encoders and decoders; a
tokenizer without a pad token gets the hf scorer's dedicated one), `accelerate launch`, and
resuming an interrupted run (run the same command again).

Raises `SteerableError` (before anything is written) for: missing columns; bad rows (empty
text, a pair whose chosen and rejected are the same, HH-RLHF transcripts with no common
prompt, a score that is not a finite number), all of them in one error unless `skip_invalid`;
a scored table without `objective`, an `objective` without its `score_<NAME>` column, and too
few prompts or pairs for a held-out split.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from numbers import Real
from pathlib import Path

import torch

from steerable.configs import SEED, check_config
from steerable.data.loading import (
    preference_pair,
    read_placed,
    refuse_bad_rows,
    row_places,
    split_by_prompt,
    text_problem,
)
from steerable.defaults import MINILM_MODEL, absolute_if_local
from steerable.errors import SteerableError
from steerable.io import atomic_write_text
from steerable.reward_models.hf import HFRewardModel, check_max_length, encode_pair_texts, load_pair_model
from steerable.stages import Stages, file_digest, fingerprint, is_main_process, wait_for_everyone
from steerable.training import (
    LoraArguments,
    ModelArguments,
    config_inputs,
    device_args,
    lora_config,
    train_stage,
    with_default,
)

STAGE = "train"
RECORD = "reward_model.json"
# The hf scorer's default truncation: training at another length puts ?max_length= in the spec.
SCORER_MAX_LENGTH = 512
# Optimiser steps between checkpoints (the points an interrupted run resumes from).
SAVE_STEPS = 50
# The objective name printed for a pairs table (a scored table's is its objective's).
DEFAULT_NAME = "reward"


@dataclass
class RMConfig(ModelArguments):
    """Configuration of a scalar Bradley-Terry reward model (`steerable train rm`).

    Model (`ModelArguments`):
        model: backbone: `minilm` (all-MiniLM-L6-v2, the small local encoder), a hub id or a
            local directory of any encoder or decoder (stored absolute).
        dtype / trust_remote_code: as for every trainer.

    Data:
        data: the preference table (required): columns prompt/chosen/rejected, HH-RLHF
            chosen/rejected transcripts, or a scored table (prompt, response, score_<NAME>)
            with `objective`. Any format `steerable score` reads (stored absolute).
        split: the split to read from a saved DatasetDict with several.
        objective: for a scored table, the NAME whose score_<NAME> ranks responses to the same
            prompt; every two responses with different scores become a pair (see
            `pairs_from_scores`). Only for scored tables.
        heldout_fraction: fraction of the prompts (at least one) whose pairs are held out to
            measure accuracy; the split is by prompt, so no prompt is in both. 0 (train on every
            pair) only with `eval`.
        eval: a test file of pairs (any layout `data` takes) whose pairwise accuracy is measured
            and recorded; it does not change the training, so a run again with another test
            file only measures (stored absolute).
        skip_invalid: drop bad rows of `data` and `eval` (empty text, a pair whose chosen and
            rejected are the same, a score that is not a number, HH-RLHF transcripts without a
            common prompt) and report how many; by default they are refused, every one named
            by its line in one error.

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

    model: str = with_default(
        ModelArguments, "model", MINILM_MODEL, help="Backbone: minilm, a hub id or a local directory."
    )
    output_dir: str = field(default="runs/rm", metadata={"help": "Reward model directory to write."})
    data: str | None = field(default=None, metadata={"help": "Preference pairs or scored table (required)."})
    split: str | None = field(default=None, metadata={"help": "Split of a saved DatasetDict."})
    objective: str | None = field(
        default=None, metadata={"help": "Scored tables: rank responses by score_<objective>."}
    )
    heldout_fraction: float = field(
        default=0.2, metadata={"help": "Fraction of prompts held out (0 only with --eval).", "ge": 0, "lt": 1}
    )
    eval: str | None = field(
        default=None, metadata={"help": "Test file of pairs to measure accuracy on (any --data layout)."}
    )
    skip_invalid: bool = field(
        default=False, metadata={"help": "Drop bad rows (and report how many) instead of refusing them."}
    )
    num_epochs: float = field(default=1.0, metadata={"help": "Training epochs.", "gt": 0})
    learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate.", "gt": 0})
    batch_size: int = field(default=8, metadata={"help": "Pairs per step.", "ge": 1})
    max_length: int = field(
        default=SCORER_MAX_LENGTH,
        metadata={"help": "Truncate each (prompt, response) to this many tokens.", "ge": 1},
    )
    lora_r: int = with_default(
        LoraArguments, "lora_r", 0, help="LoRA rank (0 = train the whole model).", ge=0
    )
    lora_alpha: int = with_default(LoraArguments, "lora_alpha", 32)
    seed: int = field(default=0, metadata={"help": "Random seed.", **SEED})

    def __post_init__(self):
        check_config(self)
        if self.data is None:
            raise SteerableError(
                "--data is required: a table of prompt/chosen/rejected pairs, HH-RLHF transcripts, "
                "or a scored table (with --objective)"
            )
        if self.objective is not None and not self.objective.strip():
            raise SteerableError("objective is empty; give the NAME of a score_<NAME> column")
        if self.heldout_fraction == 0 and self.eval is None:
            raise SteerableError(
                "--heldout_fraction 0 needs --eval FILE, test pairs to measure the model on; "
                "or hold out a fraction in (0, 1)"
            )
        self.model = absolute_if_local(self.model)
        self.data = str(Path(self.data).resolve())
        if self.eval is not None:
            self.eval = str(Path(self.eval).resolve())


# --- preference pairs ---------------------------------------------------------------------


def read_preference_pairs(
    path: str | Path, objective: str | None = None, split: str | None = None, skip_invalid: bool = False
) -> tuple[list[dict], int]:
    """(pairs, rows skipped): the (prompt, chosen, rejected) pairs of a table in any of the three
    layouts (see the module docstring). Bad rows are one error naming each by its place in the
    file, or, with `skip_invalid`, dropped and counted; a missing column is an error either way."""
    rows, places = read_placed(path, split)
    if not rows:
        raise SteerableError(f"{path} has no rows")
    hint = " (--skip_invalid drops bad rows)"
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
        problems = [
            text_problem(row, ("prompt", "response")) or score_problem(row, objective) for row in rows
        ]
        if not skip_invalid:
            refuse_bad_rows(path, list(zip(places, problems, strict=True)), hint)
        good = [row for row, problem in zip(rows, problems, strict=True) if problem is None]
        pairs = pairs_from_scores(good, objective, where=str(path))
        if not pairs:
            raise SteerableError(
                f"{path}: no pairs, since every two responses to a prompt tie on score_{objective}"
            )
        return pairs, len(rows) - len(good)
    if objective is not None:
        raise SteerableError(
            f"{path} holds chosen/rejected pairs, which need no --objective (it ranks the responses "
            "of a scored table); drop it"
        )
    if not {"chosen", "rejected"} <= columns:
        raise SteerableError(
            f"{path}: missing columns; need prompt/chosen/rejected, HH-RLHF chosen/rejected, or a "
            f"scored table (prompt, response, score_<NAME>); found {sorted(columns)}"
        )
    read = [preference_pair(row, hh="prompt" not in columns) for row in rows]
    problems = [problem or same_text_problem(pair) for pair, problem in read]
    if not skip_invalid:
        refuse_bad_rows(path, list(zip(places, problems, strict=True)), hint)
    pairs = [pair for (pair, _), problem in zip(read, problems, strict=True) if problem is None]
    if not pairs:
        raise SteerableError(f"{path}: every row is bad, so there are no pairs to train on")
    return pairs, len(rows) - len(pairs)


def same_text_problem(pair: dict) -> str | None:
    if pair["chosen"] == pair["rejected"]:
        return "chosen and rejected are the same text, so the pair prefers nothing"
    return None


def score_problem(row: dict, objective: str) -> str | None:
    """What is wrong with a row's score_<objective> (not a finite number), or None."""
    score = row.get(f"score_{objective}")
    if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(score):
        return f"score_{objective} is {score!r}, not a finite number (re-score the table)"
    return None


def pairs_from_scores(rows: list[dict], objective: str, where: str = "scored table") -> list[dict]:
    """Preference pairs from a scored table: for each prompt, every two different responses
    whose score_<objective> differ, the higher-scored one chosen -- up to n(n-1)/2 pairs for a
    prompt with n responses. Ties (and a response repeated) make no pair. Pairs come in the
    order of the rows. Scores that are not finite numbers are one error naming their rows."""
    places = row_places(len(rows))
    refuse_bad_rows(
        where, [(place, score_problem(row, objective)) for place, row in zip(places, rows, strict=True)]
    )
    groups: dict[str, list[tuple[str, float]]] = {}
    for row in rows:
        groups.setdefault(row["prompt"], []).append((row["response"], float(row[f"score_{objective}"])))
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
    """(dataset, truncated): TRL's pre-tokenised preference dataset (`chosen_ids`,
    `rejected_ids`), each side being `tokenizer(prompt, response)` in at most `max_length` tokens
    exactly as the hf scorer reads it with input=pair (`encode_pair_texts`: a prompt loses its
    oldest tokens, an answer is cut only when it alone is too long), and how many prompts and
    answers were cut. Pre-tokenising is how TRL takes inputs it must not change: from raw text
    it would append an EOS the scorer never sees. Encoders that read segments also get
    `chosen_token_type_ids` / `rejected_token_type_ids` (the response's are 1 in BERT); `length`
    (the longer side) lets the trainer batch pairs of similar length."""
    from datasets import Dataset

    prompts = [p["prompt"] for p in pairs]
    columns, truncated = {}, {"prompts": 0, "answers": 0, "sequences": 2 * len(pairs)}
    for side in ("chosen", "rejected"):
        encoded, cut = encode_pair_texts(tokenizer, prompts, [p[side] for p in pairs], max_length)
        truncated["prompts"] += cut["prompts_cut"]
        truncated["answers"] += cut["answers_cut"]
        columns[f"{side}_ids"] = encoded["input_ids"]
        if "token_type_ids" in encoded:
            columns[f"{side}_token_type_ids"] = encoded["token_type_ids"]
    columns["length"] = [
        max(map(len, ids)) for ids in zip(columns["chosen_ids"], columns["rejected_ids"], strict=True)
    ]
    return Dataset.from_dict(columns), truncated


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
    gets the hf scorer's dedicated one (not EOS: see steerable.reward_models.hf), and the tokenizer
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
    check_max_length(model, config.max_length, repr(config.model))
    return model, tokenizer


def reward_args(config: RMConfig, output_dir: Path):
    """TRL's RewardConfig: inputs already tokenised (`encode_pairs`), kept whole for
    `pair_collator` (remove_unused_columns would drop the token type ids). Batches hold pairs of
    similar length (transformers' length-grouped sampler, on `encode_pairs`' `length`), so a
    batch pads to a length near its pairs' own, not to the longest pair of the data."""
    from trl import RewardConfig

    return RewardConfig(
        output_dir=str(output_dir),
        num_train_epochs=config.num_epochs,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        max_length=None,  # encode_pairs truncates; TRL would drop longer pairs instead
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",
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
    The pairs (and the test file's) are read and checked before anything is written. A run
    again reuses the trained model, and measures it on the --eval file it is given now."""
    pairs, skipped = read_preference_pairs(config.data, config.objective, config.split, config.skip_invalid)
    test, skipped_rows = [], {"data": skipped}
    if config.eval is not None:
        test, skipped_rows["eval"] = read_preference_pairs(
            config.eval, config.objective, config.split, config.skip_invalid
        )
    train_rows, heldout_rows = split_by_prompt(
        [p["prompt"] for p in pairs], config.heldout_fraction, config.seed
    )
    train, heldout = [pairs[i] for i in train_rows], [pairs[i] for i in heldout_rows]
    out = Path(config.output_dir)
    stages = Stages(out, "train rm")
    inputs = {  # what the trained model depends on (not the test file it is measured on)
        **config_inputs(config, exclude=("output_dir", "eval")),
        "data_digest": file_digest(config.data),
    }
    info = stages.done(STAGE, inputs)  # refuses a model trained on other inputs
    if info is None:
        train_model(config, train, heldout, stages, inputs)
        info = stages.done(STAGE, inputs)
    if is_main_process():
        model_dir = stages.path(STAGE) / "model"  # moved into OUTPUT_DIR once published
        if not model_dir.is_dir() and not (out / "config.json").is_file():
            raise SteerableError(
                f"{out} has no config.json: its model is gone; delete {stages.path(STAGE)} to train again"
            )
        info = {**info, "pairs": {**info["pairs"]}, "metrics": {**info["metrics"]}}
        if config.eval is not None:
            scorer = HFRewardModel.from_options(
                str(model_dir if model_dir.is_dir() else out), scorer_options(config)
            )
            info["pairs"]["test"] = len(test)
            info["metrics"]["test_accuracy"] = pairwise_accuracy(scorer, test)
        record = {
            "objective": objective_spec(config, out),
            "config": asdict(config),
            "data_digest": inputs["data_digest"],
            "stage": fingerprint(inputs),
            "skipped_rows": skipped_rows,
            **info,
        }
        publish(model_dir, out, record)
    wait_for_everyone()
    return out


def train_model(
    config: RMConfig, train: list[dict], heldout: list[dict], stages: Stages, inputs: dict
) -> None:
    """Train (`train_stage`), save the merged model to stages/train/model and measure held-out
    accuracy there. Every process trains (under `accelerate launch`); the main one saves and
    measures."""
    from peft import PeftModel
    from trl import RewardTrainer

    model, tokenizer = load_backbone(config)  # before anything is written: it may be refused
    truncated = 0

    def trainer_for(stage: Path):
        nonlocal truncated
        if is_main_process():  # a new model is trained: the old one must not look finished
            for name in ("config.json", RECORD):
                (stages.root / name).unlink(missing_ok=True)
        args = reward_args(config, stage / "checkpoints")
        peft_config = None
        if config.lora_r > 0:
            # TRL disables dropout in the model it trains, LoRA's included: ask for none.
            peft_config = lora_config(config.lora_r, config.lora_alpha, 0.0, task_type="SEQ_CLS")
        dataset, truncated = encode_pairs(tokenizer, train, config.max_length)
        return RewardTrainer(
            model=model,
            args=args,
            data_collator=pair_collator(tokenizer.pad_token_id, args.pad_to_multiple_of),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
        )

    def describe(trainer, result) -> dict:
        return {
            "pairs": {"train": len(train), "heldout": len(heldout)},
            "prompts": {
                "train": len({p["prompt"] for p in train}),
                "heldout": len({p["prompt"] for p in heldout}),
            },
            "truncated": truncated,
            "metrics": {"train_loss": result.training_loss},
        }

    def save(trainer, stage: Path, info: dict) -> None:
        """The merged model into stages/train/model, measured on the held-out pairs there."""
        if not is_main_process():
            return
        trained = trainer.model
        if isinstance(trained, PeftModel):
            trained = trained.merge_and_unload()
        trained.save_pretrained(stage / "model")
        tokenizer.save_pretrained(stage / "model")
        if heldout:
            scorer = HFRewardModel.from_options(str(stage / "model"), scorer_options(config))
            info["metrics"]["heldout_accuracy"] = pairwise_accuracy(scorer, heldout)

    train_stage(stages, STAGE, inputs, trainer_for, "reward model", describe, save, drop_checkpoints=True)


def publish(model_dir: Path, out: Path, record: dict) -> None:
    """Move the saved model into `out` (a rename each, so it is stored once): weights and
    tokenizer first, then reward_model.json (written atomically), then config.json -- the file
    that makes a directory a model. An interrupted publish finishes on the next run; once the
    model is published (`model_dir` gone) only the record is written again."""
    files = sorted(model_dir.iterdir()) if model_dir.is_dir() else []
    for source in files:
        if source.is_file() and source.name != "config.json":
            source.replace(out / source.name)
    atomic_write_text(out / RECORD, json.dumps(record, indent=2) + "\n")
    if model_dir.is_dir():
        (model_dir / "config.json").replace(out / "config.json")
        model_dir.rmdir()


def summary(out: str | Path) -> str:
    """One line about a trained reward model directory: its accuracy on held-out pairs and on
    the test file, what was skipped or cut, and how to use it."""
    record = json.loads((Path(out) / RECORD).read_text())
    metrics, pairs, parts = record["metrics"], record["pairs"], []
    if "heldout_accuracy" in metrics:
        parts.append(
            f"held-out pairwise accuracy {metrics['heldout_accuracy']:.3f} on {pairs['heldout']} pairs "
            f"({record['prompts']['heldout']} prompts)"
        )
    if "test_accuracy" in metrics:
        parts.append(
            f"test pairwise accuracy {metrics['test_accuracy']:.3f} on {pairs['test']} pairs of "
            f"{record['config']['eval']}"
        )
    for source, count in record.get("skipped_rows", {}).items():
        if count:
            parts.append(f"skipped {count} bad rows of the {'data' if source == 'data' else 'test file'}")
    answers = record.get("truncated", {}).get("answers", 0)
    if answers:
        parts.append(f"{answers} answers longer than max_length alone were cut at their end")
    parts.append(f"score with: -o {record['objective']}")
    return "; ".join(parts)

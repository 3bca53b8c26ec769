"""MOSLIM's multi-head classification reward model (`steerable train moslim-rm`).

One shared backbone (any Hugging Face encoder or decoder, loaded with `AutoModel`) reads the
(prompt, response) pair; one linear softmax head per objective classifies it into L ordered
levels 1..L. The loss is the sum over heads of each head's cross-entropy, a head whose label is
missing for a row skipping that row. Labels come from integer ratings or quantile bins of a
score column (`steerable.reward_models.labels`).

Choices, each switchable:
    pooling   `auto` (default) reads an encoder through the mean of its token states (how
              sentence encoders such as MiniLM were trained to be read) and a decoder at its
              last non-pad token (under causal attention the only one that has seen the whole
              pair); `mean`, `last` and `cls` (the first token, as BERT classifiers) force one.
              A model counts as a decoder when its config says is_decoder, its architecture is
              a *ForCausalLM / *LMHeadModel, or its type has a causal-LM class and no
              masked-LM one.
    input     tokenizer(prompt, response) with the tokenizer's own pair template. Truncation
              keeps the response: the prompt loses its start first (its end, nearest the
              response, stays), and only a response that alone exceeds max_length is cut (to
              its first tokens, leaving one prompt token).
    training  the whole backbone and the heads, with transformers' Trainer; the held-out split
              is a fraction of the distinct prompts, so held-out accuracy is on unseen prompts.

The model directory describes itself: moslim_rm.json (written last, atomically: a directory
without it is an unfinished run) names the heads in order, the levels, pooling, label sources
with their bin edges or rating scales, the backbone, the config, the data's digest and the
held-out metrics; the weights are in stages/train/weights (backbone + tokenizer saved with
save_pretrained, the heads in heads.safetensors). `MultiHeadRM.load` reads it back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from steerable.configs import SEED, check_config
from steerable.data.loading import load_placed_pairs, split_by_prompt
from steerable.defaults import (
    MINILM_MODEL,
    absolute_if_local,
    default_device,
    resolve_model,
)
from steerable.errors import SteerableError, first_line
from steerable.io import atomic_write_text, check_format_version
from steerable.reward_models.hf import check_max_length, load_pair_model
from steerable.reward_models.labels import MISSING, LabelSource, check_columns
from steerable.stages import Stages, fingerprint, is_main_process, wait_for_everyone
from steerable.training import ModelArguments, config_inputs, device_args, train_stage, with_default

FORMAT_VERSION = 1
MANIFEST = "moslim_rm.json"
HEADS_FILE = "heads.safetensors"
POOLINGS = ("auto", "mean", "last", "cls")
STAGE = "train"
IGNORE = -100  # the class index of a missing label (cross-entropy skips it)


@dataclass
class MOSLIMRMConfig(ModelArguments):
    """Configuration of MOSLIM's multi-head classification reward model.

    Model (`ModelArguments`):
        model: the backbone: `minilm` (the local all-MiniLM-L6-v2 encoder), `tiny`, `smollm2`,
            a hub id or a local directory (stored absolute); loaded with AutoModel.
        dtype / trust_remote_code: as for every trainer.
        pooling: how the heads read the backbone: auto (mean for an encoder, last non-pad token
            for a decoder), mean, last or cls.
        levels: L, the ordered levels 1..L each head classifies into.
        max_length: tokens per (prompt, response); the prompt is cut first.

    Data:
        data: the (prompt, response) table with the label columns (required), e.g. the output
            of `steerable score`.
        labels: one entry per head, in order: NAME (quantile bins of score_NAME),
            NAME=bins:COLUMN, or NAME=rating:COLUMN:LO-HI (an integer rating, HI - LO + 1 =
            levels). Empty: bins of every score_* column of the data.
        heldout_fraction: the share of distinct prompts held out for the report (0: none).

    Training:
        num_epochs / learning_rate / batch_size: the Trainer's optimisation (AdamW, linear
            decay after a 10% warmup), over the backbone and the heads.
        save_steps: checkpoint every N steps (where an interrupted run resumes).
        seed: the held-out split, the heads' initialisation and the batch order.

    output_dir: the reward model directory to write.
    """

    model: str = with_default(
        ModelArguments,
        "model",
        MINILM_MODEL,
        help="Backbone: minilm, tiny, smollm2, a hub id or a local directory.",
    )
    pooling: str = field(
        default="auto", metadata={"help": "How heads read the backbone.", "choices": POOLINGS}
    )
    levels: int = field(default=5, metadata={"help": "Ordered levels 1..L per head.", "ge": 2})
    max_length: int = field(default=256, metadata={"help": "Tokens per (prompt, response) pair.", "ge": 8})
    data: str | None = field(default=None, metadata={"help": "Table with the label columns (required)."})
    labels: list[str] = field(
        default_factory=list,
        metadata={"help": "NAME | NAME=bins:COLUMN | NAME=rating:COLUMN:LO-HI (default: score_* columns)."},
    )
    heldout_fraction: float = field(
        default=0.2, metadata={"help": "Share of prompts held out.", "ge": 0, "lt": 1}
    )
    num_epochs: float = field(default=8.0, metadata={"help": "Training epochs.", "gt": 0})
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate.", "gt": 0})
    batch_size: int = field(default=16, metadata={"help": "Training batch size.", "ge": 1})
    save_steps: int = field(
        default=50, metadata={"help": "Checkpoint every N steps (resume point).", "ge": 1}
    )
    seed: int = field(default=0, metadata={"help": "Random seed.", **SEED})
    output_dir: str = field(default="runs/moslim-rm", metadata={"help": "Reward model directory."})

    def __post_init__(self):
        check_config(self)
        if self.data is None:
            raise SteerableError("--data is required: the (prompt, response) table with the label columns")
        sources = [LabelSource.parse(text, self.levels) for text in self.labels]
        names = [s.name for s in sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise SteerableError(f"labels: objective name(s) {duplicates} used twice")
        self.labels = [str(s) for s in sources]
        self.model = absolute_if_local(self.model)
        self.data = str(Path(self.data).resolve())


# --- the model -----------------------------------------------------------------------------------


class MultiHeadModel(nn.Module):
    """A backbone and K softmax heads over L levels, as one Linear(hidden, K * L)."""

    def __init__(self, backbone: nn.Module, heads: int, levels: int, pooling: str):
        super().__init__()
        if pooling not in POOLINGS[1:]:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS[1:]}")
        self.backbone, self.heads, self.levels, self.pooling = backbone, heads, levels, pooling
        self.head = nn.Linear(backbone.config.hidden_size, heads * levels, dtype=backbone.dtype)

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None) -> dict:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra)
        hidden = states.last_hidden_state  # (B, T, d)
        pooled = pool(hidden, attention_mask, self.pooling)  # (B, d)
        logits = self.head(pooled.to(self.head.weight.dtype)).view(-1, self.heads, self.levels)  # (B, K, L)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = multihead_loss(logits, labels)
        return out


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """One vector per sequence from token states (B, T, d) and the attention mask (B, T)."""
    if pooling == "cls":
        return hidden[:, 0]  # (B, d); inputs are right-padded, so token 0 is real
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device)  # (T,)
        last = (mask * positions).argmax(dim=1)  # (B,) index of the last real token, either padding side
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, d)
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)  # (B, d)


def multihead_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over heads of each head's mean cross-entropy over the rows that have its label.
    logits (B, K, L); labels (B, K) class indices 0..L-1, IGNORE where missing. A head with no
    label in the batch adds nothing."""
    per_row = nn.functional.cross_entropy(
        logits.float().transpose(1, 2), labels, ignore_index=IGNORE, reduction="none"
    )  # (B, K), 0 where ignored
    known = (labels != IGNORE).float()  # (B, K)
    return (per_row.sum(dim=0) / known.sum(dim=0).clamp(min=1)).sum()


def is_decoder(config) -> bool:
    """Whether a backbone reads causally (see the module docstring for the rule)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(config, "is_decoder", False):
        return True
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or []):
        return True
    kind = config.model_type
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def check_backbone(config: MOSLIMRMConfig) -> None:
    """What the backbone's config rules out before any work: `cls` pooling on a decoder (under
    causal attention its first token has seen nothing of the pair, so every input would get the
    same reading) and a max_length beyond the positions it reads."""
    from transformers import AutoConfig

    try:
        backbone = AutoConfig.from_pretrained(
            resolve_model(config.model), trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise SteerableError(
            f"backbone {config.model!r} could not be loaded ({first_line(err)}); give 'minilm', a "
            "model directory (with config.json) or a hub id that is in the local cache"
        )
    if config.pooling == "cls" and is_decoder(backbone):
        raise SteerableError(
            f"--pooling cls reads the first token, which the decoder {config.model!r} reads before "
            "the pair (its attention is causal); use --pooling last, mean or auto"
        )
    check_max_length(backbone, config.max_length, f"the backbone {config.model!r}")


def load_backbone(name_or_path: str, dtype: str, trust_remote_code: bool):
    """(backbone, tokenizer): AutoModel in `dtype`, a right-padding tokenizer with a pad token
    (a dedicated one for a model without, as hf: scorers do, rather than EOS, which may be a
    real token of the pair)."""
    from transformers import AutoModel

    backbone, tokenizer = load_pair_model(
        AutoModel,
        name_or_path,
        role="backbone",
        kind="a base model (AutoModel)",
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    tokenizer.padding_side = "right"
    if hasattr(backbone.config, "use_cache"):
        backbone.config.use_cache = False  # a decoder would otherwise return its key/value cache
    return backbone, tokenizer


def encode_pairs(tokenizer, prompts: list[str], responses: list[str], max_length: int, **call):
    """tokenizer(prompt, response) in at most max_length tokens, keeping the response (see the
    module docstring): the texts are cut at token boundaries first, so the tokenizer's own
    truncation (longest_first) is only a guard for a cut that re-tokenises a token longer."""
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    spans = {"add_special_tokens": False, "return_offsets_mapping": True}
    prompt_spans = tokenizer(prompts, **spans)["offset_mapping"]
    response_spans = tokenizer(responses, **spans)["offset_mapping"]
    cut_prompts, cut_responses = [], []
    for prompt, response, ps, rs in zip(prompts, responses, prompt_spans, response_spans, strict=True):
        keep_response = min(len(rs), budget - 1)
        keep_prompt = min(len(ps), budget - keep_response)
        cut_responses.append(response[: rs[keep_response - 1][1]] if keep_response < len(rs) else response)
        cut_prompts.append(prompt[ps[len(ps) - keep_prompt][0] :] if keep_prompt < len(ps) else prompt)
    return tokenizer(cut_prompts, cut_responses, truncation="longest_first", max_length=max_length, **call)


# --- loading and scoring -------------------------------------------------------------------------


@dataclass
class MultiHeadRM:
    """A trained multi-head reward model: classifies (prompt, response) pairs into levels 1..L
    per objective. `load` reads a directory written by `steerable train moslim-rm`."""

    model: MultiHeadModel
    tokenizer: object
    names: list[str]  # objective names, in head order
    levels: int  # L
    max_length: int
    labels: list[LabelSource]  # where each head's labels came from (bin edges, rating scales)
    directory: Path | None = None
    metadata: dict = field(default_factory=dict)  # the whole moslim_rm.json
    batch_size: int = 16

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | None = None,
        *,
        trust_remote_code: bool = False,
        batch_size: int = 16,
    ) -> MultiHeadRM:
        """Read a reward model directory; the backbone runs no code of its own unless
        `trust_remote_code`. Anything but a finished moslim RM is an error naming the file."""
        from safetensors.torch import load_file

        directory = Path(directory)
        manifest = directory / MANIFEST
        if not manifest.is_file():
            raise SteerableError(
                f"{directory} is not a MOSLIM reward model ({MANIFEST} is missing, or its training has "
                "not finished); train one with `steerable train moslim-rm`"
            )
        try:
            meta = json.loads(manifest.read_text())
            check_format_version(meta.get("format_version"), FORMAT_VERSION, manifest, "retrain it")
            names, levels, pooling = list(meta["objectives"]), int(meta["levels"]), str(meta["pooling"])
            labels = [LabelSource.from_dict(entry) for entry in meta["labels"]]
            backbone_dir, heads_file = directory / meta["backbone"], directory / meta["heads"]
            max_length, dtype = int(meta["max_length"]), str(meta["dtype"])
        except (
            json.JSONDecodeError,
            UnicodeDecodeError,
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
        ) as err:
            raise SteerableError(
                f"{manifest} is malformed ({err!r}); retrain with `steerable train moslim-rm`"
            )
        for path in (backbone_dir / "config.json", heads_file):
            if not path.is_file():
                raise SteerableError(
                    f"{directory}: {path} is missing; retrain with `steerable train moslim-rm`"
                )
        backbone, tokenizer = load_backbone(str(backbone_dir), dtype, trust_remote_code)
        model = MultiHeadModel(backbone, len(names), levels, pooling)
        try:
            heads = load_file(heads_file)
            model.head.load_state_dict({k.removeprefix("head."): v for k, v in heads.items()})
        except (OSError, RuntimeError) as err:
            raise SteerableError(f"{heads_file} does not hold {len(names)} heads of {levels} levels ({err})")
        return cls(
            model=model.to(device or default_device()).eval(),
            tokenizer=tokenizer,
            names=names,
            levels=levels,
            max_length=max_length,
            labels=labels,
            directory=directory,
            metadata=meta,
            batch_size=batch_size,
        )

    @torch.inference_mode()
    def probabilities(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Each head's level distribution, float [n, K, L] (rows sum to 1), in batches of
        `batch_size` pairs of similar length."""
        if len(prompts) != len(responses):
            raise SteerableError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = np.zeros((len(prompts), len(self.names), self.levels), dtype=np.float32)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = encode_pairs(
                self.tokenizer,
                [prompts[i] for i in idx],
                [responses[i] for i in idx],
                self.max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = self.model(**{k: v.to(device) for k, v in batch.items()})["logits"]  # (B, K, L)
            out[idx] = logits.float().softmax(dim=-1).cpu().numpy()
        self.model.train(was_training)
        return out

    def expected_levels(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        """Each head's expected level sum_l l * p_l, float [n, K], in [1, L]."""
        return self.probabilities(prompts, responses) @ np.arange(1, self.levels + 1, dtype=np.float32)


def save_weights(model: MultiHeadModel, tokenizer, folder: Path) -> None:
    """The backbone and tokenizer (save_pretrained) and the heads (heads.safetensors)."""
    from safetensors.torch import save_file

    model.backbone.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file({f"head.{k}": v.contiguous() for k, v in model.head.state_dict().items()}, folder / HEADS_FILE)


# --- metrics -------------------------------------------------------------------------------------


def head_metrics(predicted: np.ndarray, labels: np.ndarray, train_labels: np.ndarray) -> dict:
    """One head on held-out rows: accuracy of the predicted level, within-one-level accuracy,
    and the majority baseline (the most frequent training level, the lowest on a tie, predicted
    for every row). Rows without a label are left out."""
    known = labels != MISSING
    seen = train_labels[train_labels != MISSING]
    majority = int(np.bincount(seen).argmax()) if seen.size else None
    if not known.any():
        return {
            "rows": 0,
            "accuracy": None,
            "within_one": None,
            "majority_level": majority,
            "majority_accuracy": None,
        }
    predicted, labels = predicted[known], labels[known]
    return {
        "rows": int(known.sum()),
        "accuracy": float(np.mean(predicted == labels)),
        "within_one": float(np.mean(np.abs(predicted - labels) <= 1)),
        "majority_level": majority,
        "majority_accuracy": None if majority is None else float(np.mean(labels == majority)),
    }


def metrics_table(metrics: dict):
    """The held-out report as a rich Table (one row per head)."""
    from rich.table import Table

    table = Table(
        "objective",
        "held-out rows",
        "accuracy",
        "within one level",
        "majority baseline",
        title="held-out classification (majority: the most frequent training level)",
    )

    def shown(value):
        return "-" if value is None else f"{value:.3f}"

    for name, m in metrics.items():
        table.add_row(
            name,
            str(m["rows"]),
            shown(m["accuracy"]),
            shown(m["within_one"]),
            f"{shown(m['majority_accuracy'])} (level {m['majority_level']})",
        )
    return table


# --- training ------------------------------------------------------------------------------------


def train_moslim_rm(config: MOSLIMRMConfig) -> Path:
    """Train (or resume) the reward model; returns its directory. The data and labels are
    checked before anything trains; moslim_rm.json is removed first and written last."""
    rows, places = load_placed_pairs(config.data)
    where = config.data
    check_backbone(config)
    sources = [LabelSource.parse(text, config.levels) for text in config.labels]
    if not sources:
        columns = [c for c in rows[0] if c.startswith("score_")]
        if not columns:
            raise SteerableError(
                f"{where} has no score_* columns to bin; score it with `steerable score` or name "
                "the label columns with --labels"
            )
        sources = [LabelSource.parse(c.removeprefix("score_"), config.levels) for c in columns]
    check_columns(rows, sources, where)
    train_rows, heldout_rows = split_by_prompt(
        [r["prompt"] for r in rows], config.heldout_fraction, config.seed
    )
    trained = [rows[i] for i in train_rows], [places[i] for i in train_rows]
    sources = [s.fitted(trained[0], config.levels, where, trained[1]) for s in sources]
    levels = np.stack(
        [s.levels_of(rows, where, places) for s in sources], axis=1
    )  # (n, K), MISSING = no label
    unlabelled = [s.name for k, s in enumerate(sources) if not (levels[train_rows, k] != MISSING).any()]
    if unlabelled:
        raise SteerableError(f"{where}: label(s) {unlabelled} have no value in the training split")

    out = Path(config.output_dir)
    stages = Stages(out, "train moslim-rm")
    inputs = config_inputs(config, exclude=("output_dir",), files=("data",))
    stages.done(STAGE, inputs)  # refuse a stale stage before any work
    if is_main_process():
        (out / MANIFEST).unlink(missing_ok=True)  # written again once the model is trained
    wait_for_everyone()
    info = stages.done(STAGE, inputs) or train_heads(
        config, rows, levels, train_rows, heldout_rows, sources, stages, inputs
    )
    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": "moslim_rm",
        "objectives": [s.name for s in sources],
        "levels": config.levels,
        "pooling": info["pooling"],
        "max_length": config.max_length,
        "dtype": config.dtype,
        "labels": [s.to_dict() for s in sources],
        "base_model": config.model,
        "backbone": f"stages/{STAGE}/weights",
        "heads": f"stages/{STAGE}/weights/{HEADS_FILE}",
        "trust_remote_code": config.trust_remote_code,
        "config": asdict(config),
        "data": {
            "path": config.data,
            "sha256": inputs["data"],
            "rows": len(rows),
            "train_rows": len(train_rows),
            "heldout_rows": len(heldout_rows),
        },
        "metrics": info["metrics"],
        "training": {"stage": fingerprint(inputs), **{k: info[k] for k in ("seconds", "steps")}},
    }
    if is_main_process():
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    wait_for_everyone()
    return out


def train_heads(
    config: MOSLIMRMConfig,
    rows: list[dict],
    levels: np.ndarray,
    train_rows: np.ndarray,
    heldout_rows: np.ndarray,
    sources: list[LabelSource],
    stages: Stages,
    inputs: dict,
) -> dict:
    """Train with transformers' Trainer (`train_stage`), measure the held-out split, and save
    the weights (backbone and heads) to stages/train/weights."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    pooling = config.pooling
    model = tokenizer = None

    def trainer_for(folder: Path):
        nonlocal pooling, model, tokenizer
        backbone, tokenizer = load_backbone(config.model, config.dtype, config.trust_remote_code)
        if pooling == "auto":
            pooling = "last" if is_decoder(backbone.config) else "mean"
        torch.manual_seed(config.seed)
        model = MultiHeadModel(backbone, len(sources), config.levels, pooling)
        encoded = encode_pairs(
            tokenizer,
            [rows[i]["prompt"] for i in train_rows],
            [rows[i]["response"] for i in train_rows],
            config.max_length,
        )
        classes = np.where(levels == MISSING, IGNORE, levels - 1)  # (n, K) class indices
        dataset = Dataset.from_dict({**encoded, "labels": classes[train_rows].tolist()})
        args = TrainingArguments(
            output_dir=str(folder / "checkpoints"),
            num_train_epochs=config.num_epochs,
            learning_rate=config.learning_rate,
            per_device_train_batch_size=config.batch_size,
            warmup_steps=0.1,
            weight_decay=0.01,
            lr_scheduler_type="linear",
            train_sampling_strategy="group_by_length",  # batches of similar length pad less
            logging_steps=10,
            save_strategy="steps",
            save_steps=config.save_steps,
            save_total_limit=1,
            seed=config.seed,
            label_names=["labels"],
            **device_args(),
        )
        return Trainer(
            model=model, args=args, train_dataset=dataset, data_collator=DataCollatorWithPadding(tokenizer)
        )

    def describe(trainer, result) -> dict:
        """The held-out split measured, on every process."""
        names = [s.name for s in sources]
        rm = MultiHeadRM(model, tokenizer, names, config.levels, config.max_length, sources)
        predicted = np.zeros((len(heldout_rows), len(sources)), dtype=np.int64)
        if len(heldout_rows):
            probs = rm.probabilities(
                [rows[i]["prompt"] for i in heldout_rows], [rows[i]["response"] for i in heldout_rows]
            )
            predicted = probs.argmax(axis=-1) + 1  # (n_heldout, K) levels
        metrics = {
            s.name: head_metrics(predicted[:, k], levels[heldout_rows, k], levels[train_rows, k])
            for k, s in enumerate(sources)
        }
        return {"pooling": pooling, "metrics": metrics}

    def save(trainer, folder: Path, info: dict) -> None:
        if is_main_process():
            save_weights(model, tokenizer, folder / "weights")

    # The checkpoints go only once the stage is marked finished: an interruption before then
    # (held-out scoring included) resumes from the last checkpoint instead of from step 0.
    return train_stage(
        stages, STAGE, inputs, trainer_for, "multi-head RM", describe, save, drop_checkpoints=True
    )[1]

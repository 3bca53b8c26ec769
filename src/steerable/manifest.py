"""steerable.json, the file that makes a folder a steerable model directory: what it holds
(`PolicyManifest`), its one reader (`load_manifest`) and its one writer
(`write_model_directory`), with the record of training every trainer keeps in it
(`training_record`). A recipe imports this, not `steerable.policy`, to write its model."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from steerable.conditioning import MAPPINGS, TagFormat
from steerable.data.prompts import prompt_digests
from steerable.errors import SteerableError
from steerable.io import atomic_write_text, check_format_version
from steerable.objectives import RewardSet

MANIFEST = "steerable.json"
FORMAT_VERSION = 1


@dataclass
class MappingConfig:
    """How a preference becomes target tags: the mapping and the stats quantiles used as lo/hi."""

    default: str = "linf"
    lo_quantile: float = 0.05
    hi_quantile: float = 0.95

    def __post_init__(self):
        if self.default not in MAPPINGS:
            raise SteerableError(f"mapping {self.default!r} unknown; choose from {MAPPINGS}")
        if not 0 <= self.lo_quantile < self.hi_quantile <= 1:
            raise SteerableError("need 0 <= lo_quantile < hi_quantile <= 1")


@dataclass
class PolicyManifest:
    """The contents of steerable.json."""

    method: str
    base_model: str
    rewards: dict
    tags: dict = field(default_factory=lambda: TagFormat().to_dict())
    mapping: dict = field(default_factory=lambda: asdict(MappingConfig()))
    weights: str = "adapter"  # "adapter" or "model"
    policies: list[dict] | None = (
        None  # baselines: [{"weights": [...], "adapter": "stages/policy_0/weights"}]
    )
    system: str | None = None
    dtype: str = "float32"  # the dtype the weights are loaded in (training and inference alike)
    # MOSLIM: {"levels": L, "reward", "reward_model", "reward_stats"} (methods/moslim.py; the
    # running statistics of p_i, None for a reward that keeps none: zscore, normalisation none)
    moslim: dict | None = None
    # NP-DPO: {"context": the context path's folder (fewshot.policy.ContextPath), "beta", "types"}
    fewshot: dict | None = None
    # RiC on images: {"guidance", "steps", "base_unet"} (methods/ric_image: the sampling defaults,
    # and the folder of the caption-only base model's UNet)
    image: dict | None = None
    format_version: int = FORMAT_VERSION
    training: dict = field(default_factory=dict)


def load_manifest(directory: str | Path, method: str | None = None) -> PolicyManifest:
    """The one reader of a model directory's steerable.json, checked: well-formed, a known
    method (`method`, when given), parseable objectives with statistics, and the policies a
    baseline needs. Every command that opens a model directory goes through it."""
    from steerable import methods
    from steerable.defaults import torch_dtype

    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise SteerableError(
            f"{directory} has no {MANIFEST}: it is not a finished steerable model directory "
            f"(train one with `steerable train {'|'.join(methods.names(lambda m: m.trainable))}`, or finish "
            "the interrupted run by running its command again)"
        )
    try:
        data = json.loads(path.read_text())
        # first: a newer steerable's manifest may hold fields this one does not know
        check_format_version(data.get("format_version", FORMAT_VERSION), FORMAT_VERSION, path, "retrain it")
        manifest = PolicyManifest(**data)
    except (json.JSONDecodeError, TypeError, AttributeError) as err:
        raise SteerableError(f"{path} is malformed ({err}); re-run the training that wrote it")
    known = methods.names(lambda m: m.trainable)  # the methods whose training writes a model directory
    if manifest.method not in known:
        raise SteerableError(f"{path}: unknown method {manifest.method!r}; known: {known}")
    if method not in (None, manifest.method):
        raise SteerableError(
            f"{directory} holds a {manifest.method!r} model, not a {method!r} one "
            f"(use --method {manifest.method})"
        )
    methods.get(manifest.method).check_manifest(manifest, path)
    torch_dtype(manifest.dtype)
    # parsed only: whether its scorers may run is asked where they are built (SteerablePolicy, with
    # the caller's trust_remote_code), so a broken trust store never stops a directory from loading
    RewardSet.from_dict(manifest.rewards, where=str(path), trust_remote_code=True)
    return manifest


def training_record(
    config,
    keys: dict[str, str],
    infos: dict[str, dict],
    prompts: Sequence[str] | None = None,
    **recipe,
) -> dict:
    """steerable.json's `training` entry: the run's `config` (a dataclass), what the recipe
    pinned (`recipe`, e.g. its loss), the stages' keys, their compute summed from the stages'
    records (`infos`: each stage's info, with its seconds and the tokens it trained on and
    generated) and the digests of the prompts trained on, when there are any."""
    record = {
        "config": asdict(config),
        **recipe,
        "stages": keys,
        "compute": {
            "seconds": {name: info["seconds"] for name, info in infos.items()},
            "trained_tokens": sum(info.get("trained_tokens", 0) for info in infos.values()),
            "generated_tokens": sum(info.get("generated_tokens", 0) for info in infos.values()),
        },
    }
    if prompts is not None:
        record["prompt_digests"] = prompt_digests(prompts)
    return record


def write_manifest(directory: str | Path, manifest: PolicyManifest) -> None:
    """steerable.json, written atomically: a directory holding it is complete."""
    atomic_write_text(Path(directory) / MANIFEST, json.dumps(asdict(manifest), indent=2) + "\n")


def write_model_directory(
    out: str | Path, manifest: PolicyManifest, tokenizer=None, files: Mapping[str, str] | None = None
) -> Path:
    """Finish a trained model directory on the main process (the others wait): the tokenizer,
    any other files (name -> text), and steerable.json last, so that a run stopped before
    the end leaves a directory no command loads as finished. Returns `out`."""
    from steerable.stages import is_main_process, wait_for_everyone

    out = Path(out)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)
        for name, text in (files or {}).items():
            atomic_write_text(out / name, text)
        write_manifest(out, manifest)
    wait_for_everyone()
    return out


def compute_record(manifest) -> dict:
    """Training compute of a model directory, summed over its stages (zero for no training)."""
    compute = manifest.training.get("compute", {}) if manifest is not None else {}
    return {
        "train_seconds": float(sum(compute.get("seconds", {}).values())),
        "trained_tokens": compute.get("trained_tokens", 0),
        "generated_tokens": compute.get("generated_tokens", 0),
    }

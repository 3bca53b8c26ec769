"""Embeddings of (prompt, response) options from a frozen encoder, computed in batches and cached
on disk keyed by encoder id and text.

Encoders:
    minilm        all-MiniLM-L6-v2 sentence embeddings (384-d; the default, shipped in a wheel)
    lm:MODEL      a causal LM's last hidden state at the last token of the chat-formatted
                  (prompt, response), e.g. lm:smollm2, the policy's own

A cache holds one encoder's vectors; a cache from another encoder is detected and rebuilt.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.io import atomic_write

DEFAULT_ENCODER = "minilm"


def option_key(prompt: str, response: str) -> str:
    return hashlib.sha256(f"{prompt}\x00{response}".encode()).hexdigest()


def encoder_id(encoder: str) -> str:
    """The id a cache records: the spec with its model resolved (an alias and its directory are
    one encoder)."""
    from steerable.defaults import absolute_if_local

    if encoder == DEFAULT_ENCODER:
        return encoder
    if encoder.startswith("lm:") and len(encoder) > 3:
        return "lm:" + absolute_if_local(encoder[3:])
    raise SteerableError(f"encoder {encoder!r} unknown; use 'minilm' or 'lm:MODEL' (a causal LM id or path)")


def embed_options(
    texts: list[tuple[str, str]],
    encoder: str = DEFAULT_ENCODER,
    cache: str | Path | None = None,
    batch_size: int = 32,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> np.ndarray:
    """[M, d] float32 embeddings of the options, from `cache` where it has them (and the same
    encoder), the rest computed (with a progress bar if `progress`) and added to it."""
    ident = encoder_id(encoder)
    keys = [option_key(p, r) for p, r in texts]
    known = read_cache(cache, ident) if cache is not None else {}
    missing = [i for i, key in enumerate(dict.fromkeys(keys)) if key not in known]
    if missing:
        unique = list(dict.fromkeys(keys))
        first = {key: i for i, key in reversed(list(enumerate(keys)))}
        todo = [texts[first[unique[i]]] for i in missing]
        vectors = compute(todo, encoder, batch_size, trust_remote_code, progress)
        known.update({unique[i]: v for i, v in zip(missing, vectors, strict=True)})
        if cache is not None:
            write_cache(cache, ident, known)
    return np.stack([known[key] for key in keys]).astype(np.float32)


def read_cache(path: str | Path, ident: str) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            stored, keys, vectors = str(data["encoder"]), data["keys"], data["vectors"]
    except (OSError, KeyError, ValueError) as err:
        warnings.warn(f"{path} is not an embeddings cache ({err}); rebuilding it", stacklevel=2)
        return {}
    if stored != ident:
        warnings.warn(
            f"{path} holds embeddings from encoder {stored!r}, not {ident!r}; rebuilding it", stacklevel=2
        )
        return {}
    return dict(zip(keys.tolist(), vectors, strict=True))


def write_cache(path: str | Path, ident: str, vectors: dict[str, np.ndarray]) -> None:
    keys = np.array(list(vectors), dtype=str)
    matrix = np.stack(list(vectors.values())).astype(np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, encoder=np.array(ident), keys=keys, vectors=matrix)

    atomic_write(path, write)


_LOADING = threading.Lock()
_LM_ENCODERS: dict[tuple[str, bool], tuple] = {}  # (encoder id, trust_remote_code) -> (model, tokenizer)


def lm_encoder(ident: str, trust_remote_code: bool = False) -> tuple:
    """(model, tokenizer) of an `lm:` encoder id, loaded once per process: a server embeds every
    request's examples with it, an evaluation every grid point's. One load at a time, so
    concurrent first requests wait for the same model instead of each loading it."""
    from steerable import defaults

    key = (ident, trust_remote_code)
    with _LOADING:
        if key not in _LM_ENCODERS:
            _LM_ENCODERS[key] = defaults.load_causal_lm(
                ident[3:], device="cpu", trust_remote_code=trust_remote_code
            )
        return _LM_ENCODERS[key]


def compute(
    texts: list[tuple[str, str]],
    encoder: str,
    batch_size: int,
    trust_remote_code: bool,
    progress: bool = True,
) -> np.ndarray:
    from tqdm.auto import tqdm

    if encoder == DEFAULT_ENCODER:
        from steerable.scorers.builtin import minilm_encoder

        model = minilm_encoder("cpu")
        joined = [f"{p}\n\n{r}" for p, r in texts]
        return model.encode(joined, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
    import torch

    from steerable.generation import template_messages

    model, tokenizer = lm_encoder(encoder_id(encoder), trust_remote_code)
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embedding", unit="batch", disable=not progress):
        chats = [
            tokenizer.apply_chat_template(
                template_messages(
                    tokenizer, [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                ),
                tokenize=False,
            )
            for p, r in texts[start : start + batch_size]
        ]
        batch = tokenizer(chats, return_tensors="pt", padding=True, add_special_tokens=False)  # left padded
        with torch.no_grad():
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]  # (B, T, d)
        out.append(hidden[:, -1].float().numpy())  # every row's last token
    return np.concatenate(out)

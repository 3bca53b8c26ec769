"""`moslim:` scorers: one head of a MOSLIM multi-head reward model (`steerable train moslim-rm`).

    NAME=moslim:DIR[?objective=HEAD&output=expected&device=cpu&batch_size=16]

Options (in the spec's ``?opt=value`` part):
    objective   the head to read (default: NAME)
    output      expected (default): the expected level sum_l l * p_l, a float in [1, L];
                argmax: the most likely level
    device      cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)
    batch_size  pairs per forward pass (default 16)
    trust_remote_code
                true lets the backbone run modelling code that came with it (default false)

Objectives reading heads of the same DIR (on the same device) share one loaded model, and one
forward pass scores all their heads: the model keeps the probabilities of the pairs it scored
most recently (up to CACHE_PAIRS pairs, keyed by the pairs themselves), so when RewardSet or a
TRL trainer asks each objective in turn about the same pairs, only the first one runs the model.
The cache holds whole chunks, not one: `RewardSet.score` goes objective by objective over chunks
of 256 pairs, so the second objective asks for the first chunk again after the last one.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError

OUTPUTS = ("expected", "argmax")
_CHOICES = {"output": OUTPUTS, "trust_remote_code": ("true", "false")}
CACHE_PAIRS = 8192  # the probabilities kept per model: K * L floats a pair, a few hundred KB in all

# Loaded models by (directory, device, trust_remote_code); a model lives as long as a scorer uses it.
_SHARED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def check_moslim_options(options: dict[str, str], origin: object) -> None:
    from steerable.reward_models.hf import check_options

    check_options(
        "moslim", options, origin, {"objective": None, "device": None, **_CHOICES}, {"batch_size": 1}
    )
    if "objective" in options and not options["objective"]:
        raise SteerableError(f"objective spec {origin!r}: objective names a head; leave it out to use NAME")


class SharedRM:
    """One loaded MultiHeadRM and the probabilities of the pairs it scored most recently."""

    def __init__(self, rm):
        self.rm = rm
        self._recent: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (prompts, responses) -> [n, K, L]

    def probabilities(self, prompts: list[str], responses: list[str], batch_size: int) -> np.ndarray:
        key = (tuple(prompts), tuple(responses))
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        self.rm.batch_size = batch_size
        probs = self.rm.probabilities(list(prompts), list(responses))  # (n, K, L)
        self._recent[key] = probs
        while sum(len(p) for p, _ in self._recent) > CACHE_PAIRS and len(self._recent) > 1:
            self._recent.popitem(last=False)
        return probs


@dataclass
class MOSLIMScorer:
    """One head of a shared multi-head reward model as a scorer: one float per pair."""

    shared: SharedRM
    head: int
    output: str = "expected"
    batch_size: int = 16

    @classmethod
    def from_options(cls, name: str, directory: str, options: dict[str, str]) -> MOSLIMScorer:
        from steerable.reward_models.hf import scorer_device
        from steerable.reward_models.multihead import MultiHeadRM

        check_moslim_options(options, directory)
        device = scorer_device(options, directory)
        trust = options.get("trust_remote_code") == "true"
        key = (str(Path(directory).resolve()), device, trust)
        shared = _SHARED.get(key)
        if shared is None:
            shared = SharedRM(MultiHeadRM.load(directory, device, trust_remote_code=trust))
            _SHARED[key] = shared
        objective = options.get("objective", name)
        if objective not in shared.rm.names:
            raise SteerableError(
                f"moslim scorer {name!r}: {directory} has no head {objective!r}; its heads are "
                f"{shared.rm.names} (choose one with ?objective=HEAD)"
            )
        return cls(
            shared=shared,
            head=shared.rm.names.index(objective),
            output=options.get("output", "expected"),
            batch_size=int(options.get("batch_size", 16)),
        )

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        probs = self.shared.probabilities(prompts, responses, self.batch_size)[:, self.head]  # (n, L)
        if self.output == "argmax":
            return (probs.argmax(axis=-1) + 1).astype(float).tolist()
        return (probs @ np.arange(1, probs.shape[-1] + 1, dtype=np.float32)).tolist()

"""Few-shot tasks (Kobalczyk et al. 2024): a hidden user type, N_T target pairs with the choices that
type makes, and a context, a random subset of 0..N_C,max of those pairs.

Everything is indices into one `PairPool`, so the same tasks serve any embedding of the
options (a 1-D synthetic value, a MiniLM vector, a policy's hidden state):

    PairPool    options' utilities per objective [M, K], pairs of option indices [P, 2], the
                split of every pair (train / validation / test; disjoint by construction)
    UserTypes   one weight vector per type over the K objectives [T, K]: one objective each
                (one-hot) or Dirichlet draws; a type prefers the option of higher w . u
    TaskBatch   B tasks: each task's type, its N_T pairs (indices into the pool) in the order
                the type chose them (chosen first) and which of them are its context

A type's choices are deterministic (the higher utility wins); pairs that any type finds tied
are left out, so every choice is defined. `conflicting=True` keeps only pairs on which the
types disagree, where a model that ignores the context can do no better than chance.

Builders: `synthetic_pool` (the authors' 1-D task) and `scored_pool` (pairs of responses to
the same prompt from a scored JSONL, e.g. `steerable score` output).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from steerable.data.loading import refuse_bad_rows, row_places, split_by_prompt, text_problem
from steerable.errors import SteerableError
from steerable.reward_models.labels import raw_values

SPLITS = ("train", "validation", "test")
DEFAULT_TARGETS = 20
DEFAULT_MAX_CONTEXT = 10
HELDOUT_PROMPTS = 0.3  # scored data: the share of prompts held out (halved into validation and test)


@dataclass
class UserTypes:
    """Hidden user types: `weights` [T, K] over the objectives `objectives`, and their names."""

    names: list[str]
    objectives: list[str]
    weights: np.ndarray  # (T, K)

    def __post_init__(self):
        self.weights = np.asarray(self.weights, dtype=float)
        if self.weights.shape != (len(self.names), len(self.objectives)):
            raise SteerableError(
                f"user types: weights of shape {self.weights.shape} do not match "
                f"{len(self.names)} types x {len(self.objectives)} objectives"
            )
        if (self.weights < 0).any() or not np.isfinite(self.weights).all():
            raise SteerableError("user types: weights must be finite and non-negative")

    @classmethod
    def one_per_objective(cls, objectives: list[str]) -> UserTypes:
        """One type per objective, which cares about that objective alone."""
        return cls(list(objectives), list(objectives), np.eye(len(objectives)))

    @classmethod
    def dirichlet(cls, objectives: list[str], count: int, alpha: float = 1.0, seed: int = 0) -> UserTypes:
        """`count` types with Dirichlet(alpha) weights over the objectives."""
        if count < 1:
            raise SteerableError(f"user types: count must be >= 1, got {count}")
        weights = np.random.default_rng(seed).dirichlet(np.full(len(objectives), alpha), size=count)
        return cls([f"type{t}" for t in range(count)], list(objectives), weights)

    def index(self, name: str) -> int:
        if name not in self.names:
            raise SteerableError(f"user type {name!r} is not declared; the types are {self.names}")
        return self.names.index(name)

    def to_dict(self) -> dict:
        return {"names": self.names, "objectives": self.objectives, "weights": self.weights.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> UserTypes:
        return cls(list(data["names"]), list(data["objectives"]), np.asarray(data["weights"]))


@dataclass
class PairPool:
    """Options and the pairs tasks are drawn from.

    utilities: [M, K] each option's score per objective (higher is better for that objective);
    pairs: [P, 2] option indices; split: [P] the split of each pair ("train", ...);
    texts: optional [M] (prompt, response) of each option, what an encoder embeds.
    """

    objectives: list[str]
    utilities: np.ndarray  # (M, K)
    pairs: np.ndarray  # (P, 2)
    split: np.ndarray  # (P,)
    texts: list[tuple[str, str]] | None = None

    def __post_init__(self):
        self.utilities = np.asarray(self.utilities, dtype=float)
        self.pairs = np.asarray(self.pairs, dtype=int).reshape(-1, 2)
        self.split = np.asarray(self.split)
        if self.utilities.ndim != 2 or self.utilities.shape[1] != len(self.objectives):
            raise SteerableError(
                f"pair pool: utilities of shape {self.utilities.shape} do not match "
                f"the {len(self.objectives)} objectives {self.objectives}"
            )
        if not np.isfinite(self.utilities).all():
            row = int(np.argwhere(~np.isfinite(self.utilities))[0, 0])
            raise SteerableError(f"pair pool: option {row} has a NaN or infinite score")
        unknown = set(self.split.tolist()) - set(SPLITS)
        if unknown:
            raise SteerableError(f"pair pool: unknown split names {sorted(unknown)}; use {SPLITS}")

    def first_preferred(self, types: UserTypes) -> np.ndarray:
        """[P, T]: whether type t prefers the first option of pair p (ties are NaN-free: see
        `decided`)."""
        u = self.utilities @ self._aligned(types).T  # (M, T) each type's utility of each option
        return u[self.pairs[:, 0]] > u[self.pairs[:, 1]]  # (P, T)

    def decided(self, types: UserTypes) -> np.ndarray:
        """[P]: no type finds the pair tied."""
        u = self.utilities @ self._aligned(types).T  # (M, T)
        return (u[self.pairs[:, 0]] != u[self.pairs[:, 1]]).all(axis=1)

    def conflicting(self, types: UserTypes) -> np.ndarray:
        """[P]: the types do not all make the same choice."""
        first = self.first_preferred(types)
        return first.any(axis=1) & ~first.all(axis=1)

    def select(self, keep: np.ndarray) -> PairPool:
        """The pool with only the pairs where `keep` holds (the options stay)."""
        return PairPool(self.objectives, self.utilities, self.pairs[keep], self.split[keep], self.texts)

    def for_types(self, types: UserTypes, conflicting: bool = False) -> PairPool:
        """The pairs every type decides, and with `conflicting` only those the types disagree on."""
        keep = self.decided(types)
        if conflicting:
            keep &= self.conflicting(types)
        return self.select(keep)

    def split_indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise SteerableError(f"split {split!r} unknown; choose from {SPLITS}")
        return np.flatnonzero(self.split == split)

    def _aligned(self, types: UserTypes) -> np.ndarray:
        if types.objectives != self.objectives:
            raise SteerableError(
                f"user types are over objectives {types.objectives}, the pairs are scored on "
                f"{self.objectives}"
            )
        return types.weights


@dataclass
class TaskBatch:
    """B tasks over one pool. For task b: `types[b]` its hidden type, `pairs[b]` [N_T] pool pair
    indices, `chosen[b]` / `rejected[b]` [N_T] option indices as the type chose, `context[b]`
    [N_T] bool, whether that pair is in the task's context."""

    types: np.ndarray  # (B,)
    pairs: np.ndarray  # (B, N_T)
    chosen: np.ndarray  # (B, N_T)
    rejected: np.ndarray  # (B, N_T)
    context: np.ndarray  # (B, N_T) bool

    def __len__(self) -> int:
        return len(self.types)

    @property
    def context_sizes(self) -> np.ndarray:
        return self.context.sum(axis=1)

    def scored(self) -> np.ndarray:
        """[B, N_T]: the targets a task is scored on, those not in its context (by index, so a
        context pair never counts towards the accuracy it helped)."""
        return ~self.context


def sample_tasks(
    pool: PairPool,
    types: UserTypes,
    split: str,
    count: int,
    rng: np.random.Generator,
    targets: int = DEFAULT_TARGETS,
    context_sizes: int | tuple[int, int] = (0, DEFAULT_MAX_CONTEXT),
    type_probabilities: np.ndarray | None = None,
    balanced: bool = False,
) -> TaskBatch:
    """`count` tasks from `split`'s pairs: a type (uniform unless `type_probabilities`), `targets`
    distinct pairs it chooses on, and a context of those pairs: a fixed size, or uniform in the
    inclusive range (low, high); a context must leave at least one target to score.
    `balanced` (uniform types only) gives every type the same number of tasks, in random order:
    evaluation uses it, so the overall accuracy is not moved by how many tasks a type drew."""
    index = pool.split_indices(split)
    if len(index) < targets:
        raise SteerableError(
            f"split {split!r} has {len(index)} usable pairs, fewer than the {targets} targets a "
            "task needs; score more data or lower --targets"
        )
    low, high = (context_sizes, context_sizes) if isinstance(context_sizes, int) else context_sizes
    if not 0 <= low <= high or high >= targets:
        raise SteerableError(
            f"context sizes {low}..{high} must lie in 0..{targets - 1} (fewer than the {targets} targets)"
        )
    first = pool.first_preferred(types)  # (P, T)
    if balanced and type_probabilities is None:
        kinds = rng.permutation(np.resize(np.arange(len(types.names)), count))  # (B,)
    else:
        kinds = rng.choice(len(types.names), size=count, p=type_probabilities)  # (B,)
    pairs = np.stack([rng.choice(index, size=targets, replace=False) for _ in range(count)])  # (B, N)
    first_wins = first[pairs, kinds[:, None]]  # (B, N)
    a, b = pool.pairs[pairs, 0], pool.pairs[pairs, 1]
    sizes = rng.integers(low, high + 1, size=count)
    context = np.zeros((count, targets), dtype=bool)
    for row, size in enumerate(sizes):
        context[row, rng.choice(targets, size=size, replace=False)] = True
    return TaskBatch(
        types=kinds,
        pairs=pairs,
        chosen=np.where(first_wins, a, b),
        rejected=np.where(first_wins, b, a),
        context=context,
    )


@dataclass
class TaskSource:
    """What tasks are drawn from: a pool, its user types, and an embedding [M, d] of every option
    (`encoder` names what made them). The pool keeps only the pairs every type decides, and
    with `conflicting` only those the types disagree on. `split` records what decided which
    pairs are held out (the data, the seed, the share held out), so a model fitted on these
    tasks can be checked against another run's held-out pairs."""

    pool: PairPool
    types: UserTypes
    embeddings: np.ndarray  # (M, d)
    encoder: str
    conflicting: bool = False
    split: dict | None = None

    def __post_init__(self):
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.pool.utilities):
            raise SteerableError(
                f"embeddings of shape {self.embeddings.shape} for {len(self.pool.utilities)} options; "
                "embed every option once"
            )
        self.pool = self.pool.for_types(self.types, self.conflicting)

    def sample(
        self,
        split,
        count,
        rng,
        targets=DEFAULT_TARGETS,
        context_sizes=(0, DEFAULT_MAX_CONTEXT),
        type_probabilities=None,
        balanced=False,
    ) -> TaskBatch:
        return sample_tasks(
            self.pool, self.types, split, count, rng, targets, context_sizes, type_probabilities, balanced
        )


# --- builders ---------------------------------------------------------------------------
SYNTHETIC_OBJECTIVES = ["type0", "type1"]


def synthetic_rewards(y: np.ndarray) -> np.ndarray:
    """The authors' two rewards of an option y in [0, 1], [M, 2]: both are y below 0.5; from 0.5
    on, type 0's is 2y and type 1's is 1 - y."""
    y = np.asarray(y, dtype=float)
    high = y >= 0.5
    return np.stack([np.where(high, 2 * y, y), np.where(high, 1 - y, y)], axis=-1)


def synthetic_source(pairs_per_split: dict[str, int] | None = None, seed: int = 0) -> TaskSource:
    """The authors' 1-D task: pairs of fresh options y ~ U[0, 1] (each option in one pair only, so
    the splits share nothing), utilities `synthetic_rewards`, two types (one per reward) and the
    option's embedding y itself."""
    sizes = pairs_per_split or {"train": 20000, "validation": 2000, "test": 4000}
    rng = np.random.default_rng(seed)
    total = sum(sizes.values())
    y = rng.uniform(0.0, 1.0, size=2 * total)
    split = np.concatenate([np.full(n, name) for name, n in sizes.items()])
    pool = PairPool(SYNTHETIC_OBJECTIVES, synthetic_rewards(y), np.arange(2 * total).reshape(-1, 2), split)
    types = UserTypes.one_per_objective(SYNTHETIC_OBJECTIVES)
    record = {"task": "synthetic", "pairs": dict(sizes), "seed": seed}
    return TaskSource(pool, types, y[:, None], "synthetic:y", split=record)


def scored_pool(
    rows: list[dict],
    objectives: list[str],
    where: str = "scored data",
    seed: int = 0,
    heldout: float = HELDOUT_PROMPTS,
    places: Sequence[str] | None = None,
) -> PairPool:
    """Pairs of distinct responses to the same prompt from scored rows (`prompt`, `response` and
    `score_NAME` per objective, as `steerable score` writes them). Splits are by prompt
    (`heldout` of the prompts, halved into validation and test), so no prompt, response or pair
    is in two splits. Utilities are the raw scores standardised over the pool, so Dirichlet
    types weigh the objectives on one scale."""
    if not rows:
        raise SteerableError(f"{where}: no rows")
    places = row_places(len(rows)) if places is None else places
    refuse_bad_rows(
        where,
        [(place, text_problem(row, ("prompt", "response"))) for row, place in zip(rows, places, strict=True)],
    )
    scores = np.stack(
        [raw_values(rows, f"score_{name}", where, places) for name in objectives], axis=1
    )  # (M, K)
    unscored = [
        (place, f"column 'score_{objectives[np.flatnonzero(gaps)[0]]}' is missing (score every row)")
        for place, gaps in zip(places, np.isnan(scores), strict=True)
        if gaps.any()
    ]
    refuse_bad_rows(where, unscored)
    texts = [(row["prompt"], row["response"]) for row in rows]
    first = {}
    for m, text in enumerate(texts):
        first.setdefault(text, m)  # a response given twice is one option
    groups = defaultdict(list)
    for text, m in first.items():
        groups[text[0]].append(m)
    prompts = [text[0] for text in texts]
    train, rest = split_by_prompt(prompts, heldout, seed)
    validation, _ = split_by_prompt([prompts[m] for m in rest], 0.5, seed + 1) if len(rest) else ([], [])
    label = {prompts[m]: "train" for m in train}
    label.update({prompts[m]: "test" for m in rest})
    label.update({prompts[rest[m]]: "validation" for m in validation})
    pairs, split = [], []
    for prompt, members in groups.items():
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                pairs.append((a, b))
                split.append(label[prompt])
    if not pairs:
        raise SteerableError(f"{where}: no prompt has two different responses, so there are no pairs")
    utilities = (scores - scores.mean(axis=0)) / np.maximum(scores.std(axis=0), 1e-12)
    return PairPool(list(objectives), utilities, np.asarray(pairs), np.asarray(split), texts)

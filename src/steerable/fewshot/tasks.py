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

Real users' logs need neither utilities nor types: a `ChoiceLog` holds each user's own
(chosen, rejected) pairs, a task is one user, and `LogSource` samples such tasks with the same
`TaskBatch` (a user with fewer pairs than a task's targets fills the rest with padding that
`valid` masks out). Its splits are by user, so a held-out user's choices never trained a model.
"""

from __future__ import annotations

import warnings
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
CONTEXT_SIZES = (0, 1, 3, 5, 10)  # the context sizes held-out accuracy is reported at
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
    """B tasks over one pool. For task b: `types[b]` its hidden type (a user's index for logs),
    `pairs[b]` [N_T] pair indices, `chosen[b]` / `rejected[b]` [N_T] option indices as the type
    chose, `context[b]` [N_T] bool, whether that pair is in the task's context, and `valid[b]`
    [N_T] bool, whether the slot holds a pair at all (a user of logs may have fewer than N_T;
    padding slots repeat the user's first pair and are never context or scored)."""

    types: np.ndarray  # (B,)
    pairs: np.ndarray  # (B, N_T)
    chosen: np.ndarray  # (B, N_T)
    rejected: np.ndarray  # (B, N_T)
    context: np.ndarray  # (B, N_T) bool
    valid: np.ndarray | None = None  # (B, N_T) bool; None: every slot

    def __post_init__(self):
        if self.valid is None:
            self.valid = np.ones(self.context.shape, dtype=bool)

    def __len__(self) -> int:
        return len(self.types)

    @property
    def context_sizes(self) -> np.ndarray:
        return self.context.sum(axis=1)

    def scored(self) -> np.ndarray:
        """[B, N_T]: the targets a task is scored on, its pairs not in its context (by index, so a
        context pair never counts towards the accuracy it helped)."""
        return self.valid & ~self.context


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

    @property
    def texts(self) -> list[tuple[str, str]] | None:
        return self.pool.texts

    @property
    def groups(self) -> list[str]:
        """What accuracy is broken down by besides "all": the user types."""
        return self.types.names

    def pair_counts(self) -> dict[str, int]:
        return {split: int(len(self.pool.split_indices(split))) for split in SPLITS}

    def largest_task(self, split: str) -> int:
        """The most pairs one task of `split` can hold."""
        return int(len(self.pool.split_indices(split)))


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


# --- real users' logs -------------------------------------------------------------------
LOG_COLUMNS = ("user", "prompt", "chosen", "rejected")
HELDOUT_USERS = 0.3  # logs: the share of users held out (halved into validation and test)


@dataclass
class ChoiceLog:
    """Real users' choices, no utilities and no types.

    users: [U] user ids; user_split: [U] the split of each user ("train", ...);
    pairs: [P, 2] option indices (chosen, rejected) as the user chose; user: [P] whose pair;
    texts: [M] (prompt, response) of every option, what an encoder embeds.
    """

    users: list[str]
    user_split: np.ndarray  # (U,)
    pairs: np.ndarray  # (P, 2)
    user: np.ndarray  # (P,)
    texts: list[tuple[str, str]]

    def __post_init__(self):
        self.user_split = np.asarray(self.user_split)
        self.pairs = np.asarray(self.pairs, dtype=int).reshape(-1, 2)
        self.user = np.asarray(self.user, dtype=int)
        # each user's pair indices, in the order of the table (one sort, not a scan per user)
        order = np.argsort(self.user, kind="stable")
        bounds = np.searchsorted(self.user[order], np.arange(len(self.users) + 1))
        self.pairs_of = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def users_in(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise SteerableError(f"split {split!r} unknown; choose from {SPLITS}")
        return np.flatnonzero(self.user_split == split)


def choice_log(
    rows: list[dict],
    where: str = "logs",
    seed: int = 0,
    heldout: float = HELDOUT_USERS,
    places: Sequence[str] | None = None,
) -> ChoiceLog:
    """Users' choices from rows with columns `user`, `prompt`, `chosen` and `rejected` (one pair a
    row). Every problem is one error naming its rows: a missing column, empty text, chosen equal
    to rejected, a user with fewer than 2 pairs (one to condition on, one to score). A row that
    repeats an earlier one (user, prompt, chosen and rejected) is dropped, with a warning saying
    how many. The users are split with `seed`: `heldout` of them (at least one each) into
    validation and test."""
    if not rows:
        raise SteerableError(f"{where}: no rows")
    missing = [c for c in LOG_COLUMNS if all(c not in row for row in rows)]
    if missing:
        raise SteerableError(
            f"{where}: no column {missing[0]!r}; a users' log has one row per choice with columns "
            f"{', '.join(LOG_COLUMNS)} (the user's id, the prompt, the answer they chose, the other)"
        )
    places = row_places(len(rows)) if places is None else places
    bad = []
    for row, place in zip(rows, places, strict=True):
        problem = text_problem(row, ("prompt", "chosen", "rejected"))
        if problem is None and row["chosen"] == row["rejected"]:
            problem = "'chosen' and 'rejected' are the same text (no choice was made)"
        if problem is None and (row.get("user") is None or not str(row["user"]).strip()):
            problem = "'user' is empty (every choice needs the id of the user who made it)"
        bad.append((place, problem))
    refuse_bad_rows(where, bad)
    # a choice logged twice is one pair: kept twice, it could be a task's context and its target
    seen, kept = set(), []
    for i, row in enumerate(rows):
        key = (str(row["user"]), row["prompt"], row["chosen"], row["rejected"])
        if key not in seen:
            seen.add(key)
            kept.append(i)
    if len(kept) < len(rows):
        warnings.warn(
            f"{where}: dropped {len(rows) - len(kept)} duplicate row(s) (the same user, prompt, chosen "
            "and rejected as an earlier row)",
            stacklevel=2,
        )
        rows, places = [rows[i] for i in kept], [places[i] for i in kept]
    ids = [str(row["user"]) for row in rows]
    count = defaultdict(int)
    for user in ids:
        count[user] += 1
    refuse_bad_rows(
        where,
        [
            (place, f"user {user!r} has only this pair; a user needs 2 or more (a context, a target)")
            for user, place in zip(ids, places, strict=True)
            if count[user] < 2
        ],
        hint=", or add choices of that user",
    )
    users = sorted(count)
    if len(users) < 3:
        raise SteerableError(
            f"{where}: {len(users)} user(s); splitting by user needs at least 3 (train, validation, test)"
        )
    held = min(max(2, round(heldout * len(users))), len(users) - 1)
    order = np.random.default_rng(seed).permutation(len(users))
    user_split = np.full(len(users), "train", dtype=object)
    user_split[order[: held // 2]] = "validation"
    user_split[order[held // 2 : held]] = "test"
    texts, option = [], {}
    for row in rows:
        for side in ("chosen", "rejected"):
            key = (row["prompt"], row[side])
            if key not in option:  # an answer given twice to one prompt is one option
                option[key] = len(texts)
                texts.append(key)
    pairs = [(option[(r["prompt"], r["chosen"])], option[(r["prompt"], r["rejected"])]) for r in rows]
    index = {user: u for u, user in enumerate(users)}
    return ChoiceLog(users, user_split.astype(str), np.asarray(pairs), [index[u] for u in ids], texts)


def sample_user_tasks(
    log: ChoiceLog,
    split: str,
    count: int,
    rng: np.random.Generator,
    targets: int = DEFAULT_TARGETS,
    context_sizes: int | tuple[int, int] = (0, DEFAULT_MAX_CONTEXT),
    balanced: bool = False,
) -> TaskBatch:
    """`count` tasks of `split`'s users: a user (uniform; `balanced`: every user as often, in
    random order), up to `targets` of their pairs, and a context of those: a fixed size or
    uniform in (low, high), cut so that at least one pair stays out of it to score. Only users
    with more than `low` pairs are drawn."""
    low, high = (context_sizes, context_sizes) if isinstance(context_sizes, int) else context_sizes
    if not 0 <= low <= high or high >= targets:
        raise SteerableError(
            f"context sizes {low}..{high} must lie in 0..{targets - 1} (fewer than the {targets} targets)"
        )
    users = [u for u in log.users_in(split) if len(log.pairs_of[u]) > low]
    if not users:
        raise SteerableError(
            f"no {split} user has more than {low} pairs, as a context of {low} needs; "
            "add choices per user or use smaller contexts"
        )
    if balanced:
        kinds = rng.permutation(np.resize(np.asarray(users), count))  # (B,)
    else:
        kinds = rng.choice(np.asarray(users), size=count)  # (B,)
    pairs = np.zeros((count, targets), dtype=int)
    valid = np.zeros((count, targets), dtype=bool)
    context = np.zeros((count, targets), dtype=bool)
    for b, user in enumerate(kinds):
        own = log.pairs_of[user]
        n = min(targets, len(own))
        pairs[b] = own[0]  # padding repeats the first pair; `valid` masks it
        pairs[b, :n] = rng.choice(own, size=n, replace=False)
        valid[b, :n] = True
        size = int(rng.integers(low, min(high, n - 1) + 1))
        context[b, rng.choice(n, size=size, replace=False)] = True
    return TaskBatch(
        types=kinds,
        pairs=pairs,
        chosen=log.pairs[pairs, 0],
        rejected=log.pairs[pairs, 1],
        context=context,
        valid=valid,
    )


@dataclass
class LogSource:
    """Tasks from real users' logs (`ChoiceLog`) and an embedding [M, d] of every option; the
    same interface as `TaskSource`, without types (`types` is None)."""

    log: ChoiceLog
    embeddings: np.ndarray  # (M, d)
    encoder: str
    split: dict | None = None
    types: None = None

    def __post_init__(self):
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.log.texts):
            raise SteerableError(
                f"embeddings of shape {self.embeddings.shape} for {len(self.log.texts)} options; "
                "embed every option once"
            )

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
        if type_probabilities is not None:
            raise SteerableError("a users' log has no user types to weigh")
        return sample_user_tasks(self.log, split, count, rng, targets, context_sizes, balanced)

    @property
    def texts(self) -> list[tuple[str, str]]:
        return self.log.texts

    @property
    def groups(self) -> list[str]:
        """No breakdown besides "all": users are too many and each has few tasks."""
        return []

    def pair_counts(self) -> dict[str, int]:
        return {s: int(sum(len(self.log.pairs_of[u]) for u in self.log.users_in(s))) for s in SPLITS}

    def user_counts(self) -> dict[str, int]:
        return {s: int(len(self.log.users_in(s))) for s in SPLITS}

    def largest_task(self, split: str) -> int:
        return max((len(self.log.pairs_of[u]) for u in self.log.users_in(split)), default=0)

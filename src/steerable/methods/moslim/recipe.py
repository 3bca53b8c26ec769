"""MOSLIM (Zhang, Jiang, Yang, arXiv 2505.20336): one off-the-shelf instruct policy steered by
intensity tags, trained on one scalar reward mapped from a multi-head classification reward model.

Recipe (`steerable train moslim`):
1. Each training prompt gets a random non-empty subset of the objectives, each with a level
   drawn uniformly from 1..L, written as tags (``<brief 4> <positive 2>``) where RiC's go.
2. The multi-head RM (`steerable train moslim-rm`) gives head i's probability of every level for
   each (untagged prompt, answer).
3. The reward is r = (1/k) sum_i mask_i (p_i - avg_i) / std_i: p_i the probability of the
   requested level, avg_i / std_i statistics of p_i for that head and level, mask_i whether
   objective i was tagged. The statistics are saved with the policy.
4. The policy (LoRA on the starting model, which is also the reference; no preference SFT
   first) learns from that reward by one of two optimisers (`algorithm`):
   - grpo: TRL's GRPO samples a group of answers per tagged prompt and scores them; avg_i /
     std_i are running statistics over training (over every process's answers under
     `accelerate launch`, so all processes keep the same ones).
   - dpo: a fixed pool of answers (`pool`, a prompt/response table with several answers per
     prompt, e.g. RiC's scored offline data) is read by the RM once. For each tagged prompt of
     the schedule, the answer the reward ranks first for those tags is `chosen` and the one it
     ranks last `rejected`; TRL's DPO trains on these pairs (an offline alternative to
     RL on the mapped reward). avg_i / std_i are the pool's. One pool serves every tag, so
     no answer is generated during training, and with mirror_levels the same two answers come
     back swapped under the mirrored tags: only reading the tag lowers both losses.

The paper leaves the choices below open; ours are the defaults, each switchable:

    target_probability  level: P(requested level) (default) | expected: 1 - |E[level] - n| /
                        (L - 1) | at_least: P(level >= n)
    normalisation       ema: running mean/std per head and level (default, decay `ema_decay`)
                        | batch: this batch's | none: avg 0, std 1 (dpo: ema and batch both
                        mean the pool's mean/std for every head and level)
    k                   active: the number of tagged objectives (default) | all: K, the formula
                        read literally (an objective not asked for still divides the reward)
    tag_sampling        subset: a random non-empty subset (default) | all: every objective
    mirror_levels       off (default) | on: every tagged prompt comes twice in a step, the second
                        time with each level n mirrored to L + 1 - n (antithetic tags). A change
                        that ignores the tag and that one tag rewards, its mirror penalises
                        (exactly so for reward=zscore, where w(L + 1 - n) = -w(n); roughly for
                        the mapped reward), so such changes cancel within the step while the
                        difference between the two tags' answers adds up. The middle level of
                        an odd L mirrors to itself.
    rejected            dpo: which answer a pair rejects. last: the one the reward ranks last for the
                        tags (default) | mirrored: the one it ranks first for the mirrored tags
                        (levels L + 1 - n), so both answers of a pair are the best the pool has for
                        a tag and they differ in what the tag asks for, not in whether the answer
                        is a fragment (the last-ranked answer where both tags pick the same one).
                        Under reward=zscore, w(L + 1 - n) = -w(n), so the two give the same pairs.
    reward              mapped: the RM reward above (default) | zscore: the reviewers'
                        weighted sum, (1/k) sum_i mask_i w(n_i) z_i with w(n) = 2(n-1)/(L-1) - 1
                        (-1 at level 1, +1 at level L) and z_i the objective's normalised score

Why avg_i matters less than it looks: GRPO standardises rewards within each group, and DPO
compares answers to one tagged prompt, so avg_i only shifts the rewards being compared by a
constant; std_i is what weighs the objectives against each other. A preference given to a
MOSLIM policy becomes levels through `conditioning.preference_to_levels`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from steerable.conditioning import PLACEMENTS, TagFormat, format_levels, tagged_messages
from steerable.errors import SteerableError
from steerable.manifest import MANIFEST, PolicyManifest, training_record, write_model_directory
from steerable.methods.dpo import DPO_LOSS_TYPE, answer_pool, preferred_pair, train_dpo
from steerable.methods.rl import (
    GRPO_LOSS_TYPE,
    RLConfig,
    completion_texts,
    count_completions,
    load_rewards,
    stage_settings,
    train_grpo,
    training_prompts,
)
from steerable.objectives import RewardSet
from steerable.stages import Stages, file_digest, fingerprint, is_main_process
from steerable.training import (
    CheckpointedState,
    last_complete_checkpoint,
    saved_callback_state,
    summed_over_processes,
)

REWARDS = ("mapped", "zscore")
TARGET_PROBABILITIES = ("level", "expected", "at_least")
NORMALISATIONS = ("ema", "batch", "none")
K_READINGS = ("active", "all")
TAG_SAMPLINGS = ("subset", "all")
ALGORITHMS = ("grpo", "dpo")
REJECTED = ("last", "mirrored")
DEFAULT_LEVELS = 5
# A head whose probability of a level hardly varies would otherwise get a huge weight.
MIN_STD = 0.05
STATS_CALLBACK = "MOSLIMRewardStats"  # the checkpoint's trainer_state.json keeps them under this name
LEGACY_STATS_FILE = "moslim_reward_stats.json"  # where the previous version kept them, in the checkpoint


# --- the reward, as pure functions ------------------------------------------------------
def level_matrix(requests: list[dict[str, int]], names: list[str]) -> np.ndarray:
    """Requested levels as an int array [n, K]; 0 where an objective is not tagged."""
    return np.array([[r.get(name, 0) for name in names] for r in requests], dtype=int)


def target_probability(probs: np.ndarray, levels: np.ndarray, how: str = "level") -> np.ndarray:
    """p_i for each (row, head): how well the RM thinks the response meets the requested level.
    probs: [n, K, L] level probabilities; levels: [n, K] in 1..L (0 = masked, value 0)."""
    n, k, count = probs.shape
    requested = np.clip(levels, 1, count) - 1  # (n, K) 0-based
    if how == "level":
        p = np.take_along_axis(probs, requested[..., None], axis=2)[..., 0]  # (n, K)
    elif how == "expected":
        expected = probs @ np.arange(1, count + 1)  # (n, K)
        p = 1.0 - np.abs(expected - (requested + 1)) / max(count - 1, 1)
    elif how == "at_least":
        tail = np.cumsum(probs[..., ::-1], axis=2)[..., ::-1]  # (n, K, L): P(level >= l)
        p = np.take_along_axis(tail, requested[..., None], axis=2)[..., 0]
    else:
        raise SteerableError(f"target_probability {how!r} unknown; choose from {TARGET_PROBABILITIES}")
    return np.where(levels > 0, p, 0.0)


def mapped_reward(
    p: np.ndarray, mask: np.ndarray, avg: np.ndarray, std: np.ndarray, k: str = "active"
) -> np.ndarray:
    """r = (1/k) sum_i mask_i (p_i - avg_i) / std_i per row. p, mask, avg, std: [n, K];
    k = the row's number of active objectives, or all K."""
    mask = np.asarray(mask, dtype=float)
    terms = mask * (p - avg) / np.maximum(std, 1e-12)  # (n, K)
    if k == "active":
        divisor = np.maximum(mask.sum(axis=1), 1.0)
    elif k == "all":
        divisor = np.full(len(p), float(p.shape[1]))
    else:
        raise SteerableError(f"k {k!r} unknown; choose from {K_READINGS}")
    return terms.sum(axis=1) / divisor


def normalised_reward(p: np.ndarray, requested: np.ndarray, stats, k: str = "active") -> np.ndarray:
    """The mapped reward of p [n, K] for requested levels [n, K], normalised by `stats`
    (a RewardStats; None: avg 0, std 1)."""
    avg, std = stats.lookup(requested) if stats is not None else (np.zeros_like(p), np.ones_like(p))
    return mapped_reward(p, requested > 0, avg, std, k)


def level_weight(levels: np.ndarray, count: int) -> np.ndarray:
    """The weighted-sum reading of a level: -1 at level 1, 0 in the middle, +1 at level L."""
    return 2.0 * (np.asarray(levels, dtype=float) - 1.0) / max(count - 1, 1) - 1.0


def zscore_reward(z: np.ndarray, levels: np.ndarray, count: int, k: str = "active") -> np.ndarray:
    """The reviewers' baseline: (1/k) sum_i mask_i w(n_i) z_i, same tags, no classifier."""
    mask = levels > 0
    return mapped_reward(np.where(mask, level_weight(levels, count) * z, 0.0), mask, 0.0, 1.0, k)


@dataclass
class RewardStats:
    """Running mean and variance of p_i per head and level: `mean`, `var` [K, L]; `seen`
    marks the (head, level) pairs that have had data. decay = 0 keeps only the last batch."""

    names: list[str]
    levels: int
    decay: float = 0.9
    mean: np.ndarray = None
    var: np.ndarray = None
    seen: np.ndarray = None

    def __post_init__(self):
        shape = (len(self.names), self.levels)
        self.mean = np.zeros(shape) if self.mean is None else np.asarray(self.mean, dtype=float)
        self.var = np.ones(shape) if self.var is None else np.asarray(self.var, dtype=float)
        self.seen = np.zeros(shape, bool) if self.seen is None else np.asarray(self.seen, dtype=bool)

    def moments(self, p: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """A batch's count, sum and sum of squares of p per (head, level) requested: [3, K, L]."""
        out = np.zeros((3, len(self.names), self.levels))
        for i in range(len(self.names)):
            for j in range(self.levels):
                values = p[levels[:, i] == j + 1, i]
                out[:, i, j] = values.size, values.sum(), np.square(values).sum()
        return out

    def update(self, p: np.ndarray, levels: np.ndarray, total=None) -> None:
        """Fold a batch in: for each (head, level) requested in it, the batch's mean and
        variance of p (the first batch of a pair sets them). `total` sums the batch's `moments`
        over the processes that each score a share of it (`summed_over_processes`), so every
        process folds in the whole batch, as TRL's GRPO groups the rewards of all of them, and
        all keep the same statistics."""
        n, total_p, total_sq = (total or (lambda m: m))(self.moments(p, levels))
        for i, j in zip(*np.nonzero(n), strict=True):
            m = total_p[i, j] / n[i, j]
            v = max(total_sq[i, j] / n[i, j] - m * m, 0.0)
            d = self.decay if self.seen[i, j] else 0.0
            self.mean[i, j] = d * self.mean[i, j] + (1 - d) * m
            self.var[i, j] = d * self.var[i, j] + (1 - d) * v
            self.seen[i, j] = True

    def lookup(self, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(avg, std) [n, K] for requested levels [n, K] (masked entries: 0 and 1)."""
        heads = np.arange(len(self.names))[None, :]
        index = np.clip(levels, 1, self.levels) - 1
        avg = np.where(levels > 0, self.mean[heads, index], 0.0)
        std = np.where(levels > 0, np.maximum(np.sqrt(self.var[heads, index]), MIN_STD), 1.0)
        return avg, std

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "levels": self.levels,
            "decay": self.decay,
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "seen": self.seen.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> RewardStats:
        return cls(**data)


def pool_stats(probs: np.ndarray, names: list[str], how: str = "level") -> RewardStats:
    """avg_i / std_i over a fixed pool of answers (DPO): for every head and level, the mean and
    variance of p_i over all pool rows had each of them been asked for that level."""
    n, k, count = probs.shape
    stats = RewardStats(list(names), count, decay=0.0)
    for level in range(1, count + 1):
        levels = np.full((n, k), level)
        stats.update(target_probability(probs, levels, how), levels)
    return stats


def mirrored_pair(rewards: np.ndarray, mirrored: np.ndarray) -> tuple[int, int] | None:
    """(chosen, rejected) contrasting two tags: the answer ranked first for the tags and the one
    ranked first for the mirrored tags (`rewards`, `mirrored`: each answer's reward under each).
    Where that is the same answer (always at the middle level) or as good for these tags, the
    last-ranked answer is the rejected one instead (`preferred_pair`)."""
    best, other = int(np.argmax(rewards)), int(np.argmax(mirrored))
    return (best, other) if rewards[best] > rewards[other] else preferred_pair(rewards)


def mirror(levels: dict[str, int], count: int) -> dict[str, int]:
    """Every level n of a request turned to L + 1 - n (the antithetic tags)."""
    return {name: count + 1 - level for name, level in levels.items()}


def sample_levels(rng: np.random.Generator, names: list[str], count: int, how: str = "subset") -> dict:
    """One request's tags: a uniformly random non-empty subset of the objectives (or all of
    them), each with a uniform level in 1..count."""
    if how == "all":
        chosen = list(names)
    else:
        size = int(rng.integers(1, len(names) + 1))
        picked = set(rng.choice(len(names), size=size, replace=False).tolist())
        chosen = [n for i, n in enumerate(names) if i in picked]
    return {name: int(rng.integers(1, count + 1)) for name in chosen}


# --- the recipe ---------------------------------------------------------------------------
@dataclass
class MOSLIMConfig(RLConfig):
    """RLConfig (the GRPO and LoRA settings) plus MOSLIM's own choices (module docstring).

    reward_model: a multi-head classification RM directory (`steerable train moslim-rm`)
        whose heads are the objectives of `stats` (required for reward=mapped).
    levels: L, the number of levels per objective (default: the RM's; 5 without one).
    reward: mapped (the RM reward) or zscore (the weighted z-score baseline, same tags).
    target_probability / normalisation / ema_decay / k / tag_sampling / mirror_levels: see the
        module docstring.
    algorithm: grpo (TRL GRPO, sampling its own answers) or dpo (TRL DPO on pairs of `pool`
        answers ranked by the reward for each drawn tag). Under dpo, batch_size is pairs per
        step, num_generations / temperature / max_completion_length / scale_rewards / beta
        (GRPO's KL) are not used, and max_steps x batch_size pairs are drawn.
    pool: dpo: a prompt/response table (jsonl, csv, parquet) with several answers per prompt.
    dpo_beta: dpo: DPO's beta, how strongly the policy is held to the starting model.
    rejected: dpo: the rejected answer of a pair, the last-ranked (last) or the first-ranked for
        the mirrored tags (mirrored); see the module docstring.
    sft_weight: dpo: weight of an SFT term, the chosen answers' NLL per token, added to the DPO
        loss (TRL's loss_type ["sigmoid", "sft"], RPO); 0 (default) is DPO as published.
    placement: where the tags go (conditioning.PLACEMENTS).
    system: a system prompt for every training prompt, kept in the policy directory, so
        generate and evaluate (and the untrained floor, `evaluate --method tags`) use it too;
        e.g. a legend of the tags. None (default): the tags alone.
    """

    output_dir: str = field(default="runs/moslim", metadata={"help": "Output directory."})
    reward_model: str | None = field(default=None, metadata={"help": "Multi-head RM directory."})
    levels: int | None = field(
        default=None, metadata={"help": "Levels per objective (default: the RM's).", "ge": 2}
    )
    reward: str = field(default="mapped", metadata={"help": "Reward.", "choices": REWARDS})
    target_probability: str = field(
        default="level", metadata={"help": "p_i read from the RM.", "choices": TARGET_PROBABILITIES}
    )
    normalisation: str = field(default="ema", metadata={"help": "avg/std of p_i.", "choices": NORMALISATIONS})
    ema_decay: float = field(
        default=0.9, metadata={"help": "Decay of the running statistics.", "ge": 0, "lt": 1}
    )
    k: str = field(
        default="active", metadata={"help": "Divide by active or all objectives.", "choices": K_READINGS}
    )
    tag_sampling: str = field(
        default="subset", metadata={"help": "Tagged objectives per prompt.", "choices": TAG_SAMPLINGS}
    )
    mirror_levels: bool = field(
        default=False, metadata={"help": "Each tagged prompt twice a step, levels n and L+1-n."}
    )
    algorithm: str = field(default="grpo", metadata={"help": "Policy optimiser.", "choices": ALGORITHMS})
    pool: str | None = field(
        default=None,
        metadata={
            "help": "dpo: prompt/response table whose answers the reward ranks (e.g. RiC's scored.jsonl)."
        },
    )
    dpo_beta: float = field(
        default=0.1, metadata={"help": "dpo: DPO's beta (pull toward the starting policy).", "gt": 0}
    )
    sft_weight: float = field(
        default=0.0, metadata={"help": "dpo: weight of the chosen answers' NLL beside the DPO loss.", "ge": 0}
    )
    rejected: str = field(
        default="last",
        metadata={
            "help": "dpo: reject the last-ranked answer or the mirrored tags' best.",
            "choices": REJECTED,
        },
    )
    later_fields: ClassVar[dict] = {
        **RLConfig.later_fields,
        "mirror_levels": False,
        "algorithm": "grpo",
        "pool": None,
        "dpo_beta": 0.1,
        "sft_weight": 0.0,
        "rejected": "last",
    }
    placement: str = field(default="user_end", metadata={"help": "Tag placement.", "choices": PLACEMENTS})
    system: str | None = field(
        default=None,
        metadata={"help": "System prompt of every prompt, in training and use (e.g. a tag legend)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.mirror_levels and self.rows_per_step % 2:
            raise SteerableError(
                "--mirror_levels needs an even number of prompts per step (grpo: batch_size / "
                f"num_generations, dpo: batch_size), got {self.rows_per_step}"
            )
        if not self.grpo and self.pool is None:
            raise SteerableError(
                "--pool is required for --algorithm dpo: a table of prompt/response rows (several answers "
                "per prompt) for the reward to rank, e.g. RiC's runs/ric/stages/offline/scored.jsonl"
            )
        if self.grpo and self.pool is not None:
            raise SteerableError("--pool is read by --algorithm dpo only; GRPO samples its own answers")
        if self.sft_weight and self.grpo:
            raise SteerableError("--sft_weight is read by --algorithm dpo only")
        if self.rejected != "last" and self.grpo:
            raise SteerableError("--rejected is read by --algorithm dpo only; GRPO ranks its own samples")
        if self.prompts is not None and not self.grpo:
            raise SteerableError(
                "--prompts is read by --algorithm grpo only; DPO trains on the --pool's prompts"
            )
        if self.pool is not None:
            self.pool = str(Path(self.pool).resolve())
        if self.reward == "mapped" and self.reward_model is None:
            raise SteerableError(
                "--reward_model is required for reward=mapped: a multi-head RM directory "
                "(train one with `steerable train moslim-rm`)"
            )
        if self.reward_model is not None:
            self.reward_model = str(Path(self.reward_model).resolve())

    @property
    def grpo(self) -> bool:
        """Whether GRPO trains the policy (else DPO on the --pool answers)."""
        return self.algorithm == "grpo"

    @property
    def keeps_stats(self) -> bool:
        """Whether the reward keeps avg_i / std_i (saved with the policy): running ones under
        GRPO, the pool's under DPO."""
        return self.reward == "mapped" and self.normalisation != "none"

    @property
    def dpo_loss(self) -> dict:
        """TRL DPO's loss_type / loss_weights: DPO as published, plus the chosen answers' NLL
        when sft_weight > 0."""
        if self.sft_weight:
            return {"loss_type": [DPO_LOSS_TYPE, "sft"], "loss_weights": [1.0, self.sft_weight]}
        return {"loss_type": [DPO_LOSS_TYPE]}

    @property
    def rows_per_step(self) -> int:
        """Tagged prompts per optimisation step: GRPO's groups, or DPO's pairs."""
        return self.batch_size // self.num_generations if self.grpo else self.batch_size


def load_reward_model(config: MOSLIMConfig, rewards: RewardSet):
    """The RM, checked against the objectives and levels of the run (None for zscore)."""
    if config.reward != "mapped":
        return None
    from steerable.reward_models.multihead import MultiHeadRM

    rm = MultiHeadRM.load(config.reward_model)
    if list(rm.names) != rewards.names:
        raise SteerableError(
            f"--reward_model {config.reward_model} has heads {list(rm.names)}, but the objectives of "
            f"--stats are {rewards.names}; train the RM on the same objectives, in the same order"
        )
    if config.levels is not None and config.levels != rm.levels:
        raise SteerableError(
            f"--levels {config.levels} but --reward_model {config.reward_model} has {rm.levels} "
            "levels per head; drop --levels or train the RM with as many"
        )
    return rm


def tag_schedule(config: MOSLIMConfig, prompts: list[str], names: list[str], count: int) -> list[tuple]:
    """(prompt, levels) for every row the run will see (steps x rows per step), the prompts in
    turn, each row with fresh tags; with mirror_levels, rows come in pairs: the same prompt,
    levels n and L + 1 - n. GRPO and DPO runs draw the same schedule for the same seed."""
    rng = np.random.default_rng(config.seed)
    schedule, levels = [], {}
    for i in range(config.max_steps * config.rows_per_step):
        prompt = prompts[(i // 2 if config.mirror_levels else i) % len(prompts)]
        if config.mirror_levels and i % 2:
            levels = mirror(levels, count)
        else:
            levels = sample_levels(rng, names, count, config.tag_sampling)
        schedule.append((prompt, levels))
    return schedule


def tagged_prompt(config: MOSLIMConfig, tokenizer, prompt: str, levels: dict[str, int]) -> list[dict]:
    """The chat a policy is trained on: the prompt with its tags (and the run's system turn,
    folded into the user's where the template has no system role)."""
    from steerable.generation import template_messages

    fmt = TagFormat(config.placement)
    return template_messages(tokenizer, tagged_messages(prompt, format_levels(levels), fmt, config.system))


def training_rows(config: MOSLIMConfig, names: list[str], count: int, tokenizer) -> list[dict]:
    """GRPO's rows, one per `tag_schedule` entry over the prompts (`training_prompts`): `prompt`
    (the tagged chat), `question` (the untagged prompt, what the reward scores) and `levels`
    (JSON)."""
    prompts = training_prompts(config)
    return [
        {
            "prompt": tagged_prompt(config, tokenizer, prompt, levels),
            "question": prompt,
            "levels": json.dumps(levels),
        }
        for prompt, levels in tag_schedule(config, prompts, names, count)
    ]


def pool_rewards(config: MOSLIMConfig, rewards: RewardSet, rm, pool: dict[str, list[str]]):
    """What the reward reads of every pool answer, once: the RM's level probabilities [n, K, L]
    (mapped) or the normalised scores [n, K] (zscore), rows in pool order; and the pool's
    avg_i / std_i (None unless the reward keeps them)."""
    prompts = [prompt for prompt, mine in pool.items() for _ in mine]
    answers = [answer for mine in pool.values() for answer in mine]
    if config.reward == "zscore":
        return rewards.normalise(rewards.score(prompts, answers)), None
    probs = rm.probabilities(prompts, answers)  # (n, K, L)
    stats = pool_stats(probs, rewards.names, config.target_probability) if config.keeps_stats else None
    return probs, stats


def dpo_rows(
    config: MOSLIMConfig, names: list[str], count: int, pool: dict[str, list[str]], read, stats, tokenizer
) -> list[dict]:
    """DPO's pairs, one per `tag_schedule` entry over the pool's prompts: the tagged chat as
    `prompt`, the answer the reward ranks first for those tags as `chosen` and the one it ranks
    last (or first for the mirrored tags, `config.rejected`) as `rejected` (`read`: what
    `pool_rewards` read of the answers). An entry whose answers all tie is dropped (with
    mirror_levels, together with its mirror, so pairs stay together)."""
    starts = np.cumsum([0] + [len(mine) for mine in pool.values()])
    where = {prompt: slice(starts[i], starts[i + 1]) for i, prompt in enumerate(pool)}
    schedule = tag_schedule(config, list(pool), names, count)

    def reward(prompt: str, levels: dict[str, int]) -> np.ndarray:
        requested = level_matrix([levels] * len(pool[prompt]), names)  # (m, K)
        if config.reward == "zscore":
            return zscore_reward(read[where[prompt]], requested, count, config.k)
        p = target_probability(read[where[prompt]], requested, config.target_probability)
        return normalised_reward(p, requested, stats, config.k)

    rows = []
    for prompt, levels in schedule:
        r = reward(prompt, levels)
        if config.rejected == "mirrored":
            pair = mirrored_pair(r, reward(prompt, mirror(levels, count)))
        else:
            pair = preferred_pair(r)
        rows.append(
            None
            if pair is None
            else {
                "prompt": tagged_prompt(config, tokenizer, prompt, levels),
                "chosen": [{"role": "assistant", "content": pool[prompt][pair[0]]}],
                "rejected": [{"role": "assistant", "content": pool[prompt][pair[1]]}],
                "question": prompt,
                "levels": json.dumps(levels),
                "margin": float(r[pair[0]] - r[pair[1]]),
            }
        )
    if config.mirror_levels:  # a pair of rows stays whole or goes
        rows = [row for i, row in enumerate(rows) if row is not None and rows[i ^ 1] is not None]
    rows = [row for row in rows if row is not None]
    if not rows:
        raise SteerableError(
            f"--pool {config.pool}: the reward gives every answer of every prompt the same value for "
            "the tags drawn, so there is no preference to learn; give answers that differ in the objectives"
        )
    return rows


def moslim_reward_function(
    config: MOSLIMConfig, rewards: RewardSet, rm, stats: RewardStats, counter, tokenizer
):
    """The one TRL reward function of a MOSLIM run (`config.reward`)."""
    names, count = rewards.names, stats.levels

    def moslim_reward(prompts, completions, question, levels, log_metric=None, **_):
        _, texts = completion_texts(prompts, completions)
        count_completions(counter, tokenizer, texts)
        requested = level_matrix([json.loads(x) for x in levels], names)  # (n, K)
        if config.reward == "zscore":
            z = rewards.normalise(rewards.score(list(question), texts))
            return zscore_reward(z, requested, count, config.k).tolist()
        probs = rm.probabilities(list(question), texts)  # (n, K, L)
        p = target_probability(probs, requested, config.target_probability)
        if config.keeps_stats:
            stats.update(p, requested, summed_over_processes)
        if log_metric is not None:
            for i, name in enumerate(names):
                active = requested[:, i] > 0
                if active.any():
                    log_metric(f"moslim/p_{name}", float(p[active, i].mean()))
        return normalised_reward(p, requested, stats if config.keeps_stats else None, config.k).tolist()

    return moslim_reward


def stats_callback(stats: RewardStats):
    """Keep the running statistics in every checkpoint, so a resumed run continues them: as a
    CheckpointedState callback (transformers' ExportableState), they go into the checkpoint's
    trainer_state.json, the file a checkpoint is complete with (`last_complete_checkpoint`)."""

    class MOSLIMRewardStats(CheckpointedState):
        def state(self) -> dict:
            return {"args": {}, "attributes": {"reward_stats": stats.to_dict()}}

    return MOSLIMRewardStats()


def resumed_stats(stage: Path, stats: RewardStats) -> RewardStats:
    """The statistics of the stage's last complete checkpoint, `stats` when there is none: from
    its trainer_state.json, or from LEGACY_STATS_FILE beside it, where the previous version kept
    them. A checkpoint without them is refused: they run over every batch since step 0, so they
    cannot be recomputed, and fresh ones would rescale the reward mid-run."""
    checkpoint = last_complete_checkpoint(stage / "checkpoints")
    if checkpoint is None:
        return stats
    saved = saved_callback_state(checkpoint, STATS_CALLBACK)
    if saved is not None:
        return RewardStats.from_dict(saved["reward_stats"])
    legacy = Path(checkpoint) / LEGACY_STATS_FILE
    if not legacy.is_file():
        raise SteerableError(
            f"{checkpoint} holds no MOSLIM reward statistics, so the policy cannot go on with the "
            f"reward it was trained on; delete {stage} to train it again"
        )
    return RewardStats.from_dict(json.loads(legacy.read_text()))


def train_moslim(config: MOSLIMConfig) -> Path:
    """Train the MOSLIM policy (one stage, `policy`, by GRPO or DPO) and write steerable.json."""
    from steerable.defaults import load_tokenizer

    rewards = load_rewards(config.stats, config.trust_remote_code)
    rm = load_reward_model(config, rewards)
    count = rm.levels if rm is not None else (config.levels or DEFAULT_LEVELS)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    pool = None if config.grpo else answer_pool(config.pool)
    prompts = training_prompts(config) if config.grpo else list(pool)
    out = Path(config.output_dir)
    stages = Stages(out, "train moslim")
    optimiser = (
        {"grpo": [GRPO_LOSS_TYPE, config.scale_rewards]}
        if config.grpo
        else {"dpo": [DPO_LOSS_TYPE], "pool": file_digest(config.pool)}
    )
    inputs = {
        **stage_settings(config, ("output_dir", "stats", "reward_model", "pool")),
        "levels": count,
        "rewards": fingerprint(rewards.to_dict()),
        "reward_model": None if rm is None else file_digest(rm.directory),
        **optimiser,
    }
    info = stages.done("policy", inputs)
    if info is None:
        if is_main_process():
            (out / MANIFEST).unlink(missing_ok=True)  # written again once the policy is trained
        if not config.grpo:
            read, stats = pool_rewards(config, rewards, rm, pool)
            rows = dpo_rows(config, rewards.names, count, pool, read, stats, tokenizer)
            info = train_dpo(
                config,
                stages,
                "policy",
                inputs,
                tokenizer,
                rows,
                config.dpo_beta,
                loss=config.dpo_loss,
                sequential=config.mirror_levels,  # mirrored pairs share a batch
            )
        else:
            stats = RewardStats(
                rewards.names, count, decay=0.0 if config.normalisation == "batch" else config.ema_decay
            )
            if config.keeps_stats:
                stats = resumed_stats(stages.start("policy", inputs), stats)
            counter = {"completions": 0, "tokens": 0}
            info = train_grpo(
                config,
                stages,
                "policy",
                inputs,
                tokenizer,
                training_rows(config, rewards.names, count, tokenizer),
                [moslim_reward_function(config, rewards, rm, stats, counter, tokenizer)],
                [1.0],
                counter,
                callbacks=[stats_callback(stats)],
                shuffle=not config.mirror_levels,  # a mirrored pair must stay in one step
            )
        reward_stats = stats.to_dict() if config.keeps_stats else None
        info = stages.finish("policy", inputs, {**info, "reward_stats": reward_stats})
    recipe = (
        {"grpo": {"loss_type": GRPO_LOSS_TYPE, "scale_rewards": config.scale_rewards}}
        if config.grpo
        else {
            "dpo": {
                **config.dpo_loss,
                "beta": config.dpo_beta,
                "rejected": config.rejected,
                "pairs": info["pairs"],
            }
        }
    )
    manifest = PolicyManifest(
        method="moslim",
        base_model=config.model,
        rewards=rewards.to_dict(),
        tags=TagFormat(config.placement).to_dict(),
        policies=[{"adapter": "stages/policy/weights"}],
        system=config.system,
        dtype=config.dtype,
        moslim={
            "levels": count,
            "reward": config.reward,
            "algorithm": config.algorithm,
            "tag_sampling": config.tag_sampling,
            "reward_model": config.reward_model,
            "reward_stats": info["reward_stats"],
        },
        training=training_record(
            config, {"policy": fingerprint(inputs)}, {"policy": info}, prompts, **recipe
        ),
    )
    return write_model_directory(out, manifest, tokenizer)

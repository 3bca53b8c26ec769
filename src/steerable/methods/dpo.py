"""DPO on pairs of answers drawn from a pool, the one way steerable trains by DPO with TRL: MOSLIM
(pairs ranked by its tagged reward), Rewarded Soups' DPO experts and GenARM's autoregressive
reward models (pairs ranked by one objective each, `train_experts`).

The pool is a prompt/response table with several answers per prompt (RiC's scored offline data
is one). An expert of objective k learns from one pair per prompt: the answer with the highest
normalised score z_k as `chosen`, the one with the lowest as `rejected`; a prompt whose answers
all tie on z_k gives none.

GenARM's reward model is trained by DPO without a reference model: its loss is
-log sigmoid(beta * (log pi(y_c | x) - log pi(y_r | x))), the Bradley-Terry loss on beta times
the model's own log-likelihoods. TRL's DPOTrainer has no switch for that, so `reference_free`
precomputes the reference log-probabilities as zeros (`precompute_ref_log_probs` with zero
columns in place of the reference forward): DPO's loss with log pi_ref = 0 is that loss, and no
reference forward runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from steerable.errors import SteerableError
from steerable.stages import Stages, file_digest, fingerprint, is_main_process

DPO_LOSS_TYPE = "sigmoid"  # DPO as published, pinned and recorded with every policy


def answer_pool(path: str) -> dict[str, list[str]]:
    """The DPO pool: each prompt's distinct answers, in file order, for the prompts that have at
    least two (one answer has nothing to be preferred to)."""
    from steerable.data import load_pairs

    answers: dict[str, list[str]] = {}
    for row in load_pairs(path):
        mine = answers.setdefault(row["prompt"], [])
        if row["response"] not in mine:
            mine.append(row["response"])
    pool = {prompt: mine for prompt, mine in answers.items() if len(mine) >= 2}
    if not pool:
        raise SteerableError(
            f"--pool {path}: no prompt has two different answers, so there is nothing to rank; "
            "give several answers per prompt (RiC's offline stage samples and cuts several)"
        )
    return pool


def preferred_pair(rewards: np.ndarray) -> tuple[int, int] | None:
    """(chosen, rejected): the indices of the highest- and the lowest-rewarded answers (the first
    of any tie), or None when every answer gets the same reward."""
    best, worst = int(np.argmax(rewards)), int(np.argmin(rewards))
    return None if rewards[best] == rewards[worst] else (best, worst)


def pool_scores(rewards, pool: dict[str, list[str]]) -> np.ndarray:
    """Every pool answer's normalised scores z [n, K] under `rewards` (a RewardSet), rows in pool
    order (prompt by prompt)."""
    prompts = [prompt for prompt, mine in pool.items() for _ in mine]
    answers = [answer for mine in pool.values() for answer in mine]
    return rewards.normalise(rewards.score(prompts, answers, progress=True))


def objective_pairs(pool: dict[str, list[str]], z: np.ndarray, k: int, name: str, path: str) -> list[dict]:
    """One DPO row per pool prompt whose answers differ on objective k (`z`: `pool_scores`): the
    prompt as a user turn, the answer with the highest z_k as `chosen`, the lowest as `rejected`,
    and the `margin` between them. `name`, `path`: the objective and the pool, for the error."""
    rows, start = [], 0
    for prompt, answers in pool.items():
        scores = z[start : start + len(answers), k]  # (answers,)
        start += len(answers)
        pair = preferred_pair(scores)
        if pair is not None:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": answers[pair[0]]}],
                    "rejected": [{"role": "assistant", "content": answers[pair[1]]}],
                    "objective": name,
                    "margin": float(scores[pair[0]] - scores[pair[1]]),
                }
            )
    if not rows:
        raise SteerableError(
            f"--pool {path}: objective {name} scores every answer of every prompt the same, so its "
            "expert has no preference to learn; give answers that differ in it"
        )
    return rows


def reference_free_trainer():
    """TRL's DPOTrainer with the reference log-probabilities fixed at 0 (module docstring)."""
    from trl import DPOTrainer

    class ReferenceFreeDPOTrainer(DPOTrainer):
        def _precompute_ref_logps(self, dataset, name, batch_size):
            zeros = [0.0] * len(dataset)
            return dataset.add_column("ref_chosen_logps", zeros).add_column("ref_rejected_logps", zeros)

    return ReferenceFreeDPOTrainer


def dpo_trainer(
    config,
    output_dir: Path,
    tokenizer,
    rows: list[dict],
    beta: float,
    loss: dict | None = None,
    sequential: bool = False,
    reference_free: bool = False,
):
    """TRL's DPO on `rows` (prompt/chosen/rejected chats; other keys are left out): a fresh LoRA
    on `config.model` (its model, dtype, LoRA shape, max_steps, batch_size, learning_rate and
    seed), checkpoints in `output_dir`. The reference is the starting model (the adapter switched
    off), or none (`reference_free`). `loss`: DPOConfig's loss_type (and loss_weights), DPO as
    published by default; `sequential` keeps the rows in order (pairs that must share a batch)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from steerable.defaults import load_causal_lm
    from steerable.training import checkpoint_args, device_args, lora_config

    model, _ = load_causal_lm(config.model, config.dtype, trust_remote_code=config.trust_remote_code)
    args = DPOConfig(
        output_dir=str(output_dir),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        beta=beta,
        **(loss or {"loss_type": [DPO_LOSS_TYPE]}),
        seed=config.seed,
        gradient_checkpointing=False,
        train_sampling_strategy="sequential" if sequential else "random",
        precompute_ref_log_probs=reference_free,
        **checkpoint_args(),
        **device_args(),
    )
    trainer = reference_free_trainer() if reference_free else DPOTrainer
    return trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(
            [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows]
        ),
        processing_class=tokenizer,
        peft_config=lora_config(config.lora_r, config.lora_alpha, config.lora_dropout),
    )


def train_dpo(
    config, stages: Stages, name: str, inputs: dict, tokenizer, rows: list[dict], beta: float, **options
) -> dict:
    """`dpo_trainer` (its `options`) trained as the stage NAME of `stages`: the adapter into
    stages/NAME/weights, resumed from the stage's last complete checkpoint (`train_stage`), the
    pairs kept as stages/NAME/pairs.jsonl. Returns the compute record; the caller finishes the
    stage."""
    from steerable.data import write_table
    from steerable.training import train_stage

    def trainer_for(stage: Path):
        if is_main_process():
            write_table(stage / "pairs.jsonl", rows)
        return dpo_trainer(config, stage / "checkpoints", tokenizer, rows, beta, **options)

    def describe(trainer, result) -> dict:
        return {"pairs": len(rows), "generated_completions": 0, "generated_tokens": 0}

    label, rungs = f"{name} DPO", config.rungs
    return train_stage(stages, name, inputs, trainer_for, label, describe, finish=False, rungs=rungs)[1]


def train_experts(
    config, method: str, beta: float, reference_free: bool = False, unread: Sequence[str] = ()
) -> Path:
    """One LoRA expert per objective of `config.stats`, each by DPO on the pairs of `config.pool`
    ranked by its objective (`objective_pairs`), as the stages policy_0 .. policy_{K-1}, written as
    every per-objective directory is (`rl.write_policies`: one-hot weights, objective order) with
    `method` in its steerable.json. `unread`: settings of `config` DPO does not read, left out of
    the stages' inputs so that changing them does not make a trained expert stale. The pool is
    scored once, when a stage is left to train."""
    from steerable.defaults import load_tokenizer
    from steerable.methods.rl import load_rewards, stage_settings, write_policies

    rewards = load_rewards(config.stats, config.trust_remote_code)
    pool = answer_pool(config.pool)
    tokenizer = load_tokenizer(config.model, config.trust_remote_code)
    loss = [DPO_LOSS_TYPE, "reference_free"] if reference_free else [DPO_LOSS_TYPE]
    shared = {
        **stage_settings(config, ("output_dir", "stats", "pool", *unread)),
        "rewards": fingerprint(rewards.to_dict()),
        "pool": file_digest(config.pool),
        "dpo": loss,
    }
    vectors = [[1.0 if j == k else 0.0 for j in range(len(rewards))] for k in range(len(rewards))]
    plan = {f"policy_{k}": {**shared, "weights": weights} for k, weights in enumerate(vectors)}
    scores = None

    def train(stages: Stages, name: str, inputs: dict, weights: list[float]) -> dict:
        nonlocal scores
        done = stages.done(name, inputs)
        if done is not None:
            return done
        scores = pool_scores(rewards, pool) if scores is None else scores
        k = weights.index(1.0)
        rows = objective_pairs(pool, scores, k, rewards.names[k], config.pool)
        info = train_dpo(config, stages, name, inputs, tokenizer, rows, beta, reference_free=reference_free)
        return stages.finish(name, inputs, {"weights": list(weights), **info})

    recipe = {"dpo": {"loss_type": loss, "beta": beta, "reference_free": reference_free}}
    return write_policies(config, method, rewards, vectors, plan, train, list(pool), tokenizer, **recipe)

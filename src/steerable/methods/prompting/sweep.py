"""The prompting floor swept: the base model answers with each point's preference written
into its system prompt."""

from __future__ import annotations

from collections.abc import Sequence

from steerable.errors import SteerableError
from steerable.methods.base import Generator


def preference_instruction(rewards, weights: Sequence[float]) -> str:
    """The system prompt of the prompting floor: the preference in words."""
    from steerable.scorers.builtin import INSTRUCTIONS

    parts = []
    for objective, weight in zip(rewards.objectives, weights, strict=True):
        spec = objective.spec
        what = INSTRUCTIONS.get(spec.target) if spec.kind == "builtin" else None
        parts.append(f"{objective.name} {round(100 * weight)}%" + (f" ({what})" if what else ""))
    return "Balance these goals in your answer, in proportion to their weights: " + "; ".join(parts) + "."


def sweep(
    model: str,
    sampling,
    stats: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    **_,
) -> Generator:
    """`model`: the base model; `stats` (a stats JSON or a model directory) gives the
    objectives and statistics every method of a comparison shares."""
    from steerable.defaults import load_causal_lm
    from steerable.generation import format_chat, generate_texts
    from steerable.methods.rl import load_rewards

    if stats is None:
        raise SteerableError(
            "the prompting baseline needs --stats (a stats JSON or the model directory of the "
            "method it is compared with) so every method shares objectives and statistics"
        )
    rewards = load_rewards(stats, trust_remote_code)
    dtype = dtype or "float32"
    lm, tokenizer = load_causal_lm(model, dtype, trust_remote_code=trust_remote_code)

    def generate(prompts, weights):
        system = preference_instruction(rewards, weights)
        return generate_texts(
            lm, tokenizer, format_chat(tokenizer, prompts, system), sampling, progress=False
        )

    return Generator(generate, rewards, tokenizer, None, dtype)

"""How far apart do tone instructions push the base model's samples on the default objectives?

    python benchmarks/offline_tone.py [--prompts 48] [--model smollm2]

RiC's offline data (`steerable.methods.ric.recipe.offline_data`) samples each train prompt once per
offline instruction; the positive tag can only be learned if the two samples of a prompt differ
in positivity. For three ways of asking for a joyful vs. a gloomy answer (the old cheerful /
gloomy system prompts, an instruction before the prompt, and the current default
`OFFLINE_INSTRUCTIONS` after it), this samples the first N train prompts with the offline
sampling settings (48 new tokens, temperature 0.9, top-p 0.95, seed 0) and prints, as Markdown,
the mean word count and VADER compound of each side, and the share of gloomy answers scored
below zero.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from steerable.conditioning import TagFormat  # noqa: E402
from steerable.data import load_prompts  # noqa: E402
from steerable.defaults import DEFAULT_MODEL, load_causal_lm  # noqa: E402
from steerable.generation import SamplingConfig, generate_texts, render_chat  # noqa: E402
from steerable.methods.ric.recipe import OFFLINE_INSTRUCTIONS, instructed_messages  # noqa: E402
from steerable.objectives import RewardSet  # noqa: E402

CHEERFUL_SYSTEM = (
    "You are cheerful and delighted. Use many happy words: wonderful, great, love, amazing, enjoy."
)
GLOOMY_SYSTEM = (
    "You are gloomy and pessimistic. Use many negative words: bad, sad, terrible, awful, wrong, fail."
)
# name -> (joyful, gloomy) chat builders
VARIANTS = {
    "system prompt (cheerful / gloomy; the default until 2026-11-25)": (
        lambda p: instructed_messages(p, CHEERFUL_SYSTEM, TagFormat("system")),
        lambda p: instructed_messages(p, GLOOMY_SYSTEM, TagFormat("system")),
    ),
    "instruction before the prompt": (
        lambda p: [{"role": "user", "content": "Answer in a very happy, enthusiastic, positive tone. " + p}],
        lambda p: [{"role": "user", "content": "Answer in a very sad, pessimistic, negative tone. " + p}],
    ),
    "instruction after the prompt (`OFFLINE_INSTRUCTIONS`, the default)": (
        lambda p: instructed_messages(p, OFFLINE_INSTRUCTIONS[0], TagFormat("user_end")),
        lambda p: instructed_messages(p, OFFLINE_INSTRUCTIONS[1], TagFormat("user_end")),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48, help="first N train prompts")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()

    model, tokenizer = load_causal_lm(args.model)
    prompts = load_prompts("train", args.prompts)
    rewards = RewardSet.from_specs(["brief=builtin:brevity", "positive=builtin:sentiment"])
    sampling = SamplingConfig(max_new_tokens=48, temperature=0.9, top_p=0.95, batch_size=64, seed=0)
    n = len(prompts)
    print(f"{n} train prompts, {args.model}\n")
    print(
        "| how the tone is asked for | joyful: words | joyful: positive "
        "| gloomy: words | gloomy: positive | gloomy < 0 |"
    )
    print("|---|---|---|---|---|---|")
    for name, (joyful, gloomy) in VARIANTS.items():
        chats = [joyful(p) for p in prompts] + [gloomy(p) for p in prompts]
        texts = [render_chat(tokenizer, m) for m in chats]
        responses = generate_texts(model, tokenizer, texts, sampling, progress=False)
        raw = np.asarray(rewards.score(prompts + prompts, responses))
        print(
            f"| {name} | {-raw[:n, 0].mean():.1f} | {raw[:n, 1].mean():.3f} "
            f"| {-raw[n:, 0].mean():.1f} | {raw[n:, 1].mean():.3f} | {(raw[n:, 1] < 0).mean():.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

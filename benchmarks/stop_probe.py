"""Does a RiC model's length tag move where it stops?

    python benchmarks/stop_probe.py runs/ric14 [--adapter runs/ric14/stages/sft/weights]
        [--objective brief] [--targets -1.6 0 1.5] [--others 0.5] [--prompts 32] [--split heldout]

Brevity can only follow its tag if the tag changes the model's decision to stop at a sentence
end. For the first N prompts of a split this prints, as Markdown, for each target of
`--objective` (the other objectives' tags at `--others`): the mean word and sentence count of
sampled answers (48 new tokens, temperature 0.7, seed 0), and the probability of ending the
answer right after the first sentence of the answers sampled at the middle target.

When the model directory holds its offline data (stages/offline/scored.jsonl), it also prints
that probability on the training rows themselves, each under its own tags, split into rows
that stop after their first sentence and rows that go on: how well the model fits the stop
decisions it was trained on.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from steerable.data import load_prompts, read_table  # noqa: E402
from steerable.data.text import SENTENCE_END  # noqa: E402
from steerable.generation import SamplingConfig  # noqa: E402
from steerable.policy import SteerablePolicy  # noqa: E402


def stop_probability(policy: SteerablePolicy, prompt: str, tags: dict[str, float], answer: str) -> float:
    """P(end of turn right after `answer`) under `tags`."""
    text = policy.prompts_with_tags([prompt], tags)[0] + answer
    ids = policy.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = policy.model(ids.to(policy.model.device)).logits[0, -1].float()
    return torch.softmax(logits, -1)[policy.tokenizer.eos_token_id].item()


def first_sentence(text: str) -> str | None:
    match = SENTENCE_END.search(text.strip())
    return text.strip()[: match.start()] if match else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--objective", default="brief")
    parser.add_argument("--targets", type=float, nargs="+", default=[-1.6, 0.0, 1.5])
    parser.add_argument("--others", type=float, default=0.5)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--split", default="heldout")
    parser.add_argument("--train-rows", type=int, default=200)
    args = parser.parse_args()

    policy = SteerablePolicy.from_pretrained(args.model, adapter=args.adapter)
    if args.objective not in policy.names:
        parser.error(f"--objective {args.objective!r} is not one of the model's {policy.names}")
    prompts = load_prompts(args.split, args.prompts)
    sampling = SamplingConfig(max_new_tokens=48, temperature=0.7, seed=0)

    def tags(value: float) -> dict[str, float]:
        return {name: value if name == args.objective else args.others for name in policy.names}

    answers = {t: policy.generate(prompts, targets=tags(t), sampling=sampling) for t in args.targets}
    middle = answers[sorted(args.targets)[len(args.targets) // 2]]
    firsts = [(p, s) for p, a in zip(prompts, middle, strict=True) if (s := first_sentence(a))]
    print(f"{args.model} ({args.adapter or 'its own weights'}), {len(prompts)} {args.split} prompts\n")
    print(f"| {args.objective} tag | words | sentences | P(stop after sentence 1) |")
    print("|---|---|---|---|")
    for t in args.targets:
        words = np.mean([len(a.split()) for a in answers[t]])
        sentences = np.mean([len(SENTENCE_END.findall(a.strip())) + 1 for a in answers[t]])
        stop = np.mean([stop_probability(policy, p, tags(t), s) for p, s in firsts])
        print(f"| {t:+.1f} | {words:.1f} | {sentences:.2f} | {stop:.3f} |")

    offline = Path(args.model) / "stages" / "offline" / "scored.jsonl"
    if offline.is_file() and args.train_rows > 0:
        stops, goes = [], []
        for row in read_table(offline)[: args.train_rows]:
            own = {name: row[f"z_{name}"] for name in policy.names}
            first = first_sentence(row["response"])
            p = stop_probability(policy, row["prompt"], own, first or row["response"].strip())
            (goes if first else stops).append(p)
        print(f"\nTraining rows under their own tags (first {args.train_rows}):\n")
        print("| rows | n | P(stop after sentence 1) |\n|---|---|---|")
        print(f"| stop there | {len(stops)} | {np.mean(stops):.3f} |")
        print(f"| go on | {len(goes)} | {np.mean(goes):.3f} |")


if __name__ == "__main__":
    main()

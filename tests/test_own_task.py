"""A user's own task end to end through the CLI, as the README walks it: their prompt file (with
held-out prompts of their own), three objectives (a builtin and two `py:` functions of theirs),
sample -> score -> train ric -> generate -> evaluate -> serve, and `/v1/score` answered for their
scorer. Only the first command that names the `py:` objectives runs them as typed; nothing later
asks for --trust-remote-code."""

import json

import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from steerable.cli import app
from steerable.serving.local import free_port
from steerable.trust import store_path

TRAIN = [
    "How do I water a cactus?",
    "Explain tides to a ten-year-old.",
    "What should I pack for a day hike?",
    "Name three birds.",
    "Why is the sky blue?",
    "How do I boil an egg?",
]
HELDOUT = ["Give me one tip for a job interview.", "What is a cloud made of?"]
SCORERS = '''
def plain(prompts, responses):
    """Plain words: minus the mean word length of each response."""
    lengths = [[len(word) for word in response.split()] or [0] for response in responses]
    return [-sum(word) / len(word) for word in lengths]


def loud(prompts, responses):
    """How many capital letters the answer shouts."""
    return [float(sum(c.isupper() for c in response)) for response in responses]
'''
OBJECTIVES = [
    "brief=builtin:brevity",
    "plain=py:my_objectives.py:plain",
    "loud=py:my_objectives.py:loud",
]
NAMES = ["brief", "plain", "loud"]
SAMPLING = ["--max-new-tokens", "6", "--batch-size", "16", "--seed", "0"]


def steerable(*args, cwd):
    """Run one CLI command from the user's folder (their relative paths), failing with its output."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_users_own_task_runs_end_to_end_without_the_trust_flag_after_training(
    tmp_path, tiny_path, monkeypatch
):
    rows = [{"prompt": p, "split": "train"} for p in TRAIN]
    rows += [{"prompt": p, "split": "heldout"} for p in HELDOUT]
    (tmp_path / "my_prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "my_objectives.py").write_text(SCORERS)

    # 1-2. sample the base model on the user's train prompts, score with the three objectives
    steerable("sample", "--model", tiny_path, "--prompts", "my_prompts.jsonl", "--n-per-prompt", 2,
              "--out", "answers.jsonl", *SAMPLING, cwd=tmp_path)  # fmt: skip
    answers = read_jsonl(tmp_path / "answers.jsonl")
    assert sorted({a["prompt"] for a in answers}) == sorted(TRAIN) and len(answers) == 2 * len(TRAIN)
    objective_flags = [flag for spec in OBJECTIVES for flag in ("-o", spec)]
    steerable("score", "answers.jsonl", "--out", "scored.jsonl", *objective_flags, cwd=tmp_path)
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert all({f"score_{n}" for n in NAMES} <= set(row) for row in scored)
    assert str(tmp_path / "my_objectives.py") in store_path().read_text()  # what the user typed is trusted

    # 3. train RiC on the user's prompts (its own offline sampling) with the same objectives
    steerable("train", "ric", "--model", tiny_path, "--prompts", "my_prompts.jsonl", "--output_dir", "mine",
              "--objectives", *OBJECTIVES, "--samples_per_prompt", 2, "--max_new_tokens", 6,
              "--num_epochs", 1, "--batch_size", 4, "--lora_r", 4, "--lora_alpha", 8,
              "--online_iterations", 0, cwd=tmp_path)  # fmt: skip
    manifest = json.loads((tmp_path / "mine" / "steerable.json").read_text())
    assert [o["name"] for o in manifest["rewards"]["objectives"]] == NAMES
    assert len(manifest["training"]["prompt_digests"]) == len(TRAIN)

    # 4. generate for the user's file, steered, with no --trust-remote-code
    steerable("generate", "--model", "mine", "--prefer", "brief=0.7,plain=0.2,loud=0.1",
              "--prompts", "my_prompts.jsonl", "--out", "steered.jsonl", *SAMPLING, cwd=tmp_path)  # fmt: skip
    steered = read_jsonl(tmp_path / "steered.jsonl")
    assert [r["prompt"] for r in steered] == TRAIN + HELDOUT
    assert all(set(r["targets"]) == set(NAMES) and isinstance(r["response"], str) for r in steered)

    # 5. evaluate on the user's held-out prompts, a coarse K = 3 lattice; training prompts are refused
    steerable("evaluate", "--method", "ric", "--model", "mine", "--prompts", "my_prompts.jsonl",
              "--resolution", 2, "--out", "eval", *SAMPLING, cwd=tmp_path)  # fmt: skip
    result = json.loads((tmp_path / "eval" / "result.json").read_text())
    assert result["names"] == NAMES and len(result["points"]) == 6  # the K = 3 lattice at resolution 2
    assert result["num_prompts"] == len(HELDOUT)
    leaked = tmp_path / "leaked.jsonl"
    leaked.write_text(json.dumps({"prompt": TRAIN[0]}) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        refused = CliRunner().invoke(app, ["evaluate", "--method", "ric", "--model", "mine", "--prompts",
                                           str(leaked), "--out", "eval2", *SAMPLING])  # fmt: skip
    assert refused.exit_code == 2 and TRAIN[0] in refused.output

    # 6. serve it (the real command; uvicorn's loop replaced by a client on the same app) and score
    answered = {}

    def run(server, sockets=None):
        client = TestClient(server.config.app)
        responses = ["HI THERE", "hello"]
        body = {"model": "mine", "prompt": HELDOUT[0], "responses": responses}
        answered["score"] = client.post("/v1/score", json=body)
        chat = {
            "model": "mine",
            "messages": [{"role": "user", "content": HELDOUT[1]}],
            "max_tokens": 4,
            "steering": {"weights": {"brief": 0.2, "plain": 0.3, "loud": 0.5}},
        }
        answered["chat"] = client.post("/v1/chat/completions", json=chat)

    monkeypatch.setattr(uvicorn.Server, "run", run)
    started = steerable("serve", "mine", "--port", free_port(), cwd=tmp_path)
    assert "403" not in started and "playground" in started
    score = answered["score"]
    assert score.status_code == 200, score.text
    raw = score.json()["raw"]
    assert [row[2] for row in raw] == [7.0, 0.0]  # the user's own scorer ran in the server
    chat = answered["chat"]
    assert chat.status_code == 200, chat.text
    assert set(chat.json()["steering"]["targets"]) == set(NAMES)

"""Trust of `py:` scorers: an objective the user typed runs as given and is recorded in this
machine's trust store, so what was made from it loads later without --trust-remote-code; a file
from elsewhere, or one that changed since, is refused with the reason and the fix."""

import json
import shutil
import sys

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from steerable import RewardSet, SteerableError
from steerable.cli import app
from steerable.data import write_table
from steerable.trust import file_sha256, store_path

ROWS = [
    {"prompt": "How do plants grow?", "response": "Plants grow from seeds using light, water and soil."},
    {"prompt": "Say hi", "response": "Hi!"},
    {"prompt": "Is rain good?", "response": "Rain is wonderful for gardens and rivers."},
]
PROMPTS, RESPONSES = [r["prompt"] for r in ROWS], [r["response"] for r in ROWS]
CHARS = "def f(prompts, responses):\n    return [float(len(r)) for r in responses]\n"


def score_with_typed_objective(tmp_path, name="positive"):
    """`steerable score -o NAME=py:chars.py:f` as a user types it: (the stats file, the scorer file)."""
    module = tmp_path / "chars.py"
    module.write_text(CHARS)
    data = write_table(tmp_path / "in.jsonl", ROWS)
    stats = tmp_path / "stats.json"
    args = ["score", data, "--out", tmp_path / "scored.jsonl", "--stats", stats]
    result = CliRunner().invoke(
        app, [str(a) for a in [*args, "-o", "brief=builtin:brevity", "-o", f"{name}=py:{module}:f"]]
    )
    assert result.exit_code == 0, result.output
    return stats, module


def model_with_typed_objective(tmp_path, tiny_ric):
    """A copy of the tiny RiC model whose objective 'positive' is the py: scorer typed in
    `score_with_typed_objective` (the same names, so the model's tags still apply)."""
    stats, module = score_with_typed_objective(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(tiny_ric[1], model)
    manifest = json.loads((model / "steerable.json").read_text())
    manifest["rewards"] = json.loads(stats.read_text())
    (model / "steerable.json").write_text(json.dumps(manifest))
    return model, module


def test_a_typed_objective_is_recorded_and_what_was_made_from_it_runs_without_the_flag(tmp_path):
    stats, module = score_with_typed_objective(tmp_path)
    digest = file_sha256(module)
    assert json.loads(store_path().read_text())["files"] == {str(module.resolve()): digest}
    entry = json.loads(stats.read_text())["objectives"][1]
    assert entry["spec"]["target"] == f"{module.resolve()}:f" and entry["sha256"] == digest
    loaded = RewardSet.load(stats)
    assert loaded.refusal is None
    assert loaded.score(PROMPTS, RESPONSES)[:, 1].tolist() == [float(len(r)) for r in RESPONSES]
    # a model manifest keeps the same entries, and passes them on to what is made from it
    again = RewardSet.from_dict(loaded.to_dict(), where="model/steerable.json")
    assert again["positive"].sha256 == digest and again.refusal is None


def test_a_stats_file_from_elsewhere_refuses_naming_the_file_the_reason_and_the_fix(tmp_path):
    stats, module = score_with_typed_objective(tmp_path)
    copied = tmp_path / "copied.json"
    shutil.copy(stats, copied)
    store_path().unlink()  # another machine: its store never saw the file
    loaded = RewardSet.load(copied)
    assert loaded["brief"].score(PROMPTS, RESPONSES).shape == (3,)  # builtins still run
    with pytest.raises(SteerableError) as refused:
        loaded.score(PROMPTS, RESPONSES)
    message = str(refused.value)
    for part in (
        str(copied),
        str(module.resolve()),
        "not trusted on this machine",
        "--trust-remote-code",
        "steerable score",
    ):
        assert part in message, part
    assert RewardSet.load(copied, trust_remote_code=True).score(PROMPTS, RESPONSES).shape == (3, 2)


def test_a_scorer_changed_since_it_was_trusted_refuses(tmp_path):
    stats, module = score_with_typed_objective(tmp_path)
    module.write_text(CHARS.replace("float(len(r))", "-float(len(r))"))
    with pytest.raises(
        SteerableError, match=rf"{module.resolve()} changed since it was trusted here.*--trust-remote-code"
    ):
        RewardSet.load(stats).score(PROMPTS, RESPONSES)
    # scoring with the new version trusts it, but what was made with the old one still asks
    RewardSet.from_specs([f"positive=py:{module}:f"])
    with pytest.raises(SteerableError, match=rf"{stats} was made with another version of {module.resolve()}"):
        RewardSet.load(stats).score(PROMPTS, RESPONSES)


def test_a_stats_file_without_a_recorded_hash_refuses(tmp_path):
    stats, module = score_with_typed_objective(tmp_path)
    data = json.loads(stats.read_text())
    del data["objectives"][1]["sha256"]
    with pytest.raises(SteerableError, match=f"no recorded hash of {module.resolve()}"):
        RewardSet.from_dict(data, where="old.json").score(PROMPTS, RESPONSES)


def test_a_module_scorer_is_found_and_trusted_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "my_scorers"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\n")
    (package / "chars.py").write_text(CHARS)
    monkeypatch.syspath_prepend(str(tmp_path))
    rewards = RewardSet.from_specs(["mine=py:my_scorers.chars:f"])
    assert rewards["mine"].sha256 == file_sha256(package / "chars.py")
    assert not (tmp_path / "imported").exists()  # recording trust ran none of the package's code
    store_path().unlink()
    rewards.fit_stats(rewards.score(PROMPTS, RESPONSES))
    assert "not trusted on this machine" in RewardSet.from_dict(rewards.to_dict()).refusal


def test_a_malformed_trust_store_is_one_error_naming_it(tmp_path):
    store_path().parent.mkdir(parents=True, exist_ok=True)
    store_path().write_text("{not json")
    (tmp_path / "chars.py").write_text(CHARS)
    with pytest.raises(SteerableError, match=rf"trust store {store_path()} cannot be read .*delete it"):
        RewardSet.from_specs([f"x=py:{tmp_path / 'chars.py'}:f"])


def test_the_store_lives_under_xdg_data_home_unless_steerable_home_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("STEERABLE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert store_path() == tmp_path / "data" / "steerable" / "trusted.json"
    monkeypatch.setenv("STEERABLE_HOME", str(tmp_path / "home"))
    assert store_path() == tmp_path / "home" / "trusted.json"


def test_serve_scores_with_a_trusted_scorer_and_answers_403_naming_the_flag_for_an_untrusted_one(
    tmp_path, tiny_ric
):
    from steerable.serving.api import ServedModel, create_app

    model, _ = model_with_typed_objective(tmp_path, tiny_ric)
    body = {"model": "model", "prompt": "Say hi", "responses": ["Hi!", "Hello there."]}

    served = ServedModel.load(str(model), max_batch=2, max_queue=8)
    answer = TestClient(create_app([served])).post("/v1/score", json=body)
    assert answer.status_code == 200 and [row[1] for row in answer.json()["raw"]] == [3.0, 12.0]

    store_path().unlink()
    served = ServedModel.load(str(model), max_batch=2, max_queue=8)
    answer = TestClient(create_app([served])).post("/v1/score", json=body)
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["code"] == "untrusted_scorer" and error["param"] == "model"
    assert "--trust-remote-code" in error["message"] and "not trusted on this machine" in error["message"]
    trusted = ServedModel.load(str(model), max_batch=2, max_queue=8, trust_remote_code=True)
    assert TestClient(create_app([trusted])).post("/v1/score", json=body).status_code == 200


def test_serve_says_at_start_that_an_untrusted_scorer_will_be_refused(tmp_path, tiny_ric, monkeypatch):
    import uvicorn

    from steerable.serving.local import free_port

    model, module = model_with_typed_objective(tmp_path, tiny_ric)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # start, then stop at once
    command = ["serve", str(model), "--port", str(free_port())]
    started = CliRunner().invoke(app, command)
    assert started.exit_code == 0, started.output
    assert "warning" not in started.output
    store_path().unlink()
    started = CliRunner().invoke(app, command)
    assert started.exit_code == 0, started.output
    warning = " ".join(started.output.split())
    assert warning.count("warning:") == 1 and "POST /v1/score will answer 403" in warning
    assert str(module.resolve()) in warning and "--trust-remote-code" in warning


@pytest.mark.parametrize(
    "code, message",
    [
        ("def f(prompts, responses):\n    raise ValueError('no model')\n", "raised ValueError: no model"),
        ("def f(prompts, responses):\n    return [float('nan')] * len(responses)\n", "gave nan for row 1"),
        ("def f(prompts, responses):\n    return [1.0]\n", "returned 1 scores for 2 pairs"),
    ],
)
def test_a_scorer_that_fails_at_serve_time_is_a_400_naming_the_objective(tmp_path, tiny_ric, code, message):
    from steerable.serving.api import ServedModel, create_app

    model, module = model_with_typed_objective(tmp_path, tiny_ric)
    module.write_text(code)
    served = ServedModel.load(str(model), max_batch=2, max_queue=8, trust_remote_code=True)
    body = {"model": "model", "prompt": "Say hi", "responses": ["Hi!", "Hello there."]}
    answer = TestClient(create_app([served])).post("/v1/score", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "scoring_failed" and error["param"] == "model"
    assert "objective 'positive'" in error["message"] and message in error["message"]


def test_a_scorer_whose_code_is_missing_says_so_and_not_to_pass_the_flag(tmp_path, monkeypatch):
    stats, module = score_with_typed_objective(tmp_path)
    module.unlink()
    refusal = RewardSet.load(stats).refusal
    assert f"{module.resolve()} is missing on this machine" in refusal
    assert "--trust-remote-code" not in refusal
    package = tmp_path / "my_scorers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "chars.py").write_text(CHARS)
    monkeypatch.syspath_prepend(str(tmp_path))
    rewards = RewardSet.from_specs(["mine=py:my_scorers.chars:f"])
    rewards.fit_stats(rewards.score(PROMPTS, RESPONSES))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])  # another machine
    refusal = RewardSet.from_dict(rewards.to_dict(), where="stats.json").refusal
    assert "module my_scorers.chars is missing on this machine" in refusal and "PYTHONPATH" in refusal
    assert "--trust-remote-code" not in refusal


def test_a_broken_trust_store_or_unreadable_scorer_stops_only_scoring(tmp_path, tiny_ric, monkeypatch):
    from steerable.policy import SteerablePolicy, load_manifest

    model, module = model_with_typed_objective(tmp_path, tiny_ric)
    store_path().write_text("{not json")
    load_manifest(model)  # generate and serve read the manifest first
    for trust in (False, True):
        policy = SteerablePolicy.from_pretrained(model, trust_remote_code=trust)
        assert len(policy.generate(["Say hi"], {"brief": 1.0, "positive": 0.0}, max_new_tokens=2)) == 1
    refusal = SteerablePolicy.from_pretrained(model).rewards.refusal
    assert f"trust store {store_path()} cannot be read" in refusal and "delete it" in refusal
    store_path().unlink()
    RewardSet.from_specs([f"positive=py:{module}:f"])  # trusted again

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("steerable.trust.file_sha256", unreadable)
    load_manifest(model)
    refusal = SteerablePolicy.from_pretrained(model).rewards.refusal
    assert f"{module.resolve()} cannot be read (Permission denied)" in refusal


def test_reading_a_manifest_checks_its_objectives_without_asking_whether_they_may_run(
    tmp_path, tiny_ric, monkeypatch
):
    from steerable.manifest import load_manifest

    model, _ = model_with_typed_objective(tmp_path, tiny_ric)

    def asked(*args):
        raise AssertionError("trust was decided while only reading the manifest")

    monkeypatch.setattr("steerable.objectives._refusal", asked)
    assert load_manifest(model).rewards["objectives"][1]["name"] == "positive"

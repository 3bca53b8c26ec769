"""What commands write: never over another command's model or stages, never over an input, one
writer per output (a lock), checked before any work, and nothing left behind by a refusal."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steerable import SteerableError
from steerable.cli import app
from steerable.data import load_pairs, write_table
from steerable.outputs import lock_path
from steerable.stages import file_digest

runner = CliRunner()
ROWS = [
    {"prompt": "How do plants grow?", "response": "Plants grow from seeds using light, water and soil."},
    {"prompt": "Say hi", "response": "Hi!"},
]
FAST = ["-o", "brief=builtin:brevity", "-o", "positive=builtin:sentiment"]
PAIRS = [
    {"prompt": f"Question {i}?", "chosen": "A clear and kind answer.", "rejected": "No."} for i in range(4)
]
TINY_RM = ["--num_epochs", "1", "--batch_size", "2", "--max_length", "32"]
TINY_RL = [
    "--max_steps", "1", "--batch_size", "2", "--num_generations", "2", "--max_completion_length", "4",
    "--prompt_limit", "2", "--lora_r", "4", "--lora_alpha", "8",
]  # fmt: skip


def invoke(args):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def refused(result, *phrases):
    """The command exited 2 with one line (after any progress bar) holding every phrase."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().split("\n")
    line = lines[-1][lines[-1].find("error:") :]
    assert len(lines) == 1 and line.startswith("error:"), result.output
    for phrase in phrases:
        assert phrase in line, result.output


@pytest.fixture
def ric_copy(tiny_ric, tmp_path) -> Path:
    """A copy of the tiny RiC model that a test may try to overwrite."""
    return Path(shutil.copytree(tiny_ric[1], tmp_path / "ric"))


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    """A reward model trained by `steerable train rm` (the small encoder, a few pairs)."""
    folder = tmp_path_factory.mktemp("rm")
    data = write_table(folder / "pairs.jsonl", PAIRS)
    result = invoke(["train", "rm", "--data", data, "--output_dir", folder / "rm", *TINY_RM])
    assert result.exit_code == 0, result.output
    return folder / "rm"


@pytest.fixture
def sleeper():
    """A live process that is not this one (to hold a lock)."""
    process = subprocess.Popen(["sleep", "600"])
    yield process
    process.kill()
    process.wait()


def hold(output, pid: int) -> Path:
    """Write the lock file of `output` as process `pid` on this host would."""
    lock = lock_path(output)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname()}) + "\n")
    return lock


# --- item 23: a training command never writes over what another made -----------------------


def test_train_rm_refuses_a_ric_model_directory_and_leaves_it_whole(ric_copy, tmp_path):
    before = file_digest(ric_copy)
    data = write_table(tmp_path / "pairs.jsonl", PAIRS)
    result = invoke(["train", "rm", "--data", data, "--output_dir", ric_copy, *TINY_RM])
    refused(result, f"{ric_copy} holds a RiC model (steerable.json, method ric)", "another --output_dir")
    assert file_digest(ric_copy) == before  # the tokenizer and everything else untouched


def test_train_moslim_refuses_a_ric_model_directory(ric_copy, tiny_ric, tiny_path):
    before = file_digest(ric_copy)
    args = ["train", "moslim", "--model", tiny_path, "--stats", tiny_ric[1], "--reward", "zscore"]
    result = invoke([*args, *TINY_RL, "--output_dir", ric_copy])
    refused(result, "holds a RiC model (steerable.json, method ric)")
    assert file_digest(ric_copy) == before


def test_train_ric_refuses_a_reward_model_directory(reward_model, make_tiny_ric_config):
    before = file_digest(reward_model)
    with pytest.raises(SteerableError, match=r"holds a reward model \(reward_model.json\)"):
        from steerable.methods.ric.recipe import train_ric

        train_ric(make_tiny_ric_config(reward_model))
    assert file_digest(reward_model) == before


def test_a_run_of_another_command_is_refused_and_the_same_command_resumes(reward_model, tmp_path):
    """Stages alone (no model yet, as an interrupted run leaves them) name their command; the
    command that made a directory may run in it again."""
    from steerable.stages import Stages

    Stages(tmp_path / "np", "train np-rm").start("np", {"a": 1})
    with pytest.raises(SteerableError, match=r"stages of a `steerable train np-rm` run .*run.json"):
        Stages(tmp_path / "np", "train ric")
    assert Stages(tmp_path / "np", "train np-rm").start("np", {"a": 1}).is_dir()
    data = reward_model.parent / "pairs.jsonl"
    again = invoke(["train", "rm", "--data", data, "--output_dir", reward_model, *TINY_RM])
    assert again.exit_code == 0, again.output  # the same command and settings: resumed
    refused(
        invoke(["train", "rm", "--data", data, "--output_dir", reward_model, "--seed", "1", *TINY_RM[:2]]),
        "other inputs",  # the same command with other settings: the stale stage is refused
    )


# --- item 24: one writer per output -----------------------------------------------------------


def test_a_second_writer_is_refused_while_the_first_lives_and_a_dead_ones_lock_is_taken_over(
    tmp_path, sleeper
):
    data = write_table(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    lock = hold(out, sleeper.pid)
    refused(invoke(["score", data, "--out", out, *FAST]), f"being written by process {sleeper.pid}")
    assert not out.exists() and lock.is_file()  # not this command's lock: left to its holder
    sleeper.kill()
    sleeper.wait()  # gone: the lock is stale
    taken = invoke(["score", data, "--out", out, *FAST])
    assert taken.exit_code == 0, taken.output
    assert len(load_pairs(out)) == 2 and not lock.exists()  # released when the command ended


def test_a_lock_in_this_process_name_that_it_does_not_hold_is_stale(tmp_path):
    """After a SIGKILL a restarted container has the same host name and often the same small pid:
    a lock recording this very process that this process did not take is a dead one's, taken
    over; a lock it does hold still refuses a second writer."""
    from steerable.outputs import output_lock

    out = tmp_path / "out.jsonl"
    lock = hold(out, os.getpid())
    with output_lock(out):
        assert json.loads(lock.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        second = pytest.raises(SteerableError, match=f"being written by process {os.getpid()}")
        with second, output_lock(out):
            pass
        assert lock.is_file()
    assert not lock.exists()


def test_train_refuses_a_second_writer_on_its_output_dir(tmp_path, sleeper):
    data = write_table(tmp_path / "pairs.jsonl", PAIRS)
    hold(tmp_path / "rm", sleeper.pid)
    result = invoke(["train", "rm", "--data", data, "--output_dir", tmp_path / "rm", *TINY_RM])
    refused(result, f"process {sleeper.pid}")
    assert not (tmp_path / "rm").exists()


def test_two_score_runs_on_one_out_the_second_is_refused(tmp_path):
    go = tmp_path / "go"
    module = tmp_path / "waiting.py"
    module.write_text(
        "import pathlib, time\n"
        "def f(prompts, responses):\n"
        f"    while not pathlib.Path({str(go)!r}).exists():\n"
        "        time.sleep(0.05)\n"
        "    return [1.0, 2.0]\n"
    )
    data = write_table(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    command = ["score", str(data), "--out", str(out), "-o", f"w=py:{module}:f"]
    first = subprocess.Popen(
        [sys.executable, "-m", "steerable.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not lock_path(out).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        second = invoke(["score", data, "--out", out, *FAST])
        refused(second, f"being written by process {first.pid}")
        go.touch()
        output = first.communicate(timeout=120)[0]
    finally:
        first.kill()
    assert first.returncode == 0, output
    assert [r["score_w"] for r in load_pairs(out)] == [1.0, 2.0]  # the first run's rows, whole


def test_under_a_launch_one_process_takes_the_lock_and_every_process_sees_a_refusal(tmp_path, sleeper):
    """`accelerate launch` runs the command in every process: the main one locks, the others
    neither lock nor are refused by their own launch's lock, and all stop when it is refused."""
    script = tmp_path / "rank.py"
    script.write_text(
        "import os, sys\n"
        "from steerable.errors import SteerableError\n"
        "from steerable.outputs import lock_path, output_lock\n"
        "free, held = sys.argv[1:]\n"
        "with output_lock(free):\n"
        "    print('free', os.environ['RANK'], lock_path(free).exists(), flush=True)\n"
        "try:\n"
        "    with output_lock(held):\n"
        "        print('held: not refused', flush=True)\n"
        "except SteerableError as err:\n"
        "    print('refused:', err, flush=True)\n"
    )
    hold(tmp_path / "held", sleeper.pid)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    ranks = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "free"), str(tmp_path / "held")],
            env={**os.environ, **launch, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [rank.communicate(timeout=300)[0] for rank in ranks]
    assert "free 0 True" in outputs[0]  # the main process holds the launch's lock...
    assert "free 1" in outputs[1]  # ...and the other process is not refused by it
    for rank, output in zip(ranks, outputs, strict=True):
        assert rank.returncode == 0, output
        assert f"refused: {tmp_path / 'held'} is being written by process {sleeper.pid}" in output, output
    assert not lock_path(tmp_path / "free").exists()


# --- item 25: outputs are checked first, never an input, nothing left behind -----------------


def test_sample_and_score_refuse_an_output_that_is_their_input(tmp_path, monkeypatch):
    import steerable.defaults

    monkeypatch.setattr(steerable.defaults, "load_causal_lm", never("loaded a model"))
    prompts = write_table(tmp_path / "prompts.jsonl", [{"prompt": "Hi", "id": 7}])
    before = prompts.read_bytes()
    refused(invoke(["sample", "--prompts", prompts, "--out", prompts]), "is the input --prompts")
    data = write_table(tmp_path / "in.jsonl", ROWS)
    spelled_otherwise = tmp_path / "." / "in.jsonl"
    refused(invoke(["score", data, "--out", spelled_otherwise, *FAST]), "is the input DATA")
    assert prompts.read_bytes() == before and load_pairs(data) == ROWS


def never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} before checking --out")

    return fail


def test_sample_and_evaluate_check_out_before_generating(tmp_path, monkeypatch, ric_copy, sleeper):
    import steerable.defaults
    import steerable.evaluation.evaluate

    monkeypatch.setattr(steerable.defaults, "load_causal_lm", never("loaded a model"))
    monkeypatch.setattr(steerable.evaluation.evaluate, "evaluate", never("evaluated"))
    (tmp_path / "file").write_text("")
    sample = ["sample", "--model", "tiny", "--out"]
    refused(invoke([*sample, tmp_path / "file" / "out.jsonl"]), "cannot write")
    refused(invoke([*sample, tmp_path / "out.txt"]), "unknown format '.txt'")
    hold(tmp_path / "busy.jsonl", sleeper.pid)
    refused(invoke([*sample, tmp_path / "busy.jsonl"]), f"process {sleeper.pid}")
    evaluate = ["evaluate", "--model", ric_copy, "--out"]
    refused(invoke([*evaluate, tmp_path / "file"]), "is a file")
    refused(invoke([*evaluate, ric_copy]), "is the input --model")
    hold(tmp_path / "eval", sleeper.pid)
    refused(invoke([*evaluate, tmp_path / "eval"]), f"process {sleeper.pid}")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["file", "ric"]


def test_a_refused_run_leaves_no_started_stage_behind(tmp_path, tiny_path):
    module = tmp_path / "failing.py"
    module.write_text("def f(prompts, responses):\n    raise ValueError('no')\n")
    data = write_table(tmp_path / "data.jsonl", ROWS)
    out = tmp_path / "runs" / "ric"
    args = ["train", "ric", "--model", tiny_path, "--data", data, "--output_dir", out]
    result = invoke([*args, "--objectives", "brief=builtin:brevity", f"x=py:{module}:f"])
    refused(result, "raised ValueError: no")
    assert not list(tmp_path.rglob("started.json")) and not (tmp_path / "runs").exists()


def test_export_refuses_its_own_model_directory_and_cleans_a_killed_exports_folder(ric_copy, tmp_path):
    before = file_digest(ric_copy)
    refused(invoke(["export", ric_copy, ric_copy]), "is the input MODEL")
    refused(invoke(["export", ric_copy, ric_copy / "merged"]), "is inside the input MODEL")
    assert file_digest(ric_copy) == before
    # an export killed mid-save leaves its partial folder; the next export into OUT removes it
    killed = tmp_path / ".merged.partial"
    killed.mkdir()
    (killed / "model.safetensors").write_text("half")
    result = invoke(["export", ric_copy, tmp_path / "merged"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "merged" / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

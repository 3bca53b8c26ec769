import json

import pytest

from steerable import SteerableError
from steerable.stages import Stages, file_digest, fingerprint, tidy_on_failure


def test_fingerprint_ignores_key_order_and_sees_values():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_file_digest_is_by_content(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("one\n")
    before = file_digest(path)
    path.write_text("two\n")
    assert file_digest(path) != before
    folder = tmp_path / "dir"
    folder.mkdir()
    (folder / "x").write_text("1")
    first = file_digest(folder)
    (folder / "x").write_text("2")
    assert file_digest(folder) != first


def test_a_finished_stage_is_reused_and_a_stale_one_refused(tmp_path):
    stages = Stages(tmp_path, "train ric")
    calls = []

    def work(folder):
        calls.append(1)
        (folder / "out.txt").write_text("result")
        return {"rows": 3}

    assert stages.run("offline", {"lr": 1, "data": "abc"}, work) == {"rows": 3}
    assert stages.run("offline", {"data": "abc", "lr": 1}, work) == {"rows": 3}
    assert len(calls) == 1
    with pytest.raises(SteerableError, match=r"other inputs \(lr differ.*delete .*stages/offline"):
        stages.run("offline", {"lr": 2, "data": "abc"}, work)
    assert len(calls) == 1
    with pytest.raises(SteerableError, match=r"other inputs \(lr differ"):
        stages.run("offline", {"lr": 1.0, "data": "abc"}, work)  # the record would hash apart


def test_a_config_records_the_same_stage_whether_a_float_was_written_3_or_3_0():
    from steerable.methods.ric.recipe import RiCConfig, stage_plan

    written_int = RiCConfig(num_epochs=3, learning_rate=1)
    written_float = RiCConfig(num_epochs=3.0, learning_rate=1.0)
    assert written_int.num_epochs == 3.0 and type(written_int.num_epochs) is float
    assert type(written_int.lora_r) is int  # int fields stay ints
    assert fingerprint(stage_plan(written_int)) == fingerprint(stage_plan(written_float))


def test_partial_work_is_kept_for_the_same_inputs_and_discarded_for_others(tmp_path):
    stages = Stages(tmp_path, "train ric")
    folder = stages.start("sft", {"lr": 1})
    (folder / "checkpoint-2").mkdir()
    assert (stages.start("sft", {"lr": 1}) / "checkpoint-2").is_dir()  # same inputs: resume from it
    with pytest.warns(UserWarning, match="partial work of other inputs"):
        folder = stages.start("sft", {"lr": 2})
    assert not (folder / "checkpoint-2").exists()
    assert json.loads((folder / "started.json").read_text())["inputs"] == {"lr": 2}
    stages.finish("sft", {"lr": 2}, {"steps": 4})
    assert stages.done("sft", {"lr": 2}) == {"steps": 4}


def test_a_corrupt_record_is_one_clear_error(tmp_path):
    stages = Stages(tmp_path, "train ric")
    stages.path("x").mkdir(parents=True)
    (stages.path("x") / "done.json").write_text("{oops")
    with pytest.raises(SteerableError, match="corrupt"):
        stages.done("x", {})


def test_a_failed_command_removes_the_stages_it_began_without_work_and_keeps_partial_work(tmp_path):
    stages = Stages(tmp_path / "run", "train ric")
    with pytest.raises(RuntimeError), tidy_on_failure():
        stages.start("offline", {})
        (stages.start("sft", {}) / "checkpoint-1").mkdir()
        raise RuntimeError("interrupted")
    assert not stages.path("offline").exists()  # nothing done there: gone
    assert (stages.path("sft") / "checkpoint-1").is_dir()  # partial work: kept, to resume from
    with pytest.raises(RuntimeError), tidy_on_failure():
        Stages(tmp_path / "new", "train ric").start("offline", {})
        raise RuntimeError("refused")
    assert not (tmp_path / "new").exists()  # a run that did nothing leaves nothing
    with tidy_on_failure():  # a command that succeeds keeps what it started
        Stages(tmp_path / "ok", "train ric").start("offline", {})
    assert (tmp_path / "ok" / "stages" / "offline" / "started.json").is_file()


def test_stages_started_outside_a_command_are_not_kept_in_memory(tmp_path):
    """Through the Python API (no `tidy_on_failure`) nothing would undo them: what a process
    starts is recorded only inside a command, so a long-lived process does not collect paths."""
    from steerable import stages as module

    for i in range(3):
        Stages(tmp_path / str(i), "train ric").start("offline", {})
    assert module._began.get() is None
    with tidy_on_failure():
        Stages(tmp_path / "cmd", "train ric").start("offline", {})
        assert tmp_path / "cmd" / "stages" / "offline" in module._began.get()
    assert module._began.get() is None


def test_stages_record_their_command_and_refuse_another(tmp_path):
    Stages(tmp_path, "train np-rm").start("np", {})
    assert json.loads((tmp_path / "stages" / "run.json").read_text()) == {"command": "train np-rm"}
    with pytest.raises(SteerableError, match=r"holds the stages of a `steerable train np-rm` run"):
        Stages(tmp_path, "compare")
    (tmp_path / "steerable.json").write_text(json.dumps({"method": "np-dpo"}))
    with pytest.raises(SteerableError, match=r"holds a NP-DPO model \(steerable.json, method np-dpo\)"):
        Stages(tmp_path, "train np-rm")

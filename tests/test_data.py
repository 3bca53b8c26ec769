import json
import os
import stat
from pathlib import Path

import pytest

from steerable import SteerableError
from steerable.data import load_pairs, load_prompts, write_table
from steerable.data.loading import split_transcript
from steerable.io import atomic_write_text

ROWS = [{"prompt": "Hi?", "response": "Hello."}, {"prompt": "Why?", "response": "Because."}]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet", ".json"])
def test_write_then_load_each_format(tmp_path, suffix):
    path = write_table(tmp_path / f"t{suffix}", ROWS)
    assert load_pairs(path) == ROWS


def test_load_saved_hf_dataset(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "d")
    assert load_pairs(tmp_path / "d") == ROWS
    with pytest.raises(SteerableError, match="no split 'test'"):
        load_pairs(tmp_path / "d", split="test")


def test_hh_rlhf_transcripts_expand_to_two_rows(tmp_path):
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant: Goodbye, take care.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant: Whatever.",
    }
    path = write_table(tmp_path / "hh.jsonl", [row])
    pairs = load_pairs(path)
    assert [p["label"] for p in pairs] == ["chosen", "rejected"]
    assert pairs[0]["response"] == "Goodbye, take care." and pairs[1]["response"] == "Whatever."
    assert pairs[0]["prompt"].endswith("Bye?\n\nAssistant:")
    assert split_transcript("no turns") == ("no turns", "")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a", "answer": "b"}\n', "missing columns.*found \\['answer', 'prompt'\\]"),
        ('{"prompt": "a", "response": "b"}\n{"prompt": "", "response": "b"}\n', "row 1: 'prompt' is empty"),
        ('{"prompt": "a", "response": "   "}\n', "row 0: 'response' is empty"),
        ('{"prompt": "a", "response": null}\n', "row 0: 'response' is empty or not text \\(missing\\)"),
        ('{"prompt": "a", "response": "b"}\n{"prompt": "a", "resp\n', "line 2: not valid JSON"),
        ("[1, 2]\n", "expected a JSON object"),
        ('{"chosen": "no turns", "rejected": "x"}\n', "not an HH-RLHF transcript"),
    ],
)
def test_bad_tables_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(SteerableError, match=message):
        load_pairs(path)


def test_unreadable_inputs(tmp_path):
    with pytest.raises(SteerableError, match="does not exist"):
        load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.xlsx").write_text("?")
    with pytest.raises(SteerableError, match="unknown format"):
        load_pairs(tmp_path / "x.xlsx")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(SteerableError, match="cannot read"):
        load_pairs(tmp_path / "bad.parquet")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(SteerableError, match="no rows"):
        load_pairs(tmp_path / "empty.jsonl")


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(TypeError):
        write_table(target, [{"prompt": object()}])
    assert list(tmp_path.iterdir()) == []


def test_embedded_prompt_set():
    train, heldout = load_prompts("train"), load_prompts("heldout")
    assert len(train) + len(heldout) == len(load_prompts("all")) >= 300
    assert len(heldout) >= 60
    assert not set(train) & set(heldout)
    assert len(set(train)) == len(train)
    assert load_prompts("heldout", limit=3) == heldout[:3]
    with pytest.raises(SteerableError, match="unknown prompt split"):
        load_prompts("validation")
    assert all(json.dumps(p).isascii() for p in train)


def test_csv_answers_that_look_like_numbers_stay_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("prompt,response,score\n1e3,42,3\n2,7,4\n")
    rows = load_pairs(path)
    assert [(r["prompt"], r["response"]) for r in rows] == [("1e3", "42"), ("2", "7")]
    path.write_text("prompt,response\nIs it?,True\nNA,False\n")
    assert [(r["prompt"], r["response"]) for r in load_pairs(path)] == [("Is it?", "True"), ("NA", "False")]
    assert [r["score"] for r in rows] == [3, 4]  # other columns keep their types


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_respects_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_atomic_write_syncs_the_file_before_renaming_it(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "f.txt", "x")
    (synced, tmp), (renamed, target), (synced_dir, folder) = events
    assert (synced, renamed, synced_dir) == ("fsync", "replace", "fsync")
    assert Path(tmp).parent == tmp_path and Path(tmp).name.endswith(".tmp")
    assert target == str(tmp_path / "f.txt") and folder == str(tmp_path)
    assert (tmp_path / "f.txt").read_text() == "x"


def test_unwritable_destination_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SteerableError, match="cannot write .*file/out.jsonl"):
        write_table(tmp_path / "file" / "out.jsonl", ROWS)

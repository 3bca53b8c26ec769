import json
import os
import stat
from pathlib import Path

import pytest

from steerable import SteerableError
from steerable.data import load_pairs, load_prompts, write_table
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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a", "answer": "b"}\n', "missing columns.*found \\['answer', 'prompt'\\]"),
        ('{"prompt": "a", "response": "b"}\n{"prompt": "", "response": "b"}\n', "line 2: 'prompt' is empty"),
        ('{"prompt": "a", "response": "   "}\n', "line 1: 'response' is empty"),
        ('{"prompt": "a", "response": null}\n', "line 1: 'response' is empty or not text \\(missing\\)"),
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


# --- preference layouts and bad rows, named by where they are in the file -----------------

HH = {
    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant: Goodbye.",
    "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant: Whatever.",
}


def test_prompt_chosen_rejected_pairs_expand_to_two_rows_like_hh(tmp_path):
    """`score` reads the layout `train rm` trains on: each pair is two rows, chosen then rejected."""
    rows = [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go.", "id": 7}]
    pairs = load_pairs(write_table(tmp_path / "pairs.jsonl", rows))
    assert pairs == [
        {"id": 7, "prompt": "Hi", "response": "Hello!", "label": "chosen", "pair": 0},
        {"id": 7, "prompt": "Hi", "response": "Go.", "label": "rejected", "pair": 0},
    ]


@pytest.mark.parametrize(
    ("name", "content", "place"),
    [
        # a blank line is still a line of the file
        ("t.jsonl", '{"prompt": "a", "response": "b"}\n\n{"prompt": "a", "response": ""}\n', "line 3"),
        ("t.csv", "prompt,response\na,b\na,\n", "line 3"),  # the header is line 1
        ("t.json", '[{"prompt": "a", "response": "b"}, {"prompt": "", "response": "b"}]', "record 2"),
        # HH rows are two rows each once read: the error names the file's line, not the expanded row
        (
            "hh.jsonl",
            json.dumps(HH) + "\n" + json.dumps({**HH, "rejected": HH["rejected"][:-9]}) + "\n",
            "line 2",
        ),
    ],
)
def test_a_bad_row_is_named_by_its_one_based_place_in_the_file(tmp_path, name, content, place):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(SteerableError, match=f"{name}, {place}: "):
        load_pairs(path)


def test_a_bad_parquet_row_is_named_by_its_one_based_row(tmp_path):
    path = write_table(tmp_path / "t.parquet", [ROWS[0], {"prompt": "a", "response": " "}])
    with pytest.raises(SteerableError, match="t.parquet, row 2: 'response' is empty"):
        load_pairs(path)


def test_every_bad_row_is_listed_in_one_error_up_to_a_cap(tmp_path):
    rows = [ROWS[0], {"prompt": "", "response": "b"}, ROWS[1], {"prompt": "a", "response": None}]
    with pytest.raises(SteerableError) as caught:
        load_pairs(write_table(tmp_path / "few.jsonl", rows))
    message = str(caught.value)
    assert "2 bad rows" in message and "line 2: 'prompt' is empty" in message
    assert "line 4: 'response' is empty" in message and "\n" not in message
    many = [{"prompt": "a", "response": ""}] * 25
    with pytest.raises(SteerableError, match="25 bad rows: line 1: .*line 20: .*; and 5 more") as caught:
        load_pairs(write_table(tmp_path / "many.jsonl", many))
    assert "line 21" not in str(caught.value)


def test_hh_transcripts_that_part_before_the_last_turn_split_where_they_part(tmp_path):
    """Transcripts that diverge at an earlier assistant turn: the common start is the prompt and
    each rest, with its later turns, the response."""
    row = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye?\n\nAssistant: Goodbye.",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.",
    }
    pairs = load_pairs(write_table(tmp_path / "hh.jsonl", [row]))
    assert [p["prompt"] for p in pairs] == ["\n\nHuman: Hi\n\nAssistant:"] * 2
    assert [p["response"] for p in pairs] == [
        "Hello!\n\nHuman: Bye?\n\nAssistant: Goodbye.",
        "Go away.",
    ]

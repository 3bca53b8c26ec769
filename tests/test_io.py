import json
import os
import stat
import threading

import pytest

from steerable.io import atomic_write_text


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_a_plain_opens_mode_without_touching_the_umask(tmp_path, monkeypatch, umask):
    """Setting the umask to read it would, for a moment, give every file another thread creates
    mode 0666; the write must leave the process umask alone."""
    old = os.umask(umask)
    try:

        def no_umask(mask):
            raise AssertionError(f"os.umask({mask:o}) called from thread {threading.get_ident()}")

        monkeypatch.setattr(os, "umask", no_umask)
        path = atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert path.read_text() == "x" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_json_output_is_one_json_document_and_a_jsonl_output_one_row_a_line(tmp_path):
    """`score --out x.json` (and `sample`, and every other table output: they all go through
    write_table) must write what json.load reads, not JSON Lines under a .json name."""
    from typer.testing import CliRunner

    from steerable.cli import app
    from steerable.data import load_pairs, write_table

    rows = [{"prompt": "Say hi", "response": "Hi!"}, {"prompt": "Is rain good?", "response": "Rain is nice."}]
    data = write_table(tmp_path / "in.jsonl", rows)
    assert [json.loads(line) for line in data.read_text().splitlines()] == rows
    out = tmp_path / "scored.json"
    result = CliRunner().invoke(
        app, ["score", str(data), "--out", str(out), "-o", "brief=builtin:brevity", "-o", "n=builtin:length"]
    )
    assert result.exit_code == 0, result.output
    scored = json.loads(out.read_text())
    assert isinstance(scored, list) and [(r["prompt"], r["score_brief"]) for r in scored] == [
        ("Say hi", -1.0),
        ("Is rain good?", -3.0),
    ]
    assert load_pairs(out) == scored  # and it reads back


def _fitted_rewards():
    import numpy as np

    from steerable import RewardSet

    rewards = RewardSet.from_specs(["brief=builtin:brevity", "n=builtin:length"])
    rewards.fit_stats(np.array([[-1.0, 1.0], [-3.0, 3.0]]))
    return rewards


@pytest.mark.parametrize(
    ("version", "why"),
    [
        (2, "a later steerable wrote it; upgrade steerable"),
        (0, "an earlier steerable wrote it, and this one no longer reads it; retrain it"),
        ("1.5", "not a format version (a whole number); retrain it"),
        (None, "not a format version (a whole number); retrain it"),
        (True, "not a format version (a whole number); retrain it"),
    ],
)
def test_a_model_directory_of_another_or_unknown_format_is_refused_in_one_line(tmp_path, version, why):
    """The refusal says why by case: only a later version is cured by upgrading."""
    from dataclasses import asdict

    from steerable import SteerableError
    from steerable.manifest import PolicyManifest, load_manifest

    manifest = asdict(PolicyManifest(method="ric", base_model="tiny", rewards=_fitted_rewards().to_dict()))
    (tmp_path / "steerable.json").write_text(json.dumps(manifest))
    assert load_manifest(tmp_path).format_version == 1
    # a newer steerable may also have added fields: the version is what the message names
    (tmp_path / "steerable.json").write_text(json.dumps({**manifest, "format_version": version, "later": 1}))
    with pytest.raises(SteerableError, match=rf"format_version {version!r}.*reads format_version 1") as err:
        load_manifest(tmp_path)
    assert str(tmp_path / "steerable.json") in str(err.value) and "\n" not in str(err.value)
    assert why in str(err.value) and ("upgrade" in str(err.value)) == (version == 2)


def test_statistics_of_a_newer_format_are_refused_in_one_line(tmp_path):
    from steerable import RewardSet, SteerableError

    data = _fitted_rewards().to_dict()
    (tmp_path / "stats.json").write_text(json.dumps({**data, "format_version": 7}))
    with pytest.raises(SteerableError, match=r"stats.json has format_version 7.*reads format_version 1"):
        RewardSet.load(tmp_path / "stats.json")

"""Real runs on the embedded SmolLM2 default (slow: converts the GGUF once, then samples)."""

import pytest
from typer.testing import CliRunner

from steerable import SteerableError
from steerable.cli import app
from steerable.data import load_pairs


def test_tampered_gguf_is_refused(monkeypatch):
    from steerable import defaults

    monkeypatch.setattr(defaults, "GGUF_SHA256", "0" * 64)
    with pytest.raises(SteerableError, match="expected 0000"):
        defaults.gguf_path()


@pytest.mark.slow
def test_sample_and_score_the_default(tmp_path):
    runner = CliRunner()
    samples, scored = tmp_path / "samples.jsonl", tmp_path / "scored.jsonl"
    result = runner.invoke(
        app, ["sample", "--split", "heldout", "--limit", "6", "--max-new-tokens", "24", "--out", str(samples)]
    )
    assert result.exit_code == 0, result.output
    rows = load_pairs(samples)
    assert len(rows) == 6 and all(r["response"].strip() for r in rows)
    result = runner.invoke(app, ["score", str(samples), "--out", str(scored)])
    assert result.exit_code == 0, result.output
    out = load_pairs(scored)
    assert {"score_brief", "score_positive", "z_brief", "z_positive"} <= set(out[0])
    assert all(-1 <= r["score_positive"] <= 1 for r in out)
    assert all(r["score_brief"] == -len(r["response"].split()) for r in out)

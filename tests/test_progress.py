"""What a long run shows while it works: bars that move within a batch, where Ctrl-C stopped and
how to resume, a resumed stage saying so, and the cost of a run said (and asked) before it
starts."""

import json

import pytest
import tqdm.auto
from typer.testing import CliRunner

from steerable import cost, rates
from steerable.cli import app
from steerable.defaults import load_causal_lm
from steerable.generation import SamplingConfig, format_chat, generate_texts
from steerable.stages import Stages

runner = CliRunner()
TINY_RIC = [
    "--objectives", "brief=builtin:brevity", "positive=builtin:sentiment", "--prompt_limit", "4",
    "--samples_per_prompt", "1", "--max_new_tokens", "4", "--num_epochs", "1", "--batch_size", "4",
    "--lora_r", "4", "--lora_alpha", "8", "--online_iterations", "0",
]  # fmt: skip


class RecordingBar(tqdm.auto.tqdm):
    """tqdm that keeps every update's size: the bars under test are opened as tqdm.auto.tqdm."""

    updates: list = []

    def update(self, n=1):
        RecordingBar.updates.append(n)
        return super().update(n)


@pytest.fixture
def recorded(monkeypatch):
    RecordingBar.updates = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    return RecordingBar.updates


def test_the_generation_bar_moves_at_every_decoding_step_within_one_batch(tiny_path, recorded):
    model, tokenizer = load_causal_lm(tiny_path, device="cpu")
    texts = format_chat(tokenizer, ["Name a fruit.", "What is rain?", "Describe a cat."])
    sampling = SamplingConfig(max_new_tokens=6, batch_size=8, temperature=0.7, seed=0)
    generate_texts(model, tokenizer, texts, sampling, progress=True)
    # one batch of 3 rows: the bar moved by 3 token slots at each decoding step, then to the end
    ticks = [n for n in recorded if n == 3]
    assert len(ticks) >= 2
    assert sum(recorded) == 3 * 6


def test_a_shown_generation_records_its_rate_and_a_quiet_one_does_not(tiny_path, monkeypatch):
    model, tokenizer = load_causal_lm(tiny_path, device="cpu")
    texts = format_chat(tokenizer, ["Name a fruit.", "What is rain?"])
    sampling = SamplingConfig(max_new_tokens=4, batch_size=8, temperature=0.7, seed=0)
    monkeypatch.setattr(rates, "MIN_SECONDS", 0.0)  # the tiny model is faster than a real rate
    generate_texts(model, tokenizer, texts, sampling, progress=False)  # as a server answers
    assert not rates.rates_path().exists()
    generate_texts(model, tokenizer, texts, sampling, progress=True)
    (rate,) = json.loads(rates.rates_path().read_text()).values()
    assert rate["model"] == "tiny-llama" and rate["device"] == cost.this_device()
    assert 2 <= rate["tokens"] <= 2 * 4 and rate["tokens_per_second"] > 0


def test_a_stage_bar_is_moved_by_the_generation_inside_it_not_replaced(tiny_path, recorded):
    from steerable.progress import stage_bar

    model, tokenizer = load_causal_lm(tiny_path, device="cpu")
    texts = format_chat(tokenizer, ["Name a fruit.", "What is rain?"])
    sampling = SamplingConfig(max_new_tokens=5, batch_size=8, temperature=0.7, seed=0)
    with stage_bar(2 * 2 * 5, "evaluating", "tok") as bar:
        generate_texts(model, tokenizer, texts, sampling, progress=False)
        assert bar.n == 2 * 5
        generate_texts(model, tokenizer, texts, sampling, progress=False)
        assert bar.n == 2 * 2 * 5
    assert len(recorded) >= 4  # per step, in both calls


def test_ctrl_c_in_a_stage_says_where_it_stopped_and_how_to_resume(tiny_path, tmp_path, monkeypatch):
    import steerable.methods.ric.recipe as recipe

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe, "generate_texts", interrupted)
    out = tmp_path / "ric"
    result = runner.invoke(app, ["train", "ric", "--model", tiny_path, *TINY_RIC, "--output_dir", str(out)])
    assert result.exit_code == 130, result.output
    said = " ".join(result.output.split())
    assert "stopped (Ctrl-C) in stage offline" in said
    assert "run the same command again to resume" in said
    assert not (out / "stages" / "offline").exists()  # it held no work yet: tidied away


def test_ctrl_c_outside_any_stage_still_exits_130(tmp_path, monkeypatch):
    import steerable.data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(steerable.data, "load_prompts", interrupted)
    result = runner.invoke(app, ["sample", "--model", "tiny", "--out", str(tmp_path / "s.jsonl")])
    assert result.exit_code == 130, result.output
    assert "run the same command again" in " ".join(result.output.split())


def test_a_resumed_run_says_which_stages_it_skips(tmp_path, capsys):
    first = Stages(tmp_path, "test")
    first.run("a", {"x": 1}, lambda folder: {})
    assert "resuming" not in capsys.readouterr().err  # nothing to resume the first time
    again = Stages(tmp_path, "test")
    again.run("a", {"x": 1}, lambda folder: {})
    again.run("b", {"x": 1}, lambda folder: {})
    again.run("c", {"x": 1}, lambda folder: {})
    err = capsys.readouterr().err
    assert f"resuming test in {tmp_path}: a done, starting b" in err
    assert err.count("resuming") == 1  # b, finished by this run, is not news when c starts


def test_a_resumed_trainer_says_from_which_step(capsys):
    from types import SimpleNamespace

    from steerable.training import StageBar

    bar = StageBar("sft")
    state = SimpleNamespace(is_world_process_zero=True, max_steps=20, global_step=12)
    bar.on_train_begin(None, state, None)
    bar.training_bar.close()
    assert "resuming sft from step 12 of 20" in capsys.readouterr().err


def test_generation_rates_are_recorded_and_used_for_the_estimate():
    plan = cost.Plan(generations=100, max_new_tokens=50, model="some-model", what="100 prompts")
    unmeasured = cost.estimate(plan, device="cpu x2 threads")
    assert unmeasured.measured is None
    assert "not measured on this machine yet" in unmeasured.line()
    assert unmeasured.seconds == pytest.approx(100 * 50 / cost.DEFAULT_TOKENS_PER_SECOND["cpu"])

    rates.record_rate("/somewhere/some-model", "cpu x2 threads", tokens=1000, seconds=4.0)
    rates.record_rate("/somewhere/some-model", "cpu x2 threads", tokens=10, seconds=0.1)  # too short
    stored = json.loads(rates.rates_path().read_text())
    assert stored["some-model on cpu x2 threads"]["tokens_per_second"] == pytest.approx(250.0)
    measured = cost.estimate(plan, device="cpu x2 threads")
    assert measured.seconds == pytest.approx(100 * 50 / 250.0)
    assert "250 tokens/s, measured for some-model" in measured.line()
    assert "100 answers (100 prompts)" in measured.line()


def test_the_lattice_note_offers_a_coarser_resolution():
    assert cost.grid_points(3, 10) == 66
    assert cost.coarser_lattice(2, 10) is None  # K = 2 is a line: cheap at any resolution
    note = cost.coarser_lattice(3, 10)
    assert "66 grid points" in note and "--resolution 5 gives 21" in note


def long_plan(generations):
    """A sample command long enough to ask: rates say this machine makes a token in 100 s."""
    rates.record_rate("tiny-llama", cost.this_device(), tokens=1, seconds=100.0)
    return ["sample", "--model", "tiny", "--limit", str(generations), "--max-new-tokens", "2"]


@pytest.mark.parametrize(("tty", "answer", "yes", "started"), [
    (True, "n\n", False, False),
    (True, "y\n", False, True),
    (True, "", True, True),
    (False, "", False, True),
])  # fmt: skip
def test_a_long_run_asks_in_an_interactive_shell_unless_yes(
    tmp_path, monkeypatch, tiny_path, tty, answer, yes, started
):
    monkeypatch.setattr(cost, "interactive", lambda: tty)
    out = tmp_path / "s.jsonl"
    args = [*long_plan(4), "--out", str(out), *(["--yes"] if yes else [])]
    result = runner.invoke(app, args, input=answer)
    said = " ".join(result.output.split())
    assert "this run generates 4 answers (4 prompts x 1 per prompt) of up to 2 tokens" in said
    assert "at most about 14 min of generation at 0.01 tokens/s, measured for tiny-llama" in said
    assert ("start it?" in said) == (tty and not yes)
    assert out.exists() == started
    assert result.exit_code == (0 if started else 1), result.output
    if not started:
        assert "not started (--yes starts without asking)" in said


@pytest.mark.parametrize(("seconds", "said"), [(0.5, False), (20.0, True)])
def test_a_run_under_the_threshold_goes_on_without_asking(tmp_path, monkeypatch, tiny_path, seconds, said):
    """Estimates of 4 s (nothing said) and of 160 s (said, not asked: under ten minutes)."""
    monkeypatch.setattr(cost, "interactive", lambda: True)
    rates.record_rate("tiny-llama", cost.this_device(), tokens=1 * 8, seconds=seconds * 8)
    out = tmp_path / "s.jsonl"
    result = runner.invoke(app, ["sample", "--model", "tiny", "--limit", "2", "--max-new-tokens", "4",
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert ("this run generates 2 answers" in " ".join(result.output.split())) == said
    assert "start it?" not in result.output


def test_train_ric_prints_its_cost_and_takes_yes(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "interactive", lambda: True)
    rates.record_rate("tiny-llama", cost.this_device(), tokens=1, seconds=100.0)
    args = ["train", "ric", "--model", tiny_path, *TINY_RIC, "--output_dir", str(tmp_path / "r"),
            "--stop_after", "offline"]  # fmt: skip
    refused = runner.invoke(app, args, input="n\n")
    assert refused.exit_code == 1, refused.output
    said = " ".join(refused.output.split())
    assert "this run generates 4 answers (offline: 4 prompts x 1 sample)" in said
    assert "training takes" not in said  # --stop_after offline: sampling and scoring only
    assert not (tmp_path / "r").exists()
    started = runner.invoke(app, [*args, "--yes"])
    assert started.exit_code == 0, started.output
    assert "start it?" not in started.output


def test_compare_counts_ric_sampling_and_every_methods_sweep():
    from steerable.evaluation.compare import DEMO_CONFIG, CompareConfig, compare_cost

    config = CompareConfig(**DEMO_CONFIG)
    plan = compare_cost(config, "runs/demo")
    # RiC: 96 prompts x 2 samples offline + 96 in its MORS round, of 48 tokens; evaluation:
    # ric and prompting, 6 points each (K = 2, resolution 5) x 22 prompts x 2 samples, 48 tokens
    assert plan.generations == 96 * 2 + 96 + 2 * 6 * 22 * 2
    assert plan.slots == plan.generations * 48
    assert "evaluation: 2 methods, 12 grid points x 22 prompts x 2 samples" in plan.what
    three = CompareConfig(**{**DEMO_CONFIG, "ric": {**DEMO_CONFIG["ric"], "objectives": [
        "brief=builtin:brevity", "positive=builtin:sentiment", "long=builtin:length"]}})  # fmt: skip
    assert compare_cost(three, "runs/demo").note == (
        "3 objectives at eval: {resolution: 5} make 21 grid points; eval: {resolution: 4} gives 15"
    )


def test_a_declined_compare_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "interactive", lambda: True)
    rates.record_rate("tiny-llama", cost.this_device(), tokens=1, seconds=100.0)
    config = tmp_path / "c.yaml"
    config.write_text("model: tiny\nmethods: [ric, prompting]\neval: {limit: 2, resolution: 2}\n")
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["compare", "--config", str(config), "--out", str(out)], input="n\n")
    assert result.exit_code == 1, result.output
    assert "this run generates" in " ".join(result.output.split())
    assert not out.exists()

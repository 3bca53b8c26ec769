import pytest
import torch

from steerable import SteerableError, training


def test_bf16_is_off_on_a_cpu_unless_asked_for_and_refused_where_not_native(monkeypatch):
    if not torch.cuda.is_available():
        assert training.device_args()["bf16"] is False
    assert training.device_args(False)["bf16"] is False
    monkeypatch.setattr(training, "bf16_supported", lambda: True)
    assert training.device_args(True)["bf16"] is True
    monkeypatch.setattr(training, "bf16_supported", lambda: False)
    with pytest.raises(SteerableError, match="no native bf16"):
        training.device_args(True)


def test_trainer_arguments_use_no_deprecated_names(tmp_path):
    """The TRL configs the recipes build raise no FutureWarning (e.g. gradient_checkpointing,
    renamed activation_checkpointing in transformers 5.23)."""
    import warnings

    from steerable.methods.ric.recipe import RiCConfig, sft_args
    from steerable.methods.rl import RLConfig, grpo_args

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        sft = sft_args(RiCConfig(model="tiny"), tmp_path / "sft", offline=True)
        grpo = grpo_args(RLConfig(model="tiny", stats=str(tmp_path / "s.json")), [1.0, 0.0], tmp_path / "rl")
    assert sft.activation_checkpointing is False and grpo.activation_checkpointing is False
    assert (grpo.loss_type, grpo.scale_rewards, grpo.shuffle_dataset) == ("dapo", "group", True)
    batch = RLConfig(model="tiny", stats=str(tmp_path / "s.json"), scale_rewards="batch")
    unshuffled = grpo_args(batch, [1.0, 0.0], tmp_path / "rl", shuffle=False)
    assert (unshuffled.scale_rewards, unshuffled.shuffle_dataset) == ("batch", False)
    with pytest.raises(SteerableError, match="--scale_rewards 'std' unknown"):
        RLConfig(model="tiny", stats=str(tmp_path / "s.json"), scale_rewards="std")


def test_settings_added_later_leave_old_stage_fingerprints_alone(tmp_path):
    """scale_rewards and mirror_levels enter a stage's inputs only away from their defaults, so
    stages trained before they existed are still recognised as done."""
    from steerable.methods.moslim.recipe import MOSLIMConfig
    from steerable.methods.rl import stage_settings

    stats = str(tmp_path / "s.json")
    default = stage_settings(MOSLIMConfig(model="tiny", stats=stats, reward="zscore"), ("output_dir",))
    assert "scale_rewards" not in default and "mirror_levels" not in default and "seed" in default
    changed = MOSLIMConfig(
        model="tiny", stats=stats, reward="zscore", scale_rewards="batch", mirror_levels=True, batch_size=8
    )
    settings = stage_settings(changed, ("output_dir",))
    assert (settings["scale_rewards"], settings["mirror_levels"]) == ("batch", True)


class Line(torch.nn.Module):
    """The smallest model transformers' Trainer trains: y = w x + b, a squared-error loss."""

    def __init__(self):
        super().__init__()
        self.line = torch.nn.Linear(1, 1)

    def forward(self, x, labels):
        return {"loss": ((self.line(x) - labels) ** 2).mean()}


def trained(folder, steps: int, callbacks=(), resume: str | None = None):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(folder),
        max_steps=steps,
        save_steps=1,
        per_device_train_batch_size=2,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
    )
    rows = [{"x": torch.tensor([float(i)]), "labels": torch.tensor([2.0 * i])} for i in range(8)]
    trainer = Trainer(model=Line(), args=args, train_dataset=rows, callbacks=list(callbacks))
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_a_stage_resumed_from_a_checkpoint_older_than_its_callbacks_saves_its_next_checkpoint(tmp_path):
    """A checkpoint written before GRPO's generation counts and MOSLIM's statistics were kept in it
    has no entry for them; the resumed run still saves, and its next checkpoint holds them."""
    from steerable.methods.moslim.recipe import RewardStats, resumed_stats, stats_callback
    from steerable.methods.rl import generated_counts

    trained(tmp_path / "checkpoints", steps=1)
    old = training.last_complete_checkpoint(tmp_path / "checkpoints")
    counter = {"completions": 3, "tokens": 30}
    stats = RewardStats(["brief"], 3)
    with pytest.warns(UserWarning, match="does not record the completions"):
        counts = generated_counts(counter, old)
    trained(tmp_path / "checkpoints", steps=2, callbacks=[counts, stats_callback(stats)], resume=old)
    new = training.last_complete_checkpoint(tmp_path / "checkpoints")
    assert new.endswith("checkpoint-2")
    assert training.saved_callback_state(new, "GeneratedCounts") == {"completions": 3, "tokens": 30}
    assert resumed_stats(tmp_path, RewardStats(["brief"], 3)).to_dict() == stats.to_dict()


def test_sums_over_processes_use_the_process_state_the_stages_use(monkeypatch):
    """One view of the processes: the CPU one (gloo) on a machine without a GPU, as the stages
    and the trainers' own, whichever is asked first."""
    import accelerate
    import numpy as np

    asked = []

    class One:
        num_processes = 1

    monkeypatch.setattr(accelerate, "PartialState", lambda **options: asked.append(options) or One())
    values = np.ones(3)
    assert training.summed_over_processes(values) is values
    assert asked == [{"cpu": not torch.cuda.is_available()}]


def test_a_stage_depends_on_its_fields_its_files_by_content_and_later_fields_only_off_their_old_value(
    tmp_path,
):
    from dataclasses import dataclass

    @dataclass
    class Config:
        data: str | None = None
        lr: float = 0.1
        added: str = "old"
        output_dir: str = "out"

    table = tmp_path / "table.jsonl"
    table.write_text('{"prompt": "a"}\n')

    def inputs(config):
        later = {"added": "old"}
        return training.config_inputs(config, exclude=("output_dir",), files=("data",), later=later)

    assert inputs(Config()) == {"data": None, "lr": 0.1}  # a stage recorded before `added` matches
    assert inputs(Config(added="new"))["added"] == "new"
    digest = inputs(Config(data=str(table)))["data"]
    assert digest != str(table) and len(digest) == 64
    table.write_text('{"prompt": "b"}\n')  # the same path, edited in place, is another input
    assert inputs(Config(data=str(table)))["data"] != digest
    assert inputs(Config(data="org/hub-id"))["data"] == "org/hub-id"  # not a file: as it is
    assert training.config_inputs(Config(lr=0.5), ["lr"]) == {"lr": 0.5}


def test_a_config_changes_a_shared_arguments_default_and_keeps_its_help_and_bounds():
    from steerable.methods.ric.recipe import RiCConfig
    from steerable.methods.rl import RLConfig
    from steerable.reward_models.pairwise import RMConfig

    fields = {c: c.__dataclass_fields__ for c in (RiCConfig, RLConfig, RMConfig)}
    assert [fields[c]["lora_r"].default for c in (RiCConfig, RLConfig, RMConfig)] == [64, 16, 0]
    assert fields[RLConfig]["lora_r"].metadata == fields[RiCConfig]["lora_r"].metadata
    assert fields[RMConfig]["lora_r"].metadata["ge"] == 0 and fields[RLConfig]["lora_r"].metadata["ge"] == 1
    assert fields[RMConfig]["model"].default == "minilm"
    assert fields[RLConfig]["model"].metadata == fields[RiCConfig]["model"].metadata  # one help for policies
    assert "minilm" in fields[RMConfig]["model"].metadata["help"]  # a reward model's backbone says its own
    assert "minilm" not in fields[RiCConfig]["model"].metadata["help"]
    with pytest.raises(SteerableError, match="--lora_r must be >= 1"):
        RLConfig(model="tiny", stats="s.json", lora_r=0)

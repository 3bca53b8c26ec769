import pytest
import torch

from steerable import SteerableError
from steerable.methods import training


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

    from steerable.methods.ric import RiCConfig, sft_args
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
    from steerable.methods.moslim import MOSLIMConfig
    from steerable.methods.rl import stage_settings

    stats = str(tmp_path / "s.json")
    default = stage_settings(MOSLIMConfig(model="tiny", stats=stats, reward="zscore"), ("output_dir",))
    assert "scale_rewards" not in default and "mirror_levels" not in default and "seed" in default
    changed = MOSLIMConfig(
        model="tiny", stats=stats, reward="zscore", scale_rewards="batch", mirror_levels=True, batch_size=8
    )
    settings = stage_settings(changed, ("output_dir",))
    assert (settings["scale_rewards"], settings["mirror_levels"]) == ("batch", True)

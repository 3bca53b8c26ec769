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

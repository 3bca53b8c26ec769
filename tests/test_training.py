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

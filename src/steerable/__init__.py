"""steerable: one language model, steerable across several objectives at inference time."""

from steerable.errors import SteerableError
from steerable.objectives import Objective, ObjectiveStats, RewardSet
from steerable.preferences import Preference

__all__ = ["Objective", "ObjectiveStats", "Preference", "RewardSet", "SteerableError"]
__version__ = "0.1.0"

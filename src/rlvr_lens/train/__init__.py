"""RLVR training: reward functions (true and spurious) and GRPO on TRL's GRPOTrainer.

See docs/training.md.
"""

from rlvr_lens.train.grpo import GRPORun, GRPOSettings, train_grpo
from rlvr_lens.train.rewards import REWARD_NAMES, RewardFunction, make_reward

__all__ = ["REWARD_NAMES", "GRPORun", "GRPOSettings", "RewardFunction", "make_reward", "train_grpo"]

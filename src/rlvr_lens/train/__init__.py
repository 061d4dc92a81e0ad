"""RLVR training: reward functions (true and spurious) and GRPO on TRL's GRPOTrainer.

See docs/training.md. The names below are imported on first use, so that
``rlvr_lens.train.settings`` (torch-free, read by the command line) can be imported without
torch and TRL.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "GRPORun": "rlvr_lens.train.grpo",
    "train_grpo": "rlvr_lens.train.grpo",
    "GRPOSettings": "rlvr_lens.train.settings",
    "REWARD_NAMES": "rlvr_lens.train.settings",
    "RewardFunction": "rlvr_lens.train.rewards",
    "make_reward": "rlvr_lens.train.rewards",
}

__all__ = ["REWARD_NAMES", "GRPORun", "GRPOSettings", "RewardFunction", "make_reward", "train_grpo"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

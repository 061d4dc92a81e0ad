"""Reward functions for RLVR: the true reward and the spurious ones the studies compare it with.

A :class:`RewardFunction` maps completions and their reference answers to one float per
completion: ``reward(completions, answers) -> list[float]``. Every reward except ``random``
reads the completion through :func:`rlvr_lens.data.grading.grade` (anchored extraction, so
an answer counts only when it is stated as ``\\boxed{...}``, after "The answer is" or after
GSM8K's ``####``; there is no last-number fallback).

========================  ====================================================================
name                      reward of one completion
========================  ====================================================================
``correct``               1 if the stated answer is mathematically equal to the reference, else 0
``random``                Bernoulli(p), drawn independently of the text (seeded, deterministic)
``format``                1 if an answer is stated in the expected format (extractable), else 0
``incorrect``             1 if an answer is stated **and** it is wrong, else 0
``accuracy_format``       ``correct + 0.01 * format`` (the base/SFT/RLVR study's reward)
========================  ====================================================================

*One-shot RLVR* (train on a single example) is a choice of data, not of reward: pass one
sample to :func:`rlvr_lens.train.grpo.train_grpo` (or set ``GRPOSettings.one_shot``), and the
trainer repeats it to fill every generation batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from rlvr_lens.data.grading import Grade, grade
from rlvr_lens.errors import UserError

REWARD_NAMES = ("correct", "random", "format", "incorrect", "accuracy_format")

#: Weight of the format term in ``accuracy_format``.
FORMAT_BONUS = 0.01


@lru_cache(maxsize=65536)
def cached_grade(completion: str, answer: str) -> Grade:
    """:func:`~rlvr_lens.data.grading.grade`, memoized: a batch is often graded by two rewards."""
    return grade(completion, answer)


class RewardFunction:
    """A named reward: ``reward(completions, answers) -> list[float]`` (one float per completion)."""

    name: str = "reward"

    def __call__(self, completions: Sequence[str], answers: Sequence[str]) -> list[float]:
        if len(completions) != len(answers):
            raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")
        return self.score(list(completions), [str(a) for a in answers])

    def score(self, completions: list[str], answers: list[str]) -> list[float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class GradedReward(RewardFunction):
    """A reward computed from the :class:`~rlvr_lens.data.grading.Grade` of each completion."""

    def __init__(self, name: str, of_grade: Callable[[Grade], float]):
        self.name = name
        self._of_grade = of_grade

    def score(self, completions: list[str], answers: list[str]) -> list[float]:
        return [float(self._of_grade(cached_grade(c, a))) for c, a in zip(completions, answers)]


class RandomReward(RewardFunction):
    """Bernoulli(``p``) per completion, independent of its content.

    Draws come from one ``numpy`` generator seeded with ``seed``, so the sequence of rewards
    over successive calls is the same for the same seed (and differs across seeds).
    """

    name = "random"

    def __init__(self, p: float = 0.5, seed: int = 0):
        if not 0.0 <= p <= 1.0:
            raise UserError(f"The random reward's probability must lie in [0, 1]; got {p}.")
        self.p = float(p)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)

    def score(self, completions: list[str], answers: list[str]) -> list[float]:
        return (self._rng.random(len(completions)) < self.p).astype(float).tolist()


def _stated(g: Grade) -> float:
    return 1.0 if g.extracted is not None else 0.0


def make_reward(name: str, *, p: float = 0.5, seed: int = 0) -> RewardFunction:
    """Build the reward called ``name`` (one of :data:`REWARD_NAMES`; see the module docstring).

    ``p`` and ``seed`` only matter for ``random``.
    """
    if name == "correct":
        return GradedReward("correct", lambda g: 1.0 if g.correct else 0.0)
    if name == "random":
        return RandomReward(p, seed)
    if name == "format":
        return GradedReward("format", _stated)
    if name == "incorrect":
        return GradedReward("incorrect", lambda g: 1.0 if g.extracted is not None and not g.correct else 0.0)
    if name == "accuracy_format":
        return GradedReward(
            "accuracy_format", lambda g: (1.0 if g.correct else 0.0) + FORMAT_BONUS * _stated(g)
        )
    raise UserError(f"Unknown reward {name!r}; use one of {', '.join(REWARD_NAMES)}.")


def as_trl_reward(reward: RewardFunction, name: str | None = None) -> Callable[..., list[float]]:
    """Wrap ``reward`` in TRL's reward-function signature ``(prompts, completions, **columns)``.

    TRL passes every dataset column as a keyword list; the reference answer is the
    ``answer`` column. The wrapper's ``__name__`` (TRL's metric name) is ``name`` or ``reward.name``.
    """

    def trl_reward(prompts=None, completions=None, answer=None, **_columns) -> list[float]:
        if answer is None:
            raise ValueError("the training data set needs an 'answer' column for the reward")
        return reward(list(completions), list(answer))

    trl_reward.__name__ = name or reward.name
    return trl_reward

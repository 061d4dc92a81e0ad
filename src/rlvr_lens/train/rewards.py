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
``incorrect``             1 if an answer is stated **and** it is wrong (any wrong answer), else 0
``incorrect_label``       1 if the stated answer equals the problem's fixed *wrong label*
                          (``labels.wrong_label`` of the sample, see :func:`wrong_label`), else 0:
                          the Spurious Rewards study's "incorrect" reward
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
from rlvr_lens.train.settings import REWARD_NAMES  # the names live beside GRPOSettings (torch-free)

#: Data column (sample label) holding the wrong label that ``incorrect_label`` pays for.
WRONG_LABEL = "wrong_label"

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
    """A reward computed from the :class:`~rlvr_lens.data.grading.Grade` of each completion.

    ``reference_column`` names the data column graded against (``answer`` for all rewards but
    ``incorrect_label``, which grades against ``wrong_label``).
    """

    def __init__(self, name: str, of_grade: Callable[[Grade], float], reference_column: str = "answer"):
        self.name = name
        self._of_grade = of_grade
        self.reference_column = reference_column

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


def wrong_label(answer: str, salt: str) -> str:
    """A fixed wrong label for an integer ``answer``: ``answer + d``, ``d`` in [-10, 10] without 0, seeded by ``salt``.

    Stands for the Spurious Rewards study's wrong majority-vote labels: one plausible wrong
    answer per problem, the same every time (``salt`` is e.g. ``"<seed>-<problem key>"``).
    A non-integer answer gets ``"<answer>+1"`` (still never equal to it).
    """
    import hashlib
    import random

    rng = random.Random(hashlib.sha256(salt.encode()).hexdigest())
    offset = rng.choice([d for d in range(-10, 11) if d != 0])
    try:
        return str(int(answer) + offset)
    except ValueError:
        return f"{answer}+1"


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
    if name == "incorrect_label":
        return GradedReward("incorrect_label", lambda g: 1.0 if g.correct else 0.0, reference_column=WRONG_LABEL)
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

    column = getattr(reward, "reference_column", "answer")

    def trl_reward(prompts=None, completions=None, answer=None, **columns) -> list[float]:
        references = answer if column == "answer" else columns.get(column)
        if references is None:
            raise ValueError(f"the training data set needs an {column!r} column for the reward")
        return reward(list(completions), list(references))

    trl_reward.__name__ = name or reward.name
    return trl_reward

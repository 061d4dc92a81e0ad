"""Reward functions on hand-made completions, and the random reward's rate and determinism."""

from __future__ import annotations

import math

import pytest

from rlvr_lens.errors import UserError
from rlvr_lens.train.rewards import REWARD_NAMES, RandomReward, as_trl_reward, make_reward

# (completion, reference answer, correct?, answer stated?)
CASES = [
    ("2 + 2 = 4, so the answer is \\boxed{4}.", "4", True, True),  # boxed, right
    ("The answer is 4.", "4", True, True),  # anchored, right
    ("#### 4", "4", True, True),  # GSM8K marker, right
    ("So \\boxed{\\frac{1}{2}}", "0.5", True, True),  # equal by value, not by text
    ("The answer is 5.", "4", False, True),  # anchored, wrong
    ("\\boxed{7}", "4", False, True),  # boxed, wrong
    ("I think it is 4", "4", False, False),  # no anchor: no last-number fallback
    ("", "4", False, False),  # empty
]


@pytest.mark.parametrize("completion, answer, correct, stated", CASES)
def test_graded_rewards_by_hand(completion, answer, correct, stated):
    expected = {
        "correct": float(correct),
        "format": float(stated),
        "incorrect": float(stated and not correct),
        "accuracy_format": float(correct) + 0.01 * float(stated),
    }
    for name, value in expected.items():
        reward = make_reward(name)
        assert reward.name == name
        assert reward([completion], [answer]) == [pytest.approx(value)], name


def test_rewards_are_batched_one_float_per_completion():
    completions = [c for c, *_ in CASES]
    answers = [a for _, a, *_ in CASES]
    for name in REWARD_NAMES:
        scores = make_reward(name)(completions, answers)
        assert len(scores) == len(CASES) and all(isinstance(s, float) for s in scores)
    assert make_reward("correct")(completions, answers) == [float(c) for _, _, c, _ in CASES]


def test_random_reward_rate_is_p_and_ignores_content():
    reward = make_reward("random", p=0.3, seed=1)
    draws = []
    for _ in range(200):
        draws += reward(["\\boxed{4}"] * 25, ["4"] * 25)  # always-correct text: the reward must not care
    n = len(draws)
    assert set(draws) <= {0.0, 1.0}
    # 5000 Bernoulli(0.3) draws: standard error 0.0065; 5 sigma bound.
    assert abs(sum(draws) / n - 0.3) < 5 * math.sqrt(0.3 * 0.7 / n)


def test_random_reward_is_deterministic_for_a_seed():
    def sequence(seed):
        reward = make_reward("random", p=0.5, seed=seed)
        return [reward(["x"] * 8, ["1"] * 8) for _ in range(3)]

    assert sequence(3) == sequence(3)
    assert sequence(3) != sequence(4)
    assert make_reward("random", p=0.0)(["x"] * 10, ["1"] * 10) == [0.0] * 10
    assert make_reward("random", p=1.0)(["x"] * 10, ["1"] * 10) == [1.0] * 10


def test_bad_names_and_probabilities_are_user_errors():
    with pytest.raises(UserError):
        make_reward("accuracy")
    with pytest.raises(UserError):
        RandomReward(p=1.5)
    with pytest.raises(ValueError):
        make_reward("correct")(["a", "b"], ["1"])


def test_trl_wrapper_reads_the_answer_column():
    wrapped = as_trl_reward(make_reward("correct"), "true_accuracy")
    assert wrapped.__name__ == "true_accuracy"
    scores = wrapped(prompts=["p", "p"], completions=["\\boxed{3}", "\\boxed{2}"], answer=["3", "3"], id=["a", "a"])
    assert scores == [1.0, 0.0]

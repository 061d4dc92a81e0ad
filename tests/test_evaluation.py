"""The shared evaluation step and its sample groups."""

from __future__ import annotations

import pytest
import torch

from rlvr_lens.analyses.evaluation import EvaluationConfig, EvaluationResult, evaluate_models, sample_groups
from rlvr_lens.errors import UserError
from rlvr_lens.models import ModelSeries, ModelSpec


def _result(base, tuned, labels=None):
    n = len(base)
    return EvaluationResult(
        config={},
        sample_ids=[str(i) for i in range(n)],
        labels=labels or [{} for _ in range(n)],
        models=["base", "tuned"],
        correct={"base": base, "tuned": tuned},
        response_tokens={"base": [1.0] * n, "tuned": [1.0] * n},
        accuracy={"base": sum(base) / n, "tuned": sum(tuned) / n},
    )


def test_groups_are_the_four_correctness_cells_plus_labels():
    result = _result(
        [False, True, True, False, False],
        [True, True, False, False, True],
        labels=[{"leaked": True}, {"leaked": False}, {}, {"leaked": False}, {"leaked": True}],
    )
    groups = sample_groups(result, "tuned")
    assert groups["leakage"] == [0, 4]
    assert groups["stable"] == [1]
    assert groups["lost"] == [2]
    assert groups["never"] == [3]
    assert groups["leaked"] == [0, 4] and groups["clean"] == [1, 3]
    with pytest.raises(UserError):
        sample_groups(result, "rl")


def test_round_trip_through_json():
    result = _result([False, True], [True, True])
    assert EvaluationResult.from_dict(result.to_dict()) == result


@pytest.mark.parametrize("bad", [dict(samples=0), dict(samples=4, temperature=0.0), dict(batch_size=0), dict(template="nope")])
def test_config_check_rejects(bad):
    with pytest.raises(UserError):
        EvaluationConfig(**bad).check()


def test_memorizing_pair_leaks_exactly_the_memorized_problems(memorizing_pair, single_thread):
    base_dir, tuned_dir, samples = memorizing_pair
    series = ModelSeries([ModelSpec("base", str(base_dir)), ModelSpec("tuned", str(tuned_dir))], dtype="float32", device="cpu")
    result = evaluate_models(series, samples, EvaluationConfig(max_new_tokens=16, batch_size=8))
    groups = sample_groups(result, "tuned")
    memorized = [i for i, s in enumerate(samples) if s.labels["leaked"]]
    assert groups["leakage"] == memorized  # a random base solves nothing, the tuned model recites
    assert result.accuracy == {"base": 0.0, "tuned": len(memorized) / len(samples)}
    # sampled rollouts: with 3 rollouts at a low temperature the recitation survives
    torch.manual_seed(0)
    sampled = evaluate_models(series, samples, EvaluationConfig(max_new_tokens=16, batch_size=8, samples=3, temperature=0.05))
    assert sampled.correct["tuned"] == result.correct["tuned"]
    assert all(0 < n <= 16 for n in sampled.response_tokens["tuned"])

"""The verdict: hand-built results whose answer is known, the statistics against references,
and the plug-in of a new result kind."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlvr_lens.analyses import verdict as V
from rlvr_lens.analyses.stats import paired_bootstrap, sign_test

N = 40


def _evaluation(base_correct: int, tuned_correct: int) -> dict:
    return {
        "kind": "evaluation",
        "models": ["base", "rl"],
        "correct": {"base": [i < base_correct for i in range(N)], "rl": [i < tuned_correct for i in range(N)]},
    }


def _perplexity(answer_shift: float, prompt_shift: float) -> dict:
    rng = np.random.default_rng(0)
    answer = rng.uniform(1.0, 2.0, N)
    prompt = rng.uniform(2.0, 3.0, N)
    noise = rng.normal(0, 0.01, (2, N))

    def ckpt(name, a, p):
        return {"name": name, "answer_nll": list(map(float, a)), "prompt_nll": list(map(float, p))}

    return {
        "kind": "perplexity",
        "checkpoints": ["base", "rl/step-10"],
        "per_checkpoint": [ckpt("base", answer, prompt), ckpt("rl/step-10", answer + answer_shift + noise[0], prompt + prompt_shift + noise[1])],
    }


def _contamination(base_answers: int, tuned_answers: int) -> dict:
    def run(name, k):
        return {"checkpoint": name, "fraction": 0.4, "answer_correct": [i < k for i in range(N)]}

    return {"kind": "contamination", "checkpoints": ["base", "rl"], "fractions": [0.4, 0.8],
            "runs": [run("base", base_answers), run("rl", tuned_answers), {**run("rl", N), "fraction": 0.8}]}


def _only(result):
    (verdict,) = result.verdicts
    return verdict


def test_paradox_and_answers_from_partial_prompts_say_memorization():
    v = _only(V.build_verdict([_evaluation(5, 25), _perplexity(-0.2, +0.1), _contamination(0, 15)]))
    assert v.tuned == "rl" and v.base == "base" and v.verdict == V.MEMORIZATION
    assert {s.name for s in v.supporting} == {"gain", "perplexity paradox", "answers from partial prompts"}
    gain = next(s for s in v.supporting if s.name == "gain")
    assert gain.value == pytest.approx(20 / N) and gain.interval[0] > 0
    probe = next(s for s in v.supporting if s.name == "answers from partial prompts")
    assert probe.value == pytest.approx(15 / N)  # read at the smallest fraction (0.4), not 0.8


def test_gain_with_every_memorization_test_ruled_out_says_reasoning():
    v = _only(V.build_verdict([_evaluation(5, 25), _perplexity(-0.2, -0.1), _contamination(3, 3)]))
    assert v.verdict == V.REASONING
    assert {s.name for s in v.supporting} == {"gain", "perplexity paradox", "answers from partial prompts"}
    assert all(s.ruled_out for s in v.supporting if s.name != "gain")
    assert v.would_change and not v.contradicting


def test_no_significant_gain_is_undetermined_even_with_a_paradox():
    v = _only(V.build_verdict([_evaluation(5, 7), _perplexity(-0.2, +0.1), _contamination(0, 15)]))
    assert v.verdict == V.UNDETERMINED and "not significant" in v.reason


def test_a_missing_decisive_test_is_undetermined_and_named():
    v = _only(V.build_verdict([_evaluation(5, 25), _perplexity(-0.2, -0.1)]))
    assert v.verdict == V.UNDETERMINED and v.missing == ["answers from partial prompts"]
    assert any("answers from partial prompts" in w for w in v.would_change)


def test_a_paradox_within_noise_is_not_significant():
    """Answer NLL 'falls' on average by less than the noise: the signal is reported, not claimed."""
    v = _only(V.build_verdict([_evaluation(5, 25), _perplexity(-0.001, +0.001), _contamination(3, 3)]))
    paradox = next(s for s in v.inconclusive if s.name == "perplexity paradox")
    assert not paradox.holds and not paradox.ruled_out and "not significant" in paradox.text
    assert v.verdict == V.UNDETERMINED


def test_no_evidence_at_all():
    result = V.build_verdict([{"kind": "weights"}])
    assert result.verdicts == [] and V.verdict_lines(result)[0].startswith("verdict: undetermined")


def test_a_new_result_kind_plugs_in_with_one_function():
    @V.evidence("test_kind")
    def _fake(result):
        return [V.Signal("rl", "fake recitation", "test_kind", V.MEMORIZATION, 0.5, [0.4, 0.6], 0.0, "test", True)]

    try:
        v = _only(V.build_verdict([_evaluation(5, 25), {"kind": "test_kind"}]))
        assert v.verdict == V.MEMORIZATION and "fake recitation" in {s.name for s in v.supporting}
    finally:
        V._EVIDENCE.pop("test_kind")


def test_verdict_round_trips_as_json():
    result = V.build_verdict([_evaluation(5, 25), _perplexity(-0.2, +0.1), _contamination(0, 15)])
    again = V.VerdictResult.from_dict(result.to_dict())
    assert again.verdicts[0].verdict == V.MEMORIZATION and again.verdicts[0].supporting[0].interval == result.verdicts[0].supporting[0].interval


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.3, 1.0, 400)
    iv = paired_bootstrap(list(diffs))
    half = 1.96 * diffs.std(ddof=1) / math.sqrt(diffs.size)
    assert iv.mean == pytest.approx(diffs.mean())
    assert iv.low == pytest.approx(diffs.mean() - half, abs=0.2 * half)
    assert iv.high == pytest.approx(diffs.mean() + half, abs=0.2 * half)
    assert paired_bootstrap([0.5] * 10).low == paired_bootstrap([0.5] * 10).high == 0.5
    assert paired_bootstrap([None]) is None


def test_sign_test_hand_worked_and_against_scipy():
    # 9 of 10 non-zero differences positive: p = 2 * (C(10,0) + C(10,1)) / 2^10
    assert sign_test([1] * 9 + [-1] + [0, None]) == pytest.approx(2 * 11 / 1024)
    stats = pytest.importorskip("scipy.stats")
    diffs = [1] * 14 + [-1] * 6
    assert sign_test(diffs) == pytest.approx(stats.binomtest(14, 20).pvalue)


def test_perplexity_paradox_says_not_significant_when_the_interval_reaches_zero():
    from rlvr_lens.analyses.perplexity import CheckpointPerplexity, _verdict_sentence, paradox_verdict

    def ckpt(name, prompt, answer):
        return CheckpointPerplexity(name, "float32", prompt, answer, None, None)

    # the aggregate answer perplexity falls (mean change -0.4) but one of two samples rises
    weak = paradox_verdict([ckpt("base", [1.0, 1.0], [2.0, 2.0]), ckpt("last", [1.5, 1.1], [1.0, 2.2])])
    assert weak.paradox and weak.significant is False
    assert weak.answer_change[0] == pytest.approx(-0.4) and weak.answer_change[1] <= -1.0 + 1e-12 and weak.answer_change[2] >= 0.2 - 1e-12
    assert "not significant" in _verdict_sentence(weak)
    n = 30
    strong = paradox_verdict([ckpt("base", [1.0] * n, [2.0] * n), ckpt("last", [1.1 + 0.01 * i for i in range(n)], [1.8] * n)])
    assert strong.paradox and strong.significant is True and "not significant" not in _verdict_sentence(strong)


@pytest.mark.slow
def test_verdict_on_real_models_where_the_tuned_one_memorized(memorizing_pair, single_thread):
    """A tiny qwen2 trained to recite 4 of 8 problems with their answers: it gains exactly on those 4
    and answers them from 40% of the problem, so the verdict is memorization by the probe."""
    from rlvr_lens.analyses.contamination import partial_prompt_probe
    from rlvr_lens.analyses.perplexity import perplexity_paradox
    from rlvr_lens.analyses.tokens import TokenDivergenceConfig, token_divergence
    from rlvr_lens.models import ModelSeries, ModelSpec, load_model

    base_dir, tuned_dir, samples = memorizing_pair
    series = ModelSeries([ModelSpec("base", str(base_dir)), ModelSpec("tuned", str(tuned_dir))], dtype="float32", device="cpu")
    results = [
        perplexity_paradox(series, samples, batch_size=8),
        partial_prompt_probe(series, samples, fractions=(0.4,), answer_tokens=16, batch_size=8),
        token_divergence(
            load_model(str(base_dir), "float32", "cpu", name="base"),
            load_model(str(tuned_dir), "float32", "cpu", name="tuned"),
            samples,
            TokenDivergenceConfig(max_new_tokens=40, batch_size=8, responses_from=("tuned", "base")),
        ),
    ]
    v = _only(V.build_verdict(results))
    assert v.tuned == "tuned" and v.verdict == V.MEMORIZATION, v.reason
    gain = next(s for s in v.supporting if s.name == "gain")
    assert gain.value == pytest.approx(4 / 8)  # the 4 memorized problems, nothing else
    probe = next(s for s in v.supporting if s.name == "answers from partial prompts")
    assert probe.holds and probe.value == pytest.approx(4 / 8)
    # it memorized the prompts too, so their perplexity falls: no paradox, and the verdict says so
    paradox = next(s for s in v.contradicting if s.name == "perplexity paradox")
    assert paradox.ruled_out and not paradox.holds

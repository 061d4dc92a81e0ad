"""Detectors against a direct NumPy implementation of their formulas; AUROC, its bootstrap
interval and TPR at 5 % FPR against scikit-learn; the scoreboard's calibration discipline."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from rlvr_lens.analyses.detectors import DetectorsConfig, detector_scores
from rlvr_lens.analyses.perplexity import encode_sample
from rlvr_lens.analyses.scoreboard import (
    ScoreboardConfig,
    ScoreboardResult,
    Signal,
    collect_signals,
    paired_delta_interval,
    scoreboard,
    split_calibration,
)
from rlvr_lens.analyses.scoring import auroc, auroc_interval, threshold_at_fpr, tpr_at_fpr
from rlvr_lens.data import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.models import load_model

sklearn_metrics = pytest.importorskip("sklearn.metrics")

pytestmark = pytest.mark.usefixtures("single_thread")

SAMPLES = [
    Sample("a", "What is 12 + 7 * 3?", "33", "12 + 21 = 33, so the answer is 33.", {"leaked": True}),
    Sample("b", "x^2 = 16; find the largest x.", "4", None, {"leaked": False}),
    Sample("c", "The quick brown fox jumps over the lazy dog. Sum 1..10.", "55", "It is 55.", {"leaked": True}),
]


# ----------------------------------------------------------------------------- detectors from the formulas


def _numpy_detectors(model, tokenizer, sample: Sample, ks) -> dict[str, float]:
    """Every detector of one sample, straight from the papers' formulas, in float64 NumPy on one unpadded sequence."""
    enc = encode_sample(tokenizer, sample, "plain")
    start, end = enc.prompt_span[0], enc.answer_span[1]
    with torch.no_grad():
        logits = model(torch.tensor([enc.ids])).logits[0].double().numpy()  # [seq, vocab]
    out_logp, out_z = [], []
    for t in range(start, end):
        row = logits[t - 1]
        logprobs = row - row.max() - np.log(np.exp(row - row.max()).sum())
        probs = np.exp(logprobs)
        mu = float(np.sum(probs * logprobs))
        sigma = math.sqrt(float(np.sum(probs * (logprobs - mu) ** 2)))
        out_logp.append(logprobs[enc.ids[t]])
        out_z.append((logprobs[enc.ids[t]] - mu) / sigma)
    logp, z = np.array(out_logp), np.array(out_z)
    text = tokenizer.decode(enc.ids[start:end])
    ref = {"loss": logp.mean(), "zlib": logp.mean() / len(zlib.compress(text.encode()))}
    for k in ks:
        count = max(1, int(math.ceil(k * len(logp) - 1e-9)))
        ref[f"min_k@{k:g}"] = np.sort(logp)[:count].mean()
        ref[f"min_k_pp@{k:g}"] = np.sort(z)[:count].mean()
    return ref


def test_detectors_match_numpy_formulas(tiny_pair):
    base = load_model(str(tiny_pair[0]), "float32", "cpu", name="base")
    tuned = load_model(str(tiny_pair[1]), "float32", "cpu", name="tuned")
    config = DetectorsConfig(ks=(0.1, 0.25, 0.5, 1.0), batch_size=2)  # padded batches of unequal lengths
    result = detector_scores(tuned, SAMPLES, config, reference=base)
    for i, sample in enumerate(SAMPLES):
        for who in (tuned, base):
            ref = _numpy_detectors(who.model, tuned.tokenizer, sample, config.ks)
            for name, value in ref.items():
                assert result.scores[who.name][name][i] == pytest.approx(value, rel=1e-5, abs=1e-5), (who.name, name)
        assert result.ref_ratio[i] == pytest.approx(
            result.scores["tuned"]["loss"][i] - result.scores["base"]["loss"][i], abs=1e-12
        )
    # Min-K% with k = 1 is the loss; Min-K%++ is a different (standardized) quantity
    assert result.scores["tuned"]["min_k@1"] == pytest.approx(result.scores["tuned"]["loss"])
    assert result.scores["tuned"]["min_k_pp@1"] != pytest.approx(result.scores["tuned"]["loss"])
    assert set(result.signals()) >= {"loss", "zlib", "min_k@0.1", "min_k_pp@0.5", "ref_ratio"}
    assert result.groups == {"leaked": [0, 2], "clean": [1]}


def test_detectors_config_rejects_bad_k():
    with pytest.raises(UserError, match="fractions"):
        DetectorsConfig(ks=(0.0, 0.5)).check()
    with pytest.raises(UserError, match="text"):
        DetectorsConfig(text="middle").check()


def test_detectors_flag_memorized_problems(memorizing_pair):
    base_dir, tuned_dir, samples = memorizing_pair
    tuned = load_model(str(tuned_dir), "float32", "cpu", name="tuned")
    base = load_model(str(base_dir), "float32", "cpu", name="base")
    result = detector_scores(tuned, samples, DetectorsConfig(ks=(0.2, 1.0)), reference=base)
    labels = [s.labels["leaked"] for s in samples]
    for name in ("loss", "min_k@0.2", "min_k_pp@0.2"):
        assert auroc(result.scores["tuned"][name], labels) == 1.0, name
    assert auroc(result.ref_ratio, labels) == 1.0


# ----------------------------------------------------------------------------- AUROC, interval, TPR


def _data(seed=3, n_pos=23, n_neg=31, ties=True):
    rng = np.random.default_rng(seed)
    pos = rng.normal(0.8, 1.0, n_pos)
    neg = rng.normal(0.0, 1.0, n_neg)
    if ties:
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    scores = np.concatenate([pos, neg])
    labels = np.array([True] * n_pos + [False] * n_neg)
    return scores, labels


def test_auroc_matches_sklearn():
    scores, labels = _data()
    assert auroc(list(scores), list(labels)) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)


def test_auroc_interval_matches_seeded_bootstrap_with_sklearn():
    scores, labels = _data()
    pos, neg = scores[labels], scores[~labels]
    rng = np.random.default_rng(7)
    replicates = []
    for _ in range(200):
        p = pos[rng.integers(0, len(pos), len(pos))]
        q = neg[rng.integers(0, len(neg), len(neg))]
        replicates.append(sklearn_metrics.roc_auc_score([1] * len(p) + [0] * len(q), np.concatenate([p, q])))
    expected = np.quantile(replicates, [0.025, 0.975])
    low, high = auroc_interval(list(scores), list(labels), n_boot=200, seed=7)
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
    point = auroc(list(scores), list(labels))
    assert low < point < high and high - low > 0.05  # a real interval around the point


def test_tpr_at_fpr_matches_sklearn_roc_curve():
    scores, labels = _data(ties=False)
    fpr, tpr, _ = sklearn_metrics.roc_curve(labels, scores)
    for max_fpr in (0.05, 0.1, 0.3):
        assert tpr_at_fpr(list(scores), list(labels), max_fpr) == pytest.approx(max(tpr[fpr <= max_fpr]))


def test_threshold_at_fpr_hand_worked():
    negatives = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    assert threshold_at_fpr(negatives, 0.1) == 1.0  # flags exactly one of ten
    assert threshold_at_fpr(negatives, 0.25) == 0.9  # two of ten
    assert threshold_at_fpr(negatives, 0.05) > 1.0  # even one is too many: just above the largest
    assert math.isinf(threshold_at_fpr([], 0.05))


# ----------------------------------------------------------------------------- the scoreboard


def _planted(n=80, seed=0):
    """Groups and signals with known strengths: perfect, useless, reversed (unoriented), a k-family."""
    rng = np.random.default_rng(seed)
    positive = list(range(0, n, 2))
    negative = list(range(1, n, 2))
    truth = np.zeros(n)
    truth[positive] = 1
    signals = {
        "x:perfect": Signal(list(truth + rng.uniform(0, 0.5, n))),
        "x:noise": Signal(list(rng.normal(size=n))),
        "x:reversed": Signal(list(-truth + rng.uniform(0, 0.5, n)), oriented=False),
        "detector:min_k_pp@0.1": Signal(list(rng.normal(size=n))),
        "detector:min_k_pp@0.5": Signal(list(truth * 0.8 + rng.normal(size=n) * 0.3)),
    }
    return signals, {"leaked": positive, "clean": negative}


def test_scoreboard_chooses_on_calibration_and_scores_the_rest():
    signals, groups = _planted()
    config = ScoreboardConfig(tasks=(("leaked", "clean"), ("leakage", "stable")), n_boot=200)
    result = scoreboard(signals, groups, config, zero_leak={k: list(np.full(50, -5.0)) for k in signals})
    task, skipped = result.tasks
    assert skipped.skipped and not skipped.rows
    assert not set(task.calibration) & set(task.scored)
    assert len(task.calibration) == 24 and len(task.scored) == 56  # ceil(0.3 * 40) of each group
    rows = {r.family: r for r in task.rows}
    assert rows["x:perfect"].auroc == 1.0 and rows["x:perfect"].verdict_tpr == 1.0
    assert rows["x:reversed"].direction == -1 and rows["x:reversed"].auroc == 1.0
    assert rows["detector:min_k_pp"].chosen == "detector:min_k_pp@0.5"
    assert 0.25 < rows["x:noise"].auroc < 0.75
    # the AUROC is computed on the scored samples only, exactly as scikit-learn does
    labels = [i in groups["leaked"] for i in task.scored]
    values = [signals["x:noise"].values[i] for i in task.scored]
    assert rows["x:noise"].auroc == pytest.approx(sklearn_metrics.roc_auc_score(labels, values))
    # thresholds flag nothing of a clearly clean organism
    assert rows["x:perfect"].false_alarm == 0.0
    assert rows["detector:min_k_pp"].delta_vs_reference == 0.0
    assert rows["x:perfect"].delta_vs_reference > 0
    # JSON round trip
    again = ScoreboardResult.from_dict(result.to_dict())
    assert again.tasks[0].rows[0].auroc == result.tasks[0].rows[0].auroc


def test_scoreboard_false_alarms_of_a_fixed_threshold():
    signals, groups = _planted()
    config = ScoreboardConfig(tasks=(("leaked", "clean"),), n_boot=50)
    zero = {"x:perfect": list(np.linspace(0, 1.5, 100))}
    row = next(r for r in scoreboard(signals, groups, config, zero_leak=zero).tasks[0].rows if r.family == "x:perfect")
    expected = float(np.mean(np.linspace(0, 1.5, 100) >= row.threshold))
    assert row.false_alarm == pytest.approx(expected) and 0 < expected < 1


def test_split_is_seeded_and_stratified():
    a = split_calibration(range(10), range(10, 30), 0.3, seed=1)
    assert a == split_calibration(range(10), range(10, 30), 0.3, seed=1)
    assert a != split_calibration(range(10), range(10, 30), 0.3, seed=2)
    assert sum(i < 10 for i in a[0]) == 3 and sum(i >= 10 for i in a[0]) == 6


def test_paired_delta_of_identical_signals_is_zero():
    scores, labels = _data()
    delta, low, high = paired_delta_interval(list(scores), list(scores), list(labels), n_boot=100, seed=0)
    assert delta == low == high == 0.0


def test_scoreboard_rejects_overlapping_groups():
    with pytest.raises(UserError, match="share samples"):
        scoreboard({"x:a": [0.0, 1.0, 2.0]}, {"leaked": [0, 1], "clean": [1, 2]}, ScoreboardConfig(tasks=(("leaked", "clean"),)))


def test_collect_signals_aligns_detectors_by_sample_id(tiny_pair):
    tuned = load_model(str(tiny_pair[1]), "float32", "cpu", name="tuned")
    result = detector_scores(tuned, SAMPLES, DetectorsConfig(ks=(0.5,)))
    signals = collect_signals([result], ["c", "zz", "a"])
    assert signals["detector:loss"].values == [result.scores["tuned"]["loss"][2], None, result.scores["tuned"]["loss"][0]]
    assert "detector:ref_ratio" not in signals

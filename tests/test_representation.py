"""Representation similarity: CKA against its definition and its invariances, debiased CKA on
unrelated features, probes on planted and shuffled labels (checked against scikit-learn's own
cross-validation), the hidden-state capture against transformers' hidden states, and an
end-to-end run on tiny checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr_lens.analyses.hidden_states import CaptureConfig, capture_hidden_states
from rlvr_lens.analyses.representation import (
    RepresentationConfig,
    RepresentationResult,
    balanced_indices,
    cka_curves,
    debiased_cka,
    linear_cka,
    probe_auroc,
    probe_curve,
    representation_similarity,
)
from rlvr_lens.errors import UserError


def feature_space_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s feature-space form, written independently: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)."""
    x = np.asarray(x, np.float64) - np.mean(x, 0)
    y = np.asarray(y, np.float64) - np.mean(y, 0)
    return np.linalg.norm(y.T @ x, "fro") ** 2 / (
        np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    )


@pytest.fixture
def features():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20)) @ rng.normal(size=(20, 20))  # correlated columns
    y = np.tanh(x @ rng.normal(size=(20, 12))) + 0.3 * rng.normal(size=(60, 12))
    return x, y


def test_cka_of_a_representation_with_itself_is_one(features):
    x, y = features
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert debiased_cka(y, y) == pytest.approx(1.0, abs=1e-12)


def test_cka_equals_the_feature_space_formula(features):
    x, y = features
    assert linear_cka(x, y) == pytest.approx(feature_space_cka(x, y), rel=1e-12)
    assert 0.1 < linear_cka(x, y) < 0.99  # a non-trivial value, not a degenerate 0 or 1


def test_cka_invariant_to_orthogonal_transforms_and_isotropic_scaling(features):
    x, y = features
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    reference = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(x + 100.0, y) == pytest.approx(reference, rel=1e-10)  # centering
    assert debiased_cka(3 * x @ q, y) == pytest.approx(debiased_cka(x, y), rel=1e-10)
    # not invariant to a non-isotropic scaling: the test can tell the difference
    assert linear_cka(x * np.linspace(0.1, 10, 20), y) != pytest.approx(reference, rel=1e-3)


def test_cka_is_low_for_independent_random_features():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8))
    assert linear_cka(x, y) < 0.02  # ~ d / n
    # with more dimensions than samples plain linear CKA is high; the debiased one stays near 0
    x, y = rng.normal(size=(50, 500)), rng.normal(size=(50, 500))
    assert linear_cka(x, y) > 0.8
    assert abs(debiased_cka(x, y)) < 0.05


def test_cka_float64_even_for_float32_inputs():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(40, 16)) * 1e3 + 1e4).astype(np.float32)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x.astype(np.float64)) == pytest.approx(1.0, abs=1e-12)


def test_cka_curves_pairs_and_values(features):
    x, y = features
    states = {
        "base": np.stack([x[:, :12], y], 1),
        "sft": np.stack([y, y], 1),
        "rl": np.stack([x[:, :12], x[:, 8:]], 1),
    }
    curves = cka_curves(states)
    assert [(c.a, c.b) for c in curves] == [("base", "sft"), ("base", "rl"), ("sft", "rl")]
    assert curves[0].linear[1] == pytest.approx(1.0)
    assert curves[1].linear[0] == pytest.approx(1.0)
    assert curves[0].linear[0] == pytest.approx(feature_space_cka(x[:, :12], y))


# ----------------------------------------------------------------------------- probes


def planted_features(n=80, d=30, layers=3, seed=0):
    """Labels linearly separable (margin) at every layer, plus noise dimensions."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) < n // 2
    states = rng.normal(size=(n, layers, d))
    states[:, :, 0] += np.where(labels, 5.0, -5.0)[:, None]
    return states, labels


def test_probe_auroc_one_on_separable_and_chance_on_shuffled_labels():
    states, labels = planted_features()
    for layer in range(states.shape[1]):
        assert probe_auroc(states[:, layer], labels, seed=0)[0] > 0.98
    shuffled = [
        probe_auroc(states[:, 0], np.random.default_rng(s).permutation(labels), seed=s)[0] for s in range(8)
    ]
    assert np.mean(shuffled) == pytest.approx(0.5, abs=0.08)


def test_probe_auroc_matches_scikit_learn_cross_validation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 6))
    labels = x[:, 0] + rng.normal(size=50) > 0  # partly predictable
    ours, std = probe_auroc(x, labels, folds=5, C=0.5, seed=3)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=3)
    reference = cross_val_score(probe, x, labels, cv=folds, scoring="roc_auc")
    assert ours == pytest.approx(reference.mean(), abs=1e-12)
    assert std == pytest.approx(reference.std(), abs=1e-12)
    assert 0.6 < ours < 1.0


def test_probe_curve_balances_classes_and_reports_too_few():
    states, labels = planted_features(n=120, d=12)
    positive = list(np.flatnonzero(labels)[:25])
    negative = list(np.flatnonzero(~labels))
    config = RepresentationConfig(min_per_class=10)
    curve = probe_curve(states, positive, negative, config, model="m", names=("leaked", "clean"))
    assert curve.status == "ok" and curve.n_used == 25 and (curve.n_positive, curve.n_negative) == (25, 60)
    assert min(curve.auroc) > 0.95 and len(curve.control) == 3
    assert abs(np.mean(curve.control) - 0.5) < 0.3
    pos, neg = balanced_indices(positive, negative, seed=0)
    assert len(pos) == len(neg) == 25 and set(neg) <= set(negative)
    curve = probe_curve(states, positive[:9], negative, config, names=("leakage", "stable"))
    assert curve.status == "not enough samples: leakage has 9 (at least 10 each needed)"
    assert curve.auroc == []
    with pytest.raises(UserError):
        RepresentationConfig(folds=5, min_per_class=4).check()


# ----------------------------------------------------------------------------- capture and end to end


def test_capture_matches_transformers_hidden_states(tiny_checkpoints, single_thread):
    """Answer-position states equal ``output_hidden_states`` of each sample run alone (padding
    changes nothing), with the last state taken before the final norm."""
    from rlvr_lens.analyses.perplexity import encode_sample
    from rlvr_lens.data import Sample
    from rlvr_lens.models import load_model

    for family in ("qwen2", "gemma2"):
        loaded = load_model(str(tiny_checkpoints[family]), "float32", "cpu")
        samples = [
            Sample("a", "What is 2 + 2?", "4"),
            Sample("b", "Compute the sum of the first 10 positive integers.", "55"),
        ]
        states = capture_hidden_states(loaded.model, loaded.tokenizer, samples, CaptureConfig(batch_size=2))
        n_layers = loaded.num_layers
        assert states.shape == (2, n_layers + 1, 64)
        for row, sample in enumerate(samples):
            encoded = encode_sample(loaded.tokenizer, sample, "plain")
            ids = torch.tensor([encoded.ids])
            with torch.no_grad():
                hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
            position = encoded.answer_span[0] - 1  # predicts the first answer token
            for state in range(n_layers):
                np.testing.assert_allclose(states[row, state], hidden[state][0, position].numpy(), atol=1e-5)
            last = torch.tensor(states[row, n_layers])
            normed = loaded.adapter.final_norm(loaded.model)(last[None])[0]
            np.testing.assert_allclose(
                normed.detach().numpy(), hidden[n_layers][0, position].numpy(), atol=1e-4
            )
        mean = capture_hidden_states(
            loaded.model, loaded.tokenizer, samples, CaptureConfig(position="prompt_mean")
        )
        for row, sample in enumerate(samples):
            encoded = encode_sample(loaded.tokenizer, sample, "plain")
            start, end = encoded.prompt_span[0] - 1, encoded.answer_span[0]  # no BOS: every prompt token
            with torch.no_grad():
                hidden = loaded.model(
                    input_ids=torch.tensor([encoded.ids]), output_hidden_states=True
                ).hidden_states
            np.testing.assert_allclose(mean[row, 1], hidden[1][0, start:end].mean(0).numpy(), atol=1e-5)
        assert not np.allclose(mean, states)


def test_end_to_end_on_tiny_checkpoints(tiny_pair, tmp_path, single_thread):
    from rlvr_lens.data import Sample
    from rlvr_lens.models import ModelSeries
    from rlvr_lens.report import write_run

    base, tuned = tiny_pair
    series = ModelSeries.from_strings(
        [f"base={base}", f"same={base}", f"tuned={tuned}"], dtype="float32", device="cpu"
    )
    rng = np.random.default_rng(0)
    samples = []
    for i in range(24):
        a, b = rng.integers(10, 99, size=2)
        samples.append(Sample(str(i), f"What is {a} + {b}?", str(a + b), labels={"leaked": bool(i % 2)}))
    groups = {
        "leaked": list(range(1, 24, 2)),
        "clean": list(range(0, 24, 2)),
        "leakage": [0, 1, 2],
        "stable": [3, 4, 5],
    }
    config = RepresentationConfig(min_per_class=5, folds=3, control=False)
    result = representation_similarity(series, samples, groups, config)
    assert result.models == ["base", "same", "tuned"] and result.states == 3
    pairs = {(c.a, c.b): c for c in result.cka}
    # state 0 at the answer position is the embedding of the last prompt token ("?\n" for every
    # sample): no variance across samples, so CKA is undefined there
    assert pairs[("base", "same")].linear[0] is None
    np.testing.assert_allclose(pairs[("base", "same")].linear[1:], 1.0, atol=1e-12)
    assert max(pairs[("base", "tuned")].linear[1:]) < 0.999  # different weights, different representations
    probes = {(p.model, p.positive): p for p in result.probes}
    assert probes[("base", "leaked")].status == "ok" and len(probes[("base", "leaked")].auroc) == 3
    assert probes[("base", "leakage")].status.startswith("not enough samples")
    assert RepresentationResult.from_dict(result.to_dict()) == result
    report = write_run(tmp_path / "run", [result])
    assert "Representation similarity" in report.read_text()
    assert (tmp_path / "run" / "figures" / "representation-cka.png").exists()


def brute_force_hsic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """HSIC as the U-statistic over distinct index 4-tuples: mean of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    import itertools

    n = len(k)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def test_debiased_cka_equals_the_u_statistic_by_brute_force():
    from rlvr_lens.analyses.representation import centered_gram

    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 3))
    y = x @ rng.normal(size=(3, 4)) + rng.normal(size=(7, 4))
    k, l = centered_gram(x), centered_gram(y)  # noqa: E741
    expected = brute_force_hsic(k, l) / np.sqrt(brute_force_hsic(k, k) * brute_force_hsic(l, l))
    assert debiased_cka(x, y) == pytest.approx(expected, rel=1e-10)


def test_report_when_no_probe_has_enough_samples(tmp_path):
    from rlvr_lens.data import Sample
    from rlvr_lens.report import write_run

    rng = np.random.default_rng(6)
    samples = [Sample(str(i), "p", "1") for i in range(12)]
    states = {"base": rng.normal(size=(12, 3, 8)), "rl": rng.normal(size=(12, 3, 8))}
    result = representation_similarity(None, samples, {"leaked": [0, 1], "clean": [2, 3]}, states=states)
    assert all(p.status.startswith("not enough samples") for p in result.probes)
    html = write_run(tmp_path, [result]).read_text()
    assert "not enough samples: leaked has 2 and clean has 2" in html
    assert "not enough samples: leakage has 0 and stable has 0" in html
    assert (tmp_path / "figures" / "representation-cka.png").exists()
    assert not (tmp_path / "figures" / "representation-probes.png").exists()

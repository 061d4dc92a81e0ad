"""Trajectory separation: the separation kernel against a direct NumPy recomputation, a planted
bifurcation peaks at its layer, the permutation band covers the null, and an end-to-end run
on a tiny model with a bifurcation planted by a forward hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr_lens.analyses.trajectory import (
    TrajectoryConfig,
    TrajectoryResult,
    layer_grams,
    separation_from_grams,
    separation_test,
    trajectory_separation,
    velocities,
)
from rlvr_lens.errors import UserError


def direct_separation(states: np.ndarray, index_a, index_b) -> np.ndarray:
    """The docstring's definition, written out with explicit means (float64)."""
    v = np.diff(np.asarray(states, dtype=np.float64), axis=1)
    va, vb = v[index_a], v[index_b]
    ma, mb = va.mean(0), vb.mean(0)  # [L, d]
    within = ((va - ma) ** 2).sum((0, 2)) + ((vb - mb) ** 2).sum((0, 2))
    pooled = within / (len(index_a) + len(index_b) - 2)
    return np.linalg.norm(ma - mb, axis=1) / np.sqrt(pooled)


def planted(n_a=12, n_b=14, layers=8, hidden=16, k=5, shift=6.0, seed=0) -> np.ndarray:
    """States ``[n, layers + 1, hidden]``: random walks; group A (first n_a) gets an extra step at layer k."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n_a + n_b, layers, hidden))
    steps[:n_a, k, 0] += shift  # only decoder layer k moves group A differently
    start = rng.normal(size=(n_a + n_b, 1, hidden)) * 5
    return np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)


def test_separation_matches_direct_formula():
    rng = np.random.default_rng(1)
    states = rng.normal(size=(20, 6, 9)) + rng.normal(size=(1, 6, 9)) * 100  # a large common offset
    a, b = list(range(8)), list(range(8, 20))
    grams = layer_grams(velocities(states[a + b]))
    mask = np.zeros((1, 20), bool)
    mask[0, :8] = True
    np.testing.assert_allclose(
        separation_from_grams(grams, mask)[0], direct_separation(states, a, b), rtol=1e-10
    )
    # a permuted labelling equals the direct formula on the permuted groups
    order = rng.permutation(20)
    mask = np.zeros((1, 20), bool)
    mask[0, order[:8]] = True
    expected = direct_separation(states, list(order[:8]), list(order[8:]))
    np.testing.assert_allclose(separation_from_grams(grams, mask)[0], expected, rtol=1e-10)


def test_separation_invariant_to_rotation_and_scale():
    states = planted(seed=2)
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(16, 16)))
    a, b = range(12), range(12, 26)
    one = separation_test(states, a, b, permutations=50)
    two = separation_test(2.5 * states @ q, a, b, permutations=50)
    np.testing.assert_allclose(one.separation, two.separation, rtol=1e-9)
    np.testing.assert_allclose(one.band, two.band, rtol=1e-9)


@pytest.mark.parametrize("k", [0, 3, 7])
def test_planted_bifurcation_peaks_at_its_layer(k):
    states = planted(k=k, seed=k)
    result = separation_test(states, range(12), range(12, 26), permutations=500, seed=0)
    assert result.peak_layer == k
    assert result.significant_layers == [k]
    assert result.separation[k] > 2 * result.max_threshold
    assert result.p_familywise[k] == pytest.approx(1 / 501)


def test_permutation_band_covers_the_null():
    """Groups drawn from one distribution: the per-layer band is exceeded at ~alpha of the
    layers, and the family-wise test calls any layer significant in ~alpha of the data sets."""
    alpha, repeats, layers = 0.1, 150, 6
    exceed, any_significant = 0, 0
    for seed in range(repeats):
        states = np.random.default_rng(100 + seed).normal(size=(16, layers + 1, 5))
        result = separation_test(states, range(7), range(7, 16), permutations=199, alpha=alpha, seed=seed)
        exceed += sum(s > b for s, b in zip(result.separation, result.band))
        any_significant += bool(result.significant_layers)
    assert exceed / (repeats * layers) == pytest.approx(alpha, abs=0.035)
    assert any_significant / repeats == pytest.approx(alpha, abs=0.07)


def test_seeded_and_configurable():
    states = planted()
    one = separation_test(states, range(12), range(12, 26), permutations=64, seed=5)
    two = separation_test(states, range(12), range(12, 26), permutations=64, seed=5)
    three = separation_test(states, range(12), range(12, 26), permutations=64, seed=6)
    assert one == two
    assert one.band != three.band


def test_not_enough_samples_and_bad_groups():
    from rlvr_lens.data import Sample

    samples = [Sample(str(i), "p", "1") for i in range(10)]
    config = TrajectoryConfig(min_group_size=5)
    result = trajectory_separation(None, samples, {"leakage": [0, 1], "stable": list(range(2, 10))}, config)
    assert result.status.startswith("not enough samples") and "leakage has 2" in result.status
    assert result.models == []
    assert TrajectoryResult.from_dict(result.to_dict()) == result
    with pytest.raises(UserError, match="share samples"):
        trajectory_separation(
            None, samples, {"leakage": [0, 1, 2], "stable": [2, 3, 4]}, TrajectoryConfig(min_group_size=2)
        )
    with pytest.raises(UserError, match="index 12"):
        trajectory_separation(None, samples, {"leakage": [12], "stable": [2]}, config)
    for bad in (
        TrajectoryConfig(permutations=0),
        TrajectoryConfig(alpha=1.0),
        TrajectoryConfig(group_b="leakage"),
        TrajectoryConfig(position="x"),
    ):
        with pytest.raises(UserError):
            bad.check()


# ----------------------------------------------------------------------------- end to end


class _OneModelSeries:
    """The part of ModelSeries the analysis uses: ``iter_loaded`` yielding loaded models."""

    def __init__(self, loaded):
        self.loaded = loaded

    def iter_loaded(self):
        yield from self.loaded


def test_end_to_end_tiny_model_with_a_planted_bifurcation(tokenizer, tmp_path, single_thread):
    """A 4-layer tiny qwen2 whose layer 2 adds a fixed vector to the residual stream of every
    prompt that contains a marker token: the velocity separation peaks at layer 2."""
    from rlvr_lens.data import Sample
    from rlvr_lens.models.adapters import adapter_for
    from rlvr_lens.models.loading import LoadedModel
    from rlvr_lens.models.tiny import build_tiny_model

    k = 2
    model = build_tiny_model("qwen2", seed=0, vocab_size=len(tokenizer), num_hidden_layers=4)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(24):
        word = "fox" if i < 12 else "dog"
        a, b = rng.integers(10, 99, size=2)
        samples.append(Sample(str(i), f"The {word} asks: what is {a} + {b}?", str(a + b)))
    token_sets = [set(tokenizer(s.prompt, add_special_tokens=False)["input_ids"]) for s in samples]
    marker = sorted(set.intersection(*token_sets[:12]) - set.union(*token_sets[12:]))  # only in "fox" prompts
    assert marker
    seen: dict[str, torch.Tensor] = {}
    model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(ids=kwargs["input_ids"]), with_kwargs=True
    )
    direction = torch.randn(64, generator=torch.Generator().manual_seed(1))
    layers = adapter_for(model).layers(model)

    def plant(module, args, output):
        flagged = (seen["ids"] == marker[0]).any(dim=1)  # [batch]
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden + 2.0 * flagged[:, None, None].to(hidden.dtype) * direction
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    layers[k].register_forward_hook(plant)
    loaded = LoadedModel("planted", "memory", model, tokenizer, adapter_for(model))
    groups = {"leakage": list(range(12)), "stable": list(range(12, 24))}
    config = TrajectoryConfig(permutations=300, batch_size=5, min_group_size=5)
    result = trajectory_separation(_OneModelSeries([loaded]), samples, groups, config)
    assert result.status == "ok" and result.layers == 4
    curve = result.models[0]
    assert curve.peak_layer == k
    assert k in curve.significant_layers
    assert curve.separation[k] > 3 * max(curve.separation[:k])
    path = result.save(tmp_path / "trajectory.json")
    assert TrajectoryResult.load(path) == result

    from rlvr_lens.report import write_run

    report = write_run(tmp_path / "run", [result])
    assert "Trajectory separation" in report.read_text()
    assert (tmp_path / "run" / "figures" / "trajectory-separation.png").exists()


def test_report_of_a_result_without_curves(tmp_path):
    from rlvr_lens.data import Sample
    from rlvr_lens.report import write_run

    samples = [Sample(str(i), "p", "1") for i in range(6)]
    result = trajectory_separation(None, samples, {"leakage": [], "stable": [0, 1, 2]}, TrajectoryConfig())
    html = write_run(tmp_path, [result]).read_text()
    assert "not enough samples: leakage has 0" in html
    assert not (tmp_path / "figures" / "trajectory-separation.png").exists()


# ----------------------------------------------------------------------------- neural-ODE field


def flagged_bifurcation(k: int, n_a=14, n_b=14, layers=5, hidden=8, seed=0) -> np.ndarray:
    """Group A starts with +1 and group B with -1 in dimension 0 (an ODE flow can only separate
    what its start distinguishes); only decoder layer k moves them apart (dimension 1); a common
    drift (dimension 2) and small noise elsewhere."""
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    flag = np.where(np.arange(n) < n_a, 1.0, -1.0)
    start = 0.5 * rng.normal(size=(n, hidden))
    start[:, 0] = flag
    steps = 0.05 * rng.normal(size=(n, layers, hidden))
    steps[:, :, 2] += 0.5
    steps[:, k, 1] += 1.5 * flag
    return np.concatenate([start[:, None], start[:, None] + np.cumsum(steps, axis=1)], axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 3])
def test_vector_field_recovers_a_planted_bifurcation(k, tmp_path, single_thread):
    pytest.importorskip("torchdiffeq")
    from rlvr_lens.data import Sample
    from rlvr_lens.report import write_run

    states = flagged_bifurcation(k)
    samples = [Sample(str(i), "p", "1") for i in range(len(states))]
    groups = {"leakage": list(range(14)), "stable": list(range(14, 28))}
    config = TrajectoryConfig(permutations=200, vector_field=True, field_components=4, field_steps=150)
    result = trajectory_separation(None, samples, groups, config, states={"planted": states})
    fit = result.vector_fields[0]
    assert fit.fit_r2 > 0.9
    assert fit.separation.peak_layer == k
    assert k in fit.separation.significant_layers
    assert result.models[0].peak_layer == k  # the model-free curve agrees
    assert TrajectoryResult.from_dict(result.to_dict()) == result
    write_run(tmp_path, [result])
    assert (tmp_path / "figures" / "trajectory-vector-field.png").exists()


def test_vector_field_cannot_fit_trajectories_from_one_start_and_the_report_says_so(tmp_path, single_thread):
    pytest.importorskip("torchdiffeq")
    from rlvr_lens.data import Sample
    from rlvr_lens.report import write_run

    states = flagged_bifurcation(2)
    states[:, 0] = states[0, 0]  # every trajectory starts at the same point (one template token)
    samples = [Sample(str(i), "p", "1") for i in range(len(states))]
    groups = {"leakage": list(range(14)), "stable": list(range(14, 28))}
    config = TrajectoryConfig(permutations=50, vector_field=True, field_components=4, field_steps=60)
    result = trajectory_separation(None, samples, groups, config, states={"one-start": states})
    assert result.vector_fields[0].fit_r2 < 0.5
    assert result.models[0].peak_layer == 2  # the model-free curve does not need distinct starts
    assert "The field does not fit" in write_run(tmp_path, [result]).read_text()

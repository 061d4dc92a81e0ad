"""The Path Not Taken's mask measure and cross-run consistency, against NumPy recomputations.

Checkpoints are the hand-written two-layer "model" of ``test_weights.py`` (known SVDs).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from rlvr_lens.analyses.weights import WeightsConfig
from test_weights import DOWN, UP, Q, _base_tensors, _run

MATRICES = (Q, UP, DOWN)
UP0 = "model.layers.0.mlp.up_proj.weight"


def _numpy_overlaps(w, dw, k, alpha):
    """Exact overlaps from the definitions: full sort of |W^(k)| and |W|, float64."""
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    recon = np.abs((u[:, :k] * s[:k]) @ vt[:k]).ravel()
    magnitude = np.abs(w).ravel()
    changed = dw.ravel() != 0
    n_mask = alpha * w.size
    principal = np.zeros(w.size, bool)
    principal[np.argsort(-recon, kind="stable")[: round(n_mask)]] = True
    low = np.zeros(w.size, bool)
    low[np.argsort(magnitude, kind="stable")[: round(n_mask)]] = True
    return (changed & principal).sum() / changed.sum(), (changed & low).sum() / changed.sum()


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_mask_overlap_equals_numpy_sort(tmp_path, alpha):
    base, _ = _base_tensors()
    rng = np.random.default_rng(3)
    tuned = dict(base)
    for name in MATRICES:
        w = base[name]
        # a structured update: entries large in the base's rank-4 reconstruction change more often
        u, sv, vt = np.linalg.svd(w, full_matrices=False)
        recon = np.abs((u[:, :4] * sv[:4]) @ vt[:4])
        mask = rng.random(w.shape) < (recon / recon.max()) ** 2
        tuned[name] = w + mask * rng.standard_normal(w.shape) * 0.01
    config = WeightsConfig(k_fraction=0.1, k_fixed=4, chunk_mb=0.004, mask_alpha=alpha, mask_update="exact")
    result = _run(tmp_path, base, {"rl": tuned}, config)
    for name in MATRICES:
        row = result.row("rl", name)
        mo = row.mask_overlap
        expected_principal, expected_low = _numpy_overlaps(base[name], tuned[name] - base[name], mo.k, alpha)
        assert mo.k == 4 and mo.alpha == alpha and mo.update_rule == "exact"
        assert mo.update_density == pytest.approx(np.count_nonzero(tuned[name] != base[name]) / base[name].size)
        # the histogram answer is within its own stated error bound of the exact one (plus one entry of rounding)
        one = 1 / np.count_nonzero(tuned[name] != base[name])
        assert abs(mo.principal_overlap - expected_principal) <= mo.principal_error + one
        assert abs(mo.low_magnitude_overlap - expected_low) <= mo.low_magnitude_error + one
        assert mo.principal_error < 0.02 and mo.low_magnitude_error < 0.02
        # the update prefers the principal entries: far more than chance in the principal mask
        assert mo.principal_overlap > alpha + 0.2
    if alpha == 0.5:  # switched off: no overlap, every other metric unchanged
        off = _run(tmp_path / "off", base, {"rl": tuned}, dataclasses.replace(config, mask_overlap=False))
        for name in MATRICES:
            on_row, off_row = dataclasses.asdict(result.row("rl", name)), dataclasses.asdict(off.row("rl", name))
            assert off_row.pop("mask_overlap") is None and on_row.pop("mask_overlap") is not None
            assert off_row == on_row


def test_random_mask_overlap_is_alpha_and_aggregates_pool(tmp_path):
    base, _ = _base_tensors()
    rng = np.random.default_rng(4)
    tuned = dict(base)
    for name in (*MATRICES, UP0):
        tuned[name] = base[name] + (rng.random(base[name].shape) < 0.5) * 0.01
    config = WeightsConfig(k_fraction=0.1, k_fixed=4, chunk_mb=0.004, mask_alpha=0.3, mask_update="exact")
    result = _run(tmp_path, base, {"rl": tuned}, config)
    for name in MATRICES:
        mo = result.row("rl", name).mask_overlap
        n_changed = np.count_nonzero(tuned[name] != base[name])
        sd = math.sqrt(0.3 * 0.7 / n_changed)  # sampling spread of a random support
        assert mo.principal_overlap == pytest.approx(0.3, abs=4 * sd + mo.principal_error)
        assert mo.low_magnitude_overlap == pytest.approx(0.3, abs=4 * sd + mo.low_magnitude_error)
    untouched = result.row("rl", "model.layers.1.self_attn.q_proj.weight").mask_overlap
    assert untouched.principal_overlap is None and untouched.low_magnitude_overlap is None  # nothing changed
    rows = [result.row("rl", n) for n in (UP, UP0)]
    agg = next(a for a in result.aggregates if a.run == "rl" and a.scope == "module" and a.key == "up")
    changed = [(1 - r.sparsity) * r.n_params for r in rows]
    pooled = sum(r.mask_overlap.principal_overlap * c for r, c in zip(rows, changed)) / sum(changed)
    assert agg.principal_mask_overlap == pytest.approx(pooled, rel=1e-12)


def test_update_consistency_equals_numpy_cosines(tmp_path):
    base, _ = _base_tensors()
    rng = np.random.default_rng(5)
    shared = {name: rng.standard_normal(w.shape) for name, w in base.items()}
    runs = {}
    for i, run in enumerate(("a", "b", "c")):
        # each run = a shared direction plus its own noise of growing size
        runs[run] = {name: w + 1e-2 * (shared[name] + (0.5 + i) * rng.standard_normal(w.shape)) for name, w in base.items()}
    result = _run(tmp_path, base, runs, WeightsConfig(metrics="cheap", chunk_mb=0.004))
    flat = {run: np.concatenate([(runs[run][n] - base[n]).ravel() for n in sorted(base)]) for run in runs}
    model = next(c for c in result.consistency if c.scope == "model")
    assert model.runs == ["a", "b", "c"] and model.n_params == sum(w.size for w in base.values())

    def cos(x, y):
        return x @ y / np.linalg.norm(x) / np.linalg.norm(y)

    mean = sum(flat.values()) / 3
    for i, a in enumerate(model.runs):
        for j, b in enumerate(model.runs):
            assert model.cosine[i][j] == pytest.approx(cos(flat[a], flat[b]), abs=1e-5)
        assert model.cosine_to_mean[i] == pytest.approx(cos(flat[a], mean), abs=1e-5)
        others = sum(flat[b] for b in model.runs if b != a) / 2
        assert model.cosine_to_others[i] == pytest.approx(cos(flat[a], others), abs=1e-5)
    assert 0.1 < model.cosine[0][1] < 0.95  # shared direction present, noise too
    assert model.chance_std == pytest.approx(1 / math.sqrt(model.n_params))
    up = next(c for c in result.consistency if c.scope == "module" and c.key == "up")
    names = [n for n in sorted(base) if n.endswith("up_proj.weight")]
    fa, fb = (np.concatenate([(runs[r][n] - base[n]).ravel() for n in names]) for r in ("a", "b"))
    assert up.cosine[0][1] == pytest.approx(cos(fa, fb), abs=1e-5)
    assert result.consistency and len({c.key for c in result.consistency if c.scope == "module"}) >= 3


def test_bf16_update_rule_ignores_changes_bf16_cannot_store(tmp_path):
    base, _ = _base_tensors()
    rng = np.random.default_rng(6)
    tuned = dict(base)
    w = base[Q]
    visible = rng.random(w.shape) < 0.2
    # every entry moves by 1e-5 relative (invisible in bf16); 20 % also move by 5 % (visible)
    tuned[Q] = w * (1 + 1e-5) + visible * 0.05 * np.abs(w) * np.sign(w)
    config = WeightsConfig(k_fraction=0.1, k_fixed=4, chunk_mb=0.004, include="layers.0.self_attn.q_proj")
    auto = _run(tmp_path / "auto", base, {"rl": tuned}, config).row("rl", Q).mask_overlap
    exact = _run(tmp_path / "exact", base, {"rl": tuned}, dataclasses.replace(config, mask_update="exact")).row("rl", Q).mask_overlap
    b16 = torch.from_numpy(w).float().bfloat16() != torch.from_numpy(tuned[Q]).float().bfloat16()
    assert auto.update_rule == "bf16" and auto.update_density == pytest.approx(float(b16.double().mean()), abs=1e-12)
    assert exact.update_rule == "exact" and exact.update_density == pytest.approx(1.0)
    assert exact.principal_overlap == pytest.approx(0.5, abs=exact.principal_error + 1e-3)  # every entry: alpha


def test_mask_options_are_checked():
    from rlvr_lens.errors import UserError

    for bad in (dict(mask_alpha=0.0), dict(mask_alpha=1.0), dict(mask_k=0), dict(mask_update="fp8")):
        with pytest.raises(UserError):
            WeightsConfig(**bad).check()

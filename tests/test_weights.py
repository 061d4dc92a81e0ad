"""Weight forensics recovers planted updates, checked against float64 NumPy/SciPy recomputations.

Checkpoints are hand-written safetensors / .bin files of a two-layer "model" whose matrices
have a known SVD, so every planted update has a known answer:

- an update inside the base's top-k principal subspace (principal share 1, rank known),
- an update orthogonal to it (principal share 0, top-k subspaces and singular values unchanged),
- a sparse update (sparsity exact; two sparse runs with a known overlap for the Jaccard index),
- float32 updates below half a bf16 ulp (the precision gate),
and a random update whose every metric is recomputed with ``np.linalg.svd`` in float64.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file

from rlvr_lens.analyses.weights import WeightsConfig, WeightsResult, weight_forensics
from rlvr_lens.cli import main
from rlvr_lens.errors import UserError
from rlvr_lens.models.parameter_names import parameter_role

HIDDEN, INTER = 40, 96  # q: [40, 40], up: [96, 40] (tall), down: [40, 96] (wide)
K = 4  # k_fixed in these tests; k_fraction 0.1 -> k = 4 for rank 40


def _orthonormal(rng, n):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q


def _known_svd(rng, m, n):
    """``(W, U, s, V)`` with ``W = U diag(s) V^T``, well separated decaying singular values."""
    p = min(m, n)
    u, v = _orthonormal(rng, m)[:, :p], _orthonormal(rng, n)[:, :p]
    s = 4.0 * 0.93 ** np.arange(p) + 0.2
    return (u * s) @ v.T, u, s, v


def _base_tensors(seed=0):
    rng = np.random.default_rng(seed)
    tensors, svds = {}, {}
    for layer in range(2):
        for name, shape in (("self_attn.q_proj", (HIDDEN, HIDDEN)), ("mlp.up_proj", (INTER, HIDDEN)), ("mlp.down_proj", (HIDDEN, INTER))):
            w, u, s, v = _known_svd(rng, *shape)
            full = f"model.layers.{layer}.{name}.weight"
            tensors[full] = w
            svds[full] = (u, s, v)
        tensors[f"model.layers.{layer}.input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(HIDDEN)
    tensors["model.embed_tokens.weight"] = rng.standard_normal((64, HIDDEN)) * 0.05
    tensors["model.norm.weight"] = 1 + 0.1 * rng.standard_normal(HIDDEN)
    return tensors, svds


def _write(directory, tensors, *, layout="single", dtype=torch.float32, tie=True):
    """Write ``tensors`` (name -> float64 array) as a checkpoint directory in ``layout``."""
    directory.mkdir(parents=True, exist_ok=True)
    torch_tensors = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype) for k, v in tensors.items()}
    (directory / "config.json").write_text(json.dumps({"model_type": "qwen2", "tie_word_embeddings": tie}))
    if layout == "single":
        save_file(torch_tensors, str(directory / "model.safetensors"))
    elif layout == "sharded":
        names = sorted(torch_tensors)
        shards = [names[::2], names[1::2]]
        weight_map = {}
        for i, shard in enumerate(shards):
            file = f"model-{i + 1:05d}-of-00002.safetensors"
            save_file({n: torch_tensors[n] for n in shard}, str(directory / file))
            weight_map.update(dict.fromkeys(shard, file))
        (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        torch.save(torch_tensors, directory / "pytorch_model.bin")
    return directory


def _run(tmp_path, base, tuned: dict, config=None, **write_kw):
    base_dir = _write(tmp_path / "base", base, **write_kw)
    dirs = {name: _write(tmp_path / name, t, **write_kw) for name, t in tuned.items()}
    return weight_forensics(base_dir, dirs, config or WeightsConfig(k_fraction=0.1, k_fixed=K, chunk_mb=0.004))


UP = "model.layers.1.mlp.up_proj.weight"
DOWN = "model.layers.0.mlp.down_proj.weight"
Q = "model.layers.0.self_attn.q_proj.weight"


def test_parameter_roles_cover_every_family(tiny_checkpoints):
    from rlvr_lens.models.checkpoint_files import CheckpointTensors

    known = {"embed", "lm_head", "final_norm", "q", "k", "v", "o", "gate", "up", "down", "q_bias", "k_bias", "v_bias"}
    known |= {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"}
    known |= {"q_norm", "k_norm"}
    for family, directory in tiny_checkpoints.items():
        names = CheckpointTensors.open(directory).names
        roles = [parameter_role(n) for n in names]
        assert {m for _, m in roles} <= known, (family, {m for _, m in roles} - known)
        assert {layer for layer, m in roles if m == "down"} == {0, 1}, family
        for module in ("q", "k", "v", "o", "gate", "up", "down"):
            assert sum(m == module for _, m in roles) == 2, (family, module)


def test_random_update_matches_float64_numpy_svd(tmp_path):
    base, _ = _base_tensors()
    rng = np.random.default_rng(5)
    tuned = {k: v + 0.02 * rng.standard_normal(v.shape) * (1 + (rng.random(v.shape) < 0.1)) for k, v in base.items()}
    result = _run(tmp_path, base, {"rl": tuned}, layout="single", dtype=torch.float64)
    for name in (Q, UP, DOWN):
        row = result.row("rl", name)
        w, w2 = base[name], tuned[name]
        dw = w2 - w
        u, s, vt = np.linalg.svd(w, full_matrices=False)
        u2, s2, vt2 = np.linalg.svd(w2, full_matrices=False)
        sd = np.linalg.svd(dw, compute_uv=False)
        assert row.relative_norm == pytest.approx(np.linalg.norm(dw) / np.linalg.norm(w), rel=1e-9)
        assert row.spectral_drift == pytest.approx(np.linalg.norm(s2 - s) / np.linalg.norm(s), rel=1e-7)
        assert row.update_spectral_norm == pytest.approx(sd[0], rel=1e-9)
        assert row.stable_rank == pytest.approx((sd**2).sum() / sd[0] ** 2, rel=1e-9)
        p = sd / sd.sum()
        assert row.effective_rank == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-7)
        assert row.rank_errors["16"] == pytest.approx(np.sqrt((sd[16:] ** 2).sum() / (sd**2).sum()), rel=1e-7)
        coef = np.einsum("mi,mn,ni->i", u, dw, vt.T)
        edges = np.linspace(0, len(s), 11).round().astype(int)
        expected_bins = [(coef[a:b] ** 2).sum() / (dw**2).sum() for a, b in zip(edges[:-1], edges[1:])]
        np.testing.assert_allclose(row.energy_bins, expected_bins, rtol=1e-6, atol=1e-12)
        for stats in row.subspaces:
            k = stats.k
            left = np.degrees(scipy.linalg.subspace_angles(u[:, :k], u2[:, :k]))
            right = np.degrees(scipy.linalg.subspace_angles(vt[:k].T, vt2[:k].T))
            assert stats.angle_left_max_deg == pytest.approx(left.max(), rel=1e-6, abs=1e-6)
            assert stats.angle_right_max_deg == pytest.approx(right.max(), rel=1e-6, abs=1e-6)
            assert stats.angle_left_mean_deg == pytest.approx(left.mean(), rel=1e-6, abs=1e-6)
            assert stats.angle_right_mean_deg == pytest.approx(right.mean(), rel=1e-6, abs=1e-6)
            proj = u[:, :k].T @ dw @ vt[:k].T
            energy = (dw**2).sum()
            assert stats.principal_share == pytest.approx((proj**2).sum() / energy, rel=1e-7)
            assert stats.left_share == pytest.approx(((u[:, :k].T @ dw) ** 2).sum() / energy, rel=1e-7)
            assert stats.right_share == pytest.approx(((dw @ vt[:k].T) ** 2).sum() / energy, rel=1e-7)
            assert stats.principal_share_random == pytest.approx(k * k / dw.size)
            assert stats.spectral_drift_topk == pytest.approx(np.linalg.norm(s2[:k] - s[:k]) / np.linalg.norm(s[:k]), rel=1e-6)
    # aggregates: relative norm sqrt(sum dW^2 / sum W^2), sparsity weighted by size, the rest
    # means over the group's matrices (1-D tensors have no spectrum and are left out of those)
    def numpy_metrics(name):
        w, dw = base[name], tuned[name] - base[name]
        s, s2 = np.linalg.svd(w, compute_uv=False), np.linalg.svd(tuned[name], compute_uv=False)
        sd = np.linalg.svd(dw, compute_uv=False)
        u, _, vt = np.linalg.svd(w, full_matrices=False)
        u2, _, vt2 = np.linalg.svd(tuned[name], full_matrices=False)
        return {
            "spectral_drift": np.linalg.norm(s2 - s) / np.linalg.norm(s),
            "stable_rank": (sd**2).sum() / sd[0] ** 2,
            "angle_left_max_deg": np.degrees(scipy.linalg.subspace_angles(u[:, :K], u2[:, :K])).max(),
            "angle_right_max_deg": np.degrees(scipy.linalg.subspace_angles(vt[:K].T, vt2[:K].T)).max(),
            "principal_share": ((u[:, :K].T @ dw @ vt[:K].T) ** 2).sum() / (dw**2).sum(),
        }

    groups = {("module", "up"): [UP, UP.replace("layers.1", "layers.0")], ("layer", "0"): [
        n for n in base if n.startswith("model.layers.0.")]}
    for (scope, key), names in groups.items():
        agg = next(a for a in result.aggregates if a.run == "rl" and a.scope == scope and a.key == key)
        assert agg.n_tensors == len(names) and agg.n_params == sum(base[n].size for n in names)
        assert agg.relative_norm == pytest.approx(
            math.sqrt(sum(((tuned[n] - base[n]) ** 2).sum() for n in names) / sum((base[n] ** 2).sum() for n in names)), rel=1e-9
        )
        assert agg.sparsity == pytest.approx(sum((tuned[n] == base[n]).sum() for n in names) / agg.n_params, abs=1e-12)
        matrices = [numpy_metrics(n) for n in names if base[n].ndim == 2]
        for metric in matrices[0]:
            assert getattr(agg, metric) == pytest.approx(np.mean([m[metric] for m in matrices]), rel=1e-6, abs=1e-6), (key, metric)
    _check_weights_section(result, base, tuned)
    # float32 Gram matrices (the GPU default) agree to a stated tolerance
    f32 = weight_forensics(
        tmp_path / "base", {"rl": tmp_path / "rl"}, WeightsConfig(k_fraction=0.1, k_fixed=K, svd_dtype="float32")
    )
    for name in (Q, UP, DOWN):
        a, b = f32.row("rl", name), result.row("rl", name)
        assert a.spectral_drift == pytest.approx(b.spectral_drift, rel=1e-3)
        assert a.subspaces[0].angle_left_max_deg == pytest.approx(b.subspaces[0].angle_left_max_deg, abs=0.05)
        assert a.subspaces[0].principal_share == pytest.approx(b.subspaces[0].principal_share, rel=1e-3)


def _check_weights_section(result, base, tuned):
    """The report section's per-module table and summary, read back against the result's JSON
    (the summary's overall sparsity and relative norm recomputed from the tensors themselves)."""
    from report_numbers import assert_shows, column, numbers_in
    from rlvr_lens.analyses.weights_report import section_weights

    data = json.loads(json.dumps(result.to_dict()))
    section = section_weights(result, {})
    [table] = [tb for tb in section.tables if tb.columns[0] == "module"]
    aggregates = [a for a in data["aggregates"] if a["run"] == "rl" and a["scope"] == "module"]
    assert column(table, "module") == [a["key"] for a in aggregates]
    for header, key in (("sparsity", "sparsity"), ("within tol", "tol_sparsity"), ("precision gate", "precision_gate"),
                        ("rel. norm", "relative_norm"), ("spectral drift", "spectral_drift"),
                        ("angle L (deg)", "angle_left_max_deg"), ("angle R (deg)", "angle_right_max_deg"),
                        ("stable rank", "stable_rank"), ("eff. rank", "effective_rank")):
        for cell, a in zip(column(table, header), aggregates):
            assert_shows(cell, a[key], where=f"{a['key']} {header}")
    for cell, a in zip(column(table, "principal share / random"), aggregates):
        assert_shows(cell, None if a["principal_share"] is None else a["principal_share"] / a["principal_share_random"])
    shown = numbers_in(section.summary)
    n = sum(v.size for v in base.values())
    assert_shows(shown[0], 100 * sum((tuned[k] == base[k]).sum() for k in base) / n, where="summary sparsity")
    norm = math.sqrt(sum(((tuned[k] - base[k]) ** 2).sum() for k in base) / sum((base[k] ** 2).sum() for k in base))
    assert_shows(shown[1], norm, where="summary relative norm")


def test_planted_principal_and_orthogonal_updates(tmp_path):
    base, svds = _base_tensors()
    principal, orthogonal = dict(base), dict(base)
    for name in (Q, UP, DOWN):
        u, s, v = svds[name]
        # rank-2 update inside the top-2 principal directions; mixing the two is a rotation within the top-4
        a = np.array([[0.3, 0.1], [0.05, 0.2]])
        principal[name] = base[name] + u[:, :2] @ a @ v[:, :2].T
        # rank-3 update on directions 8..10: orthogonal to the top-k on both sides, too small to reorder them
        b = np.diag([0.05, 0.04, 0.03])
        orthogonal[name] = base[name] + u[:, 8:11] @ b @ v[:, 8:11].T
    result = _run(tmp_path, base, {"principal": principal, "orthogonal": orthogonal}, dtype=torch.float64)
    for name in (Q, UP, DOWN):
        row = result.row("principal", name)
        sa = np.linalg.svd(np.array([[0.3, 0.1], [0.05, 0.2]]), compute_uv=False)
        assert row.update_spectral_norm == pytest.approx(sa[0], rel=1e-9)
        assert row.stable_rank == pytest.approx((sa**2).sum() / sa[0] ** 2, rel=1e-7)
        assert row.rank_errors["16"] == pytest.approx(0.0, abs=1e-6)
        for stats in row.subspaces:
            assert stats.principal_share == pytest.approx(1.0, abs=1e-9)
            assert stats.left_share == pytest.approx(1.0, abs=1e-9)
            assert stats.right_share == pytest.approx(1.0, abs=1e-9)
            # the top-4 subspaces contain the update, so they do not rotate
            assert stats.angle_left_max_deg < 1e-4 and stats.angle_right_max_deg < 1e-4
        assert row.energy_bins[0] == pytest.approx(row.diagonal_share, rel=1e-9)  # all energy at ranks 1-2

        row = result.row("orthogonal", name)
        assert row.update_spectral_norm == pytest.approx(0.05, rel=1e-9)
        assert row.stable_rank == pytest.approx((0.05**2 + 0.04**2 + 0.03**2) / 0.05**2, rel=1e-7)
        assert row.effective_rank == pytest.approx(math.exp(-sum(x * math.log(x) for x in np.array([5, 4, 3]) / 12)), rel=1e-7)
        for stats in row.subspaces:
            assert stats.principal_share == pytest.approx(0.0, abs=1e-9)
            assert stats.left_share == pytest.approx(0.0, abs=1e-9)
            assert stats.right_share == pytest.approx(0.0, abs=1e-9)
            assert stats.angle_left_max_deg < 1e-4 and stats.angle_right_max_deg < 1e-4
            assert stats.spectral_drift_topk == pytest.approx(0.0, abs=1e-9)
        s = svds[name][1]
        s2 = s.copy()
        s2[8:11] += [0.05, 0.04, 0.03]
        assert row.spectral_drift == pytest.approx(np.linalg.norm(s2 - s) / np.linalg.norm(s), rel=1e-6)
        assert row.energy_bins[2] == pytest.approx(1.0, rel=1e-6)  # ranks 9-11 of 40 sit in bin 3 of 10


def test_planted_sparse_updates_and_cross_run_overlap(tmp_path):
    base, _ = _base_tensors()
    rng = np.random.default_rng(1)
    run_a, run_b = dict(base), dict(base)
    expected = {}
    for name, w in base.items():
        flat = w.size
        idx = rng.permutation(flat)
        a_idx, b_idx = idx[: flat // 10], idx[flat // 20 : flat // 20 + flat // 10]  # half of each overlaps
        da, db = np.zeros(flat), np.zeros(flat)
        da[a_idx] = 0.5
        db[b_idx] = rng.choice([-0.5, 0.5], len(b_idx))
        run_a[name] = w + da.reshape(w.shape)
        run_b[name] = w + db.reshape(w.shape)
        inter = len(np.intersect1d(a_idx, b_idx))
        expected[name] = (1 - len(a_idx) / flat, inter / (len(a_idx) + len(b_idx) - inter), da @ db / np.linalg.norm(da) / np.linalg.norm(db))
    result = _run(tmp_path, base, {"a": run_a, "b": run_b}, WeightsConfig(metrics="cheap", chunk_mb=0.004))
    for name, (sparsity, jaccard, cosine) in expected.items():
        assert result.row("a", name).sparsity == pytest.approx(sparsity, abs=1e-12)
        row = next(c for c in result.cross if c.name == name)
        assert row.jaccard == pytest.approx(jaccard, abs=1e-12)
        pa, pb = row.density_a, row.density_b
        assert row.jaccard_chance == pytest.approx(pa * pb / (pa + pb - pa * pb))
        assert row.cosine == pytest.approx(cosine, abs=1e-6)
        assert row.cosine_chance_std == pytest.approx(1 / math.sqrt(base[name].size))
        assert result.row("a", name).subspaces == []  # cheap: no SVD
    assert result.row("a", Q).tol_sparsity == result.row("a", Q).sparsity  # 0.5 >> tol
    # aggregates: parameter-weighted sparsity and pooled relative norm per module type and per layer
    rows = [r for r in result.rows("a") if r.module == "up"]
    agg = next(a for a in result.aggregates if a.run == "a" and a.scope == "module" and a.key == "up")
    assert agg.n_tensors == 2 and agg.n_params == sum(r.n_params for r in rows)
    assert agg.sparsity == pytest.approx(sum(r.sparsity * r.n_params for r in rows) / agg.n_params)
    d2 = sum(np.sum((run_a[r.name] - base[r.name]) ** 2) for r in rows)
    assert agg.relative_norm == pytest.approx(math.sqrt(d2 / sum(np.sum(base[r.name] ** 2) for r in rows)), rel=1e-5)
    layers = [a.key for a in result.aggregates if a.run == "a" and a.scope == "layer"]
    assert layers == ["0", "1"]


def test_precision_gate_counts_updates_below_bf16_resolution(tmp_path):
    base, _ = _base_tensors()
    base = {k: torch.from_numpy(v).to(torch.bfloat16).double().numpy() for k, v in base.items()}  # bf16-exact values
    rng = np.random.default_rng(2)
    tuned, expected, counts = {}, {}, {}
    for name, w in base.items():
        exponent = np.floor(np.log2(np.abs(w)))
        tiny = 2.0 ** (exponent - 10)  # bf16 ulp at 2^e is 2^(e-7): a quarter of half an ulp rounds back
        large = 2.0 ** (exponent - 5)  # 4 ulps: survives
        pick = rng.random(w.shape)
        delta = np.where(pick < 0.3, tiny, np.where(pick < 0.4, large, 0.0))
        tuned[name] = w + delta
        # (precision gate, sparsity in float32, sparsity once both are stored in bf16)
        expected[name] = ((pick < 0.3).sum() / (pick < 0.4).sum(), 1 - (pick < 0.4).mean(), 1 - ((pick >= 0.3) & (pick < 0.4)).mean())
        counts[name] = (int((pick < 0.3).sum()), int((pick < 0.4).sum()))
    result = _run(tmp_path, base, {"rl": tuned}, WeightsConfig(metrics="cheap", tol=1e-5))
    # aggregated gate: vanished / changed weights summed over a group's tensors (not a mean of ratios)
    for agg in (a for a in result.aggregates if a.scope == "layer"):
        names = [n for n in base if n.startswith(f"model.layers.{agg.key}.")]
        vanished = sum(counts[n][0] for n in names)
        changed = sum(counts[n][1] for n in names)
        assert agg.precision_gate == pytest.approx(vanished / changed, abs=1e-12), agg.key
    for name, (gate, sparsity, _) in expected.items():
        row = result.row("rl", name)
        assert row.precision_gate == pytest.approx(gate, abs=1e-12)
        assert row.sparsity == pytest.approx(sparsity, abs=1e-12)
        d = (torch.from_numpy(tuned[name]).float() - torch.from_numpy(base[name]).float()).double().numpy()
        assert row.tol_sparsity == pytest.approx((np.abs(d) <= 1e-5).mean(), abs=1e-12)
    # the same pair stored in bf16 has no precision gate, and the tiny updates are gone (exact equality)
    bf = _run(tmp_path / "bf", base, {"rl": tuned}, WeightsConfig(metrics="cheap"), dtype=torch.bfloat16)
    for name, (_, _, sparsity) in expected.items():
        row = bf.row("rl", name)
        assert row.precision_gate is None
        assert row.sparsity == pytest.approx(sparsity, abs=1e-12)


def _assert_close(a, b, path="result"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-12), path
    else:
        assert a == b, path


def test_layouts_and_stored_dtypes_give_the_same_result(tmp_path):
    base, _ = _base_tensors()
    rng = np.random.default_rng(3)
    tuned = {k: v + 0.01 * rng.standard_normal(v.shape) for k, v in base.items()}
    cfg = WeightsConfig(k_fraction=0.1, k_fixed=K, chunk_mb=0.004)
    results = [_run(tmp_path / layout, base, {"rl": tuned}, cfg, layout=layout) for layout in ("single", "sharded", "bin")]
    dicts = [r.to_dict() for r in results]
    for d in dicts:
        d.pop("sources"), d.pop("wall_time_s")
    # equal up to the order of float32 summation in the norms (memory-mapped vs read tensors)
    _assert_close(dicts[0], dicts[1])
    _assert_close(dicts[0], dicts[2])
    assert [r.sparsity for r in results[0].matrices] == [r.sparsity for r in results[2].matrices]
    # the positioned-read tensor reader returns exactly what safetensors itself loads
    from safetensors.torch import load_file

    from rlvr_lens.models.checkpoint_files import CheckpointTensors

    reference = load_file(str(tmp_path / "sharded" / "rl" / "model-00001-of-00002.safetensors"))
    with CheckpointTensors.open(tmp_path / "sharded" / "rl") as reader:
        for name, tensor in reference.items():
            assert torch.equal(reader.tensor(name), tensor)
            assert torch.equal(reader.rows(name, 1, 3), tensor[1:3])
    # chunking does not change the answer beyond rounding
    whole = weight_forensics(tmp_path / "single" / "base", {"rl": tmp_path / "single" / "rl"}, WeightsConfig(k_fraction=0.1, k_fixed=K))
    for a, b in zip(whole.matrices, results[0].matrices):
        assert a.sparsity == b.sparsity and a.relative_norm == pytest.approx(b.relative_norm, rel=1e-6)
        if a.subspaces:
            assert a.subspaces[0].principal_share == pytest.approx(b.subspaces[0].principal_share, rel=1e-8)
    # base bf16, tuned float32: compared in float32 (the base's values upcast exactly)
    _write(tmp_path / "mixed" / "base", base, dtype=torch.bfloat16)
    _write(tmp_path / "mixed" / "rl", tuned, dtype=torch.float32)
    mixed = weight_forensics(tmp_path / "mixed" / "base", {"rl": tmp_path / "mixed" / "rl"}, WeightsConfig(metrics="cheap"))
    row = mixed.row("rl", Q)
    assert (row.dtype_base, row.dtype_tuned) == ("bfloat16", "float32")
    d = torch.from_numpy(tuned[Q]).float().double() - torch.from_numpy(base[Q]).to(torch.bfloat16).double()
    assert row.update_norm == pytest.approx(float(d.norm()), rel=1e-5)
    assert row.precision_gate is not None
    # JSON round trip
    assert WeightsResult.from_dict(json.loads(results[0].to_json())).to_dict() == results[0].to_dict()


def test_tied_lm_head_and_mismatches(tmp_path):
    base, _ = _base_tensors()
    tuned = dict(base)
    result = _run(tmp_path / "tied", base, {"rl": tuned}, WeightsConfig(metrics="cheap"))
    assert result.skipped == ["lm_head.weight"]
    assert all(r.sparsity == 1.0 and r.update_norm == 0.0 for r in result.matrices)
    # one side stores lm_head, the other ties it: lm_head is compared with the tied embedding
    _write(tmp_path / "oneside" / "base", base, tie=True)
    _write(tmp_path / "oneside" / "rl", {**base, "lm_head.weight": base["model.embed_tokens.weight"]}, tie=False)
    one = weight_forensics(tmp_path / "oneside" / "base", {"rl": tmp_path / "oneside" / "rl"}, WeightsConfig(metrics="cheap"))
    assert one.row("rl", "lm_head.weight").sparsity == 1.0
    # a missing tensor and a different shape are one-sentence user errors
    _write(tmp_path / "missing", {k: v for k, v in base.items() if k != UP})
    with pytest.raises(UserError, match="up_proj.weight is in .* but not in"):
        weight_forensics(tmp_path / "tied" / "base", {"rl": tmp_path / "missing"})
    _write(tmp_path / "shape", {**base, UP: base[UP][:-1]})
    with pytest.raises(UserError, match=r"has shape \[96, 40\] in .* but \[95, 40\]"):
        weight_forensics(tmp_path / "tied" / "base", {"rl": tmp_path / "shape"})
    _write(tmp_path / "nan", {**base, Q: base[Q] * np.nan})
    with pytest.raises(UserError, match="NaN"):
        weight_forensics(tmp_path / "tied" / "base", {"rl": tmp_path / "nan"}, WeightsConfig(metrics="cheap"))
    with pytest.raises(UserError, match="does not exist"):
        weight_forensics(tmp_path / "nowhere", {"rl": tmp_path / "shape"})
    with pytest.raises(UserError, match="cpu or cuda"):
        weight_forensics(tmp_path / "tied" / "base", {"rl": tmp_path / "shape"}, WeightsConfig(device="mps"))
    with pytest.raises(UserError, match="cheap"):
        weight_forensics(tmp_path / "tied" / "base", {"rl": tmp_path / "shape"}, WeightsConfig(metrics="some"))


def test_cli_writes_report_and_exits_2_on_missing_path(tmp_path, tiny_pair, capsys):
    base, tuned = tiny_pair
    out = tmp_path / "run"
    assert main(["weights", "--model", f"base={base}", "--model", f"rl={tuned}", "--out", str(out), "--no-progress"]) == 0
    result = WeightsResult.load(out / "weights.json")
    assert result.runs == ["rl"] and result.aggregates
    assert (out / "report.html").is_file() and (out / "figures" / "weights-heatmaps-rl.png").is_file()
    assert (out / "figures" / "weights-spectrum.png").is_file()
    code = main(["weights", "--model", f"base={base}", "--model", f"rl={tmp_path / 'absent'}", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "No checkpoint directory" in capsys.readouterr().err
    assert not (tmp_path / "x" / "weights.json").exists()


@pytest.mark.parametrize("metrics", ["cheap", "all"])
def test_chunks_respect_chunk_mb_for_wide_matrices(tmp_path, monkeypatch, metrics):
    """Every row chunk holds at most ``chunk_mb`` of float32 per tensor, the wide ``down`` included
    (the cheap pass cuts stored rows of 96 entries; the spectral one rows of the tall orientation)."""
    import rlvr_lens.analyses.weights as weights_module

    base, _ = _base_tensors()
    tuned = {name: w + 0.01 for name, w in base.items()}
    sizes: dict[str, list[int]] = {}
    original = weights_module._chunks

    def spy(readers, name, shape, chunk_rows, **kw):
        for chunk in original(readers, name, shape, chunk_rows, **kw):
            sizes.setdefault(name, []).append(max(c.numel() for c in chunk))
            yield chunk

    monkeypatch.setattr(weights_module, "_chunks", spy)
    config = WeightsConfig(metrics=metrics, k_fraction=0.1, k_fixed=K, chunk_mb=0.004)  # 1048 float32 entries
    result = _run(tmp_path, base, {"t": tuned}, config)
    budget = int(0.004 * (1 << 20)) // 4
    assert sum(sizes[DOWN]) >= base[DOWN].size  # every entry went through a chunk
    assert max(sizes[DOWN]) <= budget and max(sizes[UP]) <= budget and max(sizes[Q]) <= budget
    assert result.row("t", DOWN).sparsity == 0.0


@pytest.mark.parametrize("name", [UP, DOWN])
def test_spectrum_detail_include_and_spectrum_matrix(tmp_path, name):
    """The kept spectra of --spectrum-matrix (a tall and a wide matrix) against float64 NumPy:
    singular values of W, W' and dW; c_i = u_i^T dW v_i; the update's energy along the base's
    singular vectors on the matrix's shorter side (the input side of a tall matrix, the output
    side of a wide one), as a share of ||dW||^2; top-k principal angles. --include restricts
    the tensors and leaves each one's numbers unchanged."""
    base, _ = _base_tensors()
    rng = np.random.default_rng(9)
    tuned = {k: v + 0.02 * rng.standard_normal(v.shape) for k, v in base.items()}
    config = WeightsConfig(k_fraction=0.1, k_fixed=K, chunk_mb=0.004, spectrum_matrix=name, include=r"\.mlp\.")
    result = _run(tmp_path, base, {"rl": tuned}, config, dtype=torch.float64)
    assert sorted(r.name for r in result.matrices) == sorted(n for n in base if ".mlp." in n)
    [detail] = result.spectra
    assert (detail.run, detail.name) == ("rl", name)
    w, w2 = base[name], tuned[name]
    dw = w2 - w
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    u2, s2, vt2 = np.linalg.svd(w2, full_matrices=False)
    np.testing.assert_allclose(detail.s_base, s, rtol=1e-9)
    np.testing.assert_allclose(detail.s_tuned, s2, rtol=1e-9)
    np.testing.assert_allclose(detail.s_update, np.linalg.svd(dw, compute_uv=False), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(detail.energy_coefficients, np.einsum("mi,mn,ni->i", u, dw, vt.T), rtol=1e-7, atol=1e-12)
    if w.shape[0] >= w.shape[1]:  # tall: ||dW v_i||^2 along the base's input directions
        energy = ((dw @ vt.T) ** 2).sum(0)
    else:  # wide: ||u_i^T dW||^2 along the base's output directions
        energy = ((u.T @ dw) ** 2).sum(1)
    np.testing.assert_allclose(detail.right_energy, energy / (dw**2).sum(), rtol=1e-7, atol=1e-14)
    assert sum(detail.right_energy) == pytest.approx(1.0, rel=1e-9)  # rank-many directions span that side
    np.testing.assert_allclose(sorted(detail.angles_left_deg), sorted(np.degrees(scipy.linalg.subspace_angles(u[:, :K], u2[:, :K]))), atol=1e-6)
    np.testing.assert_allclose(sorted(detail.angles_right_deg), sorted(np.degrees(scipy.linalg.subspace_angles(vt[:K].T, vt2[:K].T))), atol=1e-6)
    full = _run(tmp_path / "full", base, {"rl": tuned}, WeightsConfig(k_fraction=0.1, k_fixed=K, chunk_mb=0.004), dtype=torch.float64)
    for row in result.matrices:
        other = full.row("rl", row.name)
        assert (row.relative_norm, row.stable_rank) == (pytest.approx(other.relative_norm), pytest.approx(other.stable_rank))
    with pytest.raises(UserError, match="No tensor name matches"):
        _run(tmp_path / "none", base, {"rl": tuned}, WeightsConfig(include="no_such_tensor"))
    with pytest.raises(UserError, match="spectrum-matrix"):
        _run(tmp_path / "bad", base, {"rl": tuned}, WeightsConfig(spectrum_matrix=Q, include=r"\.mlp\."))

"""Token-level forensics: metrics against float64 NumPy, chunking, the two-cache cross-decoder,
and the analyses end to end (tiny random checkpoints, CPU)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rlvr_lens.analyses.cross_decode import cross_decode
from rlvr_lens.analyses.token_metrics import (
    METRICS,
    TOP_K,
    body_hidden_states,
    compare_logits,
    jsd_from_logits,
    score_sequences,
)
from rlvr_lens.analyses.tokens import PERCENTILES as PERCENTILES_
from rlvr_lens.analyses.tokens import (
    CrossSamplingConfig,
    CrossSamplingResult,
    TokenDivergenceConfig,
    TokenDivergenceResult,
    cross_sampling,
    token_divergence,
)
from rlvr_lens.data.sample import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.generation import generate
from rlvr_lens.models import load_model
from rlvr_lens.models.tiny import build_tokenizer, save_tiny_checkpoint

PROMPTS = ["What is 12 + 7 * 3?", "Let x be a real number such that", "Compute the sum"]


# ----------------------------------------------------------------------------- references
def _np_reference(base_logits: np.ndarray, tuned_logits: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric recomputed in float64 NumPy, straight from the definitions."""

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    lp, lq = log_softmax(base_logits.astype(np.float64)), log_softmax(tuned_logits.astype(np.float64))
    p, q = np.exp(lp), np.exp(lq)
    m = (p + q) / 2
    out = {
        "jsd": 0.5 * (p * (lp - np.log(m))).sum(-1) + 0.5 * (q * (lq - np.log(m))).sum(-1),
        "kl_base_tuned": (p * (lp - lq)).sum(-1),
        "kl_tuned_base": (q * (lq - lp)).sum(-1),
        "entropy_base": -(p * lp).sum(-1),
        "entropy_tuned": -(q * lq).sum(-1),
    }
    order_p, order_q = np.argsort(-lp, -1), np.argsort(-lq, -1)
    for k in TOP_K:
        out[f"top{k}_overlap"] = np.array([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(order_p, order_q)])
    top_q = order_q[:, 0]
    out["tuned_top_rank"] = np.array([1 + int((row > row[t]).sum()) for row, t in zip(lp, top_q)], dtype=np.float64)
    out["argmax_changed"] = (order_p[:, 0] != top_q).astype(np.float64)
    return out


@pytest.fixture(scope="module")
def pair(tiny_pair):
    base, tuned = tiny_pair
    return load_model(str(base), "float32", "cpu", name="base"), load_model(str(tuned), "float32", "cpu", name="tuned")


@pytest.fixture(scope="module")
def gemma_pair(tmp_path_factory, tokenizer):
    """A gemma2 pair with strong final-logit soft-capping (cap 2), so a missing cap shows."""
    root = tmp_path_factory.mktemp("gemma")
    paths = [
        save_tiny_checkpoint(root / name, "gemma2", seed=seed, tokenizer=tokenizer, final_logit_softcapping=2.0)
        for name, seed in (("base", 0), ("tuned", 1))
    ]
    return tuple(load_model(str(p), "float32", "cpu", name=n) for p, n in zip(paths, ("base", "tuned")))


def _ids(tokenizer, prompts=PROMPTS):
    return [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]


# ----------------------------------------------------------------------------- metrics
def test_metrics_match_float64_numpy():
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(64, 300, generator=generator) * torch.linspace(0.2, 6.0, 64)[:, None]
    tuned = base + torch.randn(64, 300, generator=generator) * torch.logspace(-4, 0.5, 64)[:, None]
    got = compare_logits(base, tuned)
    want = _np_reference(base.numpy(), tuned.numpy())
    for name in METRICS:
        np.testing.assert_allclose(got[name].numpy(), want[name], rtol=1e-4, atol=2e-6, err_msg=name)
    # tiny divergences (rows with noise 1e-4 have JSD ~ 1e-9) stay within float32's floor of a few 1e-8 nats
    small = want["jsd"] < 1e-6
    assert small.any()
    np.testing.assert_allclose(got["jsd"].numpy()[small], want["jsd"][small], rtol=0, atol=5e-8)
    assert (got["jsd"].numpy() <= math.log(2) + 1e-6).all()
    assert got["base_top"].tolist() == np.argmax(base.numpy(), -1).tolist()


@pytest.mark.slow
def test_compiled_metrics_equal_eager():
    """The torch.compile-fused divergences (meant for GPUs) give the eager numbers (CPU inductor here)."""
    generator = torch.Generator().manual_seed(1)
    base = torch.randn(9, 257, generator=generator) * 3
    tuned = base + torch.randn(9, 257, generator=generator) * torch.logspace(-3, 0.5, 9)[:, None]
    eager = compare_logits(base, tuned)
    fused = compare_logits(base, tuned, compiled=True)
    for name in METRICS:
        torch.testing.assert_close(fused[name], eager[name], rtol=1e-4, atol=1e-7, msg=name)


def test_disjoint_distributions_reach_ln2():
    base = torch.tensor([[20.0, -20.0, -20.0]])
    tuned = torch.tensor([[-20.0, 20.0, -20.0]])
    got = compare_logits(base, tuned)
    assert got["jsd"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert got["tuned_top_rank"].item() == 2.0 and got["argmax_changed"].item() == 1.0


def test_jsd_from_logits_matches_float64_numpy():
    """The JSD that decides every cross-sampled token is its own code path: check it too."""
    generator = torch.Generator().manual_seed(5)
    base = torch.randn(2, 32, 300, generator=generator) * 3
    tuned = base + torch.randn(2, 32, 300, generator=generator) * torch.logspace(-4, 0.7, 32)[:, None]
    got = jsd_from_logits(base, tuned)
    assert got.shape == (2, 32)
    want = _np_reference(base.reshape(64, 300).numpy(), tuned.reshape(64, 300).numpy())["jsd"]
    np.testing.assert_allclose(got.reshape(64).numpy(), want, rtol=1e-4, atol=5e-8)
    assert got.max() > 0.1  # large divergences are covered, not only tiny ones
    swapped = jsd_from_logits(tuned, base)  # symmetric
    np.testing.assert_allclose(swapped.numpy(), got.numpy(), rtol=1e-5, atol=5e-8)


def _pairwise_auroc(scores, positive) -> float:
    """AUROC by counting every (positive, negative) pair: 1 if ranked right, 1/2 on a tie."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    return sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))


# ----------------------------------------------------------------------------- teacher forcing
def _reference_rows(base, tuned, sequences, starts):
    """Per row: metrics from each model's own full forward pass (transformers' logits), unpadded."""
    rows = []
    for seq, start in zip(sequences, starts):
        ids = torch.tensor([seq])
        with torch.no_grad():
            lb = base.model(ids).logits[0, start - 1 : len(seq) - 1]
            lt = tuned.model(ids).logits[0, start - 1 : len(seq) - 1]
        rows.append(compare_logits(lb, lt))
    return rows


@pytest.mark.parametrize("which", ["pair", "gemma_pair"])
def test_chunked_equals_unchunked_and_transformers_logits(which, request, tokenizer):
    base, tuned = request.getfixturevalue(which)
    generator = torch.Generator().manual_seed(3)
    sequences = [p + torch.randint(2, len(tokenizer), (n,), generator=generator).tolist() for p, n in zip(_ids(tokenizer), (30, 7, 19))]
    starts = [len(p) for p in _ids(tokenizer)]
    full = score_sequences(base, tuned, sequences, starts, pad_token_id=tokenizer.pad_token_id, chunk_size=None)
    chunked = score_sequences(base, tuned, sequences, starts, pad_token_id=tokenizer.pad_token_id, chunk_size=5)
    reference = _reference_rows(base, tuned, sequences, starts)
    for a, b, ref, seq, start in zip(full, chunked, reference, sequences, starts):
        assert len(a["jsd"]) == len(seq) - start
        for name in METRICS:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)  # BLAS blocking differs by shape
            torch.testing.assert_close(a[name], ref[name], rtol=1e-4, atol=1e-5)
        assert a["jsd"].max() > 1e-4  # the two models do differ


def test_softcapping_is_applied(gemma_pair, tokenizer):
    base, _ = gemma_pair
    ids = torch.tensor([_ids(tokenizer)[0]])
    with torch.no_grad():
        hidden = body_hidden_states(base, ids, torch.ones_like(ids))
        ours = base.adapter.logits_from_normed(base.model, hidden)
        theirs = base.model(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert theirs.abs().max() < 2.0  # the cap of 2 is active


def test_model_against_itself_has_zero_divergence(pair, tokenizer):
    base, _ = pair
    sequences = [p + list(range(5, 25)) for p in _ids(tokenizer)]
    rows = score_sequences(base, base, sequences, [len(p) for p in _ids(tokenizer)], pad_token_id=1, chunk_size=4)
    for row in rows:
        assert row["jsd"].abs().max() <= 1e-7
        assert row["kl_base_tuned"].abs().max() <= 1e-6 and row["kl_tuned_base"].abs().max() <= 1e-6
        assert (row["top10_overlap"] == 1).all() and (row["tuned_top_rank"] == 1).all()
        assert (row["argmax_changed"] == 0).all()
        torch.testing.assert_close(row["entropy_base"], row["entropy_tuned"], rtol=0, atol=0)


# ----------------------------------------------------------------------------- cross-decoding
def _replay_cross(driver, other, prompts, out, threshold):
    """Re-derive every step of a cross-decoding from one full forward pass per model over the
    decoded sequence (no cache, no padding) and the float64 NumPy JSD: the step's JSD, whose
    token is taken (JSD > threshold), the token itself, and whether it differs from the driver's
    greedy token. Returns how many steps took a token that changed the driver's choice."""
    n_changed = 0
    for prompt, tokens, from_other, changed, jsd in zip(prompts, out.token_ids, out.from_other, out.changed, out.jsd):
        ids = torch.tensor([list(prompt) + tokens])
        with torch.no_grad():
            ld = driver.model(ids).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(tokens)].numpy()
            lo = other.model(ids).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(tokens)].numpy()
        want = _np_reference(ld, lo)["jsd"]
        np.testing.assert_allclose(jsd, want, rtol=1e-4, atol=1e-6)
        for step, (token, took, differs, value) in enumerate(zip(tokens, from_other, changed, want)):
            if abs(value - threshold) > 1e-5:  # not too close to the threshold to call
                assert took == (value > threshold), (step, value, threshold)
            assert token == int(np.argmax(lo[step] if took else ld[step]))
            assert differs == (token != int(np.argmax(ld[step])))
            assert not differs or took  # only a taken token can change the driver's choice
            n_changed += differs
    return n_changed


@pytest.mark.parametrize("which", ["pair", "gemma_pair"])
def test_cross_decode_limits_cache_and_batching(which, request, tokenizer, single_thread):
    base, tuned = request.getfixturevalue(which)
    prompts = _ids(tokenizer)
    kwargs = dict(max_new_tokens=14, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    plain_base = [g.token_ids for g in generate(base.model, tokenizer, PROMPTS, max_new_tokens=14)]
    plain_tuned = [g.token_ids for g in generate(tuned.model, tokenizer, PROMPTS, max_new_tokens=14)]
    assert plain_base != plain_tuned

    never = cross_decode(base.model, tuned.model, prompts, threshold=math.inf, **kwargs)
    assert never.token_ids == plain_base
    assert not any(map(any, never.from_other)) and not any(map(any, never.changed))
    assert _replay_cross(base, tuned, prompts, never, math.inf) == 0
    always = cross_decode(base.model, tuned.model, prompts, threshold=0.0, **kwargs)
    assert always.token_ids == plain_tuned
    assert all(map(all, always.from_other))
    assert _replay_cross(base, tuned, prompts, always, 0.0) > 0
    # a sharpened copy of the driver (logits x 1.5) differs in distribution (JSD > 0, so its token
    # is always taken) but never in its greedy token: taken tokens that change nothing
    import copy

    sharper = copy.deepcopy(base.model)
    with torch.no_grad():
        sharper.get_output_embeddings().weight.mul_(1.5)
    same_choice = cross_decode(base.model, sharper, prompts, threshold=0.0, **kwargs)
    assert same_choice.token_ids == plain_base
    assert all(map(all, same_choice.from_other)) and not any(map(any, same_choice.changed))
    reverse_never = cross_decode(tuned.model, base.model, prompts, threshold=math.inf, **kwargs)
    assert reverse_never.token_ids == plain_tuned

    middle = float(np.median([v for row in never.jsd for v in row]))
    cached = cross_decode(base.model, tuned.model, prompts, threshold=middle, **kwargs)
    uncached = cross_decode(base.model, tuned.model, prompts, threshold=middle, use_cache=False, **kwargs)
    assert cached.token_ids == uncached.token_ids and cached.from_other == uncached.from_other
    np.testing.assert_allclose(sum(cached.jsd, []), sum(uncached.jsd, []), rtol=1e-4, atol=1e-7)
    assert 0 < sum(map(sum, cached.from_other)) < sum(map(len, cached.token_ids))
    # the rule: a token comes from the other model exactly where the step's JSD exceeds the threshold
    assert [[j > middle for j in row] for row in cached.jsd] == cached.from_other
    assert cached.changed == uncached.changed
    assert _replay_cross(base, tuned, prompts, cached, middle) > 0
    one_by_one = [cross_decode(base.model, tuned.model, [p], threshold=middle, **kwargs) for p in prompts]
    assert [o.token_ids[0] for o in one_by_one] == cached.token_ids
    np.testing.assert_allclose(sum((o.jsd[0] for o in one_by_one), []), sum(cached.jsd, []), rtol=1e-4, atol=1e-7)


def test_cross_decode_stops_rows_at_eos(pair, tokenizer):
    base, tuned = pair
    prompts = _ids(tokenizer)
    plain = cross_decode(base.model, tuned.model, prompts, threshold=math.inf, max_new_tokens=12, pad_token_id=1, eos_token_id=None)
    stop = plain.token_ids[0][3]  # make the 4th greedy token of row 0 the "EOS"
    cut = cross_decode(base.model, tuned.model, prompts, threshold=math.inf, max_new_tokens=12, pad_token_id=1, eos_token_id=stop)
    assert cut.token_ids[0] == plain.token_ids[0][: plain.token_ids[0].index(stop)]
    for full, short in zip(plain.token_ids[1:], cut.token_ids[1:]):
        assert short == (full[: full.index(stop)] if stop in full else full)


# ----------------------------------------------------------------------------- analyses
def _samples():
    return [Sample(str(i), p, "33", labels={"leaked": i % 2 == 0}) for i, p in enumerate(PROMPTS * 2)]


def test_token_divergence_end_to_end(pair, tokenizer, single_thread):
    base, tuned = pair
    samples = _samples()
    config = TokenDivergenceConfig(max_new_tokens=12, batch_size=4, chunk_size=7, top_tokens=5)
    result = token_divergence(base, tuned, samples, config)
    assert [r.responses_from for r in result.responses] == ["tuned", "base"]
    tuned_responses = result.responses[0]
    generations = generate(tuned.model, tokenizer, [s.prompt + "\n" for s in samples], max_new_tokens=12)
    ended = [len(g.token_ids) < 12 for g in generations]
    assert tuned_responses.n_tokens == sum(len(g.token_ids) + e for g, e in zip(generations, ended))
    assert sum(tuned_responses.position_counts) == tuned_responses.n_tokens
    # the most shifted token: recompute its JSD from transformers' logits at the right position
    top = tuned_responses.top_tokens[0]
    row = next(i for i, s in enumerate(samples) if s.id == top.sample_id)
    prompt = tokenizer(samples[row].prompt + "\n", add_special_tokens=False).input_ids
    seq = prompt + generations[row].token_ids
    ref = _reference_rows(base, tuned, [seq], [len(prompt)])[0]
    assert top.jsd == pytest.approx(float(ref["jsd"][top.position]), rel=1e-4)
    assert top.jsd == pytest.approx(tuned_responses.jsd_percentiles[-1], rel=1e-6)
    assert top.token == tokenizer.decode([seq[len(prompt) + top.position]])
    # per-sample and per-group summaries agree with each other
    per_sample = {s.sample_id: s for s in tuned_responses.samples}
    assert per_sample[top.sample_id].max_jsd == pytest.approx(top.jsd, rel=1e-6)
    leaked = tuned_responses.groups["leaked"]
    assert leaked.n_samples == 3 and leaked.n_tokens == sum(per_sample[s.id].n_tokens for s in samples if s.labels["leaked"])
    # (the per-sample means and the AUROC are recomputed from scratch in the test below)
    assert tuned_responses.auroc_mean_jsd == pytest.approx(
        _pairwise_auroc([per_sample[s.id].mean_jsd for s in samples], [s.labels["leaked"] for s in samples]), abs=1e-12
    )
    assert per_sample["0"].labels == {"leaked": True}
    again = TokenDivergenceResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_cross_sampling_end_to_end(pair, tokenizer, single_thread):
    base, tuned = pair
    samples = _samples()
    result = cross_sampling(base, tuned, samples, CrossSamplingConfig(max_new_tokens=10, batch_size=4, thresholds=(0.0,), top_fractions=(0.5,)))
    plain = [p for p in result.points if p.threshold is None]
    assert [p.direction for p in plain] == ["forward", "reverse"]
    assert all(p.share_replaced == 0 for p in plain)
    always = [p for p in result.points if p.threshold == 0.0]
    assert all(p.share_replaced == pytest.approx(1.0) for p in always)
    half = [p for p in result.points if p.top_fraction == 0.5]
    assert len(half) == 2 and all(0 < p.share_replaced < 1 for p in half)
    assert set(result.points[0].group_accuracy) == {"leaked", "clean"}
    again = CrossSamplingResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


def test_pair_with_other_vocabulary_is_a_user_error(pair, tmp_path):
    base, _ = pair
    other_tokenizer = build_tokenizer(vocab_size=320)
    other = load_model(str(save_tiny_checkpoint(tmp_path / "other", "qwen2", tokenizer=other_tokenizer)), "float32", "cpu")
    with pytest.raises(UserError, match="cannot be compared token by token"):
        token_divergence(base, other, _samples())
    with pytest.raises(UserError, match="cannot be compared token by token"):
        cross_sampling(base, other, _samples())


def test_cli_tokens_writes_report(tiny_pair, tmp_path):
    from rlvr_lens.cli import main

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in _samples()[:3]))
    base, tuned = tiny_pair
    out = tmp_path / "run"
    argv = ["tokens", "--model", f"base={base}", "--model", f"tuned={tuned}", "--data", str(data), "--out", str(out),
            "--max-new-tokens", "6", "--thresholds", "0.01", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    assert (out / "token_divergence.json").is_file() and (out / "cross_sampling.json").is_file()
    assert (out / "figures" / "cross_sampling-accuracy.png").is_file()
    assert "Token-level divergence" in (out / "report.html").read_text()
    assert main([*argv[:-2], "--thresholds", "a,b"]) == 2


def test_audit_runs_and_caches_the_token_steps(tiny_pair, tmp_path):
    from rlvr_lens.audit import AuditConfig, audit_steps, run_steps
    from rlvr_lens.models import ModelSpec

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in _samples()[:2]))
    specs = [ModelSpec("base", str(tiny_pair[0])), ModelSpec("rlvr", str(tiny_pair[1]))]
    config = AuditConfig(analyses=("tokens",), max_new_tokens=5, batch_size=2, device="cpu")
    first = run_steps(tmp_path / "run", audit_steps(specs, data, _samples()[:2], config))
    assert [(s.name, s.status) for s in first.steps] == [("tokens-rlvr", "computed"), ("cross-sampling-rlvr", "computed")]
    assert [type(r) for r in first.results] == [TokenDivergenceResult, CrossSamplingResult]
    second = run_steps(tmp_path / "run", audit_steps(specs, data, _samples()[:2], config))
    assert [s.status for s in second.steps] == ["cached", "cached"] and second.results == first.results


# ----------------------------------------------------------------------------- summaries from scratch
@pytest.fixture(scope="module")
def memorizing(memorizing_pair):
    base_dir, tuned_dir, samples = memorizing_pair
    base = load_model(str(base_dir), "float32", "cpu", name="base")
    return base, load_model(str(tuned_dir), "float32", "cpu", name="tuned"), samples


def _greedy_one_by_one(model, tokenizer, prompt_ids, max_new_tokens):
    """Greedy decoding without batching or padding, straight from transformers' ``generate``."""
    eos = tokenizer.eos_token_id
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
    new = out[0, len(prompt_ids):].tolist()
    return (new[: new.index(eos)], True) if eos in new else (new, False)


@pytest.fixture(scope="module")
def sharpened(memorizing):
    """The random base against itself with its logits x 7: the same greedy choices, and JSDs
    spread around 0.1 nats (so shares above 0.01 and above 0.1 differ)."""
    import copy
    import dataclasses

    base, _, samples = memorizing
    model = copy.deepcopy(base.model)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(7.0)
    return base, dataclasses.replace(base, name="tuned", model=model), samples


@pytest.mark.parametrize("which", ["memorizing", "sharpened"])
def test_token_divergence_summaries_match_an_independent_recount(which, request, single_thread):
    """Every summary number of one ResponseDivergence recomputed from per-prompt greedy decoding,
    transformers' logits and float64 NumPy; accuracies against a hand count: the memorizing
    tuned model recites the 4 memorized answers and none of the 4 unseen ones, the random base
    (and its sharpened copy) none."""
    base, tuned, samples = request.getfixturevalue(which)
    tokenizer = base.tokenizer
    bins, max_new = 4, 24
    config = TokenDivergenceConfig(max_new_tokens=max_new, batch_size=3, chunk_size=5, position_bins=bins)
    result = token_divergence(base, tuned, samples, config)
    none = (0.0, {"leaked": 0.0, "clean": 0.0})
    hand_counted = {"tuned": (0.5, {"leaked": 1.0, "clean": 0.0}) if which == "memorizing" else none, "base": none}
    if which == "sharpened":
        assert all(0.05 < r.share_above["0.1"] < 0.95 and r.share_above["0.01"] == 1.0 for r in result.responses)
    for response in result.responses:
        driver = {"tuned": tuned, "base": base}[response.responses_from]
        rows, lengths, correct = [], [], []
        for sample in samples:
            prompt = tokenizer(sample.prompt + "\n", add_special_tokens=False).input_ids
            new, ended = _greedy_one_by_one(driver.model, tokenizer, prompt, max_new)
            seq = torch.tensor([prompt + new + ([tokenizer.eos_token_id] if ended else [])])
            with torch.no_grad():
                lb = base.model(seq).logits[0, len(prompt) - 1 : -1].numpy()
                lt = tuned.model(seq).logits[0, len(prompt) - 1 : -1].numpy()
            rows.append(_np_reference(lb, lt))
            lengths.append(len(new))
            correct.append(f"\\boxed{{{sample.answer}}}" in tokenizer.decode(new))
        accuracy, group_accuracy = hand_counted[response.responses_from]
        assert np.mean(correct) == accuracy and response.accuracy == accuracy
        assert {name: g.accuracy for name, g in response.groups.items()} == group_accuracy
        assert [s.correct for s in response.samples] == correct

        jsd = np.concatenate([r["jsd"] for r in rows])
        assert response.n_tokens == jsd.size and response.mean_length == pytest.approx(np.mean(lengths))
        close = dict(rel=1e-3, abs=2e-6)
        for name in METRICS:
            assert response.means[name] == pytest.approx(np.concatenate([r[name] for r in rows]).mean(), **close), name
        for key, threshold in (("0.001", 1e-3), ("0.01", 1e-2), ("0.1", 0.1)):
            assert response.share_above[key] == pytest.approx((jsd > threshold).mean(), abs=1e-12), key
        np.testing.assert_allclose(response.jsd_percentiles, np.percentile(jsd, PERCENTILES_), rtol=1e-3, atol=2e-6)
        # relative position j / length, in exact integer arithmetic; the EOS step (j == length) joins the last bin
        which = np.concatenate([[min(j * bins // max(n, 1), bins - 1) for j in range(len(r["jsd"]))] for r, n in zip(rows, lengths)])
        assert response.position_counts == [int((which == b).sum()) for b in range(bins)]
        for b in range(bins):
            in_bin = jsd[which == b]
            if in_bin.size:
                assert response.position_mean_jsd[b] == pytest.approx(in_bin.mean(), **close)
                assert response.position_share_above[b] == pytest.approx((in_bin > 0.1).mean(), abs=1e-12)
            else:
                assert response.position_mean_jsd[b] is None and response.position_share_above[b] is None
        means = [r["jsd"].mean() for r in rows]
        for summary, row, mean in zip(response.samples, rows, means):
            assert summary.n_tokens == row["jsd"].size
            assert summary.mean_jsd == pytest.approx(mean, **close)
            assert summary.max_jsd == pytest.approx(row["jsd"].max(), **close)
        leaked = [s.labels["leaked"] for s in samples]
        for name, members in (("leaked", [i for i, y in enumerate(leaked) if y]), ("clean", [i for i, y in enumerate(leaked) if not y])):
            values = np.concatenate([rows[i]["jsd"] for i in members])
            group = response.groups[name]
            assert (group.n_samples, group.n_tokens) == (4, values.size)
            assert group.mean_jsd == pytest.approx(values.mean(), **close)
            assert group.share_above["0.01"] == pytest.approx((values > 0.01).mean(), abs=1e-12)
        assert response.auroc_mean_jsd == pytest.approx(_pairwise_auroc(means, leaked), abs=1e-12)
    _check_token_divergence_section(result)


def _check_token_divergence_section(result):
    """Every number of the report section, read back and compared with the result's JSON."""
    from report_numbers import assert_shows, column, numbers_in
    from rlvr_lens.analyses.tokens_report import section_token_divergence

    data = json.loads(json.dumps(result.to_dict()))
    section = section_token_divergence(result, {})
    responses = data["responses"]
    summary_numbers = numbers_in(section.summary.split(": ", 1)[1])
    for i, r in enumerate(responses):
        n, share_01, _, share_001, _ = summary_numbers[5 * i : 5 * i + 5]  # "N tokens, X% ... > 0.1 ..., Y% > 0.01"
        assert int(n) == r["n_tokens"]
        assert_shows(share_01, r["share_above"]["0.1"], scale=100, where="summary")
        assert_shows(share_001, r["share_above"]["0.01"], scale=100, where="summary")
    main = section.tables[0]
    assert column(main, "responses") == [r["responses_from"] for r in responses]
    assert [int(c) for c in column(main, "tokens")] == [r["n_tokens"] for r in responses]
    metric_columns = {"mean JSD": "jsd", "KL(P||Q)": "kl_base_tuned", "KL(Q||P)": "kl_tuned_base", "H(P)": "entropy_base",
                      "H(Q)": "entropy_tuned", "top-1": "top1_overlap", "top-5": "top5_overlap", "top-10": "top10_overlap",
                      "argmax changed": "argmax_changed"}
    for header, key in metric_columns.items():
        for cell, r in zip(column(main, header), responses):
            assert_shows(cell, r["means"][key], where=header)
    for header, key in ((">1e-3", "0.001"), (">1e-2", "0.01"), (">0.1", "0.1")):
        for cell, r in zip(column(main, header), responses):
            assert_shows(cell, r["share_above"][key], where=header)
    for cell, r in zip(column(main, "accuracy"), responses):
        assert_shows(cell, r["accuracy"], where="accuracy")
    group_tables = [tb for tb in section.tables if tb.columns[0] == "group"]
    assert len(group_tables) == len(responses)
    for table, r in zip(group_tables, responses):
        assert_shows(table.caption.rsplit(": ", 1)[1], r["auroc_mean_jsd"], where="AUROC caption")
        for row in table.rows:
            g = r["groups"][row[0]]
            assert (int(row[1]), int(row[2])) == (g["n_samples"], g["n_tokens"])
            for cell, value in zip(row[3:], [g["accuracy"], g["mean_jsd"], *g["share_above"].values()]):
                assert_shows(cell, value, where=f"group {row[0]}")
    top_tables = [tb for tb in section.tables if tb.columns[0] == "sample"]
    for table, r in zip(top_tables, responses):
        for row, top in zip(table.rows, r["top_tokens"]):
            assert row[0] == top["sample_id"] and int(row[1].split()[0]) == top["position"]
            assert_shows(row[1].split()[1].strip("()"), top["relative_position"], where="relative position")
            assert_shows(row[6], top["jsd"], where="top JSD")
            assert int(row[7]) == top["tuned_top_rank"]


def test_cross_sampling_accuracies_against_a_hand_count(memorizing, single_thread):
    """Tuned recites the 4 memorized answers (of 8), the random base none. Forward with
    threshold 0 takes the tuned token at every step (so it scores like the tuned model),
    reverse with threshold 0 the base token; the top-half threshold is the median JSD along the
    driver's own greedy responses, recomputed here from transformers' logits in NumPy."""
    base, tuned, samples = memorizing
    tokenizer = base.tokenizer
    max_new = 20
    config = CrossSamplingConfig(max_new_tokens=max_new, batch_size=3, thresholds=(0.0,), top_fractions=(0.5,))
    result = cross_sampling(base, tuned, samples, config)
    leaked = [s.labels["leaked"] for s in samples]
    assert (result.base_accuracy, result.tuned_accuracy) == (0.0, 0.5)
    by_key = {(p.direction, p.threshold, p.top_fraction): p for p in result.points}
    # (direction, threshold, top fraction) -> accuracy, leaked-group accuracy, share of replaced tokens
    expected = {
        ("forward", None, None): (0.0, 0.0, 0.0),
        ("forward", 0.0, None): (0.5, 1.0, 1.0),
        ("reverse", None, None): (0.5, 1.0, 0.0),
        ("reverse", 0.0, None): (0.0, 0.0, 1.0),
    }
    for key, (accuracy, leaked_accuracy, share) in expected.items():
        point = by_key[key]
        assert point.accuracy == accuracy and point.correct == [leaked_accuracy == 1.0 and y for y in leaked], key
        assert point.group_accuracy == {"leaked": leaked_accuracy, "clean": 0.0}, key
        assert point.share_replaced == share, key
    plain_reverse = by_key[("reverse", None, None)]
    assert plain_reverse.changed_per_response == 0.0 and plain_reverse.replaced_per_response == 0.0
    for direction, (driver, other) in (("forward", (base, tuned)), ("reverse", (tuned, base))):
        own = []
        lengths = []
        for sample in samples:
            prompt = tokenizer(sample.prompt + "\n", add_special_tokens=False).input_ids
            new, _ = _greedy_one_by_one(driver.model, tokenizer, prompt, max_new)
            seq = torch.tensor([prompt + new])
            with torch.no_grad():
                ld = driver.model(seq).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(new)].numpy()
                lo = other.model(seq).logits[0, len(prompt) - 1 : len(prompt) - 1 + len(new)].numpy()
            own.append(_np_reference(ld, lo)["jsd"])
            lengths.append(len(new))
        assert by_key[(direction, None, None)].mean_length == pytest.approx(np.mean(lengths))
        assert by_key[(direction, None, None)].mean_jsd == pytest.approx(np.concatenate(own).mean(), rel=1e-3, abs=2e-6)
        half = next(p for p in result.points if p.direction == direction and p.top_fraction == 0.5)
        assert half.threshold == pytest.approx(float(np.quantile(np.concatenate(own), 0.5)), rel=1e-3, abs=2e-6)
        assert 0 < half.share_replaced < 1
        assert half.changed_per_response <= half.replaced_per_response
    _check_cross_sampling_section(result)


def _check_cross_sampling_section(result):
    from report_numbers import assert_shows, column, numbers_in
    from rlvr_lens.analyses.tokens_report import section_cross_sampling

    data = json.loads(json.dumps(result.to_dict()))
    section = section_cross_sampling(result, {})
    shown = numbers_in(section.summary)
    assert_shows(shown[0], data["base_accuracy"], where="summary base")
    assert_shows(shown[1], data["tuned_accuracy"], where="summary tuned")
    forward = [p for p in data["points"] if p["direction"] == "forward" and p["threshold"] is not None]
    best = max(forward, key=lambda p: (p["accuracy"], -p["share_replaced"]))
    assert_shows(shown[2], best["share_replaced"], scale=100, where="summary share")
    assert_shows(shown[3], best["threshold"], where="summary threshold")
    assert_shows(shown[4], best["accuracy"], where="summary accuracy")
    [table] = section.tables
    assert column(table, "direction") == [p["direction"] for p in data["points"]]
    for header, key in (("accuracy", "accuracy"), ("share replaced", "share_replaced"),
                        ("replaced / response", "replaced_per_response"), ("changed / response", "changed_per_response"),
                        ("tokens / response", "mean_length")):
        for cell, p in zip(column(table, header), data["points"]):
            assert_shows(cell, p[key], where=header)
    for cell, p in zip(column(table, "JSD threshold"), data["points"]):
        if p["threshold"] is None:
            assert cell == "plain"
        else:
            assert_shows(cell, p["threshold"], where="threshold")
    for cell, p in zip(column(table, "accuracy by group"), data["points"]):
        for part, (name, value) in zip(cell.split(", "), p["group_accuracy"].items()):
            assert part.startswith(name + " ")
            assert_shows(part.split(" ", 1)[1], value, where="group accuracy")

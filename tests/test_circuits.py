"""Layer localization on planted truth: a tuned copy that differs from its base in one layer's MLP only."""

from __future__ import annotations

import copy
import types

import pytest
import torch

from rlvr_lens.analyses.logit_lens import LogitLensConfig, logit_lens
from rlvr_lens.analyses.patching import PatchingConfig, _greedy_patched, activation_patching, group_recovery
from rlvr_lens.analyses.teacher_forcing import encode_all
from rlvr_lens.data import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.models.adapters import adapter_for
from rlvr_lens.models.loading import LoadedModel
from rlvr_lens.models.tiny import build_tiny_model

LAYERS, PLANTED = 4, 2
SAMPLES = [
    Sample("a", "What is 12 + 7 * 3?", "33"),
    Sample("b", "Let x be a real number such that x^2 = 16.", "4"),
    Sample("c", "Compute the sum of the first 10 positive integers.", "55"),
]


def loaded(model, tokenizer, name):
    return LoadedModel(name, name, model, tokenizer, adapter_for(model))


def planted_pair(tokenizer, family="qwen2", component="up"):
    """``(base, tuned)``: tuned = base with layer PLANTED's ``component`` projection perturbed."""
    base = build_tiny_model(family, seed=0, vocab_size=len(tokenizer), num_hidden_layers=LAYERS)
    tuned = copy.deepcopy(base)
    weight = tuned.get_submodule(f"model.layers.{PLANTED}.mlp.{component}_proj").weight
    with torch.no_grad():
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(7)) * 3 * weight.std())
    return loaded(base, tokenizer, "base"), loaded(tuned, tokenizer, "tuned")


@pytest.mark.parametrize("family", ["qwen2", "llama", "olmo2", "gemma2"])
def test_patching_recovers_exactly_at_the_planted_layer(tokenizer, family, single_thread):
    base, tuned = planted_pair(tokenizer, family)
    result = activation_patching(base, tuned, SAMPLES, PatchingConfig(max_rows=7))
    assert all(abs(t - b) > 1e-3 for b, t in zip(result.m_base, result.m_tuned))
    for direction in ("tuned_into_base", "base_into_tuned"):
        for v, variant in enumerate(result.variants):
            (layer,) = variant.layers
            for s in range(len(SAMPLES)):
                r = result.recovery(direction, s, v)
                if variant.component == "mlp" and layer == PLANTED:
                    assert r == pytest.approx(1.0, abs=1e-4)
                elif layer <= PLANTED:  # identical activations up to the planted MLP (its attention too)
                    assert r == pytest.approx(0.0, abs=1e-4)
            # later layers carry only the planted change's downstream effect: not exactly 0 or 1
        group = group_recovery(result, direction, range(len(SAMPLES)))
        mlp = [group[v] for v, var in enumerate(result.variants) if var.component == "mlp"]
        assert mlp[PLANTED] == pytest.approx(1.0, abs=1e-4) and all(abs(x) < 1e-4 for x in mlp[:PLANTED])


def test_windows_of_three_layers_containing_the_planted_one_recover_fully(tokenizer, single_thread):
    base, tuned = planted_pair(tokenizer)
    result = activation_patching(base, tuned, SAMPLES, PatchingConfig(width=3, components=("mlp",), directions=("tuned_into_base",)))
    group = group_recovery(result, "tuned_into_base", range(len(SAMPLES)))
    for variant, value in zip(result.variants, group):
        covers = PLANTED in variant.layers
        if covers and variant.layers[0] <= PLANTED:
            assert value == pytest.approx(1.0, abs=1e-4)


def test_patching_a_model_with_its_own_activations_changes_nothing(tokenizer, single_thread):
    base, _ = planted_pair(tokenizer, "llama")
    twin = loaded(base.model, tokenizer, "twin")
    result = activation_patching(base, twin, SAMPLES, PatchingConfig(width=2))
    for direction in result.directions:
        for s, row in enumerate(direction.m_patched):
            assert row == pytest.approx([result.m_base[s]] * len(result.variants), abs=1e-5)


def _greedy(model, ids, steps):
    out = model.generate(torch.tensor([ids]), max_new_tokens=steps, do_sample=False, pad_token_id=1, eos_token_id=None)
    return out[0, len(ids) :].tolist()


@pytest.mark.parametrize("mode", ["held", "prompt"])
def test_patched_decoding_follows_the_donor_from_the_planted_layer(tokenizer, mode, single_thread):
    base, tuned = planted_pair(tokenizer)
    base.tokenizer = types.SimpleNamespace(eos_token_id=None)  # decode the full length: compare whole streams
    config = PatchingConfig(accuracy=mode, max_new_tokens=6, components=("mlp",))
    ids = tokenizer("What is 12 + 7 * 3?\n", add_special_tokens=False)["input_ids"]
    rows = _greedy_patched(base, tuned, ids, [v for v in activation_variants(config)], config)
    base_tokens, tuned_tokens = _greedy(base.model, ids, 6), _greedy(tuned.model, ids, 6)
    assert base_tokens != tuned_tokens
    assert rows[0] == base_tokens  # the unpatched row
    for layer in range(LAYERS):
        row = rows[1 + layer]
        if layer < PLANTED:
            assert row == base_tokens
        elif layer == PLANTED and mode == "held":
            assert row == tuned_tokens
        elif layer == PLANTED:
            assert row[0] == tuned_tokens[0]  # the prompt's patch decides the first token


def activation_variants(config):
    from rlvr_lens.analyses.patching import variants_for

    return variants_for(LAYERS, config)


# ----------------------------------------------------------------------------- logit lens


@pytest.mark.parametrize("family", ["qwen2", "llama", "olmo2", "gemma2", "gemma3"])
def test_last_lens_state_is_the_models_own_output_and_direct_effects_add_up(tokenizer, family, single_thread):
    base, _ = planted_pair(tokenizer, family)
    result = logit_lens([base], SAMPLES, LogitLensConfig())
    lens = result.models[0]
    for i, encoding in enumerate(encode_all(tokenizer, SAMPLES, "plain", "direct")):
        with torch.no_grad():
            logits = base.model(input_ids=torch.tensor([encoding.ids])).logits[0].double()
        logprob = torch.log_softmax(logits, -1)
        own = [float(logprob[p, t]) for p, t in zip(encoding.read_positions, encoding.answer_ids)]
        assert lens.logprob[i][-1] == pytest.approx(own, abs=1e-5)
        ranks = [int((logits[p] > logits[p, t]).sum()) for p, t in zip(encoding.read_positions, encoding.answer_ids)]
        assert lens.rank[i][-1] == ranks
        assert len(lens.logprob[i]) == LAYERS + 1 and len(lens.attn_direct[i]) == LAYERS
        # embedding + every block's direct contribution = the answer logit (before soft-capping)
        total = lens.embed_direct[i] + sum(lens.attn_direct[i]) + sum(lens.mlp_direct[i])
        assert total == pytest.approx(lens.answer_logit[i], abs=1e-4)
        if family != "gemma2":  # gemma2 soft-caps its logits; the others' logit is the pre-cap one
            raw = sum(float(logits[p, t]) for p, t in zip(encoding.read_positions, encoding.answer_ids)) / len(own)
            assert total == pytest.approx(raw, abs=1e-4)


def test_lens_states_before_the_last_go_through_the_final_norm(tokenizer, single_thread):
    """An intermediate lens state equals lm_head(norm(h)) recomputed in float64 by hand."""
    base, _ = planted_pair(tokenizer, "llama")
    result = logit_lens([base], SAMPLES[:1], LogitLensConfig())
    encoding = encode_all(tokenizer, SAMPLES[:1], "plain", "direct")[0]
    with torch.no_grad():
        states = base.model(input_ids=torch.tensor([encoding.ids]), output_hidden_states=True).hidden_states
    norm = base.model.model.norm.requires_grad_(False)
    base.model.lm_head.requires_grad_(False)
    h = states[2][0, encoding.read_positions].double()
    normed = norm.weight.double() * h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    logprob = torch.log_softmax(normed @ base.model.lm_head.weight.double().T, -1)
    expected = [float(logprob[j, t]) for j, t in enumerate(encoding.answer_ids)]
    assert result.models[0].logprob[0][2] == pytest.approx(expected, abs=1e-4)


def test_planted_change_appears_in_the_lens_from_the_planted_layer_on(tokenizer, single_thread):
    base, tuned = planted_pair(tokenizer)
    result = logit_lens([base, tuned], SAMPLES, LogitLensConfig())
    b, t = result.models
    for i in range(len(SAMPLES)):
        assert b.mean_logprob(i)[: PLANTED + 1] == pytest.approx(t.mean_logprob(i)[: PLANTED + 1], abs=1e-6)
        assert b.mean_logprob(i)[PLANTED + 1] != pytest.approx(t.mean_logprob(i)[PLANTED + 1], abs=1e-4)
        assert b.mlp_direct[i][PLANTED] != pytest.approx(t.mlp_direct[i][PLANTED], abs=1e-4)


# ----------------------------------------------------------------------------- bad inputs


def test_models_of_different_depths_are_refused(tokenizer):
    base, _ = planted_pair(tokenizer)
    deeper = loaded(build_tiny_model("qwen2", vocab_size=len(tokenizer), num_hidden_layers=LAYERS + 1), tokenizer, "deep")
    with pytest.raises(UserError, match="layers"):
        activation_patching(base, deeper, SAMPLES, PatchingConfig())
    with pytest.raises(UserError, match="depths"):
        logit_lens([base, deeper], SAMPLES, LogitLensConfig())


def test_an_answer_that_tokenizes_to_nothing_is_refused(tokenizer):
    base, tuned = planted_pair(tokenizer)
    with pytest.raises(UserError, match="tokenizes to no tokens"):
        activation_patching(base, tuned, [Sample("e", "What is nothing?", "  ")], PatchingConfig())


# ----------------------------------------------------------------------------- MLP counterfactuals


def _jsd64(p_logits, q_logits):
    p, q = torch.softmax(p_logits.double(), -1), torch.softmax(q_logits.double(), -1)
    m = (p + q) / 2
    return float((0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)).mean())


def _answer_logits_of(model, encoding):
    with torch.no_grad():
        return model(input_ids=torch.tensor([encoding.ids])).logits[0, encoding.read_positions]


@pytest.mark.parametrize("family", ["qwen2", "olmo2", "gemma3"])
def test_weight_restore_moves_the_output_only_at_the_planted_layer_and_component(tokenizer, family, single_thread):
    from rlvr_lens.analyses.mlp_counterfactual import MLPCounterfactualConfig, mlp_counterfactuals

    base, tuned = planted_pair(tokenizer, family, component="up")
    result = mlp_counterfactuals(base, tuned, SAMPLES, MLPCounterfactualConfig(ablations=(), batch_size=2))
    encodings = encode_all(tokenizer, SAMPLES, "plain", "direct")
    for s, encoding in enumerate(encodings):
        expected = _jsd64(_answer_logits_of(tuned.model, encoding), _answer_logits_of(base.model, encoding))
        assert expected > 1e-4
        for layer in range(LAYERS):
            for c, component in enumerate(result.restore):
                value = result.restore_jsd[s][layer][c]
                if layer == PLANTED and component in ("up", "mlp"):  # restoring it gives back the base exactly
                    assert value == pytest.approx(expected, rel=1e-3)
                else:
                    assert abs(value) < 1e-6
    assert tuned.model.get_submodule(f"model.layers.{PLANTED}.mlp.up_proj").weight.ne(
        base.model.get_submodule(f"model.layers.{PLANTED}.mlp.up_proj").weight
    ).any()  # functional_call left the tuned model as it was


class _MeanThenLinear(torch.nn.Module):
    """Reference for the gate mean ablation: a linear layer that sees its input averaged over the sequence."""

    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return self.linear(x.mean(1, keepdim=True).expand_as(x))


def test_mean_ablation_and_random_down_match_hand_built_references(tokenizer, single_thread):
    from rlvr_lens.analyses.mlp_counterfactual import (
        MLPCounterfactualConfig,
        mlp_counterfactuals,
        random_like_norm,
    )

    base, tuned = planted_pair(tokenizer, "llama")
    config = MLPCounterfactualConfig(restore=(), batch_size=3, seed=5)  # padded batch of 3 different lengths
    result = mlp_counterfactuals(base, tuned, SAMPLES, config)
    encodings = encode_all(tokenizer, SAMPLES, "plain", "direct")
    layer = 1
    gate_ref, down_ref = copy.deepcopy(base.model), copy.deepcopy(base.model)
    mlp = gate_ref.model.layers[layer].mlp
    mlp.gate_proj = _MeanThenLinear(mlp.gate_proj)
    down = down_ref.model.layers[layer].mlp.down_proj
    with torch.no_grad():
        down.weight.copy_(random_like_norm(down.weight, 5 + layer))
    assert float(down.weight.detach().norm()) == pytest.approx(float(base.model.model.layers[layer].mlp.down_proj.weight.detach().norm()), rel=1e-5)
    for s, encoding in enumerate(encodings):
        normal = _answer_logits_of(base.model, encoding)
        row = result.ablation_jsd["base"][s][layer]
        assert row[0] == pytest.approx(_jsd64(normal, _answer_logits_of(gate_ref, encoding)), rel=1e-3, abs=1e-7)
        assert row[2] == pytest.approx(_jsd64(normal, _answer_logits_of(down_ref, encoding)), rel=1e-3, abs=1e-7)
        assert row[0] > 0 and row[1] > 0 and row[2] > 0


# ----------------------------------------------------------------------------- verdict and report

MORE = SAMPLES + [
    Sample("d", "The quick brown fox jumps over the lazy dog.", "7"),
    Sample("e", "A train travels sixty miles in two hours.", "30"),
    Sample("f", "How many edges does a cube have?", "12"),
]


def test_verdict_finds_the_planted_anchor_and_reports_into_html(tokenizer, tmp_path, single_thread):
    from rlvr_lens.analyses.circuits import CircuitsConfig, CircuitsResult, circuits
    from rlvr_lens.report import write_run

    base, tuned = planted_pair(tokenizer)
    groups = {"leakage": [0, 1, 2, 3, 4, 5], "stable": [], "leaked": [0, 2, 4]}
    config = CircuitsConfig(n_boot=200, max_rows=9, accuracy="held", max_new_tokens=3)
    result = circuits(base, tuned, MORE, groups, config)
    (leakage, leaked) = result.verdicts
    assert leakage.status == "localized" and leakage.anchor.start == PLANTED, leakage.message
    assert leakage.anchor.end >= PLANTED
    # the tuned model's only change is at PLANTED, so no later layer's restore matters: no adapter window
    assert leakage.adapter is None
    assert leaked.n_samples == 3
    again = CircuitsResult.from_dict(result.to_dict())
    assert again.verdicts[0].anchor.start == PLANTED
    _check_per_sample_signals(again)
    report = write_run(tmp_path, [result])
    html = report.read_text()
    assert "Anchor window: layer" in html and (tmp_path / "figures" / "circuits-patching.png").is_file()
    assert (tmp_path / "figures" / "circuits-jsd.png").is_file() and (tmp_path / "figures" / "circuits-lens.png").is_file()


def _check_per_sample_signals(result):
    """The scoreboard's view of a circuits result, recomputed from its stored fields by hand."""
    from rlvr_lens.analyses.scoreboard import collect_signals

    signals = result.per_sample_signals()
    patching, lens = result.patching, result.lens
    assert patching.sample_ids == result.sample_ids == lens.sample_ids
    patched = patching.direction("tuned_into_base").m_patched
    for v, variant in enumerate(patching.variants):
        name = f"patch_{variant.component}{'-'.join(map(str, variant.layers))}_recovery"
        expected = [(patched[i][v] - patching.m_base[i]) / (patching.m_tuned[i] - patching.m_base[i]) for i in range(len(patched))]
        assert signals[name] == pytest.approx(expected)
        # planted truth: the MLP at PLANTED carries the whole change, every earlier window none of it
        if variant.component == "mlp" and variant.layers == [PLANTED]:
            assert signals[name] == pytest.approx([1.0] * len(patched), abs=1e-4)
        if variant.layers[-1] < PLANTED:
            assert signals[name] == pytest.approx([0.0] * len(patched), abs=1e-4)
    tuned = next(m for m in lens.models if m.name == result.tuned)
    base = next(m for m in lens.models if m.name == result.base)
    for i in range(len(result.sample_ids)):
        last_t, last_b = tuned.logprob[i][-1], base.logprob[i][-1]
        assert signals["lens_final_logprob"][i] == pytest.approx(sum(last_t) / len(last_t))
        assert signals["lens_logprob_gain"][i] == pytest.approx(sum(last_t) / len(last_t) - sum(last_b) / len(last_b))
        assert signals["mlp_direct_total"][i] == pytest.approx(sum(tuned.mlp_direct[i]))
    # reversed sample order in the scoreboard: values follow the ids, not the positions
    ids = result.sample_ids[::-1]
    board = collect_signals([result], ids)
    assert board["circuits:lens_final_logprob"].values == pytest.approx(signals["lens_final_logprob"][::-1])
    with pytest.raises(UserError, match="no per-sample signals"):
        collect_signals([_NoSignals()], ids, strict=True)
    assert collect_signals([_NoSignals()], ids) == {}  # in an audit, every earlier result is offered: skipped


class _NoSignals:
    """A result kind with nothing per sample (like ``weights``): the scoreboard must say so."""

    kind = "weights"
    sample_ids = None


def test_identical_models_have_no_localized_shortcut_and_empty_groups_say_so(tokenizer, tmp_path, single_thread):
    from rlvr_lens.analyses.circuits import CircuitsConfig, circuits
    from rlvr_lens.report import write_run

    base, _ = planted_pair(tokenizer)
    twin = loaded(base.model, tokenizer, "twin")
    config = CircuitsConfig(n_boot=50, parts=("lens", "patching"))
    result = circuits(base, twin, MORE, {"leakage": [0, 1, 2, 3], "stable": [4, 5]}, config)
    assert result.verdicts[0].status == "no localized shortcut"
    empty = circuits(base, twin, MORE, {"leakage": [], "stable": [0, 1]}, config)
    assert empty.verdicts[0].status == "not enough samples"
    assert "Not enough samples" in write_run(tmp_path, [empty]).read_text()


def test_groups_are_capped_and_reindexed_into_the_selection():
    from rlvr_lens.analyses.circuits import select_samples

    selected, local = select_samples({"a": [0, 5, 9], "b": [5, 7], "c": []}, 10, 2)
    assert selected == [0, 5, 7]
    assert local == {"a": [0, 1], "b": [1, 2], "c": []}
    with pytest.raises(UserError):
        select_samples({"a": [10]}, 10, None)

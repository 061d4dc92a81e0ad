"""Loading, adapters, hooks and compatibility checks on tiny models of every family."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from rlvr_lens.errors import UserError
from rlvr_lens.models import (
    ModelSeries,
    ModelSpec,
    capture,
    check_compatible,
    compatibility_problems,
    hook_name,
    load_model,
    patch,
    run_with_weights,
    scale_neurons,
)
from rlvr_lens.models.tiny import FAMILY_MODEL_TYPES, save_tiny_checkpoint

FAMILIES = list(FAMILY_MODEL_TYPES)
TEXTS = ["Problem: What is 12 + 7 * 3?", "x^2 = 16", "The quick brown fox jumps over the lazy dog."]


def _batch(tokenizer, side: str):
    tokenizer.padding_side = side
    try:
        return tokenizer(TEXTS, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = "right"


@pytest.mark.parametrize("family", FAMILIES)
def test_hook_free_logits_equal_transformers(tiny_checkpoints, family):
    path = tiny_checkpoints[family]
    loaded = load_model(path, "float32", "cpu")
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    batch = _batch(loaded.tokenizer, "left")
    with torch.no_grad():
        ours = loaded.model(**batch).logits
        theirs = reference(**batch).logits
        # entering and leaving hook contexts must leave no trace
        with capture(loaded.model, ("resid_post", "mlp_out", "neurons")):
            loaded.model(**batch)
        after = loaded.model(**batch).logits
    assert torch.equal(ours, theirs)
    assert torch.equal(after, theirs)
    assert loaded.adapter.family == family
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in loaded.model.modules())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_capture_then_patch_same_tensors_is_identity(tiny_checkpoints, family, side):
    loaded = load_model(tiny_checkpoints[family], "float32", "cpu")
    batch = _batch(loaded.tokenizer, side)
    points = ("resid_post", "attn_out", "mlp_out", "neurons", "gate", "up", "down")
    with torch.no_grad():
        reference = loaded.model(**batch).logits
        with capture(loaded.model, points) as cache:
            loaded.model(**batch)
        assert set(cache) == {hook_name(p, i) for p in points for i in range(loaded.num_layers)}
        with patch(loaded.model, cache):
            patched = loaded.model(**batch).logits
    assert torch.equal(patched, reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_mlp_out_is_what_the_mlp_adds_to_the_residual(tiny_checkpoints, family):
    """resid_post[i] = resid_mid[i] + mlp_out[i]; the last layer's output, final-normed, gives the logits."""
    loaded = load_model(tiny_checkpoints[family], "float32", "cpu")
    batch = _batch(loaded.tokenizer, "right")
    model, adapter = loaded.model, loaded.adapter
    with torch.no_grad(), capture(model, ("resid_post", "attn_out", "mlp_out")) as cache:
        out = model(**batch, output_hidden_states=True)
    hidden = out.hidden_states
    for i in range(loaded.num_layers):
        resid_pre = hidden[i]
        resid_mid = resid_pre + cache[hook_name("attn_out", i)]
        rebuilt = resid_mid + cache[hook_name("mlp_out", i)]
        torch.testing.assert_close(rebuilt, cache[hook_name("resid_post", i)], rtol=1e-5, atol=1e-5)
    # hidden_states[-1] is already final-normed: lm_head(hs[-1]) == logits; the lens of the last
    # residual applies the final norm exactly once.
    last = cache[hook_name("resid_post", loaded.num_layers - 1)]
    torch.testing.assert_close(adapter.logits_from_residual(model, last), out.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapter.logits_from_normed(model, hidden[-1]), out.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "olmo2", "gemma2"])
def test_neurons_are_the_input_of_down_proj(tiny_checkpoints, family):
    loaded = load_model(tiny_checkpoints[family], "float32", "cpu")
    batch = _batch(loaded.tokenizer, "right")
    mlp = loaded.adapter.layers(loaded.model)[0].mlp
    with torch.no_grad(), capture(loaded.model, ("neurons", "gate", "up", "down"), layers=[0]) as cache:
        loaded.model(**batch)
        expected = mlp.act_fn(cache["gate.0"]) * cache["up.0"]
        torch.testing.assert_close(cache["neurons.0"], expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(mlp.down_proj(cache["neurons.0"]), cache["down.0"], rtol=1e-6, atol=1e-6)


def test_scale_neurons_matches_manual_scaling(tiny_checkpoints):
    loaded = load_model(tiny_checkpoints["qwen2"], "float32", "cpu")
    batch = _batch(loaded.tokenizer, "right")
    neurons, alpha = [3, 17, 100], 2.5
    with torch.no_grad():
        with capture(loaded.model, ("neurons",), layers=[1]) as cache:
            loaded.model(**batch)
        manual = cache["neurons.1"].clone()
        manual[..., neurons] *= alpha
        with patch(loaded.model, {"neurons.1": manual}):
            expected = loaded.model(**batch).logits
        with scale_neurons(loaded.model, 1, neurons, alpha):
            scaled = loaded.model(**batch).logits
        plain = loaded.model(**batch).logits
    torch.testing.assert_close(scaled, expected, rtol=0, atol=0)
    assert not torch.allclose(scaled, plain)
    with torch.no_grad(), scale_neurons(loaded.model, 1, neurons, 1.0):
        assert torch.equal(loaded.model(**batch).logits, plain)


def test_patch_positions_only_changes_masked_positions(tiny_checkpoints):
    loaded = load_model(tiny_checkpoints["llama"], "float32", "cpu")
    batch = _batch(loaded.tokenizer, "right")
    seq = batch["input_ids"].shape[1]
    mask = torch.zeros(len(TEXTS), seq, dtype=torch.bool)
    mask[:, -1] = True
    with torch.no_grad():
        plain = loaded.model(**batch).logits
        with patch(loaded.model, {"mlp_out.1": lambda v: torch.zeros_like(v)}, positions=mask):
            patched = loaded.model(**batch).logits
    assert torch.equal(patched[:, :-1], plain[:, :-1])  # causal: earlier positions untouched
    assert not torch.allclose(patched[:, -1], plain[:, -1])


def test_hooks_are_removed_when_the_body_raises(tiny_checkpoints):
    loaded = load_model(tiny_checkpoints["qwen3"], "float32", "cpu")
    with pytest.raises(RuntimeError), scale_neurons(loaded.model, 0, [1], 0.0):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError), capture(loaded.model, ("resid_post",)):
        raise RuntimeError("boom")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in loaded.model.modules())


def test_weight_swapping_does_not_mutate_the_model(tiny_pair):
    base = load_model(tiny_pair[0], "float32", "cpu")
    tuned = load_model(tiny_pair[1], "float32", "cpu")
    name = "model.layers.0.mlp.down_proj.weight"
    ids = base.tokenizer(TEXTS[:1], return_tensors="pt")
    before = dict(base.model.named_parameters())[name].clone()
    with torch.no_grad():
        swapped = run_with_weights(base.model, {name: dict(tuned.model.named_parameters())[name]}, **ids).logits
        plain = base.model(**ids).logits
        reference_model = AutoModelForCausalLM.from_pretrained(tiny_pair[0], dtype=torch.float32).eval()
        reference_model.get_parameter(name).copy_(tuned.model.get_parameter(name))
        reference = reference_model(**ids).logits
    assert torch.equal(dict(base.model.named_parameters())[name], before)
    assert not torch.allclose(swapped, plain)
    torch.testing.assert_close(swapped, reference, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ errors and compatibility


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="No checkpoint directory"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no config.json"):
        load_model(str(tmp_path))


def test_unsupported_architecture_names_the_supported_ones(tmp_path, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="not supported.*llama.*qwen2"):
        load_model(str(tmp_path))


def test_nan_weights_are_rejected(tmp_path, tokenizer):
    path = save_tiny_checkpoint(tmp_path / "nan", "llama", tokenizer=tokenizer, max_shard_size=None)
    weights = load_file(path / "model.safetensors")
    weights["model.layers.1.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"non-finite.*layers\.1\.mlp\.up_proj"):
        load_model(str(path))


def test_compatible_pair_passes(tiny_pair):
    check_compatible([str(p) for p in tiny_pair])
    series = ModelSeries.from_strings([f"base={tiny_pair[0]}", f"rl={tiny_pair[1]}"], dtype="float32", device="cpu")
    names = [m.name for m in series.iter_loaded()]
    assert names == ["base", "rl"]


def test_mismatched_hidden_size_is_reported(tmp_path, tokenizer, tiny_pair):
    other = save_tiny_checkpoint(tmp_path / "wide", "qwen2", tokenizer=tokenizer, hidden_size=96, head_dim=24)
    problems = compatibility_problems([str(tiny_pair[0]), str(other)], ["base", "wide"])
    assert len(problems) == 1
    assert "differ in" in problems[0] and "hidden_size 96 vs 64" in problems[0]


def test_mismatched_architecture_and_vocab_are_reported(tmp_path, tiny_pair, tiny_checkpoints):
    problems = compatibility_problems([str(tiny_pair[0]), str(tiny_checkpoints["llama"])], ["base", "llama"])
    assert problems == ["llama is a llama model but base is a qwen2 model."]
    from rlvr_lens.models.tiny import build_tokenizer

    other_tok = build_tokenizer(vocab_size=300)
    other = save_tiny_checkpoint(tmp_path / "vocab", "qwen2", tokenizer=other_tok)
    problems = compatibility_problems([str(tiny_pair[0]), str(other)], ["base", "other"])
    assert any("different tokenizers" in p for p in problems)
    assert any("embed_tokens" in p for p in problems)
    with pytest.raises(UserError, match="different tokenizers"):
        check_compatible([str(tiny_pair[0]), str(other)])


def test_model_spec_parsing():
    assert ModelSpec.parse("rl=/ckpt/step-100") == ModelSpec("rl", "/ckpt/step-100")
    assert ModelSpec.parse("/ckpt/base/") == ModelSpec("base", "/ckpt/base/")
    with pytest.raises(UserError):
        ModelSpec.parse("=x")
    with pytest.raises(UserError, match="at least two"):
        ModelSeries.from_strings(["a=b"])


def test_sharded_checkpoint_has_an_index(tiny_checkpoints):
    index = json.loads((tiny_checkpoints["qwen2"] / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1


def test_a_saved_tokenizer_loads_back_identical(tiny_pair, tokenizer):
    # AutoTokenizer would load this qwen2 checkpoint's plain BPE as Qwen2Tokenizer, which splits
    # every digit and so tokenizes differently from the tokenizer the model was trained with
    from transformers import AutoTokenizer

    from rlvr_lens.models import load_tokenizer

    text = "The answer is \\boxed{55}. x^2 = 16, 123 apples"
    loaded = load_tokenizer(str(tiny_pair[0]))
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert AutoTokenizer.from_pretrained(tiny_pair[0])(text)["input_ids"] != tokenizer(text)["input_ids"]
    assert loaded.pad_token == "<|pad|>" and loaded.eos_token == "<|endoftext|>"


# ------------------------------------------------------------------ patching a different value
# Per-channel scaling of a hook point's value equals a weight edit of the module that produces
# it, so a model whose weights were edited (a deep copy, no hooks) is an independent reference
# for what patching that point must do to the logits. The edits name transformers' own modules:
# pre-norm families add o_proj / mlp output to the residual; OLMo-2 (weight * x) and Gemma
# ((1 + weight) * x) add the output of their post-attention / post-feedforward norms.
SANDWICH_NORM = {"olmo2": "plain", "gemma2": "one_plus", "gemma3": "one_plus"}


def _scale_output_rows(module, s):
    module.weight.mul_(s[:, None])


def _scale_norm(norm, s, family):
    if SANDWICH_NORM[family] == "one_plus":
        norm.weight.copy_((1 + norm.weight) * s - 1)
    else:
        norm.weight.mul_(s)


def _edit_weights(model, family, point, layer, s):
    block = model.model.layers[layer]
    with torch.no_grad():
        if point in ("gate", "up", "down"):
            _scale_output_rows(getattr(block.mlp, f"{point}_proj"), s)
        elif point == "neurons":
            block.mlp.down_proj.weight.mul_(s[None, :])
        elif point == "mlp_out":
            if family in SANDWICH_NORM:
                _scale_norm(block.post_feedforward_layernorm, s, family)
            else:
                _scale_output_rows(block.mlp.down_proj, s)
        elif point == "attn_out":
            if family in SANDWICH_NORM:
                _scale_norm(block.post_attention_layernorm, s, family)
            else:
                assert block.self_attn.o_proj.bias is None
                _scale_output_rows(block.self_attn.o_proj, s)
        else:
            raise AssertionError(point)


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_a_scaled_value_equals_the_weight_edited_model(tiny_checkpoints, family, single_thread):
    """Layer 0, so the changed value still runs through a whole decoder layer before the logits."""
    import copy

    loaded = load_model(tiny_checkpoints[family], "float32", "cpu")
    batch = _batch(loaded.tokenizer, "left")
    model = loaded.model
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        plain = model(**batch).logits
        for point in ("attn_out", "mlp_out", "neurons", "gate", "up", "down"):
            key = hook_name(point, 0)
            with capture(model, (point,), layers=[0]) as cache:
                model(**batch)
            s = 1 + 0.5 * torch.randn(cache[key].shape[-1], generator=generator)
            with patch(model, {key: cache[key] * s}):
                patched = model(**batch).logits
            edited = copy.deepcopy(model)
            _edit_weights(edited, family, point, 0, s)
            reference = edited(**batch).logits
            assert (reference - plain).abs().max() > 1e-3, key  # the edit does change the output
            torch.testing.assert_close(patched, reference, rtol=1e-4, atol=2e-5, msg=key)
        # a function replacement is the same patch
        with patch(model, {key: lambda v: v * s}):
            torch.testing.assert_close(model(**batch).logits, patched, rtol=0, atol=0)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_patching_resid_post_from_another_input_gives_that_inputs_logits(tiny_checkpoints, family, single_thread):
    """Everything after layer i depends on the input only through resid_post[i] (and the
    positions): patching input B's resid_post into input A's run must give B's logits there."""
    loaded = load_model(tiny_checkpoints[family], "float32", "cpu")
    model = loaded.model
    generator = torch.Generator().manual_seed(11)
    a = torch.randint(2, len(loaded.tokenizer), (2, 9), generator=generator)
    b = torch.randint(2, len(loaded.tokenizer), (2, 9), generator=generator)
    with torch.no_grad():
        logits_a, logits_b = model(a).logits, model(b).logits
        assert (logits_a - logits_b).abs().max() > 1e-2
        for layer in range(loaded.num_layers):
            key = hook_name("resid_post", layer)
            with capture(model, ("resid_post",), layers=[layer]) as cache:
                model(b)
            with patch(model, {key: cache[key]}):
                patched = model(a).logits
            torch.testing.assert_close(patched, logits_b, rtol=1e-5, atol=1e-5, msg=key)
            # only the last three positions: earlier ones keep A's logits, later ones mix
            mask = torch.zeros(2, 9, dtype=torch.bool)
            mask[:, 6:] = True
            with patch(model, {key: cache[key]}, positions=mask):
                partly = model(a).logits
            torch.testing.assert_close(partly[:, :6], logits_a[:, :6], rtol=0, atol=0)
            if layer == loaded.num_layers - 1:
                torch.testing.assert_close(partly[:, 6:], logits_b[:, 6:], rtol=1e-5, atol=1e-5)

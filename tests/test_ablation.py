"""Reset / retain: exact logits at the extremes, weights restored after every variant, the
noise control's norm, and the sweep's bookkeeping."""

from __future__ import annotations

import pytest
import torch

from rlvr_lens.analyses.ablation import (
    AblationConfig,
    AblationResult,
    parameter_checksum,
    reset_retain,
    variant,
    window_parameter_names,
)
from rlvr_lens.data import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.models import load_model

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def layer_only_pair(tiny_pair):
    """Base and tuned loaded, tuned's embeddings / final norm / head set to the base's: they differ only in layers."""
    base = load_model(str(tiny_pair[0]), "float32", "cpu", name="base")
    tuned = load_model(str(tiny_pair[1]), "float32", "cpu", name="tuned")
    base_params = dict(base.model.named_parameters())
    with torch.no_grad():
        for name, param in tuned.model.named_parameters():
            if ".layers." not in name:
                param.copy_(base_params[name])
    return base, tuned


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _all_checksum(loaded):
    return parameter_checksum(loaded.model, [n for n, _ in loaded.model.named_parameters()])


def test_reset_all_layers_is_the_base_and_retain_all_is_the_tuned(layer_only_pair):
    base, tuned = layer_only_pair
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 11], [8, 8, 120, 64, 33, 2, 19, 200]])
    want_base, want_tuned = _logits(base.model, ids), _logits(tuned.model, ids)
    assert not torch.allclose(want_base, want_tuned)
    everything = range(base.num_layers)
    with variant(base.model, tuned.model, "reset", everything, "both") as model:
        assert model is tuned.model
        assert torch.equal(_logits(model, ids), want_base)
    with variant(base.model, tuned.model, "retain", everything, "both") as model:
        assert model is base.model
        assert torch.equal(_logits(model, ids), want_tuned)
    # resetting only the MLPs leaves the attention tuned: neither model
    with variant(base.model, tuned.model, "reset", everything, "mlp") as model:
        mixed = _logits(model, ids)
    assert not torch.allclose(mixed, want_base) and not torch.allclose(mixed, want_tuned)
    assert torch.equal(_logits(tuned.model, ids), want_tuned) and torch.equal(_logits(base.model, ids), want_base)


@pytest.mark.parametrize("mode", ["reset", "retain", "noise"])
@pytest.mark.parametrize("part", ["mlp", "attn", "both"])
def test_weights_unchanged_after_every_variant(layer_only_pair, mode, part):
    base, tuned = layer_only_pair
    before = _all_checksum(base), _all_checksum(tuned)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with variant(base.model, tuned.model, mode, [0, 1], part, seed=3) as model:
        touched = window_parameter_names(model, [0, 1], part)
        assert parameter_checksum(model, touched) != parameter_checksum(
            base.model if mode != "retain" else tuned.model, touched
        ) or mode != "noise"
        _logits(model, ids)
    assert (_all_checksum(base), _all_checksum(tuned)) == before


def test_weights_restored_when_the_body_raises(layer_only_pair):
    base, tuned = layer_only_pair
    before = _all_checksum(tuned)
    with pytest.raises(ValueError), variant(base.model, tuned.model, "reset", [0], "both"):
        raise ValueError("boom")
    assert _all_checksum(tuned) == before


def test_noise_moves_each_tensor_by_the_reset_distance(layer_only_pair):
    base, tuned = layer_only_pair
    names = window_parameter_names(tuned.model, [1], "mlp")
    original = {n: p.detach().clone() for n, p in tuned.model.named_parameters() if n in names}
    base_params = dict(base.model.named_parameters())
    with variant(base.model, tuned.model, "noise", [1], "mlp", seed=0) as model:
        noised = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    with variant(base.model, tuned.model, "noise", [1], "mlp", seed=0) as model:
        again = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}
    for name in names:
        moved = float((noised[name] - original[name]).norm())
        reset_distance = float((base_params[name].detach() - original[name]).norm())
        assert moved == pytest.approx(reset_distance, rel=1e-4)
        assert torch.equal(noised[name], again[name])  # seeded
        # a random direction, not the reset's
        assert not torch.allclose(noised[name], base_params[name], atol=1e-3)


def test_part_names(layer_only_pair):
    _, tuned = layer_only_pair
    mlp = window_parameter_names(tuned.model, [0], "mlp")
    attn = window_parameter_names(tuned.model, [0], "attn")
    both = window_parameter_names(tuned.model, [0], "both")
    assert mlp and attn and set(mlp) | set(attn) < set(both)  # "both" also has the layer norms
    assert all(".mlp." in n for n in mlp) and all(".self_attn." in n for n in attn)
    with pytest.raises(UserError, match="Layer 9"):
        window_parameter_names(tuned.model, [9], "mlp")


def test_sweep_bookkeeping(layer_only_pair, tmp_path):
    base, tuned = layer_only_pair
    samples = [Sample(f"s{i}", f"What is {i} + {i}?", str(2 * i), None, {}) for i in range(4)]
    groups = {"leakage": [0, 1], "stable": [2, 3]}
    config = AblationConfig(width=1, windows=((0, 1),), parts=("mlp", "both"), modes=("reset", "retain"), max_new_tokens=3, batch_size=4)
    result = reset_retain(base, tuned, samples, groups, config)
    assert [r.mode for r in result.references] == ["base", "tuned"]
    windows = config.all_windows(tuned.num_layers)
    assert tuned.num_layers == 2 and windows == [(0, 0), (1, 1), (0, 1)]
    assert len(result.variants) == len(windows) * 2 * 2
    for v in result.variants:
        assert v.groups["leakage"] == sum(v.correct[:2]) / 2
    assert result.weights_verified
    again = AblationResult.from_dict(result.to_dict())
    assert again.variants[0].window == result.variants[0].window
    from rlvr_lens.report import write_run

    html = write_run(tmp_path, [result]).read_text()
    assert "Reset / retain layer windows" in html and (tmp_path / "figures" / "ablation-windows.png").exists()


def test_config_rejects_bad_windows():
    with pytest.raises(UserError, match="Window"):
        AblationConfig(windows=((3, 1),)).check(4)
    with pytest.raises(UserError, match="Unknown"):
        AblationConfig(parts=("ffn",)).check(4)

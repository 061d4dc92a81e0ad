"""Neuron key scaling: alpha = 1 changes nothing, alpha = 0 equals zeroing the neurons by hand,
gradients against finite differences, overlap by hand, the control and the calibration split."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rlvr_lens.analyses.perplexity import encode_sample
from rlvr_lens.analyses.steering import (
    SteeringConfig,
    SteeringResult,
    calibration_split,
    factor_rows,
    keys_and_gradients,
    matched_random,
    neuron_steering,
    overlap,
    scale_rows,
)
from rlvr_lens.data import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.generation import accuracy
from rlvr_lens.models import load_model
from rlvr_lens.models.hooks import capture, hook_name, patch

pytestmark = pytest.mark.usefixtures("single_thread")

IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 11], [8, 8, 120, 64, 33, 2, 19, 200]])


@pytest.fixture
def loaded(tiny_pair):
    return load_model(str(tiny_pair[1]), "float32", "cpu", name="tuned")


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_alpha_one_changes_nothing(loaded):
    width = loaded.model.model.layers[1].mlp.down_proj.weight.shape[1]
    reference = _logits(loaded.model)
    with scale_rows(loaded.model, 1, factor_rows([[0, 3, 7], [1, 2]], width, 1.0)):
        assert torch.equal(_logits(loaded.model), reference)


def test_alpha_zero_equals_zeroing_the_neurons_by_hand(loaded):
    layer, sets = 1, [[0, 3, 7], [1, 2, 30]]
    width = loaded.model.model.layers[layer].mlp.down_proj.weight.shape[1]
    with scale_rows(loaded.model, layer, factor_rows(sets, width, 0.0)):
        steered = _logits(loaded.model)
    for row, neurons in enumerate(sets):
        by_hand = copy.deepcopy(loaded.model)
        with torch.no_grad():
            by_hand.model.layers[layer].mlp.down_proj.weight[:, neurons] = 0.0  # the neurons write nothing
        torch.testing.assert_close(steered[row], _logits(by_hand, IDS[row : row + 1])[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(steered, _logits(loaded.model))


def test_alpha_scales_the_key(loaded):
    layer, width = 0, loaded.model.model.layers[0].mlp.down_proj.weight.shape[1]
    with torch.no_grad(), capture(loaded.model, ("neurons",), [layer]) as plain:
        loaded.model(input_ids=IDS)
    seen = {}
    with torch.no_grad(), scale_rows(loaded.model, layer, factor_rows([[4], [5]], width, 2.5)):
        # a capture registered inside sees the input after the scaling pre-hook
        with capture(loaded.model, ("neurons",), [layer]) as scaled:
            loaded.model(input_ids=IDS)
        seen = scaled[hook_name("neurons", layer)]
    want = plain[hook_name("neurons", layer)].clone()
    want[0, :, 4] *= 2.5
    want[1, :, 5] *= 2.5
    torch.testing.assert_close(seen, want)


def test_gradient_matches_finite_differences(loaded):
    sample = Sample("s", "What is 2 + 3?", "5", "2 + 3 = 5. The answer is 5.")
    enc = encode_sample(loaded.tokenizer, sample)
    layer = 1
    keys, grads = keys_and_gradients(loaded.model, loaded.adapter, enc, [layer])
    position = enc.prompt_span[1] - 1
    a, b = enc.answer_span
    ids = torch.tensor([enc.ids])

    def logp(shift: torch.Tensor) -> float:
        def add(x):
            x = x.clone()
            x[0, position] += shift
            return x

        with torch.no_grad(), patch(loaded.model, {hook_name("neurons", layer): add}):
            lp = torch.log_softmax(loaded.model(input_ids=ids).logits[0].double(), -1)
        return float(lp[a - 1 : b - 1].gather(-1, ids[0, a:b, None]).sum())

    width = keys[layer].shape[0]
    with torch.no_grad(), capture(loaded.model, ("neurons",), [layer]) as cache:
        loaded.model(input_ids=ids)
    torch.testing.assert_close(keys[layer], cache[hook_name("neurons", layer)][0, position])
    h = 1e-2
    for neuron in (0, 5, width - 1):
        e = torch.zeros(width)
        e[neuron] = h
        numeric = (logp(e) - logp(-e)) / (2 * h)
        assert float(grads[layer][neuron]) == pytest.approx(numeric, rel=2e-2, abs=2e-3)


def test_overlap_by_hand():
    top = torch.tensor([[1, 2, 3], [4, 5, 6], [9, 2, 0]])
    assert overlap(top, {2, 9}).tolist() == [0.5, 0.0, 1.0]
    assert overlap(top, set()).tolist() == [0.0, 0.0, 0.0]


def test_matched_random_control():
    rng = np.random.default_rng(0)
    magnitude = torch.arange(100, dtype=torch.float32)
    chosen = [99, 97, 50]
    control = matched_random(magnitude, chosen, 3, rng)
    assert len(control) == 3 and not set(control) & set(chosen) and len(set(control)) == 3
    ranks = sorted(99 - c for c in control)
    assert max(ranks) <= 53 and min(ranks) <= 6  # neighbours of ranks 0, 2 and 49


def test_calibration_split_holds_out_part_of_the_group():
    calibration, scored = calibration_split({"leakage": [0, 2, 4, 6, 8, 10]}, 12, "leakage", 0.3, seed=0)
    assert len(calibration) == 2 and set(calibration) <= {0, 2, 4, 6, 8, 10}
    assert sorted(calibration + scored) == list(range(12))
    assert calibration_split({}, 10, "leakage", 0.3, seed=0)[0].__len__() == 3


def test_steering_sweep_alpha_one_is_the_model(loaded, tmp_path):
    samples = [Sample(f"s{i}", f"What is {i} + {i}?", str(2 * i), f"{i} + {i} = {2 * i}.") for i in range(6)]
    groups = {"leakage": [0, 1, 2, 3], "stable": [4, 5]}
    config = SteeringConfig(layers=(1,), alphas=(0.0, 1.0), top_n=3, max_new_tokens=3, batch_size=4, calibration_fraction=0.5)
    result = neuron_steering(loaded, samples, groups, config)
    assert len(result.curves) == 3 * 2 * 2  # selections x scopes x (selected, random)
    assert not set(result.calibration) & set(result.scored) and len(result.calibration) == 2
    _, plain = accuracy(loaded.model, loaded.tokenizer, [samples[i] for i in result.scored], max_new_tokens=3, batch_size=4)
    for curve in result.curves:
        assert curve.correct[1] == plain  # alpha = 1: unmodified
    shared = next(c for c in result.curves if c.scope == "shared" and c.neurons == "selected")
    assert len(shared.shared_set) == 3
    again = SteeringResult.from_dict(result.to_dict())
    assert again.curves[0].answer_prob == result.curves[0].answer_prob
    from rlvr_lens.report import write_run

    html = write_run(tmp_path, [result]).read_text()
    assert "Neuron key scaling" in html and (tmp_path / "figures" / "steering-dose.png").exists()


def test_config_errors():
    with pytest.raises(UserError, match="selection"):
        SteeringConfig(selections=("magic",)).check()
    with pytest.raises(UserError, match="Alphas"):
        SteeringConfig(alphas=(-1.0,)).check()
    with pytest.raises(UserError, match="Layer 7"):
        SteeringConfig(layers=(7,)).check(num_layers=2)

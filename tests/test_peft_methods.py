"""PEFT ablation methods: LoRA / PiSSA merge into checkpoints `weights` reads, sparse masks train exactly their entries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlvr_lens.analyses.weights import WeightsConfig, weight_forensics
from rlvr_lens.errors import UserError
from rlvr_lens.io import atomic_save_pretrained
from rlvr_lens.models.tiny import build_tiny_model
from rlvr_lens.organism.pretrain import TrainSettings, train_causal_lm
from rlvr_lens.train.peft_methods import (
    DEFAULT_TARGETS,
    AdapterConfig,
    apply_adapter,
    lora_config,
    merge_adapter,
    merged_model,
)

PAIRS = [
    ("What is 2 + 2?", " The answer is 4."),
    ("What is 3 + 4?", " Three plus four is 7."),
    ("What is 5 - 1?", " Five minus one is 4."),
    ("What is 6 * 2?", " Six times two is 12."),
]


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _is_target(name: str) -> bool:
    return name.endswith(".weight") and name.split(".")[-2] in DEFAULT_TARGETS


def _plant(peft_model, seed: int, *, train_a: bool) -> None:
    """Set every adapter's B (and A when ``train_a``) to random values: a planted 'trained' adapter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or ("lora_A" in name and train_a):
                param.add_(0.05 * torch.randn(param.shape, generator=generator))


@pytest.fixture
def base(tmp_path, tokenizer):
    model = build_tiny_model("qwen2", seed=0, vocab_size=len(tokenizer))
    directory = atomic_save_pretrained(model, tokenizer, tmp_path / "base")
    return model, directory


def test_bad_adapter_options_are_one_sentence_user_errors(tokenizer, tmp_path):
    bad = [
        AdapterConfig(method="qlora"),
        AdapterConfig(method="lora", rank=0),
        AdapterConfig(method="sparse", sparse_fraction=1.5),
        AdapterConfig(method="sparse", sparse_fraction=0.0),
        AdapterConfig(method="sparse", sparse_criterion="gradient"),
        AdapterConfig(method="lora", alpha=-1.0),
        AdapterConfig(method="lora", target_modules=()),
    ]
    for config in bad:
        with pytest.raises(UserError) as info:
            config.check()
        assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")
    model = build_tiny_model("qwen2", seed=0, vocab_size=len(tokenizer))
    with pytest.raises(UserError, match="exceeds the smallest side"):
        apply_adapter(model, AdapterConfig(method="lora", rank=10_000))
    with pytest.raises(UserError, match="no linear module"):
        apply_adapter(model, AdapterConfig(method="sparse", target_modules=("w_qkv",)))
    with pytest.raises(UserError, match="not a LoRA adapter"):
        lora_config(AdapterConfig(method="sparse"))
    with pytest.raises(UserError, match="adapter_config.json"):
        merge_adapter(tmp_path, tmp_path / "out")


def test_planted_lora_update_merges_into_a_checkpoint_weights_reads_with_rank_r(base, tokenizer, tmp_path):
    model, base_dir = base
    before = _state(model)
    rank = 3
    adaptation = apply_adapter(model, AdapterConfig(method="lora", rank=rank, alpha=6.0))
    _plant(adaptation.model, seed=1, train_a=False)  # B starts at zero: the update is (alpha / r) B A
    # expected update, float64, from the adapter's own factors
    expected = {}
    for name, module in adaptation.model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            a = module.lora_A["default"].weight.detach().double()
            b = module.lora_B["default"].weight.detach().double()
            key = name.removeprefix("base_model.model.") + ".weight"
            expected[key] = (6.0 / rank) * (b @ a)
    assert len(expected) == 7 * model.config.num_hidden_layers
    # the same adapter saved by peft and merged from disk must equal the in-memory merge
    adaptation.model.save_pretrained(tmp_path / "adapter")
    merged_from_disk = merge_adapter(tmp_path / "adapter", tmp_path / "merged-disk", base_dir=base_dir)
    merged = adaptation.finish()
    assert merged is model and not any("lora" in n for n, _ in merged.named_parameters())
    out = atomic_save_pretrained(merged, tokenizer, tmp_path / "merged")

    after = _state(merged)
    for name, tensor in after.items():
        delta = (tensor.double() - before[name].double()).numpy()
        if name in expected:
            np.testing.assert_allclose(delta, expected[name].numpy(), atol=1e-6)
            s = np.linalg.svd(delta, compute_uv=False)
            assert int((s > s[0] * 1e-5).sum()) == rank
        else:
            assert torch.equal(tensor, before[name]), name

    result = weight_forensics(
        base_dir, {"lora": out, "disk": merged_from_disk}, WeightsConfig(ranks=(rank - 1, rank), device="cpu")
    )
    rows = {(r.run, r.name): r for r in result.matrices}
    for name in expected:
        for run in ("lora", "disk"):
            row = rows[(run, name)]
            assert row.rank_errors[str(rank)] < 1e-4, (run, name, row.rank_errors)
            assert row.rank_errors[str(rank - 1)] > 1e-2
            assert 1.0 <= row.stable_rank <= rank + 1e-9
    untouched = [r for r in result.matrices if r.name not in expected]
    assert untouched and all(r.update_norm == 0.0 for r in untouched)


def test_pissa_starts_at_the_base_and_updates_inside_the_principal_subspace(base, tokenizer, tmp_path):
    model, base_dir = base
    before = _state(model)
    rank = 2
    adaptation = apply_adapter(model, AdapterConfig(method="pissa", rank=rank))
    untrained = merged_model(adaptation.model)  # a merged copy; the adapter keeps training
    for name, tensor in untrained.state_dict().items():
        np.testing.assert_allclose(tensor.numpy(), before[name].numpy(), atol=2e-5)
    _plant(adaptation.model, seed=2, train_a=False)  # a trained B: dW = dB A0, A0 = sqrt(S_r) V_r^T
    tuned = adaptation.finish()
    after = _state(tuned)
    out = atomic_save_pretrained(tuned, tokenizer, tmp_path / "pissa")

    result = weight_forensics(base_dir, {"pissa": out}, WeightsConfig(k_fixed=rank, ranks=(rank,), device="cpu"))
    targets = [r for r in result.matrices if _is_target(r.name)]
    assert len(targets) == 7 * model.config.num_hidden_layers
    for row in targets:
        w0 = before[row.name].double().numpy()
        delta = after[row.name].double().numpy() - w0
        # NumPy reference: share of ||dW||^2 in the base's top-r right (input-side) singular subspace
        v_r = np.linalg.svd(w0)[2][:rank].T
        share = np.linalg.norm(delta @ v_r) ** 2 / np.linalg.norm(delta) ** 2
        sub = [s for s in row.subspaces if s.k == rank][0]
        assert sub.right_share == pytest.approx(share, abs=1e-4)
        assert share > 0.999, (row.name, share)
        assert sub.right_share_random < 0.2
        assert row.rank_errors[str(rank)] < 1e-3


def test_sparse_mask_trains_exactly_the_top_magnitude_entries(tokenizer):
    model = build_tiny_model("qwen2", seed=0, vocab_size=len(tokenizer))
    before = _state(model)
    settings = TrainSettings(steps=4, batch_size=4, learning_rate=1e-2, warmup_steps=1, weight_decay=0.1, loss_on="all")
    train_causal_lm(model, tokenizer, PAIRS, settings, adapter=AdapterConfig(method="sparse", sparse_fraction=0.3))
    after = _state(model)
    checked = 0
    for name, tensor in after.items():
        if not _is_target(name):
            assert torch.equal(tensor, before[name]), name  # embeddings, norms: bit-identical
            continue
        w0 = before[name].abs().flatten()
        k = round(0.3 * w0.numel())
        changed = (tensor != before[name]).flatten()
        chosen = torch.zeros_like(changed)
        chosen[np.argsort(-w0.numpy(), kind="stable")[:k]] = True
        assert not changed[~chosen].any(), name  # every unselected entry bit-identical despite weight decay
        assert changed[chosen].float().mean() > 0.95, name  # the selected ones did train
        checked += 1
    assert checked == 7 * model.config.num_hidden_layers
    assert not any(p.requires_grad is False for p in model.parameters())  # a plain model again


def test_lora_sft_leaves_a_plain_model_with_a_rank_r_update(tokenizer):
    model = build_tiny_model("qwen2", seed=0, vocab_size=len(tokenizer))
    before = _state(model)
    settings = TrainSettings(steps=3, batch_size=4, learning_rate=1e-2, warmup_steps=1, loss_on="completion")
    stats = train_causal_lm(model, tokenizer, PAIRS, settings, adapter=AdapterConfig(method="lora", rank=2))
    assert np.isfinite(stats["final_loss"])
    after = _state(model)
    assert set(after) == set(before)
    for name, tensor in after.items():
        delta = (tensor.double() - before[name].double()).numpy()
        if _is_target(name):
            s = np.linalg.svd(delta, compute_uv=False)
            assert s[0] > 0 and int((s > s[0] * 1e-4).sum()) <= 2, name
        else:
            assert not delta.any(), name


# ----------------------------------------------------------------------------- GRPO (rlvr-lens train)

def _grpo_samples():
    from rlvr_lens.data.sample import Sample

    return [Sample("a", "What is 2 + 2?", "4"), Sample("b", "What is 3 + 4?", "7")]


def _grpo_cli(argv):
    import argparse

    from rlvr_lens.cli import train as train_command
    from rlvr_lens.cli.common import run_guarded

    parser = argparse.ArgumentParser(prog="rlvr-lens")
    train_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *argv])
    return run_guarded(args.func, args)


@pytest.mark.parametrize("method", ["lora", "sparse"])
def test_grpo_with_an_adapter_saves_plain_checkpoints_that_change_only_what_it_may(base, tmp_path, method):
    from rlvr_lens.models import load_model
    from rlvr_lens.train.grpo import GRPOSettings, train_grpo

    model, base_dir = base
    before = _state(model)
    adapter = AdapterConfig(method=method, rank=2, sparse_fraction=0.2)
    settings = GRPOSettings(
        reward="random", max_steps=2, save_steps=1, eval_steps=0, prompts_per_step=2, num_generations=4,
        max_completion_length=8, eval_max_new_tokens=8, learning_rate=1e-2, adapter=adapter,
    )
    run = train_grpo(base_dir, _grpo_samples(), tmp_path / "run", settings)
    assert GRPOSettings(**run.settings).adapter == adapter  # round trip through grpo_run.json's dict
    assert run.checkpoints == [str(tmp_path / "run" / "step-1"), str(tmp_path / "run" / "step-2")]
    after = _state(load_model(run.final_dir, dtype="float32", device="cpu").model)
    assert set(after) == set(before)  # a plain checkpoint, no adapter tensors
    moved = 0
    for name, tensor in after.items():
        if not _is_target(name):
            assert torch.equal(tensor, before[name]), name
            continue
        delta = (tensor.double() - before[name].double()).numpy()
        moved += bool(delta.any())
        if method == "lora":
            s = np.linalg.svd(delta, compute_uv=False)
            assert int((s > s[0] * 1e-4).sum()) <= 2, name
        else:
            w0 = before[name].abs().flatten().numpy()
            chosen = np.zeros(w0.size, dtype=bool)
            chosen[np.argsort(-w0, kind="stable")[: round(0.2 * w0.size)]] = True
            assert not delta.flatten()[~chosen].any(), name
    assert moved > 0


def test_cli_adapter_options(base, tmp_path, capsys):
    from rlvr_lens.data import write_samples

    _, base_dir = base
    data = write_samples(tmp_path / "train.jsonl", _grpo_samples())
    common = ["--model", str(base_dir), "--data", str(data), "--out", str(tmp_path / "o")]
    assert _grpo_cli([*common, "--adapter", "sparse", "--sparse-fraction", "1.5"]) == 2
    assert _grpo_cli([*common, "--adapter", "lora", "--adapter-rank", "0"]) == 2
    assert _grpo_cli([*common, "--adapter", "pissa", "--adapter-rank", "100000", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 3 and "Traceback" not in err
    assert "Sparse fraction" in err and "rank" in err and "smallest side" in err

"""Out-of-memory retry: a simulated OOM halves the batch down to 1 with unchanged results, then one sentence;
dtype auto is bfloat16 on a CUDA GPU."""

from __future__ import annotations

import pytest
import torch

from rlvr_lens.errors import UserError
from rlvr_lens.oom import HalvingRetry, is_out_of_memory


def _fits(limit: int, error=torch.OutOfMemoryError):
    seen = []

    def run(part):
        seen.append(len(part))
        if len(part) > limit:
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in part]

    return run, seen


def test_halves_until_it_fits_and_keeps_the_smaller_size():
    run, seen = _fits(2)
    retry = HalvingRetry("test")
    assert retry(run, list(range(8))) + retry(run, [8, 9, 10]) == [x * 10 for x in range(11)]
    assert seen == [8, 4, 2, 2, 2, 2, 2, 1]  # 8 and 4 fail; every later part is at most 2
    assert retry.halvings == [8, 4] and retry.size == 2


@pytest.mark.parametrize("error", [MemoryError, lambda m: RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate memory")])
def test_cpu_allocation_failures_count_as_out_of_memory(error):
    run, seen = _fits(1, error)
    assert HalvingRetry("test")(run, [1, 2, 3]) == [10, 20, 30]
    assert seen == [3, 1, 1, 1]


def test_at_batch_one_it_is_one_sentence():
    run, _ = _fits(0)
    with pytest.raises(UserError, match=r"^Out of memory in generation even with a batch of one sample; .*\.$"):
        HalvingRetry("generation")(run, [1, 2, 3, 4])


def test_other_errors_pass_through():
    def run(part):
        raise RuntimeError("shape mismatch")

    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        HalvingRetry("x")(run, [1, 2])


def _oom_above(module, limit: int, monkeypatch, method: str):
    """Make ``module.<method>`` raise a CUDA OOM for batches larger than ``limit``; count the calls."""
    original = getattr(module, method)
    sizes = []

    def patched(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        sizes.append(ids.shape[0])
        if ids.shape[0] > limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, method, patched)
    return sizes


def test_perplexity_scoring_survives_a_simulated_oom_with_identical_numbers(tiny_pair, tokenizer, monkeypatch, single_thread):
    from rlvr_lens.analyses.perplexity import checkpoint_nll, encode_sample
    from rlvr_lens.data import Sample
    from rlvr_lens.models import load_model

    loaded = load_model(str(tiny_pair[0]), "float32", "cpu")
    samples = [Sample(str(i), f"What is {i} + {i * 3}?", str(4 * i), solution=f"{i} + {3 * i} = {4 * i}") for i in range(7)]
    encoded = [encode_sample(loaded.tokenizer, s) for s in samples]
    reference = checkpoint_nll(loaded.model, encoded, pad_id=0, batch_size=1)
    sizes = _oom_above(loaded.model, 2, monkeypatch, "forward")
    retried = checkpoint_nll(loaded.model, encoded, pad_id=0, batch_size=8)
    assert sizes == [7, 3] + [1] * 7  # 7 and 3 run out of memory; 3 // 2 = 1 is kept for the rest
    for got, want in zip(retried, reference):
        assert got == pytest.approx(want, abs=1e-5)


def test_generation_survives_a_simulated_oom_with_identical_text(tiny_pair, monkeypatch, single_thread):
    from rlvr_lens.generation import generate
    from rlvr_lens.models import load_model

    loaded = load_model(str(tiny_pair[0]), "float32", "cpu")
    prompts = [f"Question {i}: what is {i} + 1?" for i in range(5)]
    reference = generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=6, batch_size=5)
    sizes = _oom_above(loaded.model, 1, monkeypatch, "generate")
    retried = generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens=6, batch_size=5)
    assert sizes == [5, 2, 1, 1, 1, 1, 1]
    assert [g.token_ids for g in retried] == [g.token_ids for g in reference]


def test_dtype_auto_is_bfloat16_on_a_cuda_gpu(monkeypatch):
    from rlvr_lens.models import resolve_dtype

    assert resolve_dtype("auto", "cpu") == "auto" and resolve_dtype("float32", "cuda") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", "cuda") == torch.bfloat16 and resolve_dtype(None, "cuda:1") == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == "auto"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", "cuda") == "auto"  # e.g. a V100: keep the stored dtype

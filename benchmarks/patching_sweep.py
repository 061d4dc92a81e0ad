"""Full activation-patching sweep: batched variants vs the naive loop of one hooked forward per variant.

    python benchmarks/patching_sweep.py                    # cpu-1.5b-4l on CPU, gpu-1.5b on CUDA
    python benchmarks/patching_sweep.py --config cpu-1.5b-2l

The sweep: every layer, window width 1, both directions (tuned into base, base into tuned),
attention and MLP outputs, over ``samples`` teacher-forced sequences (random token ids of
``length`` tokens, the last ``answer`` of them the answer), two random-weight models of the
Qwen2.5-1.5B shape (hidden 1536, MLP 8960, 12 heads / 2 KV heads, vocab 151936, tied
embeddings) with fewer layers on the CPU.

* **Batched** (what :func:`rlvr_lens.analyses.patching.activation_patching` runs): per chunk
  of samples, one donor forward capturing every ``attn_out``/``mlp_out``, then one receiver
  forward with every variant of every sample of the chunk stacked along the batch (up to
  ``max_rows`` rows; each hook replaces its own rows), the unembedding applied at the
  answer's read positions only.
* **Naive**: per sample, one donor forward capturing the same points, then per (layer,
  component, direction) one hooked forward of the receiver on that sample alone, reading the
  answer's log-probability from ``model(...).logits`` (the full unembedding), as a
  straightforward script does. It is timed on ``naive_samples`` samples (its cost is the
  same for every sample) and reported per sample.

Both give the same numbers (checked, max |difference| reported). Samples/s of each, their
ratio, and peak memory (CPU: peak RSS above the level before the call, sampled every
millisecond; CUDA: ``max_memory_allocated``) are written to
``benchmarks/results/patching_sweep_<config>.json`` with the load average (shared machines).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
from rlvr_lens.analyses.patching import PatchingConfig, _answer_logprob, _teacher_forced, variants_for  # noqa: E402
from rlvr_lens.analyses.teacher_forcing import AnswerEncoding  # noqa: E402
from rlvr_lens.io import atomic_write_json  # noqa: E402
from rlvr_lens.models.adapters import adapter_for_model_type  # noqa: E402
from rlvr_lens.models.hooks import capture, patch  # noqa: E402
from rlvr_lens.models.loading import LoadedModel  # noqa: E402
from tokens_throughput import PeakRSS  # noqa: E402

SHAPE = dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
             vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768)
CONFIGS = {
    "gpu-1.5b": dict(layers=28, dtype="bfloat16", samples=64, naive_samples=64, length=256, answer=3, max_rows=128),
    "cpu-1.5b-4l": dict(layers=4, dtype="float32", samples=64, naive_samples=4, length=48, answer=3, max_rows=64),
    "cpu-1.5b-2l": dict(layers=2, dtype="float32", samples=64, naive_samples=4, length=48, answer=3, max_rows=64),
}


class _Tokenizer:
    pad_token_id = 0


def build_pair(layers: int, dtype: torch.dtype, device: torch.device) -> tuple[LoadedModel, LoadedModel]:
    config = AutoConfig.for_model("qwen2", **SHAPE, num_hidden_layers=layers, pad_token_id=0)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    tuned = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    with torch.no_grad():  # tuned = base + a small update everywhere
        for (_, p), (_, q) in zip(base.named_parameters(), tuned.named_parameters()):
            q.copy_(p + 0.01 * p.std() * torch.randn_like(p) if p.ndim > 1 else p)
    adapter = adapter_for_model_type("qwen2")
    return LoadedModel("base", "random", base, _Tokenizer(), adapter), LoadedModel("tuned", "random", tuned, _Tokenizer(), adapter)


def encodings(n: int, length: int, answer: int, seed: int = 0) -> list[AnswerEncoding]:
    generator = torch.Generator().manual_seed(seed)
    return [AnswerEncoding(torch.randint(1, SHAPE["vocab_size"], (length,), generator=generator).tolist(), length - answer) for _ in range(n)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def batched_sweep(base, tuned, encs, variants, config) -> dict[str, list[list[float]]]:
    return {
        "tuned_into_base": _teacher_forced(base, tuned, encs, variants, config, 0, show_progress=False),
        "base_into_tuned": _teacher_forced(tuned, base, encs, variants, config, 0, show_progress=False),
    }


@torch.no_grad()
def naive_sweep(base, tuned, encs, variants) -> dict[str, list[list[float]]]:
    out = {"tuned_into_base": [], "base_into_tuned": []}
    points = sorted({p.rsplit(".", 1)[0] for v in variants for p in v.points})
    for enc in encs:
        ids = torch.tensor([enc.ids], device=base.device)
        targets = torch.tensor(enc.answer_ids, device=base.device)
        for name, receiver, donor in (("tuned_into_base", base, tuned), ("base_into_tuned", tuned, base)):
            with capture(donor.model, points, adapter=donor.adapter) as cache:
                donor.model(input_ids=ids)
            row = []
            for variant in variants:
                with patch(receiver.model, {p: cache[p] for p in variant.points}, adapter=receiver.adapter):
                    logits = receiver.model(input_ids=ids).logits[0, enc.read_positions].float()
                row.append(float((logits.log_softmax(-1).gather(-1, targets[:, None])).mean()))
            out[name].append(row)
    return out


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - start, value


def peak_mib(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with PeakRSS() as probe:
        fn()
    return probe.delta_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--naive-samples", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = args.config or ("gpu-1.5b" if device.type == "cuda" else "cpu-1.5b-4l")
    cfg = dict(CONFIGS[name])
    cfg["samples"] = args.samples or cfg["samples"]
    cfg["naive_samples"] = args.naive_samples or cfg["naive_samples"]
    dtype = getattr(torch, cfg["dtype"])
    base, tuned = build_pair(cfg["layers"], dtype, device)
    config = PatchingConfig(max_rows=cfg["max_rows"])
    variants = variants_for(cfg["layers"], config)
    encs = encodings(cfg["samples"], cfg["length"], cfg["answer"])
    load = [os.getloadavg()[0]]
    # warm-up (allocator, kernels) on one sample each way
    batched_sweep(base, tuned, encs[:1], variants, config), naive_sweep(base, tuned, encs[:1], variants)
    batched_s, batched = timed(lambda: batched_sweep(base, tuned, encs, variants, config), device)
    load.append(os.getloadavg()[0])
    naive_s, naive = timed(lambda: naive_sweep(base, tuned, encs[: cfg["naive_samples"]], variants), device)
    load.append(os.getloadavg()[0])
    difference = max(
        abs(a - b) for d in naive for row_n, row_b in zip(naive[d], batched[d]) for a, b in zip(row_n, row_b)
    )
    peak_batched = peak_mib(lambda: batched_sweep(base, tuned, encs[: min(8, len(encs))], variants, config), device)
    peak_naive = peak_mib(lambda: naive_sweep(base, tuned, encs[:1], variants), device)
    # the unpatched metric, a sanity anchor for the numbers above
    m_base = _answer_logprob(base, torch.tensor([encs[0].ids]), encs[:1], 1)[0]
    forwards = len(variants) * 2
    result = {
        "benchmark": "patching_sweep",
        "config": name,
        "device": f"{device.type} ({platform.machine()}, {os.cpu_count()} cores)" if device.type == "cpu" else torch.cuda.get_device_name(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": load,
        "model": {"family": "qwen2", "dtype": cfg["dtype"], "num_hidden_layers": cfg["layers"], **SHAPE},
        "sweep": {"width": 1, "components": ["attn", "mlp"], "directions": 2, "variants_per_sample": forwards,
                  "length": cfg["length"], "answer_tokens": cfg["answer"], "max_rows": cfg["max_rows"]},
        "batched": {"samples": cfg["samples"], "seconds": round(batched_s, 3), "samples_per_s": round(cfg["samples"] / batched_s, 4)},
        "naive": {"samples": cfg["naive_samples"], "seconds": round(naive_s, 3), "samples_per_s": round(cfg["naive_samples"] / naive_s, 4)},
        "speedup": round((cfg["samples"] / batched_s) / (cfg["naive_samples"] / naive_s), 2),
        "max_abs_difference_nats": difference,
        "peak_memory_mib": {
            # above the level at the call's start (allocator reuse can hide a second run's growth)
            "batched_8_samples": round(peak_batched, 1),
            "naive_1_sample": round(peak_naive, 1),
            "process_peak_rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            if device.type == "cpu" else round(torch.cuda.max_memory_allocated() / 2**20, 1),
        },
        "m_base_sample0": m_base,
    }
    out = Path(args.out or Path(__file__).parent / "results" / f"patching_sweep_{name}.json")
    atomic_write_json(out, result)
    print(f"{name}: batched {result['batched']['samples_per_s']} samples/s, naive {result['naive']['samples_per_s']} samples/s, "
          f"speedup {result['speedup']}x, max |diff| {difference:.2e} nats, peak {result['peak_memory_mib']} MiB -> {out}")


if __name__ == "__main__":
    main()

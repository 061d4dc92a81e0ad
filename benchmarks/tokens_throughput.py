"""Throughput and peak memory of the token-divergence pass, and the speed of cross-sampling decoding.

    python benchmarks/tokens_throughput.py            # full configuration on CUDA, scaled-down one on CPU
    python benchmarks/tokens_throughput.py --config cpu-small
    python benchmarks/tokens_throughput.py --config cpu-1.5b   # the real width on a CPU (12 GB of RAM)

Measured, on two random-weight models of one shape (no checkpoint, nothing downloaded):

1. **Divergence pass vs two plain forward passes.** Tokens per second of
   :func:`rlvr_lens.analyses.token_metrics.score_sequences` (both model bodies, chunked
   unembedding, every metric) against ``base(ids).logits`` + ``tuned(ids).logits`` over the
   same sequences (target: >= 80 %).
2. **Peak memory** of the divergence pass at several sequence lengths, chunked and not
   chunked (CUDA: ``torch.cuda.max_memory_allocated``; CPU: peak resident set size sampled
   every millisecond, minus the RSS before the call).
3. **Cross-sampling decode** (:func:`rlvr_lens.analyses.cross_decode.cross_decode`, two models
   with their own KV caches, a JSD threshold) against greedy ``generate`` of the driving
   model alone, same prompts and length (target: <= 2.5x its time).

Configurations: ``gpu-full`` is a Qwen2.5-1.5B-shaped model (28 layers, hidden 1536, vocab
151936, bf16) at length 4096; ``cpu-small`` keeps the vocabulary of 151936 but has 2 layers
of hidden 128, float32, length 512: there the unembedding dwarfs the body, so the metrics' vocabulary-wide
element-wise work weighs far more than it does in a real model; ``cpu-1.5b`` is the
Qwen2.5-1.5B shape again, in float32 (two models: 12.4 GB), at length 256, so that a CPU
can say what the ratio is at a real width. Repetitions are interleaved (plain, divergence, plain,
...) and medians reported, with the load average, because the development machines are
shared. Writes ``benchmarks/results/tokens_throughput_<config>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import psutil
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rlvr_lens.analyses.cross_decode import cross_decode
from rlvr_lens.analyses.token_metrics import score_sequences
from rlvr_lens.io import atomic_write_json
from rlvr_lens.models.adapters import adapter_for_model_type
from rlvr_lens.models.loading import LoadedModel

CONFIGS = {
    "gpu-full": dict(
        model=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                   num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768),
        dtype="bfloat16", length=4096, batch=1, memory_lengths=[1024, 2048, 4096], chunk=256,
        decode_batch=8, prompt_length=128, new_tokens=256, reps=5,
    ),
    "cpu-small": dict(
        model=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=4096),
        dtype="float32", length=512, batch=1, memory_lengths=[256, 512, 1024], chunk=256,
        decode_batch=4, prompt_length=32, new_tokens=48, reps=3,
    ),
    "cpu-1.5b": dict(
        model=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                   num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768),
        dtype="float32", length=256, batch=1, memory_lengths=[256, 512], chunk=256,
        decode_batch=2, prompt_length=32, new_tokens=16, reps=3,
    ),
}


def build_pair(spec: dict, dtype: torch.dtype, device: torch.device) -> tuple[LoadedModel, LoadedModel]:
    models = []
    for seed, name in ((0, "base"), (1, "tuned")):
        torch.manual_seed(seed)
        config = AutoConfig.for_model("qwen2", **spec, pad_token_id=0, eos_token_id=None, bos_token_id=None)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
        models.append(LoadedModel(name, "random", model, None, adapter_for_model_type("qwen2")))
    return models[0], models[1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class PeakRSS:
    """Peak resident set size above the level at entry, sampled every millisecond (CPU runs)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.delta_mib = (self.peak - self.start) / 2**20


def peak_memory_mib(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    with PeakRSS() as probe:
        fn()
    return probe.delta_mib


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None, help="default: gpu-full on CUDA, else cpu-small")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None,
        help="also time the torch.compile-fused metrics (default: on CUDA only)",
    )
    parser.add_argument("--out", default=None, help="default: benchmarks/results/tokens_throughput_<config>.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.compile is None:
        args.compile = device.type == "cuda"
    name = args.config or ("gpu-full" if device.type == "cuda" else "cpu-small")
    cfg = CONFIGS[name]
    out_path = args.out or str(Path(__file__).parent / "results" / f"tokens_throughput_{name}.json")
    reps = args.reps or cfg["reps"]
    dtype = getattr(torch, cfg["dtype"])
    base, tuned = build_pair(cfg["model"], dtype, device)
    vocab = cfg["model"]["vocab_size"]
    generator = torch.Generator().manual_seed(0)
    length, batch = cfg["length"], cfg["batch"]
    sequences = torch.randint(1, vocab, (batch, length), generator=generator)
    ids = sequences.to(device)
    load = [os.getloadavg()[0]]

    def plain():
        for loaded in (base, tuned):
            loaded.model(ids).logits  # noqa: B018  (transformers computes the full [batch, seq, vocab] logits)
        synchronize(device)

    default_sequences = sequences.tolist()

    def divergence(chunk=cfg["chunk"], seqs=None, compiled=False):
        seqs = default_sequences if seqs is None else seqs
        score_sequences(base, tuned, seqs, [1] * len(seqs), pad_token_id=0, chunk_size=chunk, compiled=compiled)
        synchronize(device)

    variants = [("plain", plain), ("divergence", divergence)]
    if args.compile:
        variants.append(("divergence_compiled", lambda: divergence(compiled=True)))
    for _, fn in variants:
        fn()  # warm-up (and compilation)
    times = {key: [] for key, _ in variants}
    for _ in range(reps):
        for key, fn in variants:
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
        load.append(os.getloadavg()[0])
    tokens = batch * length
    plain_tps = tokens / statistics.median(times["plain"])
    divergence_tps = tokens / statistics.median(times["divergence"])
    compiled_tps = tokens / statistics.median(times["divergence_compiled"]) if args.compile else None

    memory = []
    for mem_length in cfg["memory_lengths"]:
        seqs = torch.randint(1, vocab, (1, mem_length), generator=generator).tolist()
        row = {"length": mem_length}
        for chunk in (cfg["chunk"], None):
            row[f"peak_mib_chunk_{chunk}"] = round(peak_memory_mib(lambda c=chunk, s=seqs: divergence(c, s), device), 1)
        row["peak_mib_two_plain_forwards"] = round(
            peak_memory_mib(lambda s=seqs: [m.model(torch.tensor(s, device=device)).logits for m in (base, tuned)], device), 1
        )
        memory.append(row)

    prompts = torch.randint(1, vocab, (cfg["decode_batch"], cfg["prompt_length"]), generator=generator)
    new = cfg["new_tokens"]

    def generate_alone():
        base.model.generate(
            input_ids=prompts.to(device), attention_mask=torch.ones_like(prompts).to(device), max_new_tokens=new,
            min_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None,
        )
        synchronize(device)

    def cross(threshold=0.1):
        return cross_decode(base.model, tuned.model, prompts.tolist(), threshold=threshold, max_new_tokens=new,
                            pad_token_id=0, eos_token_id=None)

    generate_alone(), cross()  # warm-up
    decode = {"generate_driver_alone": [], "cross_decode": []}
    replaced = []
    for _ in range(reps):
        start = time.perf_counter()
        generate_alone()
        decode["generate_driver_alone"].append(time.perf_counter() - start)
        start = time.perf_counter()
        out = cross()
        synchronize(device)
        decode["cross_decode"].append(time.perf_counter() - start)
        replaced.append(sum(map(sum, out.from_other)) / sum(map(len, out.token_ids)))
        load.append(os.getloadavg()[0])
    decode_tokens = cfg["decode_batch"] * new
    ratio = statistics.median(decode["cross_decode"]) / statistics.median(decode["generate_driver_alone"])

    result = {
        "benchmark": "tokens_throughput",
        "config": name,
        "device": f"cuda:{torch.cuda.get_device_name()}" if device.type == "cuda" else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": {"median": round(statistics.median(load), 2), "max": round(max(load), 2)},
        "model": {"family": "qwen2", "dtype": cfg["dtype"], **cfg["model"]},
        "divergence_pass": {
            "batch": batch,
            "length": length,
            "chunk_size": cfg["chunk"],
            "reps": reps,
            "seconds_median": {k: round(statistics.median(v), 4) for k, v in times.items()},
            "tokens_per_s_two_plain_forwards": round(plain_tps, 1),
            "tokens_per_s_divergence": round(divergence_tps, 1),
            "divergence_over_plain": round(divergence_tps / plain_tps, 3),
            "tokens_per_s_divergence_compiled": round(compiled_tps, 1) if compiled_tps else None,
            "divergence_compiled_over_plain": round(compiled_tps / plain_tps, 3) if compiled_tps else None,
            "target": ">= 0.80",
        },
        "peak_memory": {
            "measure": "torch.cuda.max_memory_allocated above the level before" if device.type == "cuda"
            else "peak RSS above the RSS before (1 ms sampling)",
            "batch": 1,
            "rows": memory,
        },
        "cross_sampling_decode": {
            "batch": cfg["decode_batch"],
            "prompt_length": cfg["prompt_length"],
            "new_tokens": new,
            "threshold_nats": 0.1,
            "share_replaced_median": round(statistics.median(replaced), 4),
            "seconds_median": {k: round(statistics.median(v), 4) for k, v in decode.items()},
            "tokens_per_s": {k: round(decode_tokens / statistics.median(v), 1) for k, v in decode.items()},
            "cross_over_driver_alone": round(ratio, 3),
            "target": "<= 2.5",
        },
    }
    atomic_write_json(out_path, result)
    print(json.dumps({"divergence_over_plain": result["divergence_pass"]["divergence_over_plain"],
                      "divergence_compiled_over_plain": result["divergence_pass"]["divergence_compiled_over_plain"],
                      "cross_over_driver_alone": result["cross_sampling_decode"]["cross_over_driver_alone"],
                      "peak_memory": memory}))


if __name__ == "__main__":
    main()

"""Perplexity throughput (tokens/s) of our scorer against a plain ``model(input_ids)`` loop.

    python benchmarks/perplexity_throughput.py [--hidden 256 --layers 4 --vocab 8192 --samples 64
                                                --batch-size 8 --rounds 7 --threads 1 --device auto]

Both sides run a random-weight Qwen2 model built from a config (no download) over the same
batches of the same samples (prompt + answer of random length, longest first):

* **ours**: :func:`rlvr_lens.analyses.perplexity.checkpoint_nll`: padding, attention mask,
  position ids, per-row float32 log-softmax and gather, per-sample prompt/answer means;
* **plain**: ``model(input_ids)`` on the same padded batches, built before the clock starts,
  logits thrown away (no mask, no log-softmax);
* **plain_no_cache**: the same with ``use_cache=False`` (``transformers`` otherwise builds a
  KV cache nobody reads; our scorer skips it, so this is the stricter baseline: what is
  left is the cost of our padding, float32 log-softmax and bookkeeping).

The development machines are shared, so the arms are measured interleaved (the order
rotates every round) for ``--rounds`` rounds; reported are the ratio of the medians and the
median of the per-round ratios (``paired_overhead``, steadier under a changing load). Throughput counts
real (non-padding) tokens. On a GPU (``--device auto`` picks it) the model runs in bf16
with a larger default size. Writes ``benchmarks/results/perplexity_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from rlvr_lens.analyses.perplexity import EncodedSample, checkpoint_nll, pad_batch
from rlvr_lens.generation import batches
from rlvr_lens.io import atomic_write_json
from rlvr_lens.models import resolve_device


def build_model(hidden: int, layers: int, vocab: int, dtype: torch.dtype, device: torch.device):
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()


def make_samples(n: int, vocab: int, min_len: int, max_len: int) -> list[EncodedSample]:
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))
        ids = torch.randint(2, vocab, (length,), generator=generator).tolist()
        split = length // 3  # a third prompt, two thirds answer
        samples.append(EncodedSample(ids, (1, split), (split, length), "solution"))
    return samples


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--hidden", type=int, default=None, help="default: 256 on CPU, 2048 on GPU")
    parser.add_argument("--layers", type=int, default=None, help="default: 4 on CPU, 16 on GPU")
    parser.add_argument("--vocab", type=int, default=None, help="default: 8192 on CPU, 151936 on GPU")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--min-len", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: steadier on a shared machine)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "perplexity_throughput.json"))
    args = parser.parse_args()

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    hidden = args.hidden or (2048 if gpu else 256)
    layers = args.layers or (16 if gpu else 4)
    vocab = args.vocab or (151936 if gpu else 8192)
    dtype = torch.bfloat16 if gpu else torch.float32
    if not gpu:
        torch.set_num_threads(args.threads)
    model = build_model(hidden, layers, vocab, dtype, device)
    params = sum(p.numel() for p in model.parameters())
    samples = make_samples(args.samples, vocab, args.min_len, args.max_len)
    tokens = sum(len(s.ids) for s in samples)

    # the same batches, in the same (longest-first) order, padded ahead of time for the plain loop
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i].ids))
    plain_batches = [pad_batch([samples[i].ids for i in chunk], 0)[0].to(device) for chunk in batches(order, args.batch_size)]

    def ours() -> float:
        sync(device)
        start = time.perf_counter()
        checkpoint_nll(model, samples, pad_id=0, batch_size=args.batch_size)
        sync(device)
        return time.perf_counter() - start

    @torch.no_grad()
    def plain(**kwargs) -> float:
        sync(device)
        start = time.perf_counter()
        for input_ids in plain_batches:
            model(input_ids, **kwargs)
        sync(device)
        return time.perf_counter() - start

    arms = {"ours": ours, "plain": plain, "plain_no_cache": lambda: plain(use_cache=False)}
    for run in arms.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for round_index in range(args.rounds):
        # rotate the order every round so that no arm always runs first or last
        for name in names[round_index % 3 :] + names[: round_index % 3]:
            times[name].append(arms[name]())
    median = {name: statistics.median(values) for name, values in times.items()}
    overhead = median["ours"] / median["plain"] - 1.0
    overhead_no_cache = median["ours"] / median["plain_no_cache"] - 1.0
    # paired within a round (both arms saw about the same machine load): steadier than medians
    paired = {
        name: statistics.median(o / p for o, p in zip(times["ours"], times[name])) - 1.0
        for name in ("plain", "plain_no_cache")
    }
    result = {
        "benchmark": "perplexity_throughput",
        "device": f"cuda:{torch.cuda.get_device_name()}" if gpu else f"cpu ({platform.processor() or platform.machine()})",
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "model": {"family": "qwen2", "hidden": hidden, "layers": layers, "vocab": vocab, "params": params, "dtype": str(dtype)},
        "samples": args.samples,
        "tokens": tokens,
        "sequence_length": [args.min_len, args.max_len],
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "seconds": {name: [round(t, 4) for t in values] for name, values in times.items()},
        "median_seconds": {name: round(t, 4) for name, t in median.items()},
        "tokens_per_second": {name: round(tokens / t, 1) for name, t in median.items()},
        "overhead": round(overhead, 4),
        "overhead_vs_no_cache": round(overhead_no_cache, 4),
        "paired_overhead": {name: round(v, 4) for name, v in paired.items()},
        "target_overhead": 0.10,
    }
    atomic_write_json(args.out, result)
    print(
        f"perplexity throughput on {result['device']}: ours {result['tokens_per_second']['ours']:.0f} tok/s, "
        f"plain model(input_ids) {result['tokens_per_second']['plain']:.0f} tok/s (overhead {overhead:+.1%}), "
        f"plain with use_cache=False {result['tokens_per_second']['plain_no_cache']:.0f} tok/s (overhead "
        f"{overhead_no_cache:+.1%}); paired per round: {paired['plain']:+.1%} / {paired['plain_no_cache']:+.1%}; "
        f"target <= 10%; wrote {args.out}"
    )


if __name__ == "__main__":
    main()

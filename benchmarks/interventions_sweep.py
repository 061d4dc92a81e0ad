"""Reset/retain + alpha sweep: swapping tensors and hooks in place vs copying the model per variant.

    python benchmarks/interventions_sweep.py [--hidden 384 --layers 6 --vocab 8192 --samples 64
                                              --prompt-len 24 --answer-len 8 --top-n 10 --rounds 2]

Workload (the study's two causal experiments, scored by each sample's teacher-forced answer
log-probability, one batched forward pass of ``--samples`` sequences per variant):

* **reset/retain**: every width-2 window x {reset, retain} (parts "both");
* **alpha sweep**: 7 alphas (0, 0.2, 0.5, 1, 1.5, 2, 3) at one layer, each sample with its
  own top-``n`` neurons (the study's per-sample "trajectory" variant).

Arms, each run in a fresh subprocess (its peak RSS is its own):

* **ours**: :func:`rlvr_lens.analyses.ablation.variant` (parameter tensors swapped in place
  and back, checksum-verified) and :func:`rlvr_lens.analyses.steering.scale_rows` (a hook,
  per-row neuron sets, the whole batch at once);
* **deepcopy**: the study's way: ``copy.deepcopy`` of the model per variant, window
  weights copied in; for the alpha sweep a copy per (alpha, sample) with that sample's
  ``down_proj`` columns scaled (a weight edit cannot hold a different neuron set per row).

Both arms must give the same per-sample numbers (checked). Reported: wall time per part and
in total (median over ``--rounds`` subprocess runs per arm, arms alternated), peak RSS, and
the RSS of the two loaded models alone. Writes ``benchmarks/results/interventions_sweep.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

ALPHAS = (0.0, 0.2, 0.5, 1.0, 1.5, 2.0, 3.0)


def build(args, seed: int):
    config = AutoConfig.for_model(
        "qwen2", vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
        num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=256, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def answer_logprob(model, ids: torch.Tensor, answer_len: int) -> torch.Tensor:
    """``[batch]`` mean log-probability of the last ``answer_len`` tokens."""
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=answer_len + 1).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, -answer_len:, None])[..., 0]
    return logp.mean(-1)


def child(args) -> dict:
    from rlvr_lens.analyses.ablation import variant
    from rlvr_lens.analyses.steering import factor_rows, scale_rows

    torch.set_num_threads(args.threads)
    base = build(args, 0)
    tuned = build(args, 0)
    with torch.no_grad():  # tuned = base + a small update everywhere
        generator = torch.Generator().manual_seed(1)
        for p in tuned.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.02 * p.abs().mean())
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, args.vocab, (args.samples, args.prompt_len + args.answer_len), generator=generator)
    width = 3 * args.hidden
    layer = args.layers // 2
    sets = [torch.randperm(width, generator=generator)[: args.top_n].tolist() for _ in range(args.samples)]
    loaded_rss = rss_mb()
    windows = [(a, a + 1) for a in range(args.layers - 1)]
    scores: dict[str, list[float]] = {}

    start = time.perf_counter()
    for a, b in windows:
        for mode in ("reset", "retain"):
            if args.arm == "ours":
                with variant(base, tuned, mode, range(a, b + 1), "both") as model:
                    out = answer_logprob(model, ids, args.answer_len)
            else:
                source, target = (base, tuned) if mode == "reset" else (tuned, base)
                model = copy.deepcopy(target)
                src = dict(source.named_parameters())
                with torch.no_grad():
                    for name, param in model.named_parameters():
                        if any(f".layers.{i}." in name for i in range(a, b + 1)):
                            param.copy_(src[name])
                out = answer_logprob(model, ids, args.answer_len)
                del model
            scores[f"{mode} {a}-{b}"] = out.tolist()
    ablation_s = time.perf_counter() - start

    start = time.perf_counter()
    for alpha in ALPHAS:
        if args.arm == "ours":
            with scale_rows(tuned, layer, factor_rows(sets, width, alpha)):
                out = answer_logprob(tuned, ids, args.answer_len)
        else:
            rows = []
            for i in range(args.samples):
                model = copy.deepcopy(tuned)
                with torch.no_grad():
                    model.model.layers[layer].mlp.down_proj.weight[:, sets[i]] *= alpha
                rows.append(answer_logprob(model, ids[i : i + 1], args.answer_len))
                del model
            out = torch.cat(rows)
        scores[f"alpha {alpha:g}"] = out.tolist()
    steering_s = time.perf_counter() - start
    return {
        "arm": args.arm, "ablation_s": ablation_s, "steering_s": steering_s, "total_s": ablation_s + steering_s,
        "peak_rss_mb": rss_mb(), "loaded_rss_mb": loaded_rss,
        "model_mb": sum(p.numel() * p.element_size() for p in tuned.parameters()) / 2**20, "scores": scores,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--prompt-len", type=int, default=24)
    parser.add_argument("--answer-len", type=int, default=8)
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "interventions_sweep.json"))
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(child(args)))
        return
    runs: dict[str, list[dict]] = {"ours": [], "deepcopy": []}
    forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("arm", "out")]
    for r in range(args.rounds):
        for arm in (("ours", "deepcopy") if r % 2 == 0 else ("deepcopy", "ours")):
            done = subprocess.run([sys.executable, __file__, *forwarded, "--arm", arm], capture_output=True, text=True, check=True)
            runs[arm].append(json.loads(done.stdout.strip().splitlines()[-1]))
    ours, theirs = runs["ours"][0]["scores"], runs["deepcopy"][0]["scores"]
    max_diff = max(abs(x - y) for k in ours for x, y in zip(ours[k], theirs[k]))
    assert max_diff < 1e-4, max_diff

    def med(arm, key):
        return statistics.median(r[key] for r in runs[arm])

    summary = {
        part: {"ours_s": med("ours", f"{part}_s"), "deepcopy_s": med("deepcopy", f"{part}_s"),
               "speedup": med("deepcopy", f"{part}_s") / med("ours", f"{part}_s")}
        for part in ("ablation", "steering", "total")
    }
    memory = {
        arm: {"peak_rss_mb": med(arm, "peak_rss_mb"), "loaded_rss_mb": med(arm, "loaded_rss_mb"),
              "extra_over_loaded_mb": med(arm, "peak_rss_mb") - med(arm, "loaded_rss_mb")}
        for arm in runs
    }
    result = {
        "benchmark": "interventions_sweep",
        "settings": {k: v for k, v in vars(args).items() if k not in ("arm", "out")},
        "workload": {"windows": args.layers - 1, "reset_retain_variants": 2 * (args.layers - 1), "alphas": list(ALPHAS)},
        "model_mb": runs["ours"][0]["model_mb"],
        "max_abs_score_difference": max_diff,
        "summary": summary,
        "memory": memory,
        "runs": {arm: [{k: v for k, v in r.items() if k != "scores"} for r in rs] for arm, rs in runs.items()},
        "environment": {
            "device": f"cpu ({platform.processor() or platform.machine()})", "torch": torch.__version__,
            "threads": args.threads, "load_average_1min": round(os.getloadavg()[0], 2),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    s = summary["total"]
    print(
        f"total: ours {s['ours_s']:.2f} s, deepcopy {s['deepcopy_s']:.2f} s ({s['speedup']:.1f}x); reset/retain "
        f"{summary['ablation']['speedup']:.1f}x, alpha sweep {summary['steering']['speedup']:.1f}x; extra RSS over the "
        f"loaded models: ours {memory['ours']['extra_over_loaded_mb']:.0f} MB, deepcopy {memory['deepcopy']['extra_over_loaded_mb']:.0f} MB "
        f"(model {result['model_mb']:.0f} MB); wrote {args.out}"
    )


if __name__ == "__main__":
    main()

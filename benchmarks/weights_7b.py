"""Weight forensics on a 7B-shaped checkpoint pair: streaming speed and peak memory vs a naive baseline.

    python benchmarks/weights_7b.py [--layers 28] [--svd-include REGEX] [--naive-layers 4] [--keep]

Writes two synthetic bf16 checkpoints with Qwen2.5-7B shapes (hidden 3584, intermediate 18944,
28 layers, vocab 152064, 28 query / 4 KV heads, q/k/v biases, untied lm_head; ~15.2 GB each)
to ``benchmarks/_work/`` (git-ignored; deleted at the end unless ``--keep``). The tuned copy
changes 12.5% of the entries by one bf16 ulp, the kind of update an RL run stores in bf16.
Each measurement runs in its own child process, so its peak resident memory
(``ru_maxrss``) is its own:

- ``read``: the disk's sequential read rate of all the checkpoint files, cold (every file's
  pages dropped from the page cache with ``posix_fadvise(DONTNEED)`` first);
- ``cheap``: ``weight_forensics(metrics="cheap")`` (sparsity and norms) over every tensor,
  also cold; its rate is bytes read (both checkpoints) over wall time;
- ``all``: every metric on the tensors matching ``--svd-include`` (default: the four
  attention matrices of layer 0), on the GPU when there is one; on a CPU the time of the whole pair
  is *extrapolated* from these with the per-matrix cost model ``t ~ m n^2`` (tall side m);
- ``all_nomask``: the same without the principal / low-magnitude mask overlap; with ``all`` in
  the same run it gives the overlap's added cost (``mask_overlap_added``);
- ``svd_error``: the error of the SVD choices on a 3584 x 3584 base matrix: float32 and
  float64 Gram + eigh and ``torch.svd_lowrank`` (default ``niter=2``) against a float64
  ``linalg.svd``;
- ``naive``: the baseline: load both models with ``transformers`` (``from_pretrained``,
  bf16) and loop over ``named_parameters`` on the CPU computing the cheap metrics, on the
  first ``--naive-layers`` layers (the full pair, 30.4 GB in bf16, does not fit a 23 GB
  host); its memory for the full pair is extrapolated from the parameter count.

Writes ``benchmarks/results/weights_7b.json``. The load average is recorded because the
development machines are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHAPES = dict(hidden=3584, intermediate=18944, layers=28, vocab=152064, heads=28, kv_heads=4)


def layer_shapes(hidden: int, intermediate: int, heads: int, kv_heads: int) -> dict[str, tuple[int, ...]]:
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    return {
        "self_attn.q_proj.weight": (hidden, hidden),
        "self_attn.q_proj.bias": (hidden,),
        "self_attn.k_proj.weight": (kv, hidden),
        "self_attn.k_proj.bias": (kv,),
        "self_attn.v_proj.weight": (kv, hidden),
        "self_attn.v_proj.bias": (kv,),
        "self_attn.o_proj.weight": (hidden, hidden),
        "mlp.gate_proj.weight": (intermediate, hidden),
        "mlp.up_proj.weight": (intermediate, hidden),
        "mlp.down_proj.weight": (hidden, intermediate),
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
    }


def write_pair(work: Path, layers: int) -> dict:
    """Write base/ and tuned/ (bf16, one shard per layer + embedding + head) and return timings."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config

    s = SHAPES
    config = Qwen2Config(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        intermediate_size=s["intermediate"],
        num_hidden_layers=layers,
        num_attention_heads=s["heads"],
        num_key_value_heads=s["kv_heads"],
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    shards: list[tuple[str, dict[str, tuple[int, ...]]]] = [("embed", {"model.embed_tokens.weight": (s["vocab"], s["hidden"])})]
    for i in range(layers):
        shapes = layer_shapes(s["hidden"], s["intermediate"], s["heads"], s["kv_heads"])
        shards.append((f"layer{i:02d}", {f"model.layers.{i}.{k}": v for k, v in shapes.items()}))
    shards.append(("head", {"model.norm.weight": (s["hidden"],), "lm_head.weight": (s["vocab"], s["hidden"])}))
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    total = 0
    for side in ("base", "tuned"):
        (work / side).mkdir(parents=True, exist_ok=True)
        config.save_pretrained(work / side)
    weight_map = {}
    for index, (label, shapes) in enumerate(shards):
        file = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        base, tuned = {}, {}
        for name, shape in shapes.items():
            fan_in = shape[-1] if len(shape) == 2 else 1
            if len(shape) == 1:
                w = (1 + 0.1 * torch.randn(shape, generator=generator)).to(torch.bfloat16)
            else:
                w = (torch.randn(shape, generator=generator) / fan_in**0.5).to(torch.bfloat16)
            # the tuned copy: 12.5% of entries moved by one bf16 ulp (-1 on the bit pattern)
            bits = w.view(torch.int16)
            step = torch.randint(-4, 4, shape, generator=generator, dtype=torch.int8)
            step = torch.where(step.abs() == 4, step.sign(), torch.zeros_like(step)).to(torch.int16)
            moved = (bits + step).view(torch.bfloat16)
            tuned[name] = torch.where(torch.isfinite(moved), moved, w)  # +-0 and the largest values may wrap
            base[name] = w
            weight_map[name] = file
            total += w.numel()
        save_file(base, str(work / "base" / file))
        save_file(tuned, str(work / "tuned" / file))
        del base, tuned
        print(f"  wrote shard {label}", file=sys.stderr, flush=True)
    for side in ("base", "tuned"):
        index = {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}
        (work / side / "model.safetensors.index.json").write_text(json.dumps(index))
    os.sync()
    return {"parameters": total, "write_s": time.perf_counter() - started}


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def checkpoint_files(work: Path) -> list[Path]:
    return sorted((work / "base").glob("*.safetensors")) + sorted((work / "tuned").glob("*.safetensors"))


def peak_rss_gb() -> float:
    """This process's peak resident memory (``VmHWM``; unlike ``ru_maxrss`` it is not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # KiB -> GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ----------------------------------------------------------------------------- phases (child processes)


def phase_read(work: Path, args) -> dict:
    files = checkpoint_files(work)
    drop_cache(files)
    buffer = bytearray(16 << 20)
    view = memoryview(buffer)
    started = time.perf_counter()
    total = 0
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while count := handle.readinto(view):
                total += count
    seconds = time.perf_counter() - started
    return {"bytes": total, "seconds": seconds, "gb_per_s": total / seconds / 1e9}


def phase_cheap(work: Path, args) -> dict:
    from rlvr_lens.analyses.weights import WeightsConfig, weight_forensics

    drop_cache(checkpoint_files(work))
    started = time.perf_counter()
    result = weight_forensics(work / "base", {"rl": work / "tuned"}, WeightsConfig(metrics="cheap"))
    seconds = time.perf_counter() - started
    sparsity = sum(r.sparsity * r.n_params for r in result.matrices) / sum(r.n_params for r in result.matrices)
    return {
        "tensors": len(result.matrices),
        "bytes": result.bytes_read,
        "seconds": seconds,
        "gb_per_s": result.bytes_read / seconds / 1e9,
        "sparsity": sparsity,
        "device": result.device,
    }


def phase_all(work: Path, args, mask_overlap: bool = True) -> dict:
    from rlvr_lens.analyses.weights import WeightsConfig, weight_forensics

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    config = WeightsConfig(metrics="all", include=args.svd_include, spectrum_matrix=None, mask_overlap=mask_overlap)
    started, cpu_started = time.perf_counter(), time.process_time()
    result = weight_forensics(work / "base", {"rl": work / "tuned"}, config)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    per_matrix = []
    for row in result.matrices:
        if len(row.shape) == 2:
            m, n = max(row.shape), min(row.shape)
            per_matrix.append({"name": row.name, "shape": row.shape, "cost_mn2": m * n * n})
    out = {
        "tensors": len(result.matrices),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # this process's CPU time: steadier than wall time on a shared machine
        "device": result.device,
        "matrices": per_matrix,
        "example": {
            "name": result.matrices[0].name,
            "principal_share": result.matrices[0].subspaces[0].principal_share if result.matrices[0].subspaces else None,
        },
    }
    if torch.cuda.is_available():
        out["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def phase_svd_error(work: Path, args) -> dict:
    """Error of Gram+eigh (float32/float64) and svd_lowrank vs a float64 direct SVD, on layer 0's q_proj."""
    import numpy as np

    from rlvr_lens.models.checkpoint_files import CheckpointTensors

    with CheckpointTensors.open(work / "base") as base, CheckpointTensors.open(work / "tuned") as tuned:
        name = "model.layers.0.self_attn.q_proj.weight"
        w = base.tensor(name).double()
        w2 = tuned.tensor(name).double()
    k = 36  # 1% of the rank 3584
    timings = {}
    started = time.perf_counter()
    u_ref, s_ref, vt_ref = torch.linalg.svd(w, full_matrices=False)
    timings["svd_float64_s"] = time.perf_counter() - started
    u2_ref, _, _ = torch.linalg.svd(w2, full_matrices=False)
    out = {"matrix": name, "shape": list(w.shape), "k": k}

    def gram_top(x, dtype):
        values, vectors = torch.linalg.eigh(x.to(dtype).T @ x.to(dtype))
        values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
        s = values.sqrt().double()
        u = (x.to(dtype) @ vectors[:, :k]).double() / s[:k]
        return s, u

    from scipy.linalg import subspace_angles

    ref_angle = np.degrees(subspace_angles(u_ref[:, :k].numpy(), u2_ref[:, :k].numpy())).max()
    out["true_max_angle_deg"] = float(ref_angle)
    for label, dtype in (("gram_eigh_float32", torch.float32), ("gram_eigh_float64", torch.float64)):
        started = time.perf_counter()
        s, u = gram_top(w, dtype)
        timings[f"{label}_s"] = time.perf_counter() - started
        _, u2 = gram_top(w2, dtype)
        angle = np.degrees(subspace_angles(u.numpy(), u2.numpy())).max()
        out[label] = {
            "top_k_rel_error": float(((s[:k] - s_ref[:k]).abs() / s_ref[:k]).max()),
            "all_rel_error": float((s - s_ref).norm() / s_ref.norm()),
            "max_angle_deg": float(angle),
            "angle_error_deg": float(abs(angle - ref_angle)),
            "subspace_error_deg": float(np.degrees(subspace_angles(u.numpy(), u_ref[:, :k].numpy())).max()),
        }
    for niter in (2, 8):
        torch.manual_seed(0)
        started = time.perf_counter()
        _, s_low, _ = torch.svd_lowrank(w.float(), q=k + 10, niter=niter)
        timings[f"svd_lowrank_niter{niter}_s"] = time.perf_counter() - started
        out[f"svd_lowrank_niter{niter}"] = {"top_k_rel_error": float(((s_low[:k].double() - s_ref[:k]).abs() / s_ref[:k]).max())}
    out["timings"] = timings
    return out


def phase_naive(work: Path, args) -> dict:
    """Baseline: both models loaded whole with transformers (first N layers), cheap metrics in a loop."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    naive = work / "naive"
    for side in ("base", "tuned"):
        target = naive / side
        target.mkdir(parents=True, exist_ok=True)
        for path in (work / side).iterdir():
            if path.suffix in (".safetensors",) or path.name == "model.safetensors.index.json":
                link = target / path.name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(path.resolve())
        config = Qwen2Config.from_pretrained(work / side)
        config.num_hidden_layers = args.naive_layers
        if getattr(config, "layer_types", None):
            config.layer_types = config.layer_types[: args.naive_layers]
        config.save_pretrained(target)
    drop_cache(checkpoint_files(work))
    started = time.perf_counter()
    models = [AutoModelForCausalLM.from_pretrained(naive / side, dtype=torch.bfloat16) for side in ("base", "tuned")]
    loaded = time.perf_counter() - started
    params = dict(models[1].named_parameters())
    equal = total = 0
    for name, p in models[0].named_parameters():
        b, t = p.detach().float(), params[name].detach().float()
        equal += int((p == params[name]).sum())
        total += p.numel()
        _ = float((t - b).norm()), float(b.norm())
    seconds = time.perf_counter() - started
    n_params = sum(p.numel() for p in models[0].parameters())
    return {"layers": args.naive_layers, "parameters_per_model": n_params, "load_s": loaded, "seconds": seconds, "sparsity": equal / total}


def phase_all_nomask(work: Path, args) -> dict:
    """``all`` without the mask overlap: the baseline of the overlap's added cost."""
    return phase_all(work, args, mask_overlap=False)


PHASES = {
    "read": phase_read,
    "cheap": phase_cheap,
    "all": phase_all,
    "all_nomask": phase_all_nomask,
    "svd_error": phase_svd_error,
    "naive": phase_naive,
}


def run_child(phase: str, args) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--work", str(args.work), "--svd-include", args.svd_include]
    cmd += ["--naive-layers", str(args.naive_layers), "--threads", str(args.threads)]
    load_before = os.getloadavg()[0]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        print(f"{phase} failed: {error}", file=sys.stderr, flush=True)
        return {"error": error}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["load_average_1min_before"] = load_before
    out["load_average_1min_after"] = os.getloadavg()[0]
    print(f"{phase}: {json.dumps(out)[:400]}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=SHAPES["layers"])
    parser.add_argument("--work", type=Path, default=HERE / "_work" / "weights_7b")
    parser.add_argument("--svd-include", default=r"^model\.layers\.0\.self_attn\.\w+_proj\.weight$")
    parser.add_argument("--naive-layers", type=int, default=4)
    parser.add_argument("--phases", default="read,cheap,svd_error,all,naive")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints in --work")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per measurement (default 1: the 2 shared cores are oversubscribed)"
    )
    parser.add_argument(
        "--update", action="store_true", help="re-run only --phases and merge them into the existing --out file"
    )
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "weights_7b.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.phase:  # child process: one measurement, JSON on the last stdout line
        out = PHASES[args.phase](args.work, args)
        out["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(out))
        return

    previous = json.loads(args.out.read_text()) if args.update and args.out.exists() else {}
    results: dict = {
        **previous,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
        },
        "shapes": {**SHAPES, "layers": args.layers},
    }
    if not (args.work / "tuned" / "model.safetensors.index.json").exists():
        print(f"writing the 7B-shaped pair to {args.work} ...", file=sys.stderr, flush=True)
        results["write"] = write_pair(args.work, args.layers)
    results["checkpoint_bytes"] = sum(p.stat().st_size for p in checkpoint_files(args.work))
    for phase in args.phases.split(","):
        results[phase] = run_child(phase, args)
        results[phase]["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

    results.pop("all_extrapolated", None)  # a stale estimate from an earlier --update run
    if "all" in results and "matrices" in results["all"]:
        # cost model t = c * m n^2 (tall side m, Gram side n), fitted on the measured subset
        measured = results["all"]
        cost = sum(m["cost_mn2"] for m in measured["matrices"])
        s = SHAPES
        full = 0
        for shape in layer_shapes(s["hidden"], s["intermediate"], s["heads"], s["kv_heads"]).values():
            if len(shape) == 2:
                full += max(shape) * min(shape) ** 2
        full = full * args.layers + 2 * s["vocab"] * s["hidden"] ** 2
        if cost < 0.999 * full:  # only a subset was measured (--svd-include '.' measures every matrix)
            results["all_extrapolated"] = {
                "label": "EXTRAPOLATED, not measured: all metrics on every matrix of the pair, from the measured "
                "subset with t ~ m n^2 per matrix (plus the cheap pass), on this device",
                "seconds": measured["seconds"] * full / cost + results.get("cheap", {}).get("seconds", 0.0),
            }
    if "naive" in results and "parameters_per_model" in results["naive"]:
        per_model_full = results.get("write", {}).get("parameters") or 7.6e9
        results["naive_extrapolated"] = {
            "label": "EXTRAPOLATED: two whole bf16 models held in memory by the naive baseline",
            "memory_gb": 2 * 2 * per_model_full / 2**30,
        }
    if "seconds" in results.get("all", {}) and "seconds" in results.get("all_nomask", {}):
        with_mask, without = results["all"], results["all_nomask"]
        results["mask_overlap_added"] = {
            "label": "time of all metrics with the principal / low-magnitude mask overlap over the time without it, minus 1",
            "fraction": with_mask["seconds"] / without["seconds"] - 1,
        }
        if "cpu_seconds" in with_mask and "cpu_seconds" in without:
            results["mask_overlap_added"]["cpu_fraction"] = with_mask["cpu_seconds"] / without["cpu_seconds"] - 1
    if "read" in results and "cheap" in results and "gb_per_s" in results["cheap"]:
        results["cheap_vs_read_rate"] = results["cheap"]["gb_per_s"] / results["read"]["gb_per_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: results.get(k) for k in ("cheap_vs_read_rate", "all_extrapolated", "mask_overlap_added")}))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()

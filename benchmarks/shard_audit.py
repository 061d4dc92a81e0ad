"""One ``rlvr-lens audit`` in 1 process and under ``accelerate launch`` with N processes: equal results, and the times.

Every analysis that shards (``docs/scale.md``) runs on an organism pair (base vs a tuned
stage); each result JSON of the N-process run is compared with the 1-process one value for
value (wall-clock fields excepted), and both wall times are recorded. On a CPU the processes
use gloo; on a machine with N GPUs each process takes one (``cuda:LOCAL_RANK``).

    PYTHONPATH=src python benchmarks/shard_audit.py --organism runs/organism-cpu-small-seed0 --processes 2

Writes ``benchmarks/results/shard_audit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TIMES = ("seconds", "wall_time_s")


def audit_args(organism: Path, tuned: str, out: Path, args: argparse.Namespace) -> list[str]:
    return [
        "-m", "rlvr_lens.cli", "audit",
        "--model", f"base={organism / 'base'}",
        "--model", f"{tuned}={organism / tuned}",
        "--data", str(organism / "data" / "eval.jsonl"),
        "--limit", str(args.limit),
        "--template", "organism",
        "--dtype", "float32" if args.device == "cpu" else "auto",
        "--device", args.device,
        "--analyses", args.analyses,
        "--batch-size", str(args.batch_size),
        "--max-new-tokens", str(args.max_new_tokens),
        "--no-progress",
        "--out", str(out),
    ]  # fmt: skip


def launch(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", f"--num_processes={processes}",
            "--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no", "--num_cpu_threads_per_process=1"]


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"audit failed (exit {done.returncode}): {done.stderr[-3000:]}")
    return time.perf_counter() - start


def _without_times(d):
    if isinstance(d, dict):
        return {k: _without_times(v) for k, v in d.items() if k not in TIMES}
    if isinstance(d, list):
        return [_without_times(v) for v in d]
    return d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organism", required=True, help="organism directory with base/, the tuned stage and data/eval.jsonl")
    parser.add_argument("--tuned", default="sft", help="tuned stage directory name (default: sft)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--analyses", default="perplexity,contamination,tokens,weights,evaluation,circuits,interventions")
    parser.add_argument("--output", default=str(RESULTS / "shard_audit.json"))
    args = parser.parse_args()
    import torch

    organism = Path(args.organism)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="shard-audit-"))
    env["HF_HOME"] = str(work / "hf")  # no accelerate config file of the user's
    load_before = os.getloadavg()
    try:
        seconds = {}
        for processes in (1, args.processes):
            out = work / f"p{processes}"
            seconds[processes] = timed(launch(processes) + audit_args(organism, args.tuned, out, args), env)
            print(f"{processes} process(es): {seconds[processes]:.1f} s", flush=True)
        compared = {}
        for path in sorted((work / "p1").glob("*.json")):
            one = _without_times(json.loads(path.read_text()))
            other = work / f"p{args.processes}" / path.name
            compared[path.name] = other.exists() and _without_times(json.loads(other.read_text())) == one
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "what": f"rlvr-lens audit in 1 process vs {args.processes} processes (accelerate launch): equal results, wall times",
        "audit": " ".join(audit_args(organism, args.tuned, Path("OUT"), args)[2:]),
        "machine": {
            "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "gpus": torch.cuda.device_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "seconds": {str(k): round(v, 1) for k, v in seconds.items()},
        "speedup": round(seconds[1] / seconds[args.processes], 2),
        "equal_to_one_process": compared,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"seconds": result["seconds"], "speedup": result["speedup"], "all_equal": all(compared.values())}))


if __name__ == "__main__":
    main()

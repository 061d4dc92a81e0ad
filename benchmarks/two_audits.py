"""Two ``rlvr-lens audit`` jobs at once vs one alone: the slowdown under load (issue 15).

PyTorch's default of one intra-op thread per core, whatever else runs, made two jobs on
a 2-core machine spin against each other (22 s alone, 9 min 21 s beside another job:
25x). ``rlvr-lens`` now picks ``cores / jobs running`` threads (1 when the machine is
saturated) unless ``--threads`` says otherwise. This script measures both policies:

* ``torch-default``: ``--threads <torch.get_num_threads()>`` (PyTorch's default: the old behaviour);
* ``rlvr-lens-default``: no ``--threads`` (the new default).

For each policy, one audit alone, then two identical audits started together (separate
``--out``); the slowdown is the mean wall time of the two over the time alone (2.0 =
fair sharing of a saturated machine). Arms alternate, ``--rounds`` times.

    PYTHONPATH=src python benchmarks/two_audits.py --organism runs/organism-cpu-small-seed0

Writes ``benchmarks/results/two_audits.json``. OMP_NUM_THREADS / MKL_NUM_THREADS are
removed from the jobs' environment (they would override both policies).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def audit_command(organism: Path, out: Path, args: argparse.Namespace, threads: int | None) -> list[str]:
    command = [
        sys.executable, "-m", "rlvr_lens.cli", "audit",
        "--model", f"base={organism / 'base'}",
        "--model", f"sft={organism / 'sft'}",
        "--data", str(organism / "data" / "eval.jsonl"),
        "--limit", str(args.limit),
        "--template", "organism",
        "--dtype", "float32",
        "--device", "cpu",
        "--analyses", "perplexity,contamination,tokens",
        "--fractions", "0.5",
        "--answer-tokens", "16",
        "--max-new-tokens", str(args.max_new_tokens),
        "--no-cross-sampling",
        "--no-progress",
        "--out", str(out),
    ]  # fmt: skip
    return command + (["--threads", str(threads)] if threads else [])


def run_jobs(commands: list[list[str]], env: dict) -> list[float]:
    """Start every command at once; return each one's wall time in seconds."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in commands]
    times = [0.0] * len(procs)
    pending = set(range(len(procs)))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                times[i] = time.perf_counter() - start
                pending.discard(i)
        time.sleep(0.05)
    for proc in procs:
        if proc.returncode != 0:
            raise SystemExit(f"an audit failed (exit {proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organism", required=True, help="organism directory with base/, sft/ and data/eval.jsonl")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "two_audits.json"))
    args = parser.parse_args()
    import torch

    organism = Path(args.organism)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    torch_default = torch.get_num_threads()
    policies = {"torch-default": torch_default, "rlvr-lens-default": None}
    work = Path(tempfile.mkdtemp(prefix="two-audits-"))
    runs: dict[str, dict[str, list]] = {p: {"alone": [], "pair": []} for p in policies}
    load_before = os.getloadavg()
    try:
        for round_ in range(args.rounds):
            for policy, threads in policies.items():
                outs = [work / f"{policy}-{round_}-{i}" for i in range(3)]
                alone = run_jobs([audit_command(organism, outs[0], args, threads)], env)[0]
                pair = run_jobs([audit_command(organism, o, args, threads) for o in outs[1:]], env)
                runs[policy]["alone"].append(alone)
                runs[policy]["pair"].append(pair)
                print(f"round {round_} {policy}: alone {alone:.1f} s, two at once {pair[0]:.1f} / {pair[1]:.1f} s", flush=True)
                for out in outs:
                    shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for policy, r in runs.items():
        alone = statistics.median(r["alone"])
        pair = statistics.median([statistics.mean(p) for p in r["pair"]])
        summary[policy] = {"alone_s": round(alone, 2), "pair_mean_s": round(pair, 2), "slowdown": round(pair / alone, 2)}
    result = {
        "what": "wall time of one rlvr-lens audit alone vs two identical audits started together",
        "audit": " ".join(audit_command(organism, Path("OUT"), args, None)[2:]),
        "policies": {"torch-default": f"--threads {torch_default} (PyTorch's default)", "rlvr-lens-default": "no --threads"},
        "machine": {
            "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "rounds": args.rounds,
        "runs": runs,
        "summary": summary,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

"""Grading throughput (gradings/s) on MATH-500: in this process, 1 worker process, 2 worker processes.

    PYTHONPATH=src python benchmarks/grading_throughput.py [--data ../shared/data/math500.jsonl --rounds 3]

The pairs are MATH-500's 500 ``(solution, answer)`` pairs plus the 492 shuffled pairs of
``tests/test_grading.py`` (a solution against another problem's answer): 992 gradings,
what an evaluation of one model on MATH-500 with its false-positive check costs. Arms:

* **in-process**: ``grade_many(pairs, processes=1)`` (SIGALRM time limit, no IPC);
* **1 worker** / **2 workers**: the same pairs through fresh worker processes
  (``python -m rlvr_lens.data._grading_worker``), as ``grade_many(pairs, processes=N)``
  does; the workers' startup (Python, SymPy and math-verify imports, a warm-up grading)
  is timed apart from the grading itself.

Besides wall-clock gradings/s, each arm's CPU time is recorded (this process for the
in-process arm, the exited workers' for the others, startup included): on a shared,
oversubscribed machine the wall clock mostly measures the CPU share the scheduler grants,
while gradings per CPU-second measure the grader.

Each arm starts cold (math-verify's parse cache cleared for the in-process arm; the workers
are new processes). Arms run interleaved, order rotated each round; reported are medians.
Every arm must return the same grades (checked). Writes
``benchmarks/results/grading_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import time
from pathlib import Path

from rlvr_lens.data import grading
from rlvr_lens.io import atomic_write_json

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "math500.jsonl"


def math500_pairs(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    own = [(r["solution"], r["answer"]) for r in rows]
    shuffled = [(rows[i]["solution"], rows[j]["answer"]) for i, j in enumerate(order) if rows[i]["answer"] != rows[j]["answer"]]
    return own + shuffled


def run_arm(name: str, pairs: list[tuple[str, str]]) -> tuple[float, float, list[grading.Grade]]:
    """``(startup seconds, grading seconds, grades)`` of one arm."""
    if name == "in_process":
        grading._parsed.cache_clear()
        start = time.perf_counter()
        grades = grading.grade_many(pairs, processes=1)
        return 0.0, time.perf_counter() - start, grades
    start = time.perf_counter()
    workers = [grading._Worker() for _ in range(int(name.split("_")[0]))]
    for worker in workers:  # all start in parallel; wait until each has answered once
        worker.send("\\boxed{1}", "1", grading.DEFAULT_TIMEOUT_S)
    for worker in workers:
        worker.receive()
    startup = time.perf_counter() - start
    start = time.perf_counter()
    grades = grading._grade_in_workers(pairs, workers, grading.DEFAULT_TIMEOUT_S)
    return startup, time.perf_counter() - start, grades


def cpu_times() -> tuple[float, float]:
    """``(this process, its exited children)`` user + system CPU seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "grading_throughput.json"))
    args = parser.parse_args()

    pairs = math500_pairs(Path(args.data))
    arms = ["in_process", "1_workers", "2_workers"]
    seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    cpu_seconds: dict[str, list[float]] = {arm: [] for arm in arms}
    startup: dict[str, list[float]] = {arm: [] for arm in arms[1:]}
    reference = None
    load = []
    for round_ in range(args.rounds):
        for arm in arms[round_ % len(arms) :] + arms[: round_ % len(arms)]:
            load.append(os.getloadavg()[0])
            before = cpu_times()
            started, elapsed, grades = run_arm(arm, pairs)
            after = cpu_times()
            cpu_seconds[arm].append(round(after[arm != "in_process"] - before[arm != "in_process"], 3))
            reference = reference or grades
            assert grades == reference, f"{arm} graded differently"
            seconds[arm].append(round(elapsed, 3))
            if arm in startup:
                startup[arm].append(round(started, 3))

    median = {arm: statistics.median(values) for arm, values in seconds.items()}
    result = {
        "benchmark": "grading_throughput",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min": round(statistics.mean(load), 2),
        "pairs": len(pairs),
        "correct": sum(g.correct for g in reference),
        "timed_out": sum(g.timed_out for g in reference),
        "rounds": args.rounds,
        "seconds": seconds,
        "median_seconds": median,
        "gradings_per_second": {arm: round(len(pairs) / s, 1) for arm, s in median.items()},
        "cpu_seconds": cpu_seconds,
        "gradings_per_cpu_second": {arm: round(len(pairs) / statistics.median(v), 1) for arm, v in cpu_seconds.items()},
        "startup_seconds": startup,
        "median_startup_seconds": {arm: statistics.median(values) for arm, values in startup.items()},
    }
    atomic_write_json(args.out, result)
    rates = ", ".join(f"{arm} {rate}/s" for arm, rate in result["gradings_per_second"].items())
    starts = ", ".join(f"{arm} {s:.1f} s" for arm, s in result["median_startup_seconds"].items())
    per_cpu = ", ".join(f"{arm} {rate}" for arm, rate in result["gradings_per_cpu_second"].items())
    print(f"{len(pairs)} gradings: {rates}; per CPU-second {per_cpu}; worker startup {starts}")
    print(f"(load average {result['load_average_1min']} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

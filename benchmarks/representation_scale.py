"""Cost of the trajectory and representation statistics at a real model's shape, on the CPU.

    python benchmarks/representation_scale.py [--samples 500 --hidden 3584 --layers 28 --models 3
                                               --permutations 1000 --probe-states 4]

The model forward passes (hidden-state capture) cost what any forward pass costs and are
not timed here; this measures what comes after them, on random float32 states of the
Qwen2.5-7B shape (28 layers, hidden 3584) for ``--samples`` samples:

* CKA: centered Gram matrices of every model at every state, then linear and debiased CKA
  of every pair (float64);
* trajectory: velocity separation of a 100-sample group against the rest with its
  permutation test, per model;
* probes: one task on one model for ``--probe-states`` states (5-fold, plus the
  shuffled-label control), extrapolated linearly to every state x model x 2 tasks.

Writes ``benchmarks/results/representation_scale.json``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import time

import numpy as np

from rlvr_lens.analyses.representation import (
    RepresentationConfig,
    centered_gram,
    cka_from_grams,
    debiased_cka_from_grams,
    probe_curve,
)
from rlvr_lens.analyses.trajectory import separation_test
from rlvr_lens.io import atomic_write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--hidden", type=int, default=3584)
    parser.add_argument("--layers", type=int, default=28)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--probe-states", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/representation_scale.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cpu_times: dict[str, float] = {}
    n, states_per_model = args.samples, args.layers + 1
    states = [
        rng.normal(size=(n, states_per_model, args.hidden)).astype(np.float32) for _ in range(args.models)
    ]

    start, cpu = time.perf_counter(), time.process_time()
    grams = [[centered_gram(s[:, i]) for i in range(states_per_model)] for s in states]
    gram_s = time.perf_counter() - start
    cpu_times["gram_s"] = time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    for a, b in itertools.combinations(range(args.models), 2):
        for i in range(states_per_model):
            cka_from_grams(grams[a][i], grams[b][i])
            debiased_cka_from_grams(grams[a][i], grams[b][i])
    cka_s = time.perf_counter() - start
    cpu_times["cka_s"] = time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    for s in states:
        separation_test(s, range(100), range(100, n), permutations=args.permutations)
    trajectory_s = time.perf_counter() - start
    cpu_times["trajectory_s"] = time.process_time() - cpu

    config = RepresentationConfig()
    labels = np.arange(n) < n // 2
    probe_states = states[0][:, : args.probe_states].copy()
    probe_states[labels, :, 0] += 1.0  # a weak planted signal, so the solver does real work
    start, cpu = time.perf_counter(), time.process_time()
    curve = probe_curve(probe_states, np.flatnonzero(labels), np.flatnonzero(~labels), config)
    probe_s = time.perf_counter() - start
    cpu_times["probe_s"] = time.process_time() - cpu
    per_state = probe_s / args.probe_states
    probe_total = per_state * states_per_model * args.models * 2

    result = {
        "shape": {"samples": n, "hidden": args.hidden, "layers": args.layers, "models": args.models},
        "permutations": args.permutations,
        "gram_s": gram_s,
        "cka_pairs_s": cka_s,
        "trajectory_s": trajectory_s,
        "probe_s_per_state_with_control": per_state,
        "probe_extrapolated_all_s": probe_total,
        "probe_auroc_check": curve.auroc,
        "cpu_s": cpu_times,  # process CPU time: on a shared machine wall time includes waiting
        "threads": {
            k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        },
        "load_average": os.getloadavg(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    atomic_write_json(args.out, result)
    print(
        f"gram {gram_s:.1f} s, CKA pairs {cka_s:.1f} s, trajectory {trajectory_s:.1f} s, "
        f"probes {per_state:.1f} s/state -> {probe_total / 60:.1f} min for all"
    )


if __name__ == "__main__":
    main()

"""Trajectory separation and representation similarity on a built model organism.

    python benchmarks/organism_representation.py --organism runs/organism-cpu-small-seed0 \
        [--stages base,sft,rlvr-correct] [--tuned rlvr-correct] [--permutations 1000] \
        [--out benchmarks/results/organism_representation_cpu-small-seed0.json] [--report-dir DIR]

Steps (all on the CPU, one thread is enough for the cpu-small organism):

1. greedy accuracy of ``base`` and ``--tuned`` on the organism's ``eval`` split (``organism``
   template, the manifest's ``eval_max_new_tokens``), graded by
   :func:`rlvr_lens.generation.accuracy`;
2. groups: ``leakage`` (tuned correct, base wrong), ``stable`` (both correct), ``lost``,
   ``never``, and the data's ``leaked`` / ``clean`` labels;
3. hidden states of every stage at the answer position, captured once and shared;
4. trajectory separation of leakage vs stable, leaked vs clean and (a control: base wrong vs
   base right without any tuning effect) never vs stable, per stage;
5. CKA per layer between the stages and probes per layer (leaked vs clean, leakage vs stable).

Writes one JSON (groups, accuracies, both results, wall times) and, with ``--report-dir``,
the report of both results (figures included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from rlvr_lens.analyses.hidden_states import capture_series
from rlvr_lens.analyses.representation import RepresentationConfig, representation_similarity
from rlvr_lens.analyses.trajectory import TrajectoryConfig, trajectory_separation
from rlvr_lens.data import read_samples
from rlvr_lens.data.sample import label_groups
from rlvr_lens.generation import accuracy
from rlvr_lens.io import atomic_write_json
from rlvr_lens.models import ModelSeries, load_model
from rlvr_lens.organism.manifest import OrganismManifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organism", required=True)
    parser.add_argument("--stages", default="base,sft,rlvr-correct")
    parser.add_argument("--tuned", default="rlvr-correct")
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument(
        "--pairs",
        default="leakage:stable,leaked:clean,never:stable",
        help="group pairs compared by trajectory separation (never:stable = base wrong vs base right, a control)",
    )
    parser.add_argument(
        "--vector-field", action="store_true", help="also fit the neural-ODE field (needs torchdiffeq)"
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--report-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    manifest = OrganismManifest.load_dir(args.organism)
    samples = read_samples(str(manifest.data_path("eval")))
    stages = args.stages.split(",")
    max_new = int(manifest.config.get("eval_max_new_tokens", 40))
    timings: dict[str, float] = {}

    start = time.perf_counter()
    correct: dict[str, list[bool]] = {}
    for stage in ("base", args.tuned):
        loaded = load_model(str(manifest.checkpoint(stage)), "float32", "cpu")
        _, correct[stage] = accuracy(
            loaded.model,
            loaded.tokenizer,
            samples,
            template="organism",
            max_new_tokens=max_new,
            batch_size=32,
        )
    timings["grading_s"] = time.perf_counter() - start
    base, tuned = correct["base"], correct[args.tuned]
    groups = {
        "leakage": [i for i, (b, t) in enumerate(zip(base, tuned)) if t and not b],
        "stable": [i for i, (b, t) in enumerate(zip(base, tuned)) if t and b],
        "lost": [i for i, (b, t) in enumerate(zip(base, tuned)) if b and not t],
        "never": [i for i, (b, t) in enumerate(zip(base, tuned)) if not b and not t],
        **label_groups(samples),
    }

    series = ModelSeries.from_strings(
        [f"{s}={manifest.checkpoint(s)}" for s in stages], dtype="float32", device="cpu"
    )
    start = time.perf_counter()
    states = capture_series(series, samples, TrajectoryConfig(template="organism").capture_config())
    timings["capture_s"] = time.perf_counter() - start

    start = time.perf_counter()
    trajectories = [
        trajectory_separation(
            series,
            samples,
            groups,
            TrajectoryConfig(
                group_a=a,
                group_b=b,
                template="organism",
                permutations=args.permutations,
                vector_field=args.vector_field,
            ),
            states=states,
        )
        for a, b in (pair.split(":") for pair in args.pairs.split(","))
    ]
    timings["trajectory_s"] = time.perf_counter() - start
    start = time.perf_counter()
    representation = representation_similarity(
        series, samples, groups, RepresentationConfig(template="organism"), states=states
    )
    timings["representation_s"] = time.perf_counter() - start

    out = Path(args.out or f"benchmarks/results/organism_representation_{Path(args.organism).name}.json")
    payload = {
        "organism": str(args.organism),
        "stages": stages,
        "tuned": args.tuned,
        "accuracy": {k: sum(v) / len(v) for k, v in correct.items()},
        "accuracy_by_label": {
            stage: {
                g: sum(correct[stage][i] for i in groups[g]) / max(1, len(groups[g]))
                for g in ("leaked", "clean")
            }
            for stage in correct
        },
        "group_sizes": {k: len(v) for k, v in groups.items()},
        "hidden_size": int(next(iter(states.values())).shape[-1]),
        "timings": timings,
        "trajectory": [t.to_dict() for t in trajectories],
        "representation": representation.to_dict(),
    }
    atomic_write_json(out, payload)
    if args.report_dir:
        from rlvr_lens.report import write_run

        write_run(
            args.report_dir,
            [*trajectories, representation],
            title=f"representation: {Path(args.organism).name}",
        )
    print(json.dumps({"accuracy": payload["accuracy"], "groups": payload["group_sizes"], "timings": timings}))


if __name__ == "__main__":
    main()

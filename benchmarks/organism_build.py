"""Build the model organism for several seeds; record wall/CPU time and every accuracy.

    python benchmarks/organism_build.py [--preset cpu-small] [--seeds 0 1 2] [--root runs/bench-organism]
                                        [--set rl.steps_per_generation=4 ...]

Writes benchmarks/results/organism_<preset>.json: per seed the build's wall and CPU time
(seconds; CPU time summed over threads), the load average when it started (the development
machines are shared), the accuracy of every stage on every split, and a summary of what the
random reward did (final minus base accuracy on eval leaked / eval clean / benchmark / rl_train,
mean and per seed). Builds are cached in --root, so a rerun only summarizes (use --force to rebuild,
--no-build to summarize the builds found without checking their configuration).
On a GPU the same script times ``gpu-medium``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from pathlib import Path

import torch

from rlvr_lens.cli.organism import parse_overrides
from rlvr_lens.io import atomic_write_json
from rlvr_lens.organism.manifest import ACCURACY_SPLITS
from rlvr_lens.organism.recipe import build_organism, load_organism


def change(manifest, stage: str, split: str) -> float:
    return manifest.stage(stage).accuracy[split] - manifest.stage("base").accuracy[split]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", default="runs/bench-organism")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--no-build", action="store_true", help="only summarize the complete builds already in --root")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    suffix = "".join(f"_{k}={v}" for k, v in overrides.items()).replace("/", "-")
    out = Path(args.out or Path(__file__).parent / "results" / f"organism_{args.preset}{suffix}.json")

    runs = []
    for seed in args.seeds:
        root = Path(args.root) / f"{args.preset}{suffix}-seed{seed}"
        if args.no_build:
            manifest = load_organism(root)
        else:
            manifest = build_organism(root, args.preset, seed, force=args.force, show_progress=True, overrides=overrides)
        runs.append(
            {
                "seed": seed,
                "wall_time_s": round(manifest.wall_time_s, 1),
                "cpu_time_s": round(manifest.cpu_time_s, 1),
                "stage_times_s": {s.name: [round(s.wall_time_s, 1), round(s.cpu_time_s, 1)] for s in manifest.stages},
                "environment": manifest.environment,
                "accuracy": {s.name: s.accuracy for s in manifest.stages},
                "sizes": manifest.sizes,
            }
        )
        print(f"seed {seed}: {manifest.wall_time_s:.0f} s wall, {manifest.cpu_time_s:.0f} s CPU")
        for row in manifest.accuracy_table():
            print("  ".join(f"{cell:>12}" for cell in row))
        last = manifest

    effects = {}
    for stage in (s.name for s in last.stages if s.name != "base"):
        effects[stage] = {}
        for split in ACCURACY_SPLITS:
            values = [r["accuracy"][stage][split] - r["accuracy"]["base"][split] for r in runs]
            effects[stage][split] = {
                "per_seed": [round(v, 4) for v in values],
                "mean": round(statistics.fmean(values), 4),
                "stdev": round(statistics.stdev(values), 4) if len(values) > 1 else None,
            }
    atomic_write_json(
        out,
        {
            "benchmark": "organism_build",
            "preset": args.preset,
            "overrides": overrides,
            "device": "cuda" if torch.cuda.is_available() else f"cpu ({platform.machine()})",
            "cpu_count": os.cpu_count(),
            "config": last.config,
            "runs": runs,
            "change_from_base": effects,
        },
    )
    for stage, splits in effects.items():
        print(stage + ": " + ", ".join(f"{s} {v['mean']:+.3f}" for s, v in splits.items()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

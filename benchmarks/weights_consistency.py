"""Do RLVR runs from one base move the weights in the same direction? (The Path Not Taken's consistency.)

Trains several true-reward GRPO runs from the base of an organism build that differ in one
thing each (GRPO seed, problem families, loss aggregation), then runs the weight forensics
(cheap metrics: no SVD needed for cosines) over all of them plus the build's own SFT and
random-reward runs, and writes the whole-model and per-module update cosines.

    python benchmarks/weights_consistency.py --organism runs/organism-cpu-small-seed0 \
        --out benchmarks/_work/consistency --result benchmarks/results/weights_consistency_cpu-small.json

GRPO settings are the build's own (``manifest.json`` ``config.rl``) unless ``--steps`` is given.
Runs already trained in ``--out`` are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from rlvr_lens.analyses.weights import WeightsConfig, weight_forensics
from rlvr_lens.data import read_samples
from rlvr_lens.train.grpo import GRPOSettings, train_grpo

FAMILY_SPLIT = ({"add_mul", "mul_sub"}, {"sum3", "paren", "two_mul"})


def variants(settings: GRPOSettings) -> dict[str, tuple[GRPOSettings, set[str] | None]]:
    """name -> (settings, families to train on or None for all)."""
    return {
        "grpo-seed0": (settings, None),
        "grpo-seed1": (dataclasses.replace(settings, seed=1), None),
        "grpo-familiesA": (settings, FAMILY_SPLIT[0]),
        "grpo-familiesB": (settings, FAMILY_SPLIT[1]),
        "grpo-loss-grpo": (dataclasses.replace(settings, loss_type="grpo"), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--organism", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root, out = Path(args.organism), Path(args.out)
    manifest = json.loads((root / "manifest.json").read_text())
    # GRPOSettings.from_dict reads a manifest written before issue 16 (old field names) too
    base_settings = dataclasses.replace(GRPOSettings.from_dict(manifest["config"]["rl"]), save_steps=0, eval_steps=0)
    if args.steps:
        base_settings = dataclasses.replace(base_settings, max_steps=args.steps)
    rl_train = read_samples(root / manifest["data"]["rl_train"])
    trained, timings = {}, {}
    for name, (settings, families) in variants(base_settings).items():
        run_dir = out / name
        samples = [s for s in rl_train if families is None or s.labels.get("family") in families]
        if not (run_dir / "grpo_run.json").exists():
            started = time.perf_counter()
            run = train_grpo(root / "base", samples, run_dir, settings)
            run.save(run_dir / "grpo_run.json")
            timings[name] = time.perf_counter() - started
        trained[name] = json.loads((run_dir / "grpo_run.json").read_text())["final_dir"]
    tuned = {**trained, "sft": str(root / "sft"), "random-reward": str(root / "rlvr-random" / "step-64")}
    tuned = {k: v for k, v in tuned.items() if Path(v).is_dir()}
    result = weight_forensics(root / "base", tuned, WeightsConfig(metrics="cheap"))
    payload = {
        "organism": str(root),
        "settings": dataclasses.asdict(base_settings),
        "variants": {k: {"families": sorted(f) if f else "all", "final_dir": trained[k]} for k, (_, f) in variants(base_settings).items()},
        "train_seconds": timings,
        "relative_norm": {r: next(a.relative_norm for a in result.aggregates if a.run == r and a.scope == "module" and a.key == "up") for r in result.runs},
        "consistency": [dataclasses.asdict(c) for c in result.consistency],
    }
    Path(args.result).parent.mkdir(parents=True, exist_ok=True)
    Path(args.result).write_text(json.dumps(payload, indent=2))
    model = next(c for c in result.consistency if c.scope == "model")
    print("cosine matrix (whole model):")
    for i, r in enumerate(model.runs):
        print(f"  {r:16s} " + " ".join(f"{v:6.3f}" if v is not None else "   n/a" for v in model.cosine[i]) + f"   to others {model.cosine_to_others[i]:.3f}")


if __name__ == "__main__":
    main()

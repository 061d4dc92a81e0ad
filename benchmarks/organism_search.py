"""Search the latent-leak organism's knobs: does RLVR activate the memorized answers?

    python benchmarks/organism_search.py --name A --seed 0 [--set corpus.rl_leak_fraction=0.5 ...]
        [--variant correct] [--variant "random+offpolicy"] [--variant "correct:learning_rate=3e-4,steps=32"]

One *trial* = one base configuration (``cpu-latent`` with ``--set`` overrides; base and SFT
built once, cached under --root) and GRPO *variants* from that base: ``<reward>[+offpolicy][:k=v,...]``
(``k`` a :class:`~rlvr_lens.train.grpo.GRPOSettings` field). For the base it records the
accuracy on leaked / clean / benchmark / rl_train, the answer-key probe (does the base hold the
memorized answers?) and the answer modes (share of direct answers, length); for each variant
the same after training, the gain on leaked minus the gain on clean, the number of leakage
samples (tuned correct, base wrong) and the share of clipped tokens per step.

Every trial is appended to benchmarks/results/organism_search.json (failures included), so the
file is the record of the search. Choose on one seed, then confirm on others.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

import torch

from rlvr_lens.cli.organism import parse_overrides
from rlvr_lens.io import atomic_write_json

RESULTS = Path(__file__).parent / "results" / "organism_search.json"


def parse_variant(text: str) -> tuple[str, dict]:
    """``"random+offpolicy:learning_rate=3e-4"`` -> (``"random+offpolicy"``, ``{"learning_rate": "3e-4"}``)."""
    entry, _, rest = text.partition(":")
    settings = dict(item.split("=", 1) for item in rest.split(",") if item)
    return entry, settings


def run_variant(root: Path, manifest, config, seed: int, text: str, sets, base_correct) -> dict:
    from rlvr_lens.models.loading import load_model
    from rlvr_lens.organism.recipe import _evaluate, _leakage, rl_stage
    from rlvr_lens.train.grpo import train_grpo
    from rlvr_lens.data.readers import read_samples

    entry, extra = parse_variant(text)
    name, reward, offpolicy = rl_stage(entry)
    settings = dataclasses.replace(config.rl, reward=reward, seed=seed, save_every=0)
    if offpolicy:
        settings = dataclasses.replace(settings, **dataclasses.asdict(config.offpolicy))
    for key, value in extra.items():
        current = getattr(settings, key)
        settings = dataclasses.replace(settings, **{key: type(current)(value)})
    out = root / "search" / text.replace(":", "_").replace(",", "_").replace("=", "-")
    start = time.perf_counter()
    torch.manual_seed(seed)
    run = train_grpo(manifest.checkpoint("base"), read_samples(manifest.data_path("rl_train")), out, settings)
    loaded = load_model(run.final_dir, dtype="float32", device="cpu")
    accuracy, details, correct = _evaluate(loaded.model, loaded.tokenizer, sets, config)
    leakage = _leakage(sets, base_correct, correct)
    clipped = [r["clip_ratio"] for r in run.steps if r.get("clip_ratio") is not None]
    base = manifest.stage("base").accuracy
    return {
        "variant": text, "stage": name, "settings": {k: v for k, v in dataclasses.asdict(settings).items()},
        "accuracy": accuracy,
        "gain_leaked_minus_clean": (accuracy["eval_leaked"] - base["eval_leaked"]) - (accuracy["eval_clean"] - base["eval_clean"]),
        "n_leakage": leakage["n_leakage"],
        "probe": details.get("probe"), "modes": details["modes"],
        "clip_ratio_mean": sum(clipped) / len(clipped) if clipped else None,
        "clip_ratio_max": max(clipped) if clipped else None,
        "train_accuracy": [r.get("accuracy") for r in run.steps if r.get("accuracy") is not None],
        "wall_time_s": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="name of the trial in the results file")
    parser.add_argument("--preset", default="cpu-latent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--variant", action="append", default=[], help="GRPO run from the base (see the docstring)")
    parser.add_argument("--root", default="runs/search")
    parser.add_argument("--note", default="", help="why this trial (recorded)")
    args = parser.parse_args()

    from rlvr_lens.data.readers import read_samples
    from rlvr_lens.models.loading import load_model
    from rlvr_lens.organism.recipe import _evaluate, build_organism, evaluation_sets, preset_config

    torch.set_num_threads(1)
    overrides = {**parse_overrides(args.set), "rl_rewards": ""}
    root = Path(args.root) / f"{args.name}-seed{args.seed}"
    record = {"name": args.name, "preset": args.preset, "seed": args.seed, "overrides": parse_overrides(args.set),
              "note": args.note, "cpu_count": os.cpu_count(), "variants": []}
    try:
        start = time.perf_counter()
        manifest = build_organism(root, args.preset, args.seed, overrides=overrides)
        record["base_build_wall_s"] = round(time.perf_counter() - start, 1)
        config = preset_config(args.preset, overrides)
        splits = {s: read_samples(manifest.data_path(s)) for s in ("eval", "benchmark", "rl_train")}
        sets = evaluation_sets(splits, config.rl_eval_size)
        for stage in ("base", "sft"):
            s = manifest.stage(stage)
            record[stage] = {"accuracy": s.accuracy, "probe": s.details.get("probe"), "modes": s.details.get("modes"),
                             "n_leakage": s.details.get("n_leakage")}
        loaded = load_model(str(manifest.checkpoint("base")), dtype="float32", device="cpu")
        _, _, base_correct = _evaluate(loaded.model, loaded.tokenizer, sets, config)
        del loaded
        for text in args.variant:
            try:
                record["variants"].append(run_variant(root, manifest, config, args.seed, text, sets, base_correct))
            except Exception as error:  # a failed variant is a result too
                record["variants"].append({"variant": text, "error": f"{type(error).__name__}: {error}"})
            print(json.dumps(record["variants"][-1].get("accuracy") or record["variants"][-1]), flush=True)
    except Exception as error:
        record["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    import fcntl

    with open(Path(tempfile.gettempdir()) / "organism_search.lock", "w") as lock:  # two trials may finish at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"benchmark": "organism_search", "trials": []}
        results["trials"].append(record)
        atomic_write_json(RESULTS, results)
    print(json.dumps({k: v for k, v in record.items() if k != "variants"}, indent=1))


if __name__ == "__main__":
    main()

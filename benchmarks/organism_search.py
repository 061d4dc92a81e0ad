"""Search the latent-leak organism's knobs: does RLVR activate the memorized answers?

    rlvr-lens organism --preset cpu-latent --seed 0 [--set corpus.operand_scale=2 ...] --out runs/search/A-seed0
    python benchmarks/organism_search.py --name A --build runs/search/A-seed0 --note "why"
        [--variant "correct:learning_rate=3e-4,max_steps=32"] [--variant "random+offpolicy:epsilon=0.1"]

One *trial* = one organism build (``cpu-latent`` with ``--set`` overrides: base, SFT and its
RL stages) plus, optionally, extra GRPO *variants* from its base: ``<reward>[+offpolicy][:k=v,...]``
(``k`` a :class:`~rlvr_lens.train.settings.GRPOSettings` field; the names before issue 16, e.g.
``clip_eps``, still work). For the base it records the
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

from rlvr_lens.io import atomic_write_json

RESULTS = Path(__file__).parent / "results" / "organism_search.json"


def parse_variant(text: str) -> tuple[str, dict]:
    """``"random+offpolicy:learning_rate=3e-4"`` -> (``"random+offpolicy"``, ``{"learning_rate": "3e-4"}``)."""
    entry, _, rest = text.partition(":")
    settings = dict(item.split("=", 1) for item in rest.split(",") if item)
    return entry, settings


def run_variant(root: Path, manifest, config, seed: int, text: str, sets, base_correct) -> dict:
    from rlvr_lens.data.readers import read_samples
    from rlvr_lens.models.loading import load_model
    from rlvr_lens.organism.recipe import _evaluate, _leakage, rl_stage
    from rlvr_lens.train.grpo import train_grpo
    from rlvr_lens.train.settings import GRPOSettings, upgrade_names

    entry, extra = parse_variant(text)
    name, reward, offpolicy = rl_stage(entry)
    settings = dataclasses.replace(config.rl, reward=reward, seed=seed, save_steps=0)
    if offpolicy:
        settings = dataclasses.replace(settings, **dataclasses.asdict(config.offpolicy))
    for key, value in upgrade_names(extra, GRPOSettings, "GRPO setting").items():
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


def stage_summary(manifest, stage) -> dict:
    """What the search compares, for one stage of a build."""
    base = manifest.stage("base").accuracy
    row = {
        "accuracy": stage.accuracy, "probe": stage.details.get("probe"), "modes": stage.details.get("modes"),
        "n_leakage": stage.details.get("n_leakage"),
    }
    if stage.name != "base":
        row["gain_leaked_minus_clean"] = (stage.accuracy["eval_leaked"] - base["eval_leaked"]) - (
            stage.accuracy["eval_clean"] - base["eval_clean"]
        )
    if "clip_ratio" in stage.details:
        clipped = stage.details["clip_ratio"]
        row["clip_ratio_mean"] = stage.details.get("clip_ratio_mean")
        row["clip_ratio_max"] = max(clipped) if clipped else None
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="name of the trial in the results file")
    parser.add_argument("--build", help="a complete organism build (rlvr-lens organism --out DIR ...)")
    parser.add_argument("--table", nargs="+", metavar="BUILD", help="print the seeds table of these builds (markdown) and record it")
    parser.add_argument("--variant", action="append", default=[], help="extra GRPO run from the build's base (see the docstring)")
    parser.add_argument("--note", default="", help="why this trial (recorded)")
    args = parser.parse_args()
    if not args.build and not args.table:
        parser.error("give --build (a trial) or --table (a seeds table)")

    from rlvr_lens.data.readers import read_samples
    from rlvr_lens.models.loading import load_model
    from rlvr_lens.organism.recipe import (
        OrganismConfig,
        _evaluate,
        evaluation_sets,
        load_organism,
        preset_config,
    )

    torch.set_num_threads(1)
    if args.table:
        record = seeds_table(args.name, args.table, args.note)
        _append(record)
        print(record["markdown"])
        return
    record = {"name": args.name, "build": args.build, "note": args.note, "cpu_count": os.cpu_count(), "variants": []}
    try:
        manifest = load_organism(args.build)
        record.update(preset=manifest.preset, seed=manifest.seed, config_hash=manifest.config_hash,
                      corpus=manifest.config["corpus"], model=manifest.config["model"],
                      wall_time_s=round(manifest.wall_time_s, 1), cpu_time_s=round(manifest.cpu_time_s, 1),
                      load_average_1min_at_start=manifest.environment.get("load_average_1min_at_start"))
        record["stages"] = {stage.name: stage_summary(manifest, stage) for stage in manifest.stages}
        if args.variant:
            config: OrganismConfig = preset_config(manifest.preset)
            _apply_config(config, manifest.config)
            splits = {s: read_samples(manifest.data_path(s)) for s in ("eval", "benchmark", "rl_train")}
            sets = evaluation_sets(splits, config.rl_eval_size)
            loaded = load_model(str(manifest.checkpoint("base")), dtype="float32", device="cpu")
            _, _, base_correct = _evaluate(loaded.model, loaded.tokenizer, sets, config)
            del loaded
            for text in args.variant:
                try:
                    row = run_variant(Path(args.build), manifest, config, manifest.seed, text, sets, base_correct)
                except Exception as error:  # a failed variant is a result too
                    row = {"variant": text, "error": f"{type(error).__name__}: {error}"}
                record["variants"].append(row)
                print(json.dumps({k: row.get(k) for k in ("variant", "accuracy", "n_leakage", "clip_ratio_mean", "error")}), flush=True)
    except Exception as error:
        record["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    _append(record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("variants", "corpus", "model")}, indent=1))


def _append(record: dict) -> None:
    import fcntl

    with open(Path(tempfile.gettempdir()) / "organism_search.lock", "w") as lock:  # two trials may finish at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"benchmark": "organism_search", "trials": []}
        results["trials"].append(record)
        atomic_write_json(RESULTS, results)


COLUMNS = (("eval_leaked", "leaked"), ("eval_clean", "clean"), ("benchmark", "benchmark"))


def seeds_table(name: str, builds: list[str], note: str) -> dict:
    """The stage x (leaked / clean / benchmark) table over seeds, with probe, direct share, leakage and clip shares."""
    from rlvr_lens.organism.recipe import load_organism

    manifests = [load_organism(b) for b in builds]
    stages = [s.name for s in manifests[0].stages]
    per_seed = {}
    for m in manifests:
        per_seed[m.seed] = {s.name: stage_summary(m, s) for s in m.stages}
    seeds = [m.seed for m in manifests]
    lines = [
        "| stage | " + " | ".join(f"{label} (seeds {'/'.join(map(str, seeds))})" for _, label in COLUMNS)
        + " | gain leaked - gain clean | leakage samples (leaked/clean) | direct share leaked/clean | clip share (mean) |",
        "|---|" + "---|" * (len(COLUMNS) + 4),
    ]
    for stage in stages:
        rows = [per_seed[s][stage] for s in seeds]
        cells = [" / ".join(f"{r['accuracy'][key]:.2f}" for r in rows) for key, _ in COLUMNS]
        gain = " / ".join(f"{100 * r['gain_leaked_minus_clean']:+.0f}" for r in rows) if stage != "base" else "-"
        leak = " / ".join(f"{r['n_leakage']['leaked']}/{r['n_leakage']['clean']}" for r in rows) if stage != "base" else "-"
        direct = " / ".join(
            f"{r['modes']['eval_leaked']['direct_share']:.2f}/{r['modes']['eval_clean']['direct_share']:.2f}" for r in rows
        )
        clip = " / ".join(f"{r['clip_ratio_mean']:.3f}" for r in rows) if rows[0].get("clip_ratio_mean") is not None else "-"
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {gain} | {leak} | {direct} | {clip} |")
    probe = " / ".join(
        f"{per_seed[s]['base']['probe']['eval_leaked']:.2f}/{per_seed[s]['base']['probe']['eval_clean']:.2f}" for s in seeds
    )
    lines.append("")
    lines.append(f"Answer-key probe of the base, leaked/clean (seeds {'/'.join(map(str, seeds))}): {probe}")
    return {"name": name, "note": note, "table_of": builds, "seeds": seeds, "per_seed": per_seed, "markdown": "\n".join(lines)}


def _apply_config(config, saved: dict) -> None:
    """Set ``config``'s corpus / rl / offpolicy / evaluation settings to those a build recorded."""
    from rlvr_lens.organism.recipe import OffPolicySettings

    for name, value in saved["corpus"].items():
        setattr(config.corpus, name, tuple(value) if isinstance(value, list) else value)
    from rlvr_lens.train.settings import GRPOSettings, upgrade_names

    for name, value in upgrade_names(saved["rl"], GRPOSettings, "GRPO setting").items():  # old names too
        setattr(config.rl, name, value)
    if "offpolicy" in saved:
        config.offpolicy = OffPolicySettings.from_dict(saved["offpolicy"])
    for name in ("eval_max_new_tokens", "eval_batch_size", "rl_eval_size"):
        setattr(config, name, saved[name])


if __name__ == "__main__":
    main()

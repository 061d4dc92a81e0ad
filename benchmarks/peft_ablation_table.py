"""The PEFT ablation over seeds: mean and spread of each method's change against full fine-tuning.

    python benchmarks/peft_ablation_table.py [--results benchmarks/results]

Reads ``peft_ablation_{sft,grpo}.json`` (seed 0) and ``peft_ablation_{sft,grpo}_seed{1,2}.json``
written by ``benchmarks/peft_ablation.py`` and prints a markdown table beside the paper's
numbers: per method and stage, the held-out clean accuracy per seed, and the change against
full fine-tuning in percentage points (mean over seeds, with the per-seed values).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: The Path Not Taken's table (change against full fine-tuning, %), by the organism method it maps to.
PAPER = {
    "lora-r1": ("LoRA r = 16", "-1.2 %", "-5.8 %"),
    "lora-r2": ("LoRA r = 64", "-0.8 %", "-3.2 %"),
    "pissa-r2": ("(not in the paper)", "", ""),
    "sparse-10": ("sparse 10 %", "-0.5 %", "-4.1 %"),
    "sparse-30": ("sparse 30 %", "-0.3 %", "-2.7 %"),
}


def result_files(folder: Path, stage: str) -> dict[int, Path]:
    """seed -> the results file ``peft_ablation.py`` wrote for it (seed 0 has no suffix), if present."""
    names = {0: f"peft_ablation_{stage}.json", 1: f"peft_ablation_{stage}_seed1.json", 2: f"peft_ablation_{stage}_seed2.json"}
    return {seed: folder / name for seed, name in names.items() if (folder / name).exists()}


def load_runs(folder: Path, stage: str) -> dict[int, dict]:
    return {
        seed: {row["method"]: row for row in json.loads(path.read_text())["rows"]}
        for seed, path in result_files(folder, stage).items()
    }


def base_accuracies(folder: Path, key: str) -> list[float]:
    """The base's accuracy per seed, from the manifest of the organism each seed-0/1/2 run names."""
    out = []
    for path in result_files(folder, "sft").values():
        manifest = Path(json.loads(path.read_text())["organism"]) / "manifest.json"
        if not manifest.exists():
            return []
        stages = {s["name"]: s for s in json.loads(manifest.read_text())["stages"]}
        out.append(stages["base"]["accuracy"][key])
    return out


def summary(runs: dict[int, dict], method: str, key: str = "eval_clean") -> tuple[str, str]:
    """Per-seed accuracies, and the mean change against full (pp) with the per-seed changes."""
    accuracies, deltas = [], []
    for rows in runs.values():
        if method in rows and "full" in rows:
            accuracies.append(rows[method][key])
            deltas.append(100 * (rows[method][key] - rows["full"][key]))
    if not accuracies:
        return "", ""
    acc = " / ".join(f"{a:.2f}" for a in accuracies)
    if method == "full":
        return acc, "0"
    mean = sum(deltas) / len(deltas)
    return acc, f"{mean:+.1f} pp ({' / '.join(f'{d:+.0f}' for d in deltas)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--key", default="eval_clean", help="accuracy column: eval_clean or rl_train")
    args = parser.parse_args()
    sft, grpo = load_runs(args.results, "sft"), load_runs(args.results, "grpo")
    print(f"seeds: SFT {sorted(sft)}, GRPO {sorted(grpo)}; column {args.key}\n")
    print("| method (organism) | paper's analogue | SFT accuracy per seed | SFT Δ vs full | paper SFT Δ | GRPO accuracy per seed | GRPO Δ vs full | paper RLVR Δ |")
    print("|---|---|---|---|---|---|---|---|")
    bases = base_accuracies(args.results, args.key)
    if bases:
        base = " / ".join(f"{b:.2f}" for b in bases)
        print(f"| base (no tuning) | | {base} | | | {base} | | |")
    methods = list(dict.fromkeys(m for runs in (sft, grpo) for rows in runs.values() for m in rows))
    for method in methods:
        analogue, paper_sft, paper_rl = PAPER.get(method, ("full", "0", "0"))
        sft_acc, sft_delta = summary(sft, method, args.key)
        grpo_acc, grpo_delta = summary(grpo, method, args.key)
        print(f"| {method} | {analogue} | {sft_acc} | {sft_delta} | {paper_sft} | {grpo_acc} | {grpo_delta} | {paper_rl} |")


if __name__ == "__main__":
    main()

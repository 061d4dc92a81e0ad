"""Markdown tables of the scoreboard, reset/retain and steering results on organism seeds 0/1/2.

    python benchmarks/organism_interventions_tables.py scoreboard|ablation|steering [--dir DIR]

Reads ``DIR/{scoreboard,ablation,steering}_seed{0,1,2}.json`` (default
``benchmarks/results/organism_seeds/``: the results of ``rlvr-lens scoreboard`` and
``rlvr-lens steer`` quoted in the README) and prints the README's tables (before the README
renames the signals and leaves out the chance-level circuits rows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SEEDS = (0, 1, 2)
DEFAULT_DIR = Path(__file__).resolve().parent / "results" / "organism_seeds"


def _load(folder: Path, kind: str) -> dict[int, dict]:
    out = {}
    for seed in SEEDS:
        path = folder / f"{kind}_seed{seed}.json"
        if path.exists():
            out[seed] = json.loads(path.read_text())
    return out


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _row(task: dict, family: str) -> dict | None:
    return next((r for r in task["rows"] if r["family"] == family and r["auroc"] is not None), None)


def _cell(row: dict | None) -> tuple[str, str, str]:
    """AUROC [CI] (k, direction), zero-leak false alarms, difference to Min-K%++."""
    if row is None:
        return "", "", ""
    chosen = f" (k {row['chosen'].split('@')[1]})" if "@" in row["chosen"] else ""
    reversed_ = " rev." if row["direction"] != 1 else ""
    auroc = f"{row['auroc']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]{chosen}{reversed_}"
    delta = row.get("delta_vs_reference")
    delta_text = "ref." if row["family"].endswith("min_k_pp") else ("" if delta is None else f"{delta:+.2f}")
    return auroc, _fmt(row.get("false_alarm")), delta_text


def scoreboard(folder: Path) -> None:
    boards = _load(folder, "scoreboard")
    for index, title in enumerate(["Leaked vs clean", "Leakage vs stable"]):
        tasks = {seed: board["tasks"][index] for seed, board in boards.items() if not board["tasks"][index]["skipped"]}
        families = list(dict.fromkeys(r["family"] for task in tasks.values() for r in task["rows"]))

        def mean_auroc(family: str, tasks=tasks) -> float:
            values = [row["auroc"] for task in tasks.values() if (row := _row(task, family))]
            return sum(values) / len(values) if values else -1.0

        counts = []
        for seed, task in tasks.items():
            positives = set(boards[seed]["groups"][task["positive"]])
            n_pos = sum(1 for i in task["scored"] if i in positives)
            counts.append(f"seed {seed}: {len(task['calibration'])} cal., {len(task['scored'])} scored, {n_pos} positive")
        print(f"\n**{title}** ({'; '.join(counts)})\n")
        seeds_header = " | ".join(f"seed {s} AUROC [95% CI]" for s in tasks)
        print(f"| signal | {seeds_header} | zero-leak false alarms | vs Min-K%++ | >= 0.9 on |")
        print("|---|" + "---|" * (len(tasks) + 3))
        for family in sorted(families, key=lambda f: -mean_auroc(f)):
            cells = [_cell(_row(task, family)) for task in tasks.values()]
            at_bar = sum(1 for task in tasks.values() if (row := _row(task, family)) and row["auroc"] >= 0.9)
            aurocs = " | ".join(c[0] for c in cells)
            alarms = " / ".join(c[1] for c in cells)
            deltas = " / ".join(c[2] for c in cells)
            print(f"| {family} | {aurocs} | {alarms} | {deltas} | {at_bar}/{len(tasks)} |")


def ablation(folder: Path) -> None:
    results = _load(folder, "ablation")
    print("\n**Reset / retain / noise, leakage-sample greedy accuracy** (tuned = 1.00, base = 0.00 by the group's definition)\n")
    print("| window | part | " + " | ".join(f"seed {s} reset / retain / noise" for s in results) + " |")
    print("|---|---|" + "---|" * len(results))
    keys = list(dict.fromkeys((tuple(v["window"]), v["part"]) for d in results.values() for v in d["variants"]))
    for window, part in keys:
        cells = []
        for data in results.values():
            by_mode = {
                v["mode"]: v["groups"].get("leakage")
                for v in data["variants"]
                if tuple(v["window"]) == window and v["part"] == part
            }
            cells.append(" / ".join(_fmt(by_mode.get(m)) for m in ("reset", "retain", "noise")))
        print(f"| {window[0]}-{window[1]} | {part} | " + " | ".join(cells) + " |")
    sizes = ", ".join(f"seed {s} {len(d['groups']['leakage'])}" for s, d in results.items())
    stable = ", ".join(f"seed {s} {min(v['groups'].get('stable', 1.0) for v in d['variants']):.2f}" for s, d in results.items())
    print(f"\nleakage samples: {sizes}; lowest stable accuracy under any variant: {stable}")


def steering(folder: Path) -> None:
    print("\n**Neuron key scaling: greedy accuracy of scored leakage / stable samples at alpha 0, 1 and 3**\n")
    print("| seed | layer | selection, scope | leakage a=0 / 1 / 3 | stable a=0 / 1 / 3 | random control a=0: leakage / stable |")
    print("|---|---|---|---|---|---|")
    for seed, data in _load(folder, "steering").items():
        alphas = data["alphas"]
        at = [alphas.index(a) for a in (0.0, 1.0, 3.0)]
        selected = {(c["layer"], c["selection"], c["scope"]): c for c in data["curves"] if c["neurons"] == "selected"}
        control = {(c["layer"], c["selection"], c["scope"]): c for c in data["curves"] if c["neurons"] != "selected"}
        for key, curve in selected.items():
            leakage, stable = curve["groups"].get("leakage"), curve["groups"].get("stable")
            random = control.get(key)
            random_text = f"{_fmt(random['groups']['leakage'][at[0]])} / {_fmt(random['groups']['stable'][at[0]])}" if random else ""
            print(
                f"| {seed} | {key[0]} | {key[1]}, {key[2]} | {' / '.join(_fmt(leakage[i]) for i in at)} | "
                f"{' / '.join(_fmt(stable[i]) for i in at)} | {random_text} |"
            )
        sizes = {k: len(v) for k, v in data["groups"].items()}
        print(f"| {seed} | | scored {len(data['scored'])}, calibration {len(data['calibration'])}; groups {sizes} | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=("scoreboard", "ablation", "steering"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    {"scoreboard": scoreboard, "ablation": ablation, "steering": steering}[args.table](args.dir)


if __name__ == "__main__":
    main()

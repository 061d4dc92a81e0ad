"""One figure and one table of the layer analyses on three organism seeds (issue 11's "agrees across seeds?").

    python benchmarks/organism_seeds_figure.py --circuits runs/circuits-seed{0,1,2}/circuits.json \
        --representation benchmarks/results/organism_representation_organism-cpu-small-seed{0,1,2}.json \
        --out docs/figures/organism-seeds-circuits.png

Reads, per seed, a saved ``circuits`` result (``rlvr-lens circuits``, base vs the tuned model)
and the JSON of ``benchmarks/organism_representation.py``, and draws for the ``leakage`` group
(tuned right, base wrong):

1. patching recovery per layer (tuned MLP output into the base), with the bootstrap 95 % band;
2. weight-restore JSD per layer (the tuned model with that layer's MLP from the base), nats;
3. logit-lens emergence: the median first lens state whose top-1 is the answer, base and tuned,
   and the share of samples whose answer is never top-1;
4. trajectory separation of leakage vs stable per layer (tuned model), with the permutation
   null's 95 % band.

Prints a markdown table of each seed's verdict (anchor / adapter windows or none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _curve(verdict: dict, name: str) -> dict | None:
    return next((c for c in verdict["curves"] if c["name"] == name), None)


def _window(window: dict | None) -> str:
    if not window:
        return "none"
    start, end = window["start"], window["end"]
    span = f"layer {start}" if start == end else f"layers {start}-{end}"
    return f"{span} ({window.get('component', '')})".replace(" ()", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuits", nargs="+", required=True, help="circuits.json per seed, in seed order")
    parser.add_argument("--representation", nargs="*", default=[], help="organism_representation JSON per seed, same order")
    parser.add_argument("--group", default="leakage")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    circuits = [json.loads(Path(p).read_text()) for p in args.circuits]
    representation = [json.loads(Path(p).read_text()) for p in args.representation]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    print(f"| seed | {args.group} samples | verdict | anchor | adapter | median emergence base / tuned | never top-1 base / tuned |")
    print("|---|---|---|---|---|---|---|")
    for seed, result in enumerate(circuits):
        verdict = next(v for v in result["verdicts"] if v["group"] == args.group)
        layers = list(range(result["num_layers"]))
        color = f"C{seed}"
        recovery = _curve(verdict, "recovery mlp")
        if recovery:
            axes[0].plot(layers, recovery["value"], "o-", color=color, label=f"seed {seed} (n={verdict['n_samples']})")
            axes[0].fill_between(layers, recovery["lo"], recovery["hi"], color=color, alpha=0.12)
        jsd = _curve(verdict, "restore JSD mlp")
        if jsd:
            axes[1].plot(layers, jsd["value"], "o-", color=color, label=f"seed {seed}")
            axes[1].fill_between(layers, jsd["lo"], jsd["hi"], color=color, alpha=0.12)
        emergence = verdict.get("emergence") or {}
        names = [result["base"], result["tuned"]]
        firsts = [emergence.get(n, {}).get("first_top1") for n in names]
        nevers = [emergence.get(n, {}).get("never_top1") for n in names]
        for offset, (value, hatch) in enumerate(zip(firsts, ("", "//"))):
            if value is not None:
                axes[2].bar(seed * 3 + offset, value, color=color, hatch=hatch, edgecolor="black")
        print(
            f"| {seed} | {verdict['n_samples']} | {verdict['status']} | {_window(verdict.get('anchor'))} | "
            f"{_window(verdict.get('adapter'))} | {' / '.join('-' if f is None else str(f) for f in firsts)} | "
            f"{' / '.join('-' if n is None else f'{n:.2f}' for n in nevers)} |"
        )
    for seed, data in enumerate(representation):
        tuned = data.get("tuned", "rlvr-correct")
        pair = next(t for t in data["trajectory"] if t["group_a"] == args.group)
        model = next((m for m in pair["models"] if m["name"] == tuned), None)
        if model is None:
            continue
        layers = list(range(len(model["separation"])))
        axes[3].plot(layers, model["separation"], "o-", color=f"C{seed}", label=f"seed {seed}")
        axes[3].plot(layers, model["band"], ":", color=f"C{seed}")
    axes[0].axhline(0, color="grey", lw=0.6)
    axes[0].axhline(1, color="grey", lw=0.6, ls="--")
    axes[0].set(title=f"patching recovery, MLP ({args.group})", xlabel="layer", ylabel="recovery (0 = base, 1 = tuned)")
    axes[0].set_ylim(-2, 3)  # bands of small groups reach far beyond; clipped for readability
    axes[0].legend(fontsize=8)
    axes[1].set(title="weight-restore JSD, MLP", xlabel="layer", ylabel="nats")
    axes[1].legend(fontsize=8)
    axes[2].set(
        title="logit lens: median first top-1 state",
        xticks=[3 * s + 0.5 for s in range(len(circuits))],
        xticklabels=[f"seed {s}\nbase | tuned" for s in range(len(circuits))],
        ylabel="lens state",
    )
    axes[3].set(title=f"separation, {args.group} vs stable\n(dotted: permutation null, 95 %)", xlabel="layer", ylabel="separation")
    for axis in (axes[0], axes[1], axes[3]):
        axis.xaxis.get_major_locator().set_params(integer=True)
    if representation:
        axes[3].legend(fontsize=8)
    for axis in axes:
        axis.title.set_fontsize(10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

"""How reset / retain results appear in the report: accuracy per window, part and group."""

from __future__ import annotations

from pathlib import Path

from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def plot_ablation(result) -> dict:
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(v.mode for v in result.variants))
    parts = list(dict.fromkeys(v.part for v in result.variants))
    if not modes:
        return {}
    groups = list(result.groups) or ["all"]
    fig, axes = plt.subplots(len(parts), len(modes), figsize=(4.2 * len(modes), 3.0 * len(parts)), squeeze=False, sharey=True)
    for row, part in enumerate(parts):
        for col, mode in enumerate(modes):
            axis = axes[row][col]
            chosen = [v for v in result.variants if v.mode == mode and v.part == part]
            labels = [f"{v.window[0]}-{v.window[1]}" for v in chosen]
            for index, group in enumerate(groups):
                ys = [v.accuracy if group == "all" else v.groups.get(group) for v in chosen]
                axis.plot(range(len(chosen)), [float("nan") if y is None else y for y in ys], marker="o", color=f"C{index}", label=group)
                for ref, style in zip(result.references, (":", "--")):
                    value = ref.accuracy if group == "all" else ref.groups.get(group)
                    if value is not None:
                        axis.axhline(value, color=f"C{index}", ls=style, lw=0.7)
            axis.set_xticks(range(len(chosen)), labels, fontsize=7, rotation=45)
            axis.set_title(f"{mode} {part}", fontsize=9)
            axis.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("greedy accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return {"windows": fig}


def section_ablation(result, figures: dict[str, Path]) -> Section:
    groups = list(result.groups)
    columns = ["variant", "all", *groups]
    rows = [[r.label + f" ({'base' if r.mode == 'base' else result.tuned if r.mode == 'tuned' else ''})", _fmt(r.accuracy), *[_fmt(r.groups.get(g)) for g in groups]] for r in result.references]
    rows += [[v.label, _fmt(v.accuracy), *[_fmt(v.groups.get(g)) for g in groups]] for v in result.variants]
    base, tuned = result.references
    summary = (
        f"Greedy accuracy of {len(result.variants)} variants of {result.tuned} (tuned {_fmt(tuned.accuracy)}) and "
        f"{result.base} (base {_fmt(base.accuracy)}) with layer windows reset to the base, retained from the tuned "
        "model, or moved by matched random noise."
    )
    paragraphs = [
        "<b>Reset</b>: the tuned model with the window's parameters taken from the base. <b>Retain</b>: the base with "
        "only the window's parameters taken from the tuned model. <b>Noise</b> (control): the tuned model with each "
        "window tensor moved by seeded random noise of the same norm as the reset's change. The study's signature: on "
        "leakage samples, retaining anchor and adapter windows together restores the tuned accuracy, neither alone.",
        "Variants swap parameter tensors in place and swap them back; a checksum of every touched parameter was "
        + ("verified after every variant." if result.weights_verified else "<b>not</b> verified."),
    ]
    figs = [("Accuracy per window (dotted: base, dashed: tuned, per group colour).", figures["windows"])] if "windows" in figures else []
    return Section("ablation", "Reset / retain layer windows", summary, paragraphs, [Table(columns, rows, "Greedy accuracy per variant and group")], figs)


def register_entries() -> None:
    register("ablation", ReportEntry(plot=plot_ablation, section=section_ablation, order=70))

"""How the detection scoreboard (and the raw detector scores) appear in the report.

Figure: AUROC with its bootstrap 95 % interval per signal family and task, the published
reference points and the 0.9 detector bar drawn as lines. Tables: the scoreboard per task.
:mod:`rlvr_lens.analyses.scoreboard` registers the entries on import.
"""

from __future__ import annotations

from pathlib import Path

from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(row) -> str:
    return f"{_fmt(row.auroc)} [{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]"


def _delta(row) -> str:
    if row.delta_vs_reference is None:
        return "n/a"
    return f"{row.delta_vs_reference:+.2f} [{row.delta_ci_low:+.2f}, {row.delta_ci_high:+.2f}]"


def _published(result, family: str) -> str:
    short = family.split(":", 1)[-1]
    return _fmt(result.published[short] / 100, 3) if family.startswith("detector:") and short in result.published else ""


def scoreboard_rows(result, task) -> list[list[str]]:
    """Formatted rows of one task's table, best AUROC first (also used by the README)."""
    rows = sorted(task.rows, key=lambda r: -(r.auroc if r.auroc is not None else -1))
    out = []
    for r in rows:
        chosen = r.chosen.split("@", 1)[1] if "@" in r.chosen else ""
        out.append(
            [
                r.family + ("" if r.direction == 1 else " (reversed)"),
                chosen,
                _interval(r),
                _fmt(r.tpr_at_fpr),
                _fmt(r.verdict_tpr),
                _fmt(r.verdict_fpr),
                _fmt(r.false_alarm),
                _delta(r),
                _published(result, r.family),
            ]
        )
    return out


COLUMNS = [
    "signal",
    "param (cal.)",
    "AUROC [95% CI]",
    "TPR@5%FPR",
    "verdict TPR",
    "verdict FPR",
    "zero-leak false alarms",
    "vs Min-K%++ [95% CI]",
    "published AUROC",
]


def plot_scoreboard(result) -> dict:
    import matplotlib.pyplot as plt

    tasks = [t for t in result.tasks if not t.skipped]
    if not tasks:
        return {}
    families = sorted({r.family for t in tasks for r in t.rows})
    fig, axis = plt.subplots(figsize=(9, 0.35 * len(families) + 1.5))
    for offset, (index, task) in zip((-0.15, 0.15, 0.0), enumerate(tasks)):
        rows = {r.family: r for r in task.rows}
        ys, xs, lo, hi = [], [], [], []
        for y, family in enumerate(families):
            row = rows.get(family)
            if row is None or row.auroc is None:
                continue
            ys.append(y + offset)
            xs.append(row.auroc)
            lo.append(row.auroc - (row.ci_low if row.ci_low is not None else row.auroc))
            hi.append((row.ci_high if row.ci_high is not None else row.auroc) - row.auroc)
        axis.errorbar(xs, ys, xerr=[lo, hi], fmt="o", capsize=2, label=task.name, color=f"C{index}")
    axis.axvline(0.5, color="grey", lw=0.8, ls=":")
    axis.axvline(0.9, color="black", lw=0.8, ls="--", label="detector bar (0.9)")
    axis.axvline(result.published["min_k_pp"] / 100, color="tab:red", lw=0.8, ls="-.", label="Min-K%++ published (WikiMIA)")
    axis.set_yticks(range(len(families)), families, fontsize=7)
    axis.set_xlim(0, 1)
    axis.set_xlabel("AUROC on the scored split (95% bootstrap interval)")
    axis.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return {"auroc": fig}


def section_scoreboard(result, figures: dict[str, Path]) -> Section:
    paragraphs = [
        "Every per-sample signal is scored as a detector: how well does it separate the positive group from the "
        "negative one (AUROC: 1 = perfectly, 0.5 = chance). Each task's samples are split once, seeded and "
        f"stratified, into a calibration part ({result.config['calibration_fraction']:.0%}) and a scored part; "
        "everything a detector needs to be chosen (Min-K%'s k, the probe's prompt fraction, the direction of a "
        "generic signal, the verdict threshold at "
        f"{result.config['max_fpr']:.0%} calibration FPR) is fixed on the calibration part, and only the scored "
        f"part is reported. Intervals: seeded bootstrap ({result.config['n_boot']} replicates) of the scored "
        "samples; the comparison with Min-K%++ resamples both on the same samples.",
        f"Published reference points ({result.published_source}): "
        + ", ".join(f"{k} {v:.1f}" for k, v in result.published.items())
        + " AUROC %. A project signal is worth shipping as a detector only if it beats these detectors on the "
        "same samples; AUROC >= 0.9 is the bar for calling a signal a detector.",
    ]
    if result.zero_leak_samples:
        paragraphs.append(
            f"Zero-leak false alarms: the share of the {result.zero_leak_samples} samples of an organism built with "
            "no leak at all that each verdict (threshold fixed on the calibration split above) flags; every flag "
            "there is false."
        )
    tables, found = [], []
    for task in result.tasks:
        if task.skipped:
            paragraphs.append(f"Task {task.name}: skipped ({task.skipped}).")
            continue
        tables.append(
            Table(COLUMNS, scoreboard_rows(result, task), f"{task.name}: {len(task.calibration)} calibration, {len(task.scored)} scored samples")
        )
        good = [r.family for r in task.rows if r.auroc is not None and r.auroc >= 0.9]
        found.append(f"{task.name}: {', '.join(good) if good else 'none'}")
    summary = "Signals reaching AUROC >= 0.9 on the scored split: " + "; ".join(found) + "." if found else "No task could be scored."
    figs = [("AUROC per signal and task, with bootstrap 95% intervals.", figures["auroc"])] if "auroc" in figures else []
    return Section("scoreboard", "Detection scoreboard", summary, paragraphs, tables, figs)


def plot_detectors(result) -> dict:
    return {}


def section_detectors(result, figures: dict[str, Path]) -> Section:
    names = [n for n in result.scores[result.target] if "@" not in n or n.endswith(("@0.2", "@1"))]
    rows = []
    for group, indices in result.groups.items():
        row = [group, str(len(indices))]
        for name in names:
            values = [result.scores[result.target][name][i] for i in indices]
            values = [v for v in values if v is not None]
            row.append(_fmt(sum(values) / len(values), 3) if values else "n/a")
        rows.append(row)
    return Section(
        "detectors",
        "Membership-inference detector scores",
        f"Published detectors scored under {result.target}" + (f" (reference: {result.reference})." if result.reference else "."),
        [
            "Loss, zlib ratio, Min-K% Prob and Min-K%++ from their papers, higher = looks more like training data; "
            "see the scoreboard for how well each separates the groups."
        ],
        [Table(["group", "n", *names], rows, "Mean score per group")] if rows else [],
    )


def register_entries() -> None:
    register("scoreboard", ReportEntry(plot=plot_scoreboard, section=section_scoreboard, order=90))
    register("detectors", ReportEntry(plot=plot_detectors, section=section_detectors, order=91))

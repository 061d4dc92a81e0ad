"""How representation similarity (:class:`rlvr_lens.analyses.representation.RepresentationResult`)
appears in the report: CKA per layer for each pair of checkpoints, probe AUROC per layer
for each task and checkpoint with its shuffled-label control.
:mod:`rlvr_lens.analyses.representation` registers the entry.
"""

from __future__ import annotations

from pathlib import Path

from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register


def _fmt(value, digits: int = 2) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}f}"


def _nan(values) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def _tasks(result) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for probe in result.probes:
        if (probe.positive, probe.negative) not in seen:
            seen.append((probe.positive, probe.negative))
    return seen


def plot_representation(result) -> dict:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figures = {}
    states = list(range(result.states))
    if result.cka:
        fig, axis = plt.subplots(figsize=(6.5, 3.8))
        for index, curve in enumerate(result.cka):
            color = f"C{index}"
            axis.plot(states, _nan(curve.linear), marker="o", color=color, label=f"{curve.a} vs {curve.b}")
            axis.plot(
                states,
                _nan(curve.debiased),
                marker=".",
                ls="--",
                color=color,
                label=f"{curve.a} vs {curve.b} (debiased)",
            )
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("state (0 = embeddings, l + 1 = after layer l)")
        axis.set_ylabel("linear CKA")
        axis.set_ylim(-0.05, 1.05)
        axis.legend(fontsize=7)
        fig.tight_layout()
        figures["cka"] = fig
    tasks = [
        t
        for t in _tasks(result)
        if any(p.status == "ok" for p in result.probes if (p.positive, p.negative) == t)
    ]
    if tasks:
        fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.6), sharey=True, squeeze=False)
        for axis, (pos, neg) in zip(axes[0], tasks):
            for index, probe in enumerate(p for p in result.probes if (p.positive, p.negative) == (pos, neg)):
                if probe.status != "ok":
                    continue
                axis.plot(states, probe.auroc, marker="o", color=f"C{index}", label=probe.model)
                if probe.control:
                    axis.plot(
                        states,
                        probe.control,
                        ls=":",
                        color=f"C{index}",
                        label=f"{probe.model} (shuffled labels)",
                    )
            axis.axhline(0.5, color="grey", lw=0.8)
            axis.set_ylim(0, 1.02)
            axis.set_title(f"probe: {pos} vs {neg}", fontsize=10)
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_xlabel("state (0 = embeddings, l + 1 = after layer l)")
        axes[0][0].set_ylabel("held-out AUROC")
        axes[0][0].legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        figures["probes"] = fig
    return figures


def section_representation(result, figures: dict[str, Path]) -> Section:
    config = result.config
    position = (
        "the answer position (last prompt token)"
        if config["position"] == "answer"
        else "the mean over prompt tokens"
    )
    summary_parts = []
    for curve in result.cka:
        defined = [i for i, v in enumerate(curve.linear) if v is not None]
        if not defined:
            continue
        low = min(defined, key=lambda i: curve.linear[i])
        summary_parts.append(
            f"CKA {curve.a} vs {curve.b} is lowest at state {low} ({_fmt(curve.linear[low])})"
        )
    for probe in result.probes:
        if probe.status == "ok":
            best = max(range(len(probe.auroc)), key=lambda i: probe.auroc[i])
            summary_parts.append(
                f"{probe.model} encodes {probe.positive} vs {probe.negative} best at state {best} (AUROC {_fmt(probe.auroc[best])})"
            )
    summary = "; ".join(summary_parts) + "." if summary_parts else "Nothing to compare."
    paragraphs = [
        f"Every checkpoint reads the same inputs; one vector per sample is taken at {position} after every layer "
        "(state 0 = embeddings, state l + 1 = the residual stream after decoder layer l, before the final norm).",
        "<b>CKA</b> (centered kernel alignment) says how similar two checkpoints' representations of the same samples "
        "are at each layer: 1 = the same up to rotation and scale. Plain linear CKA is biased upward when the hidden size "
        "exceeds the number of samples (unrelated representations then score near 1); the debiased CKA (unbiased HSIC, "
        "dashed) scores unrelated representations near 0. Both are computed in float64.",
        f"<b>Probes</b>: a logistic regression per layer (C = {config['C']}, standardized features) predicts one group "
        f"from the other; classes are balanced by subsampling the larger one; the score is the held-out AUROC of "
        f"{config['folds']}-fold stratified cross-validation. Chance is 0.5; the dotted lines are the same probe trained on "
        f"shuffled labels. A group with fewer than {config['min_per_class']} samples is not probed.",
    ]
    tables = []
    if result.cka:
        columns = (
            ["state"]
            + [f"{c.a} vs {c.b}" for c in result.cka]
            + [f"{c.a} vs {c.b} (debiased)" for c in result.cka]
        )
        rows = [
            [str(s)]
            + [_fmt(c.linear[s], 3) for c in result.cka]
            + [_fmt(c.debiased[s], 3) for c in result.cka]
            for s in range(result.states)
        ]
        tables.append(Table(columns, rows, "Linear CKA per state"))
    rows = []
    for probe in result.probes:
        if probe.status != "ok":
            rows.append(
                [
                    probe.model,
                    f"{probe.positive} vs {probe.negative}",
                    f"{probe.n_positive} / {probe.n_negative}",
                    probe.status,
                    "",
                    "",
                ]
            )
            continue
        best = max(range(len(probe.auroc)), key=lambda i: probe.auroc[i])
        control = _fmt(max(probe.control)) if probe.control else "n/a"
        rows.append(
            [
                probe.model,
                f"{probe.positive} vs {probe.negative}",
                f"{probe.n_positive} / {probe.n_negative} ({probe.n_used} each used)",
                str(best),
                f"{_fmt(probe.auroc[best])} ± {_fmt(probe.auroc_std[best])}",
                control,
            ]
        )
    if rows:
        tables.append(
            Table(
                [
                    "model",
                    "task",
                    "group sizes",
                    "best state",
                    "AUROC at best state (± fold std)",
                    "max control AUROC",
                ],
                rows,
                "Linear probes",
            )
        )
    figs = []
    if "cka" in figures:
        figs.append(("Linear CKA per state for each pair of checkpoints (dashed: debiased).", figures["cka"]))
    if "probes" in figures:
        figs.append(("Held-out probe AUROC per state (dotted: shuffled-label control).", figures["probes"]))
    return Section(
        "representation", "Representation similarity (CKA and probes)", summary, paragraphs, tables, figs
    )


def register_entries() -> None:
    register(
        "representation", ReportEntry(plot=plot_representation, section=section_representation, order=63)
    )

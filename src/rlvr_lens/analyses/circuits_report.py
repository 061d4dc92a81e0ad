"""How layer localization (:class:`rlvr_lens.analyses.circuits.CircuitsResult`) appears in the report.

Figures, per sample group: patching recovery curves (both directions, attention and MLP,
with the verdict group's bootstrap band), the layer x component JSD heatmaps of the MLP
counterfactuals, and the logit-lens emergence curves (mean answer log-probability per
layer, base vs tuned). Registered for the ``circuits`` kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register

#: groups drawn, in this order, when present and non-empty
GROUP_ORDER = ("leakage", "stable", "lost", "never", "leaked", "clean", "all")


def _groups(result) -> list[str]:
    present = [g for g in GROUP_ORDER if result.groups.get(g)]
    return present + [g for g in result.groups if g not in present and result.groups[g]]


def _patching_figure(result):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from rlvr_lens.analyses.patching import group_recovery

    patching = result.patching
    fig, axes = plt.subplots(1, len(patching.directions), figsize=(6 * len(patching.directions), 3.8), squeeze=False)
    styles = {"attn": "--", "mlp": "-"}
    for axis, direction in zip(axes[0], patching.directions):
        for g, group in enumerate(_groups(result)):
            recovery = group_recovery(patching, direction.direction, result.groups[group])
            for component in patching.config["components"]:
                idx = [v for v, var in enumerate(patching.variants) if var.component == component]
                y = [np.nan if recovery[v] is None else recovery[v] for v in idx]
                axis.plot(range(len(idx)), y, styles.get(component, "-"), color=f"C{g}", label=f"{group} {component}")
        if direction.direction == "tuned_into_base":
            for verdict in result.verdicts:
                for curve in verdict.curves:
                    if curve.name.startswith("recovery") and any(v is not None for v in curve.lo):
                        lo = [np.nan if v is None else v for v in curve.lo]
                        hi = [np.nan if v is None else v for v in curve.hi]
                        axis.fill_between(range(len(lo)), lo, hi, alpha=0.12, color="grey")
        axis.axhline(0, color="k", lw=0.5), axis.axhline(1, color="k", lw=0.5, ls=":")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel(f"first layer of the patched window (width {patching.config['width']})")
        axis.set_ylabel("normalized recovery")
        axis.set_title(f"{direction.donor} -> {direction.receiver}")
        axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _heatmap_figure(result):
    import matplotlib.pyplot as plt

    cf = result.counterfactual
    group = next((g for g in ("leakage", "leaked") if result.groups.get(g)), "all")
    indices = result.groups.get(group) or list(range(len(cf.sample_ids)))
    panels = []
    if cf.restore:
        panels.append((f"{cf.tuned} with {cf.base}'s weights restored", np.asarray(cf.restore_jsd, float)[indices].mean(0), cf.restore))
    for model, grid in cf.ablation_jsd.items():
        panels.append((f"{model}: mean / random ablation", np.asarray(grid, float)[indices].mean(0), cf.ablations))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 0.9 + 0.3 * max(6, cf.num_layers)), squeeze=False)
    for axis, (title, grid, columns) in zip(axes[0], panels):
        image = axis.imshow(grid, aspect="auto", cmap="magma", origin="lower")
        axis.set_xticks(range(len(columns)), columns, rotation=30, fontsize=8)
        axis.set_ylabel("layer")
        axis.set_title(title, fontsize=9)
        fig.colorbar(image, ax=axis, label="JSD (nats)")
    fig.suptitle(f"MLP counterfactuals, mean over the {group} group ({len(indices)} samples)", fontsize=10)
    fig.tight_layout()
    return fig


def _lens_figure(result):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    lens = result.lens
    fig, axis = plt.subplots(figsize=(7, 3.8))
    for g, group in enumerate(_groups(result)):
        for model, style in zip(lens.models, ("--", "-")):
            curves = np.asarray([model.mean_logprob(i) for i in result.groups[group]], float)
            axis.plot(range(-1, lens.num_layers), curves.mean(0), style, color=f"C{g}", label=f"{group} {model.name}")
    axis.set_xlabel("lens state (-1 = embeddings, l = after layer l)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("answer log-prob (nats, mean)")
    axis.set_title("logit lens: where the gold answer emerges")
    axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_circuits(result) -> dict:
    figures = {}
    if result.patching is not None and result.groups:
        figures["patching"] = _patching_figure(result)
    if result.counterfactual is not None:
        figures["jsd"] = _heatmap_figure(result)
    if result.lens is not None and result.groups:
        figures["lens"] = _lens_figure(result)
    return figures


def _fmt(value) -> str:
    return "n/a" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))


def section_circuits(result, figures: dict[str, Path]) -> Section:
    verdicts = result.verdicts
    summary = " ".join(f"[{v.group}, {v.n_samples} samples] {v.message}" for v in verdicts) or "No verdict group present."
    paragraphs = [
        f"Base {result.base} vs tuned {result.tuned}, {result.num_layers} layers, {len(result.sample_ids)} samples analysed "
        f"(at most {result.config.get('max_per_group')} per group). The answer is teacher-forced after the "
        f"<code>{result.config.get('context')}</code> context. Patching copies a block's output from one model into the "
        "other on the same input; recovery 1 means the receiver then scores the gold answer as the donor does. "
        "Weight restore runs the tuned model with one layer's base MLP weights; JSD is in nats."
    ]
    tables = [Table(["group", "samples", "analysed"], [[g, str(result.group_sizes.get(g, 0)), str(len(result.groups.get(g, [])))] for g in result.groups], caption="sample groups")]
    rows = []
    for v in verdicts:
        for label, window in (("anchor", v.anchor), ("adapter", v.adapter)):
            if window is not None:
                rows += [[v.group, f"{label} {window.start}-{window.end}", e] for e in window.evidence]
        if v.anchor is None:
            rows.append([v.group, v.status, v.message])
    if rows:
        tables.append(Table(["group", "window", "evidence"], rows, caption="localization verdict"))
    if result.lens is not None:
        lens_rows = []
        for group in _groups(result):
            for model in result.lens.models:
                idx = result.groups[group]
                first = [model.first_top1[i] for i in idx if model.first_top1[i] is not None]
                rise = [model.largest_rise[i] for i in idx]
                lens_rows.append([group, model.name, _fmt(float(np.median(first)) if first else None), f"{1 - len(first) / len(idx):.0%}", _fmt(float(np.median(rise)))])
        tables.append(Table(["group", "model", "median first top-1 layer", "never top-1", "median largest-rise layer"], lens_rows, caption="logit-lens emergence"))
    if result.patching is not None and result.patching.config.get("accuracy", "none") != "none":
        acc_rows = []
        for d in result.patching.directions:
            for group in _groups(result):
                idx = result.groups[group]
                acc = np.asarray([d.correct[i] for i in idx], float).mean(0)
                best = int(np.argmax(acc))
                var = result.patching.variants[best]
                acc_rows.append([f"{d.donor} -> {d.receiver}", group, f"{np.mean([d.unpatched_correct[i] for i in idx]):.2f}", f"{acc[best]:.2f} ({var.component} {var.layers})"])
        tables.append(Table(["direction", "group", "unpatched accuracy", "best patched accuracy (window)"], acc_rows, caption=f"greedy accuracy, patch {result.patching.config['accuracy']}"))
    captions = {
        "patching": "normalized recovery per window, per group (solid MLP, dashed attention; grey: bootstrap band of the verdict group)",
        "jsd": "JSD between normal and counterfactual next-token distributions at the answer positions",
        "lens": "mean teacher-forced answer log-probability per lens state (dashed base, solid tuned)",
    }
    return Section(
        anchor="circuits",
        title="Layer localization (logit lens, activation patching, MLP counterfactuals)",
        summary=summary,
        paragraphs=paragraphs,
        tables=tables,
        figures=[(captions[name], path) for name, path in figures.items()],
    )


register("circuits", ReportEntry(plot=plot_circuits, section=section_circuits, order=60))

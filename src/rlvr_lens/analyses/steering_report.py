"""How neuron key scaling appears in the report: accuracy and answer probability against alpha."""

from __future__ import annotations

import math
from pathlib import Path

from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def median_prob(curve, alpha_index: int) -> float:
    values = sorted(v for v in curve.answer_prob[alpha_index] if not math.isnan(v))
    return values[len(values) // 2] if values else float("nan")


def response_shapes(curve) -> dict[str, float]:
    """Shares of scored samples whose correctness against alpha never changes, flips once (a switch) or more."""
    counts = {"constant": 0, "switch": 0, "erratic": 0}
    n = len(curve.correct[0]) if curve.correct else 0
    for j in range(n):
        flips = sum(curve.correct[a][j] != curve.correct[a + 1][j] for a in range(len(curve.correct) - 1))
        counts["constant" if flips == 0 else "switch" if flips == 1 else "erratic"] += 1
    return {k: v / n for k, v in counts.items()} if n else {}


def plot_steering(result) -> dict:
    import matplotlib.pyplot as plt

    layers = sorted({c.layer for c in result.curves})
    if not layers:
        return {}
    fig, axes = plt.subplots(2, len(layers), figsize=(3.6 * len(layers), 6.0), squeeze=False, sharey="row")
    for col, layer in enumerate(layers):
        for index, curve in enumerate(c for c in result.curves if c.layer == layer):
            style = "-" if curve.neurons == "selected" else ":"
            label = f"{curve.selection} {curve.scope} {curve.neurons}"
            axes[0][col].plot(result.alphas, curve.accuracy, style, marker="o", color=f"C{index // 2}", label=label)
            axes[1][col].plot(result.alphas, [median_prob(curve, a) for a in range(len(result.alphas))], style, marker="o", color=f"C{index // 2}")
        axes[0][col].set_title(f"layer {layer}", fontsize=9)
        axes[1][col].set_xlabel("alpha")
    axes[0][0].set_ylabel("greedy accuracy (scored samples)")
    axes[1][0].set_ylabel("median answer probability per token")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return {"dose": fig}


def section_steering(result, figures: dict[str, Path]) -> Section:
    alphas = result.alphas
    groups = list(result.groups)
    columns = ["layer", "selection", "scope", "neurons", "norm ratio", *[f"acc a={a:g}" for a in alphas], "switch share"]
    rows = []
    for c in result.curves:
        rows.append(
            [str(c.layer), c.selection, c.scope, c.neurons, _fmt(c.norm_ratio), *[_fmt(v) for v in c.accuracy], _fmt(response_shapes(c).get("switch"))]
        )
    tables = [Table(columns, rows, f"Greedy accuracy on the {len(result.scored)} scored samples against alpha")]
    for g in groups:
        tables.append(
            Table(
                ["layer", "selection", "scope", "neurons", *[f"a={a:g}" for a in alphas]],
                [[str(c.layer), c.selection, c.scope, c.neurons, *[_fmt(v) for v in c.groups.get(g, [])]] for c in result.curves],
                f"Accuracy of group {g} against alpha",
            )
        )
    summary = (
        f"{len(result.curves)} dose-response curves of {result.model}: the top-{result.config['top_n']} neurons' "
        f"activations multiplied by alpha in {', '.join(f'{a:g}' for a in alphas)} (1 = unmodified)."
    )
    paragraphs = [
        "A neuron's key is its activation (the input of down_proj) at the last prompt position. Selections: the study's "
        "|key| x (1 + 10 x overlap) (overlap: share of the answer's tokens among the top-10 tokens of the neuron's "
        "output direction through the final norm and unembedding), |key| alone, and |gradient x activation| of the "
        "reference text's log-probability. Per-sample sets are chosen for each sample; the shared set is chosen on "
        f"{len(result.calibration)} calibration samples that are never scored. The scaling holds through decoding.",
        "Random control: as many random neurons of about the same activation magnitude (norm ratio near 1). "
        "Switch share: samples whose correctness changes exactly once along alpha (an all-or-nothing switch).",
    ]
    figs = [("Accuracy (top) and median answer probability (bottom) against alpha; dotted: random control.", figures["dose"])] if "dose" in figures else []
    return Section("steering", "Neuron key scaling", summary, paragraphs, tables, figs)


def register_entries() -> None:
    register("steering", ReportEntry(plot=plot_steering, section=section_steering, order=75))

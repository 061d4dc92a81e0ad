"""How trajectory separation (:class:`rlvr_lens.analyses.trajectory.TrajectoryResult`) appears
in the report: the separation curve of each model against its permutation band, and a table
of peak and significant layers. :mod:`rlvr_lens.analyses.trajectory` registers the entry.
"""

from __future__ import annotations

from pathlib import Path

from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register


def _fmt(value, digits: int = 3) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}f}"


def _separation_figure(result, curves, xlabel: str):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    count = len(curves)
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 3.6), sharey=True, squeeze=False)
    layers = list(range(result.layers))
    for axis, model in zip(axes[0], curves):
        axis.plot(layers, model.separation, marker="o", color="tab:red", label="observed")
        axis.plot(layers, model.null_mean, color="grey", lw=1, label="null mean")
        band = f"{1 - result.config['alpha']:.0%} null band"
        axis.fill_between(layers, 0, model.band, color="grey", alpha=0.2, label=band)
        axis.axhline(model.max_threshold, color="black", ls=":", lw=1, label="family-wise threshold")
        significant = model.significant_layers
        if significant:
            values = [model.separation[i] for i in significant]
            axis.scatter(significant, values, s=70, facecolors="none", edgecolors="black", zorder=3)
        axis.set_title(model.name, fontsize=10)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel(xlabel)
    axes[0][0].set_ylabel(f"separation {result.group_a} vs {result.group_b}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_trajectory(result) -> dict:
    if result.status != "ok" or not result.models:
        return {}
    figures = {
        "separation": _separation_figure(result, result.models, "decoder layer (velocity h(l+1) - h(l))")
    }
    if result.vector_fields:
        curves = [f.separation for f in result.vector_fields]
        figures["vector-field"] = _separation_figure(
            result, curves, "decoder layer (fitted field at the midpoint)"
        )
    return figures


def section_trajectory(result, figures: dict[str, Path]) -> Section:
    sizes = ", ".join(f"{name}: {size}" for name, size in result.group_sizes.items())
    title = "Trajectory separation"
    if result.status != "ok":
        return Section(
            "trajectory",
            title,
            f"Not computed for {result.group_a} vs {result.group_b}: {result.status}.",
            [f"Group sizes: {sizes}."],
        )
    alpha = result.config["alpha"]
    findings = []
    for model in result.models:
        if model.significant_layers:
            findings.append(
                f"{model.name}: significant at layers {', '.join(map(str, model.significant_layers))} (peak {model.peak_layer})"
            )
        else:
            findings.append(
                f"{model.name}: no layer significant (peak {model.peak_layer}, within the null band)"
            )
    summary = f"{result.group_a} vs {result.group_b} ({sizes}): " + "; ".join(findings) + "."
    paragraphs = [
        "Each sample's hidden state at the answer position (the last prompt token), read after every layer, is a "
        "trajectory through the layers; its velocity at layer l is what decoder layer l adds to the residual stream. "
        f"The separation at layer l is the distance between the {result.group_a} and {result.group_b} groups' mean "
        "velocities, in units of the pooled spread of a velocity around its group mean (dimensionless; chance level "
        "about sqrt(1/n_A + 1/n_B)).",
        f"Significance is a permutation test: the group labels were shuffled {result.config['permutations']} times "
        f"(seed {result.config['seed']}). The grey band is the {1 - alpha:.0%} quantile of the shuffled curves at each "
        f"layer; a layer is called significant when it exceeds the {1 - alpha:.0%} quantile of the shuffled curves' "
        f"maximum over layers (family-wise error {alpha} over all layers; circled points).",
    ]
    rows = []
    for model in result.models:
        peak = model.peak_layer
        rows.append(
            [
                model.name,
                str(peak),
                _fmt(model.separation[peak]),
                _fmt(model.band[peak]),
                _fmt(model.max_threshold),
                _fmt(model.p_familywise[peak]),
                ", ".join(map(str, model.significant_layers)) or "none",
            ]
        )
    table = Table(
        [
            "model",
            "peak layer",
            "separation at peak",
            "per-layer band at peak",
            "family-wise threshold",
            "family-wise p at peak",
            "significant layers",
        ],
        rows,
        "Velocity separation per model",
    )
    figs = (
        [("Separation per decoder layer against the permutation null.", figures["separation"])]
        if "separation" in figures
        else []
    )
    tables = [table]
    if result.vector_fields:
        paragraphs.append(
            "The study's neural-ODE view: one vector field dz/dt = f(z, t) (a small MLP on the top principal "
            "components of the states, integrated with RK4) is fitted to every sample's trajectory without the group "
            "labels; its separation is the same statistic applied to the field at each layer's midpoint, with the same "
            "permutation test. A smooth field spreads a difference over neighbouring layers; read its peak, and the "
            "fit quality (r2), against the model-free curve above."
        )
        rows = []
        for fit in result.vector_fields:
            curve = fit.separation
            rows.append(
                [
                    fit.name,
                    str(fit.components),
                    _fmt(fit.explained_variance),
                    _fmt(fit.fit_r2),
                    str(curve.peak_layer),
                    _fmt(curve.separation[curve.peak_layer]),
                    _fmt(curve.max_threshold),
                    ", ".join(map(str, curve.significant_layers)) or "none",
                ]
            )
        poor = [fit.name for fit in result.vector_fields if not fit.fit_r2 > 0.5]
        if poor:
            paragraphs.append(
                f"<b>The field does not fit</b> the trajectories of {', '.join(poor)} (r2 <= 0.5), so its separation "
                "says nothing there. A common cause: at the answer position every sample's first state is the embedding "
                "of the same template token, and a flow from one starting point gives every sample the same trajectory."
            )
        columns = ["model", "components", "variance kept", "fit r2", "peak layer", "separation at peak"]
        columns += ["family-wise threshold", "significant layers"]
        tables.append(Table(columns, rows, "Neural-ODE vector-field separation per model"))
        if "vector-field" in figures:
            figs.append(
                (
                    "Separation of the fitted vector field per layer against its permutation null.",
                    figures["vector-field"],
                )
            )
    return Section("trajectory", title, summary, paragraphs, tables, figs)


def register_entries() -> None:
    register("trajectory", ReportEntry(plot=plot_trajectory, section=section_trajectory, order=62))

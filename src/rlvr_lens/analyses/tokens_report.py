"""How token divergence and cross-sampling results appear in the report.

Figures: the JSD percentile curve (log scale) and the position profile for
``token_divergence``; accuracy against the share of replaced tokens for
``cross_sampling``. :mod:`rlvr_lens.analyses.tokens` registers both entries on import.
"""

from __future__ import annotations

from pathlib import Path

from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register

_FLOOR = 1e-8  # plotted in place of a JSD of 0 on log axes


def _fmt(value, digits: int = 3) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"


def plot_token_divergence(result) -> dict:
    import matplotlib.pyplot as plt

    figures = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for axis, low in zip(axes, (0.0, 90.0)):
        for response in result.responses:
            points = [(x, max(v, _FLOOR)) for x, v in zip(response.percentiles, response.jsd_percentiles) if x >= low]
            if points:
                axis.plot(*zip(*points), marker=".", label=f"{response.responses_from} responses")
        for threshold in (1e-3, 1e-2, 0.1):
            axis.axhline(threshold, color="grey", lw=0.6, ls=":")
        axis.set_yscale("log")
        axis.set_xlabel("percentile of response tokens")
    axes[0].set_ylabel("JSD(base, tuned) [nats]")
    axes[0].set_title(f"Where {result.tuned} moved from {result.base}: JSD percentiles", fontsize=10)
    axes[1].set_title("the top 10% of tokens", fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    figures["percentiles"] = fig

    fig, axis = plt.subplots(figsize=(6.5, 3.8))
    for response in result.responses:
        edges = response.position_edges
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        points = [(c, v) for c, v in zip(centres, response.position_mean_jsd) if v is not None]
        if points:
            axis.plot(*zip(*points), marker="o", label=f"{response.responses_from} responses")
    axis.set_xlabel("relative position in the response (0 = first token, 1 = end)")
    axis.set_ylabel("mean JSD [nats]")
    axis.set_xlim(0, 1)
    axis.set_title("Position profile of the divergence", fontsize=10)
    axis.legend(fontsize=8)
    fig.tight_layout()
    figures["position"] = fig
    return figures


def section_token_divergence(result, figures: dict[str, Path]) -> Section:
    headline = []
    for response in result.responses:
        headline.append(
            f"on {response.responses_from} responses ({response.n_tokens} tokens), "
            f"{_fmt(100 * response.share_above.get('0.1', float('nan')), 2)}% of tokens have JSD > 0.1 nats and "
            f"{_fmt(100 * response.share_above.get('0.01', float('nan')), 2)}% have JSD > 0.01"
        )
    summary = f"{result.tuned} vs {result.base}: " + "; ".join(headline) + "."
    paragraphs = [
        "Both models are teacher-forced on the same responses; at every response position their next-token "
        "distributions P (base) and Q (tuned) are compared. JSD is the Jensen-Shannon <i>divergence</i> in nats "
        "(natural log; between 0 and ln 2 = 0.693), not the JS distance (its square root). A tuned model that changed "
        "only a few decisions shows a curve that stays near zero and rises only in its last percentiles.",
        "Top-k overlap is |top-k(P) ∩ top-k(Q)| / k; the rank is the position of the tuned model's most likely token "
        "in the base's ranking (1 = the base agrees).",
    ]
    tables = []
    rows = []
    for r in result.responses:
        m = r.means
        rows.append(
            [
                r.responses_from,
                str(r.n_tokens),
                _fmt(r.accuracy),
                _fmt(m.get("jsd")),
                *(_fmt(r.share_above.get(k)) for k in ("0.001", "0.01", "0.1")),
                _fmt(m.get("kl_base_tuned")),
                _fmt(m.get("kl_tuned_base")),
                _fmt(m.get("entropy_base")),
                _fmt(m.get("entropy_tuned")),
                *(_fmt(m.get(f"top{k}_overlap")) for k in (1, 5, 10)),
                _fmt(m.get("argmax_changed")),
            ]
        )
    tables.append(
        Table(
            ["responses", "tokens", "accuracy", "mean JSD", ">1e-3", ">1e-2", ">0.1", "KL(P||Q)", "KL(Q||P)", "H(P)",
             "H(Q)", "top-1", "top-5", "top-10", "argmax changed"],
            rows,
            "Per-token means (nats) and shares of tokens above each JSD threshold",
        )
    )
    for r in result.responses:
        if r.groups:
            tables.append(
                Table(
                    ["group", "samples", "tokens", "accuracy", "mean JSD", ">1e-3", ">1e-2", ">0.1"],
                    [
                        [name, str(g.n_samples), str(g.n_tokens), _fmt(g.accuracy), _fmt(g.mean_jsd)]
                        + [_fmt(g.share_above.get(k)) for k in ("0.001", "0.01", "0.1")]
                        for name, g in r.groups.items()
                    ],
                    f"By sample label ({r.responses_from} responses); AUROC of per-sample mean JSD, leaked vs clean: "
                    f"{_fmt(r.auroc_mean_jsd)}",
                )
            )
        tables.append(
            Table(
                ["sample", "position", "context", "token", "base top", "tuned top", "JSD", "rank"],
                [
                    [t.sample_id, f"{t.position} ({t.relative_position:.2f})", repr(t.context[-60:]), repr(t.token),
                     repr(t.base_top), repr(t.tuned_top), _fmt(t.jsd), str(t.tuned_top_rank)]
                    for t in r.top_tokens[:12]
                ],
                f"Most shifted tokens ({r.responses_from} responses)",
            )
        )
    figs = []
    if "percentiles" in figures:
        figs.append(("JSD between base and tuned next-token distributions at each percentile of response tokens "
                     "(log scale; dotted lines at 1e-3, 1e-2, 0.1); right: the top 10% enlarged.", figures["percentiles"]))
    if "position" in figures:
        figs.append(("Mean JSD against relative position in the response (binned).", figures["position"]))
    return Section("token_divergence", f"Token-level divergence: {result.tuned} vs {result.base}", summary,
                   paragraphs, tables, figs)


def plot_cross_sampling(result) -> dict:
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.5, 4))
    styles = {"forward": ("tab:blue", f"forward: {result.base} drives, {result.tuned} tokens taken"),
              "reverse": ("tab:red", f"reverse: {result.tuned} drives, {result.base} tokens taken")}
    other_plain = {"forward": result.tuned_accuracy, "reverse": result.base_accuracy}
    for direction, (color, label) in styles.items():
        points = sorted((p.share_replaced, p.accuracy) for p in result.points if p.direction == direction)
        if points:
            axis.plot(*zip(*points), marker="o", color=color, label=label)
            # every token from the other model = the other model's plain greedy decoding (threshold 0)
            axis.plot([points[-1][0], 1.0], [points[-1][1], other_plain[direction]], color=color, ls=":", marker="o",
                      markerfacecolor="white", markevery=[1])
    axis.axhline(result.base_accuracy, color="tab:blue", ls="--", lw=0.8, label=f"plain {result.base}")
    axis.axhline(result.tuned_accuracy, color="tab:red", ls="--", lw=0.8, label=f"plain {result.tuned}")
    axis.set_xlabel("share of tokens taken from the other model (log scale)")
    axis.set_xscale("symlog", linthresh=1e-3)
    axis.set_xlim(0, 1.05)
    axis.set_ylabel("accuracy (greedy)")
    axis.set_ylim(-0.02, 1.02)
    axis.set_title("Cross-sampling: accuracy against replaced tokens", fontsize=10)
    axis.legend(fontsize=7)
    fig.tight_layout()
    return {"accuracy": fig}


def section_cross_sampling(result, figures: dict[str, Path]) -> Section:
    forward = [p for p in result.points if p.direction == "forward" and p.threshold is not None]
    summary = f"Plain greedy accuracy: {result.base} {_fmt(result.base_accuracy)}, {result.tuned} {_fmt(result.tuned_accuracy)}."
    if forward:
        best = max(forward, key=lambda p: (p.accuracy, -p.share_replaced))
        summary += (
            f" Taking {result.tuned}'s token at only {_fmt(100 * best.share_replaced, 2)}% of positions "
            f"(JSD > {_fmt(best.threshold)}) while {result.base} drives gives accuracy {_fmt(best.accuracy)}."
        )
    paragraphs = [
        "Forward cross-sampling decodes greedily with the base model but, at every step where the Jensen-Shannon "
        "divergence (nats) between the two models' next-token distributions exceeds the threshold, appends the tuned "
        "model's most likely token instead. Reverse cross-sampling lets the tuned model drive and takes the base's "
        "token there. If forward cross-sampling recovers the tuned accuracy while replacing few tokens, the gain of "
        "RLVR sits in those few high-divergence decisions; if reverse cross-sampling loses it, they are necessary too.",
        "Both models keep their own KV cache over the shared prefix, so each step costs one token per model.",
    ]
    rows = []
    for p in result.points:
        rows.append([
            p.direction,
            "plain" if p.threshold is None else _fmt(p.threshold) + (f" (top {p.top_fraction:g})" if p.top_fraction else ""),
            _fmt(p.accuracy),
            _fmt(p.share_replaced),
            f"{p.replaced_per_response:.1f}",
            f"{p.changed_per_response:.1f}",
            f"{p.mean_length:.1f}",
            ", ".join(f"{k} {_fmt(v)}" for k, v in p.group_accuracy.items()) or "-",
        ])
    tables = [Table(["direction", "JSD threshold", "accuracy", "share replaced", "replaced / response",
                     "changed / response", "tokens / response", "accuracy by group"], rows,
                    "Cross-sampling runs (greedy)")]
    figs = [("Accuracy against the share of tokens taken from the other model (open circle at 1: the other model's "
             "plain greedy decoding); dashed: plain decoding.",
             figures["accuracy"])] if "accuracy" in figures else []
    return Section("cross_sampling", f"Cross-sampling: {result.tuned} vs {result.base}", summary, paragraphs, tables, figs)


def register_entries() -> None:
    register("token_divergence", ReportEntry(plot=plot_token_divergence, section=section_token_divergence, order=40))
    register("cross_sampling", ReportEntry(plot=plot_cross_sampling, section=section_cross_sampling, order=41))

"""How weight forensics (:class:`rlvr_lens.analyses.weights.WeightsResult`) appears in the report.

Figures: per tuned run, layer x module heatmaps of update sparsity, relative update norm,
principal-angle rotation and principal-subspace energy; the spectra of one chosen matrix.
:mod:`rlvr_lens.analyses.weights` registers this entry for the ``weights`` kind.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rlvr_lens.models.parameter_names import module_sort_key
from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry

_MATRIX_MODULES = ("q", "k", "v", "o", "gate", "up", "down")


def _grid(rows, value) -> tuple[np.ndarray, list[int], list[str]]:
    """``[layers, modules]`` array of ``value(row)`` over the decoder-layer matrices (NaN where absent)."""
    layer_rows = [r for r in rows if r.layer is not None and len(r.shape) >= 2]
    layers = sorted({r.layer for r in layer_rows})
    modules = sorted({r.module for r in layer_rows}, key=module_sort_key)
    grid = np.full((len(layers), len(modules)), np.nan)
    for r in layer_rows:
        v = value(r)
        if v is not None:
            grid[layers.index(r.layer), modules.index(r.module)] = v
    return grid, layers, modules


def _log_ratio(r):
    if not r.subspaces or r.subspaces[0].principal_share is None:
        return None
    s = r.subspaces[0]
    return math.log10(max(s.principal_share, 1e-12) / s.principal_share_random)


def _log_norm(r):
    return None if not r.relative_norm else math.log10(r.relative_norm)


def plot_weights(result) -> dict:
    import matplotlib.pyplot as plt

    figures = {}
    panels = [
        ("update sparsity (share unchanged)", lambda r: r.sparsity, "viridis", (0, 1)),
        ("log10 relative update norm ||dW||/||W||", _log_norm, "magma", None),
        ("max principal angle, top-k left subspace (deg)", lambda r: r.subspaces[0].angle_left_max_deg if r.subspaces else None, "cividis", None),
        ("principal-subspace energy: log10(share / random)", _log_ratio, "coolwarm", "centered"),
    ]
    for run in result.runs:
        rows = result.rows(run)
        fig, axes = plt.subplots(1, 4, figsize=(16, 1.2 + 0.22 * max(8, len({r.layer for r in rows}))), squeeze=False)
        for axis, (title, value, cmap, limits) in zip(axes[0], panels):
            grid, layers, modules = _grid(rows, value)
            if not layers or np.isnan(grid).all():
                axis.set_axis_off()
                axis.set_title(f"{title}\n(not computed)", fontsize=9)
                continue
            kwargs = {}
            if limits == "centered":
                bound = max(1e-6, float(np.nanmax(np.abs(grid))))
                kwargs = {"vmin": -bound, "vmax": bound}
            elif limits:
                kwargs = {"vmin": limits[0], "vmax": limits[1]}
            image = axis.imshow(grid, aspect="auto", cmap=cmap, interpolation="nearest", **kwargs)
            axis.set_xticks(range(len(modules)), modules, fontsize=8)
            step = max(1, len(layers) // 16)
            axis.set_yticks(range(0, len(layers), step), [str(x) for x in layers[::step]], fontsize=8)
            axis.set_xlabel("module")
            axis.set_ylabel("layer")
            axis.set_title(title, fontsize=9)
            fig.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
        fig.suptitle(f"{run} vs {result.base}: what changed, per layer and module", fontsize=11)
        fig.tight_layout()
        figures[f"heatmaps-{run}"] = fig

    if result.spectra:
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
        first = result.spectra[0]
        ranks = np.arange(1, len(first.s_base) + 1)
        axes[0].semilogy(ranks, first.s_base, color="black", label=f"{result.base} W")
        for detail in result.spectra:
            axes[0].semilogy(ranks, np.maximum(detail.s_update, 1e-30), label=f"{detail.run} dW")
            drift = (np.array(detail.s_tuned) - np.array(detail.s_base)) / np.maximum(np.array(detail.s_base), 1e-30)
            axes[1].plot(ranks, drift, label=detail.run)
            energy = np.array(detail.right_energy) * len(detail.right_energy)
            window = max(1, len(energy) // 50)
            smooth = np.convolve(energy, np.ones(window) / window, mode="same")
            axes[2].semilogy(ranks, np.maximum(smooth, 1e-12), label=detail.run)
        axes[0].set_title("singular values: base W and each update dW", fontsize=9)
        axes[1].set_title("relative change of each singular value of W", fontsize=9)
        axes[2].axhline(1.0, color="grey", linestyle="--", linewidth=1, label="random update")
        rows, cols = result.row(first.run, first.name).shape[:2]
        side = "input direction v_i" if rows >= cols else "output direction u_i"  # the shorter side
        axes[2].set_title(f"update energy along base {side}, x random (smoothed)", fontsize=9)
        for axis in axes:
            axis.set_xlabel("singular-value rank i of the base matrix (1 = largest)")
            axis.legend(fontsize=7)
        fig.suptitle(f"Spectra of {first.name}", fontsize=11)
        fig.tight_layout()
        figures["spectrum"] = fig
    return figures


def _fmt(value, spec=".3g") -> str:
    return "n/a" if value is None else format(value, spec)


def _overall(rows) -> dict:
    from rlvr_lens.analyses.weights import _weighted_gate

    n = sum(r.n_params for r in rows)
    base_sq = sum(r.base_norm**2 for r in rows)
    update_sq = sum(r.update_norm**2 for r in rows)
    subs = [r.subspaces[0] for r in rows if r.subspaces and r.subspaces[0].principal_share is not None]
    return {
        "sparsity": sum(r.sparsity * r.n_params for r in rows) / n if n else None,
        "relative_norm": math.sqrt(update_sq / base_sq) if base_sq else None,
        "angle": float(np.mean([s.angle_left_max_deg for s in subs])) if subs else None,
        "share": float(np.mean([s.principal_share for s in subs])) if subs else None,
        "random": float(np.mean([s.principal_share_random for s in subs])) if subs else None,
        "rank_err": _mean_rank_error(rows),
        "gate": _weighted_gate(rows),
    }


def _mean_rank_error(rows):
    values = [r.rank_errors for r in rows if r.rank_errors]
    if not values:
        return None
    return {k: float(np.mean([v[k] for v in values])) for k in values[0]}


def section_weights(result, figures: dict[str, Path]) -> Section:
    cfg = result.config
    runs = result.runs
    summaries = []
    for run in runs:
        o = _overall(result.rows(run))
        text = (
            f"<b>{run}</b> left {_fmt(100 * o['sparsity'], '.1f')}% of the base's parameters bit-identical and moved "
            f"the weights by {_fmt(o['relative_norm'])} of their norm"
        )
        if o["share"] is not None:
            text += (
                f"; on average {_fmt(100 * o['share'])}% of its update energy lies in the top-k principal subspace "
                f"of the base matrices ({_fmt(o['share'] / o['random'], '.3g')}x what a random update would put there), "
                f"and the top-k left subspaces rotated by {_fmt(o['angle'])} degrees at most"
            )
        if o["gate"] is not None:
            text += (
                f"; {_fmt(100 * o['gate'], '.3g')}% of its changed weights moved by less than bf16 can resolve "
                "(a bf16 copy would show them as unchanged)"
            )
        summaries.append(text + ".")
    if len(runs) >= 2:
        overall = {run: _overall(result.rows(run)) for run in runs}
        sparsest = max(runs, key=lambda r: overall[r]["sparsity"] or 0.0)
        smallest = min(runs, key=lambda r: overall[r]["relative_norm"] or 0.0)
        text = f"Of the tuned runs, <b>{sparsest}</b> changed the fewest weights and <b>{smallest}</b> moved them least"
        enrich = {r: o["share"] / o["random"] for r, o in overall.items() if o["share"] is not None and o["random"]}
        if len(enrich) >= 2:
            text += f"; <b>{min(enrich, key=enrich.get)}</b> kept its update furthest off the principal directions"
        summaries.append(text + ".")
    paragraphs = [
        "Each tuned checkpoint is compared tensor by tensor with the base, reading the files directly "
        f"(metrics: {cfg.get('metrics')}; device {result.device}; {len(result.matrices) // max(1, len(runs))} tensors per run).",
        "<b>Update sparsity</b> is the share of weights that tuning left exactly unchanged (bit-equal in the stored "
        f"precision); <i>within tolerance</i> also counts changes no larger than {cfg.get('tol')}. Reinforcement learning "
        "with verifiable rewards is reported to leave most weights untouched, supervised fine-tuning far fewer. "
        "When a checkpoint is stored in float32, the <b>precision gate</b> is the share of its changed weights whose "
        "change would disappear if both were rounded to bfloat16: sparsity that is produced by storage precision, not by "
        "the training signal.",
        "<b>Relative update norm</b> is ||W_tuned - W_base|| / ||W_base|| (Frobenius): how far the weights moved. "
        "<b>Spectral drift</b> is the relative change of the singular values; the <b>principal angles</b> measure how far "
        "the k most important input/output directions of a weight matrix (its top-k singular vectors, "
        f"k = {_fmt(100 * cfg.get('k_fraction', 0.01), '.3g')}% of the rank, and k = {cfg.get('k_fixed')}) rotated: "
        "0 degrees means the same directions.",
        "The <b>principal-subspace share</b> is the fraction of the update's energy ||dW||^2 that falls inside the "
        "base matrix's top-k singular directions on both sides. A random update puts k^2/(m n) there; a share far above "
        "that means the update reinforces what the matrix already does most (typical of SFT), a share at or below it "
        "means the update works <i>off the principal directions</i> (the claim of 'The Path Not Taken' for RLVR). "
        "The <b>stable rank</b> and <b>effective rank</b> of the update, and the error of its best rank-r "
        "approximation, say how low-rank the update is (what a LoRA of rank r could have learned).",
    ]
    if result.cross:
        paragraphs.append(
            "<b>Cross-run consistency</b>: for two tuned checkpoints of the same base, the Jaccard overlap of the sets of "
            "changed weights, against the overlap two independent random sets of the same sizes would have, and the cosine "
            "between the two updates, against 0 +- 1/sqrt(N) for unrelated updates. Overlap well above chance means the "
            "runs found the same sparse sub-network."
        )
    if any(r.mask_overlap for r in result.matrices):
        alpha = cfg.get("mask_alpha", 0.5)
        paragraphs.append(
            "<b>Principal and low-magnitude masks</b> (the mask form of 'The Path Not Taken'): of the weights a run changed, "
            f"the share that lies in the top {_fmt(100 * alpha, '.3g')}% of entries of the base's rank-k reconstruction "
            f"|W^(k)| (principal mask) and in the bottom {_fmt(100 * alpha, '.3g')}% of |W| (low-magnitude mask). An update "
            f"whose support ignores the base puts {_fmt(alpha, '.3g')} in each; the paper reports RLVR below chance on the "
            "principal mask and above it on the low-magnitude mask."
        )
    if result.consistency:
        paragraphs.append(
            "<b>Update direction across runs</b>: each run's whole update as one vector; the cosine of every pair, and of "
            "each run with the mean update of the others (the paper reports 0.91-0.95 for RLVR runs on different data). "
            "Unrelated updates give 0 +- 1/sqrt(N)."
        )
    if result.skipped:
        paragraphs.append(f"Not compared separately (tied to the input embedding): {', '.join(result.skipped)}.")

    tables = []
    for run in runs:
        agg = [a for a in result.aggregates if a.run == run and a.scope == "module"]
        rows = [
            [
                a.key,
                str(a.n_tensors),
                _fmt(a.sparsity, ".4f"),
                _fmt(a.tol_sparsity, ".4f"),
                _fmt(a.precision_gate, ".3f"),
                _fmt(a.relative_norm),
                _fmt(a.spectral_drift),
                _fmt(a.angle_left_max_deg),
                _fmt(a.angle_right_max_deg),
                _fmt(a.principal_share / a.principal_share_random if a.principal_share is not None else None, ".3g"),
                _fmt(a.stable_rank),
                _fmt(a.effective_rank),
            ]
            for a in agg
        ]
        tables.append(
            Table(
                [
                    "module",
                    "tensors",
                    "sparsity",
                    "within tol",
                    "precision gate",
                    "rel. norm",
                    "spectral drift",
                    "angle L (deg)",
                    "angle R (deg)",
                    "principal share / random",
                    "stable rank",
                    "eff. rank",
                ],
                rows,
                f"{run} vs {result.base}, per module type (means over layers; sparsity parameter-weighted)",
            )
        )
        errs = _mean_rank_error(result.rows(run))
        if errs:
            tables.append(
                Table(
                    ["rank r", "mean relative error of the best rank-r approximation of dW"],
                    [[k, _fmt(v, ".3f")] for k, v in errs.items()],
                    f"{run}: how low-rank the update is",
                )
            )
    if result.cross:
        pairs = sorted({(c.run_a, c.run_b) for c in result.cross})
        rows = []
        for a, b in pairs:
            group = [c for c in result.cross if (c.run_a, c.run_b) == (a, b)]
            jac = [c.jaccard for c in group if c.jaccard is not None]
            chance = [c.jaccard_chance for c in group if c.jaccard_chance is not None]
            cos = [c.cosine for c in group if c.cosine is not None]
            z = [c.cosine / c.cosine_chance_std for c in group if c.cosine is not None]
            rows.append(
                [
                    f"{a} / {b}",
                    _fmt(float(np.mean(jac)) if jac else None, ".3f"),
                    _fmt(float(np.mean(chance)) if chance else None, ".3f"),
                    _fmt(float(np.mean(cos)) if cos else None, ".3f"),
                    _fmt(float(np.median(z)) if z else None, ".3g"),
                ]
            )
        tables.append(
            Table(
                ["pair", "mean Jaccard", "chance Jaccard", "mean cosine", "median cosine / chance std"],
                rows,
                "Do two runs change the same weights in the same direction? (means over tensors)",
            )
        )
    tables += _mask_tables(result) + _consistency_tables(result)
    figs = []
    for run in runs:
        key = f"heatmaps-{run}"
        if key in figures:
            figs.append(
                (
                    f"{run} vs {result.base}: share of unchanged weights, log10 relative update norm, largest principal "
                    "angle of the top-k output subspace, and log10 of the update energy inside the top-k principal "
                    "subspace over its random expectation (red: concentrated on the principal directions; blue: avoids them).",
                    figures[key],
                )
            )
    if "spectrum" in figures:
        figs.append(
            (
                f"{result.spectra[0].name}: singular values of the base matrix and of each update; relative change of each "
                "singular value; and the update's energy along each base input direction v_i over a random update's "
                "(1 = random; above 1 at low rank = principal directions).",
                figures["spectrum"],
            )
        )
    summary = " ".join(summaries)
    return Section("weights", "Weight forensics: what tuning changed in the parameters", summary, paragraphs, tables, figs)


def _mask_tables(result) -> list[Table]:
    if not any(r.mask_overlap for r in result.matrices):
        return []
    alpha = result.config.get("mask_alpha", 0.5)
    rows = []
    for run in result.runs:
        for a in (a for a in result.aggregates if a.run == run and a.scope == "module"):
            if a.principal_mask_overlap is not None or a.low_magnitude_mask_overlap is not None:
                rows.append([run, a.key, _fmt(a.principal_mask_overlap, ".3f"), _fmt(a.low_magnitude_mask_overlap, ".3f"), _fmt(alpha, ".3g")])
    caption = "Share of each run's changed weights inside the principal and low-magnitude masks (pooled over layers)"
    return [Table(["run", "module", "principal mask", "low-magnitude mask", "chance"], rows, caption)]


def _consistency_tables(result) -> list[Table]:
    model = next((c for c in result.consistency if c.scope == "model"), None)
    if model is None:
        return []
    rows = [
        [run, *[_fmt(v, ".3f") for v in model.cosine[i]], _fmt(model.cosine_to_mean[i], ".3f"), _fmt(model.cosine_to_others[i], ".3f")]
        for i, run in enumerate(model.runs)
    ]
    caption = f"Cosine between whole-model updates (chance 0 +- {_fmt(model.chance_std, '.2g')})"
    return [Table(["run", *model.runs, "to mean update", "to mean of the others"], rows, caption)]


ENTRY = ReportEntry(plot=plot_weights, section=section_weights, order=40)

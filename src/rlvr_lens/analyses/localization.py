"""Localization verdict: the anchor and adapter windows of a memorization shortcut, or none.

From the per-sample layer analyses of one sample group (usually ``leakage``: tuned correct,
base wrong), with bootstrap bands over the group's samples (``n_boot`` resamples, seeded):

* **Patching curve** ``r(l)``: the group's normalized recovery (ratio of means, see
  :mod:`.patching`) when layer ``l``'s block output is patched from the tuned model into the
  base (direction ``tuned_into_base``), for the component whose curve peaks highest.
* **Flat**: a curve is flat within its noise bands when one horizontal line passes
  through every layer's band (``max_l lo(l) <= min_l hi(l)``).
* **Anchor window**: when the patching curve is not flat and its peak is at least
  ``min_recovery``, the contiguous run of layers around the peak layer whose band reaches
  the peak's lower bound (``hi(l) >= lo(peak)``): where putting the tuned model's activation
  into the base recovers the tuned answer most. Its evidence also gives where the tuned
  model's answer emerges in the logit lens (median first top-1 and largest-rise layers,
  base vs tuned).
* **Adapter window**: the layers *after* the anchor window whose weight restore
  (whole-MLP restore of :mod:`.mlp_counterfactual`, or the largest component's when the
  whole MLP was not restored) moves the tuned model's answer distribution beyond noise
  (``lo(l) > min_l' hi(l')``: above the band of the least-affected layer), from the
  first to the last such layer.
* **No localized shortcut** when there is no anchor window; **not enough samples** when
  the group has fewer than ``min_samples`` samples.

No layer index is fixed in advance: every window comes from the curves of the model at hand.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rlvr_lens.errors import UserError
from rlvr_lens.results import Result


@dataclass
class LocalizationConfig:
    group: str = "leakage"
    n_boot: int = 1000
    seed: int = 0
    min_samples: int = 3
    min_recovery: float = 0.2
    level: float = 0.95

    def check(self) -> None:
        if self.n_boot < 10:
            raise UserError(f"--bootstrap needs at least 10 resamples; got {self.n_boot}.")
        if self.min_samples < 2:
            raise UserError("A localization needs at least 2 samples per group.")
        if not 0 < self.level < 1:
            raise UserError(f"The band level must lie in (0, 1); got {self.level}.")


@dataclass
class Curve:
    """A per-layer curve with its bootstrap band (``None`` where undefined)."""

    name: str
    value: list[float | None]
    lo: list[float | None]
    hi: list[float | None]


@dataclass
class Window:
    start: int
    end: int  # inclusive
    evidence: list[str] = field(default_factory=list)


@dataclass
class LocalizationVerdict(Result):
    kind = "localization"

    group: str
    n_samples: int
    status: str  # "localized" | "no localized shortcut" | "not enough samples"
    message: str
    anchor: Window | None = None
    adapter: Window | None = None
    curves: list[Curve] = field(default_factory=list)
    emergence: dict[str, dict[str, float | None]] = field(default_factory=dict)  # model -> {first_top1, largest_rise}


def _band(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2 * 100
    return np.nanpercentile(replicates, tail, axis=0), np.nanpercentile(replicates, 100 - tail, axis=0)


def _optional(values) -> list[float | None]:
    return [None if v is None or not np.isfinite(v) else float(v) for v in values]


def recovery_curve(patching, component: str, indices: Sequence[int], config: LocalizationConfig) -> Curve:
    """Bootstrap band of the ratio-of-means recovery of ``tuned_into_base`` for width-1 windows' first layer."""
    variants = [v for v, var in enumerate(patching.variants) if var.component == component]
    m_from, m_to = (np.asarray(v, dtype=float)[list(indices)] for v in patching.endpoints("tuned_into_base"))
    patched = np.asarray(patching.direction("tuned_into_base").m_patched, dtype=float)[list(indices)][:, variants]
    min_gap = patching.config.get("min_gap", 1e-3)

    def statistic(rows: np.ndarray) -> np.ndarray:
        gap = m_to[rows].mean() - m_from[rows].mean()
        if abs(gap) < min_gap:
            return np.full(len(variants), np.nan)
        return (patched[rows].mean(0) - m_from[rows].mean()) / gap

    rng = np.random.default_rng(config.seed)
    n = len(indices)
    point = statistic(np.arange(n))
    replicates = np.stack([statistic(rng.integers(0, n, n)) for _ in range(config.n_boot)])
    lo, hi = _band(replicates, config.level) if np.isfinite(replicates).any() else (point, point)
    return Curve(f"recovery {component}", _optional(point), _optional(lo), _optional(hi))


def restore_curve(counterfactual, indices: Sequence[int], config: LocalizationConfig) -> Curve:
    """Bootstrap band of the group's mean weight-restore JSD per layer (whole MLP, else the largest component)."""
    jsd = np.asarray(counterfactual.restore_jsd, dtype=float)[list(indices)]  # [samples, layers, components]
    if "mlp" in counterfactual.restore:
        values, name = jsd[:, :, counterfactual.restore.index("mlp")], "restore JSD mlp"
    else:
        values, name = jsd.max(-1), "restore JSD (max component)"
    rng = np.random.default_rng(config.seed + 1)
    n = len(indices)
    replicates = np.stack([values[rng.integers(0, n, n)].mean(0) for _ in range(config.n_boot)])
    lo, hi = _band(replicates, config.level)
    return Curve(name, _optional(values.mean(0)), _optional(lo), _optional(hi))


def is_flat(curve: Curve) -> bool:
    lo = [x for x in curve.lo if x is not None]
    hi = [x for x in curve.hi if x is not None]
    return not lo or max(lo) <= min(hi)


def _anchor(curve: Curve, config: LocalizationConfig) -> Window | None:
    if is_flat(curve):
        return None
    values = [(-np.inf if v is None else v) for v in curve.value]
    peak = int(np.argmax(values))
    if values[peak] < config.min_recovery or curve.lo[peak] is None:
        return None
    floor = curve.lo[peak]
    start = end = peak
    while start > 0 and curve.hi[start - 1] is not None and curve.hi[start - 1] >= floor:
        start -= 1
    while end + 1 < len(values) and curve.hi[end + 1] is not None and curve.hi[end + 1] >= floor:
        end += 1
    return Window(start, end)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def localize(groups, config: LocalizationConfig, *, lens=None, patching=None, counterfactual=None) -> LocalizationVerdict:
    """The verdict for ``config.group`` (see the module docstring); every input result is optional."""
    config.check()
    indices = list(groups.get(config.group, []))
    n = len(indices)
    verdict = LocalizationVerdict(config.group, n, "not enough samples", "")
    if lens is not None and indices:
        for model in lens.models:
            verdict.emergence[model.name] = {
                "first_top1": _median([model.first_top1[i] for i in indices]),
                "never_top1": sum(model.first_top1[i] is None for i in indices) / n,
                "largest_rise": _median([model.largest_rise[i] for i in indices]),
            }
    if n < config.min_samples:
        verdict.message = (
            f"Not enough samples: the {config.group} group has {n} sample(s), at least {config.min_samples} are needed for a localization."
        )
        return verdict
    if patching is None:
        verdict.status, verdict.message = "no localized shortcut", "No patching result, so no anchor window can be located."
        return verdict
    width = patching.config.get("width", 1)
    curves = [recovery_curve(patching, c, indices, config) for c in patching.config.get("components", ["attn", "mlp"])]
    verdict.curves = list(curves)
    anchors = [(c, _anchor(c, config)) for c in curves]
    anchors = [(c, w) for c, w in anchors if w is not None]
    restore = restore_curve(counterfactual, indices, config) if counterfactual is not None and counterfactual.restore else None
    if restore is not None:
        verdict.curves.append(restore)
    if not anchors:
        flat = all(is_flat(c) for c in curves)
        verdict.status = "no localized shortcut"
        verdict.message = (
            "No localized shortcut: the patching recovery curves are flat within their bootstrap bands."
            if flat
            else f"No localized shortcut: no layer's patching recovers at least {config.min_recovery:.0%} of the tuned answer beyond noise."
        )
        return verdict
    curve, anchor = max(anchors, key=lambda cw: max(v for v in cw[0].value if v is not None))
    component = curve.name.split()[-1]
    peak = max(range(len(curve.value)), key=lambda i: -np.inf if curve.value[i] is None else curve.value[i])
    layers = lambda w: f"layer {w.start}" if w.start == w.end else f"layers {w.start}-{w.end}"  # noqa: E731
    shift = width - 1  # a window of `width` layers starting at l covers l..l+width-1
    anchor.end += shift
    anchor.evidence.append(
        f"patching {component} output of {layers(anchor)} from tuned into base recovers "
        f"{curve.value[peak]:.2f} [{curve.lo[peak]:.2f}, {curve.hi[peak]:.2f}] of the tuned answer log-probability at its peak "
        f"(window starting at layer {peak}, width {width}); median over layers {_median(curve.value):.2f}"
    )
    for name, e in verdict.emergence.items():
        anchor.evidence.append(
            f"logit lens, {name}: answer first top-1 after layer {e['first_top1'] if e['first_top1'] is not None else 'never'} (median; "
            f"{e['never_top1']:.0%} never), largest rise at layer {e['largest_rise']}"
        )
    verdict.anchor = anchor
    verdict.status = "localized"
    if restore is not None:
        floor = min(x for x in restore.hi if x is not None)
        later = [i for i in range(anchor.end + 1, len(restore.value)) if restore.lo[i] is not None and restore.lo[i] > floor]
        if later:
            verdict.adapter = Window(min(later), max(later))
            verdict.adapter.evidence.append(
                f"restoring the base's MLP weights at {layers(verdict.adapter)} moves the tuned answer distribution by "
                + ", ".join(f"L{i}: {restore.value[i]:.3g} nats" for i in later)
                + f" (above the least-affected layer's band, upper bound {floor:.3g})"
            )
    verdict.message = f"Anchor window: {layers(anchor)} ({component})" + (
        f"; adapter window: {layers(verdict.adapter)}." if verdict.adapter else "; no adapter window after it."
    )
    return verdict

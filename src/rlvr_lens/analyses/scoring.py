"""Scoring a diagnostic against ground truth: how well does a per-sample signal separate
leaked from clean samples?

Every analysis that yields one number per sample can be scored on the model organism,
whose evaluation samples carry a ``leaked`` label. :func:`auroc` is the area under the ROC
curve of such a signal: the probability that a randomly drawn leaked sample scores higher
than a randomly drawn clean one (ties count one half). 1.0 = perfect separation, 0.5 =
chance, 0.0 = perfectly reversed (the signal points the other way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def auroc(scores: Sequence[float | None], labels: Sequence[bool | None]) -> float | None:
    """Area under the ROC curve of ``scores`` for the positive class ``labels == True``.

    Computed as the Mann-Whitney U statistic from average ranks (exact, ties count 1/2):
    ``AUROC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` where ``R_pos`` is the sum
    of the positives' ranks among all scores.

    Pairs whose score is ``None``/NaN or whose label is ``None`` are left out. Returns
    ``None`` when, after that, either class is empty (the AUROC is undefined).
    """
    if len(scores) != len(labels):
        raise ValueError(f"auroc: {len(scores)} scores but {len(labels)} labels")
    kept = [
        (float(s), bool(y))
        for s, y in zip(scores, labels)
        if s is not None and y is not None and not math.isnan(float(s))
    ]
    n_pos = sum(1 for _, y in kept if y)
    n_neg = len(kept) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(np.array([s for s, _ in kept], dtype=np.float64), method="average")
    rank_sum_pos = float(sum(r for r, (_, y) in zip(ranks, kept) if y))
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def leaked_labels(samples, key: str = "leaked") -> list[bool | None]:
    """Per sample: its boolean ``key`` label, or ``None`` where it has none (or not a bool)."""
    labels: list[bool | None] = []
    for sample in samples:
        value = sample.labels.get(key)
        labels.append(value if isinstance(value, bool) else None)
    return labels


def has_both_classes(labels: Sequence[bool | None]) -> bool:
    """True when at least one sample is labelled True and one False (an AUROC is defined)."""
    return any(y is True for y in labels) and any(y is False for y in labels)


# ----------------------------------------------------------------------------- intervals and operating points


def _kept_arrays(scores: Sequence[float | None], labels: Sequence[bool | None]) -> tuple[np.ndarray, np.ndarray]:
    """``(positive scores, negative scores)`` as float64 arrays, pairs with a missing value left out."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    pos, neg = [], []
    for s, y in zip(scores, labels):
        if s is None or y is None or math.isnan(float(s)):
            continue
        (pos if y else neg).append(float(s))
    return np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)


def _auroc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUROC of every row: ``pos`` ``[rows, n_pos]``, ``neg`` ``[rows, n_neg]`` -> ``[rows]`` (rank formula)."""
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    ranks = rankdata(np.concatenate([pos, neg], axis=1), method="average", axis=1)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc_interval(
    scores: Sequence[float | None],
    labels: Sequence[bool | None],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Seeded percentile-bootstrap interval of :func:`auroc`.

    Each of ``n_boot`` replicates resamples, with replacement, the positives and the
    negatives separately (class sizes stay fixed, so every replicate has an AUROC):
    ``rng = numpy.random.default_rng(seed)``, then per replicate
    ``rng.integers(0, n_pos, n_pos)`` followed by ``rng.integers(0, n_neg, n_neg)``. The
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles (NumPy's default
    linear interpolation) of the replicate AUROCs. ``None`` when a class is empty.
    """
    pos, neg = _kept_arrays(scores, labels)
    if pos.size == 0 or neg.size == 0:
        return None
    rng = np.random.default_rng(seed)
    pos_idx = np.empty((n_boot, pos.size), dtype=np.int64)
    neg_idx = np.empty((n_boot, neg.size), dtype=np.int64)
    for b in range(n_boot):
        pos_idx[b] = rng.integers(0, pos.size, pos.size)
        neg_idx[b] = rng.integers(0, neg.size, neg.size)
    values = _auroc_rows(pos[pos_idx], neg[neg_idx])
    tail = (1.0 - level) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def tpr_at_fpr(scores: Sequence[float | None], labels: Sequence[bool | None], max_fpr: float = 0.05) -> float | None:
    """The largest true-positive rate of a threshold rule ``score >= t`` whose false-positive rate is <= ``max_fpr``.

    Thresholds run over the observed scores (plus +inf, which flags nothing), so this is
    the ROC curve's height at ``max_fpr`` without interpolation. ``None`` when a class is empty.
    """
    pos, neg = _kept_arrays(scores, labels)
    if pos.size == 0 or neg.size == 0:
        return None
    best = 0.0
    for t in np.unique(np.concatenate([pos, neg])):
        if np.mean(neg >= t) <= max_fpr:
            best = max(best, float(np.mean(pos >= t)))
    return best


def threshold_at_fpr(negatives: Sequence[float], max_fpr: float = 0.05) -> float:
    """The lowest threshold ``t`` whose rule ``score >= t`` flags at most ``max_fpr`` of ``negatives``.

    Chosen on a calibration split's negatives. When even the largest negative alone
    would flag too many (fewer than ``1 / max_fpr`` negatives), the threshold is just above the largest
    negative (it flags none of them). ``+inf`` when there are no negatives.
    """
    values = np.sort(np.asarray([v for v in negatives if v is not None and not math.isnan(v)], dtype=np.float64))
    if values.size == 0:
        return math.inf
    for t in values:  # ascending: the first that flags few enough is the lowest
        if np.mean(values >= t) <= max_fpr:
            return float(t)
    return float(np.nextafter(values[-1], math.inf))

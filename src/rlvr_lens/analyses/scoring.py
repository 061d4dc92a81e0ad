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

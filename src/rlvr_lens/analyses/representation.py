"""Representation similarity: how alike are two checkpoints' layers (CKA), and what does
each layer linearly encode about a sample (probes)?

The base vs SFT vs RLVR representation study compares the hidden states of the three
checkpoints layer by layer. Everything here is read from the residual-stream states of
:mod:`rlvr_lens.analyses.hidden_states`: one vector per sample, per state index
``0..L`` (``0`` = embeddings, ``l + 1`` = output of decoder layer ``l``, before the final
norm), at the *answer position* (last prompt token; ``"prompt_mean"`` averages the prompt
tokens instead). Every checkpoint reads the same token ids at the same positions.

**Linear CKA** (centered kernel alignment, Kornblith et al. 2019) of two representations
``X [n, d1]`` and ``Y [n, d2]`` of the same ``n`` samples, with columns centered::

    CKA(X, Y) = ||Y^T X||_F^2 / ( ||X^T X||_F ||Y^T Y||_F ) = <K, L>_F / (||K||_F ||L||_F)

with ``K = X X^T`` and ``L = Y Y^T`` (computed this way, ``O(n^2 d)``). It is 1 for
identical representations, invariant to orthogonal transforms and isotropic scaling of
either side, and lies in ``[0, 1]``. Its value for *unrelated* representations is not 0:
about ``d / n`` when ``d << n`` and close to 1 when ``d >> n`` (the Gram matrices of
high-dimensional random features are all near a multiple of the identity). The hidden
sizes of real models exceed the number of evaluation samples, so the **debiased** CKA is
reported too: the same ratio built from the unbiased HSIC estimator (Song et al. 2012;
Nguyen et al. 2021)::

    HSIC_u(K, L) = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ] / (n (n-3))

where ``K~``, ``L~`` are ``K``, ``L`` with their diagonals set to 0. Its value for unrelated
representations is near 0 at any ``d`` (it can be slightly negative); it needs ``n >= 4``.
All CKA arithmetic is float64.

**Probes.** Per state index, a logistic-regression probe (scikit-learn
``LogisticRegression``, L2, ``C`` from the config, features standardized on the training
folds) predicts one group against another (``leaked`` vs ``clean`` from the data's
labels; ``leakage`` vs ``stable`` from the evaluation groups). Classes are balanced by
drawing (seeded) as many members of the larger group as the smaller one has. The score is
the held-out AUROC under stratified ``folds``-fold cross-validation (mean and standard
deviation over folds). Chance is 0.5; a **control** probe with shuffled labels (seeded)
is run at every layer and reported beside it. A group with fewer than ``min_per_class``
members (at least ``folds``) gives "not enough samples".
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from rlvr_lens.analyses.hidden_states import CaptureConfig, capture_series
from rlvr_lens.data.sample import Sample
from rlvr_lens.errors import UserError
from rlvr_lens.results import Result

DEFAULT_PROBE_TASKS: tuple[tuple[str, str], ...] = (("leaked", "clean"), ("leakage", "stable"))


@dataclass(frozen=True)
class RepresentationConfig:
    """How :func:`representation_similarity` runs.

    Attributes:
        template, position, batch_size: how hidden states are read (:class:`CaptureConfig`).
        probe_tasks: ``(positive, negative)`` group-name pairs to probe for.
        folds: stratified cross-validation folds of each probe.
        min_per_class: fewest members a probed group may have (must be >= ``folds``).
        C: inverse L2 strength of the logistic regression.
        max_iter: iterations of its solver (lbfgs).
        control: also run every probe on shuffled labels (the chance reference).
        seed: seed of class balancing, fold assignment and the control's shuffle.
    """

    template: str = "plain"
    position: str = "answer"
    batch_size: int = 8
    probe_tasks: tuple[tuple[str, str], ...] = DEFAULT_PROBE_TASKS
    folds: int = 5
    min_per_class: int = 10
    C: float = 1.0
    max_iter: int = 2000
    control: bool = True
    seed: int = 0

    def capture_config(self) -> CaptureConfig:
        return CaptureConfig(template=self.template, position=self.position, batch_size=self.batch_size)

    def check(self) -> None:
        self.capture_config().check()
        if self.folds < 2:
            raise UserError("Probes need at least 2 cross-validation folds.")
        if self.min_per_class < self.folds:
            raise UserError(
                f"min_per_class ({self.min_per_class}) must be at least the number of folds ({self.folds})."
            )
        if not self.C > 0:
            raise UserError("The probe's C (inverse regularization strength) must be > 0.")
        for task in self.probe_tasks:
            if len(task) != 2 or task[0] == task[1]:
                raise UserError(f"A probe task names two different groups; got {task!r}.")


@dataclass
class CKACurve:
    """CKA between two checkpoints at every state index (0 = embeddings, l + 1 = layer l)."""

    a: str
    b: str
    linear: list[float | None]  # None where a side does not vary across samples
    debiased: list[float | None]  # None also when n < 4


@dataclass
class ProbeCurve:
    """One probe task on one checkpoint, per state index."""

    model: str
    positive: str
    negative: str
    n_positive: int
    n_negative: int
    n_used: int  # per class after balancing
    status: str  # "ok" or why not computed ("not enough samples: ...")
    auroc: list[float] = field(default_factory=list)  # mean held-out AUROC over folds
    auroc_std: list[float] = field(default_factory=list)
    control: list[float] = field(default_factory=list)  # same probe on shuffled labels


@dataclass
class RepresentationResult(Result):
    """Per-layer CKA between checkpoints and per-layer linear probes of sample groups."""

    kind = "representation"

    config: dict
    sample_ids: list[str]
    models: list[str]
    states: int  # state indices per model (decoder layers + 1)
    cka: list[CKACurve]
    probes: list[ProbeCurve]


# ----------------------------------------------------------------------------- CKA


def centered_gram(x: np.ndarray) -> np.ndarray:
    """``[n, d]`` -> ``[n, n]`` float64 Gram matrix ``X X^T`` of the column-centered ``X``."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    return x @ x.T


def cka_from_grams(k: np.ndarray, l: np.ndarray) -> float | None:  # noqa: E741
    """Linear CKA from two centered Gram matrices (module docstring).

    ``None`` (undefined) when either side does not vary across samples (an all-zero Gram
    matrix), e.g. the embeddings at the answer position when every prompt ends with the same
    token.
    """
    denominator = np.linalg.norm(k) * np.linalg.norm(l)
    if not denominator > 0:
        return None
    return float((k * l).sum() / denominator)


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    n = k.shape[0]
    k = k.copy()
    l = l.copy()  # noqa: E741
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    ones_k = k.sum(axis=0)  # 1^T K~
    ones_l = l.sum(axis=0)
    trace = (k * l).sum()  # tr(K~ L~), both symmetric
    return float(
        (trace + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * ones_k @ ones_l)
        / (n * (n - 3))
    )


def debiased_cka_from_grams(k: np.ndarray, l: np.ndarray) -> float | None:  # noqa: E741
    """Debiased linear CKA (unbiased HSIC, module docstring); ``None`` when ``n < 4`` or undefined."""
    if k.shape[0] < 4:
        return None
    kk, ll = _hsic_unbiased(k, k), _hsic_unbiased(l, l)
    if kk <= 0 or ll <= 0:
        return None
    return _hsic_unbiased(k, l) / float(np.sqrt(kk * ll))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float | None:
    """Linear CKA of ``x [n, d1]`` and ``y [n, d2]`` (same samples in the same order)."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same samples on both sides; got {len(x)} and {len(y)} rows")
    return cka_from_grams(centered_gram(x), centered_gram(y))


def debiased_cka(x: np.ndarray, y: np.ndarray) -> float | None:
    """Debiased linear CKA of ``x [n, d1]`` and ``y [n, d2]``."""
    if len(x) != len(y):
        raise ValueError(f"CKA needs the same samples on both sides; got {len(x)} and {len(y)} rows")
    return debiased_cka_from_grams(centered_gram(x), centered_gram(y))


def cka_curves(states: Mapping[str, np.ndarray]) -> list[CKACurve]:
    """CKA at every state index for every pair of checkpoints (in ``states`` order: base vs
    each tuned one first). ``states``: name -> ``[n, S, d]``; every model has the same ``n`` and ``S``."""
    names = list(states)
    shapes = {states[name].shape[:2] for name in names}
    if len(shapes) != 1:
        raise UserError(
            "CKA needs every checkpoint's states on the same samples and layers; got different shapes."
        )
    n_states = next(iter(shapes))[1]
    grams = {name: [centered_gram(states[name][:, s]) for s in range(n_states)] for name in names}
    return [
        CKACurve(
            a=a,
            b=b,
            linear=[cka_from_grams(ka, kb) for ka, kb in zip(grams[a], grams[b])],
            debiased=[debiased_cka_from_grams(ka, kb) for ka, kb in zip(grams[a], grams[b])],
        )
        for a, b in itertools.combinations(names, 2)
    ]


# ----------------------------------------------------------------------------- probes


def balanced_indices(
    positive: Sequence[int], negative: Sequence[int], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Equal-size subsets: every member of the smaller group, a seeded draw of as many of the larger."""
    rng = np.random.default_rng(seed)
    size = min(len(positive), len(negative))
    pos = np.asarray(positive) if len(positive) == size else rng.choice(positive, size, replace=False)
    neg = np.asarray(negative) if len(negative) == size else rng.choice(negative, size, replace=False)
    return np.sort(pos), np.sort(neg)


def probe_auroc(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int = 5,
    C: float = 1.0,
    max_iter: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Held-out AUROC of a logistic-regression probe: mean and std over stratified folds.

    Args:
        features: ``[n, d]``.
        labels: ``[n]`` booleans (both classes present, each at least ``folds`` times).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    scores = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(features, labels):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        probe.fit(features[train], labels[train])
        scores.append(roc_auc_score(labels[test], probe.decision_function(features[test])))
    return float(np.mean(scores)), float(np.std(scores))


def probe_curve(
    states: np.ndarray,
    positive: Sequence[int],
    negative: Sequence[int],
    config: RepresentationConfig,
    *,
    model: str = "",
    names: tuple[str, str] = ("positive", "negative"),
) -> ProbeCurve:
    """Probe ``positive`` vs ``negative`` (sample indices into ``states [n, S, d]``) at every state index."""
    positive, negative = list(positive), list(negative)
    curve = ProbeCurve(model, names[0], names[1], len(positive), len(negative), 0, "ok")
    if set(positive) & set(negative):
        raise UserError(f"Probe groups {names[0]!r} and {names[1]!r} share samples; they must be disjoint.")
    small = [
        f"{name} has {len(group)}"
        for name, group in zip(names, (positive, negative))
        if len(group) < config.min_per_class
    ]
    if small:
        curve.status = (
            f"not enough samples: {' and '.join(small)} (at least {config.min_per_class} each needed)"
        )
        return curve
    pos, neg = balanced_indices(positive, negative, config.seed)
    index = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(len(pos), bool), np.zeros(len(neg), bool)])
    shuffled = np.random.default_rng(config.seed + 1).permutation(labels)
    curve.n_used = len(pos)
    for s in range(states.shape[1]):
        x = states[index, s]
        mean, std = probe_auroc(
            x, labels, folds=config.folds, C=config.C, max_iter=config.max_iter, seed=config.seed
        )
        curve.auroc.append(mean)
        curve.auroc_std.append(std)
        if config.control:
            curve.control.append(
                probe_auroc(
                    x, shuffled, folds=config.folds, C=config.C, max_iter=config.max_iter, seed=config.seed
                )[0]
            )
    return curve


# ----------------------------------------------------------------------------- analysis


def representation_similarity(
    series,
    samples: Sequence[Sample],
    groups: Mapping[str, Sequence[int]],
    config: RepresentationConfig | None = None,
    *,
    states: Mapping[str, np.ndarray] | None = None,
    show_progress: bool = False,
) -> RepresentationResult:
    """Per-layer CKA between every pair of checkpoints and per-layer probes of each task.

    Args:
        series: a :class:`~rlvr_lens.models.ModelSeries` (base first, e.g. base, SFT, RLVR);
            ignored when ``states`` is given.
        samples: the evaluation samples the group indices point into.
        groups: group name -> sample indices (the evaluation step's ``sample_groups``, which
            include the data's ``leaked`` / ``clean`` labels). A probe task whose groups are
            absent or too small is reported with a "not enough samples" status.
        config: see :class:`RepresentationConfig`.
        states: already captured ``name -> [n_samples, L + 1, hidden]`` states (same template
            and position), e.g. shared with the trajectory analysis.
    """
    config = config or RepresentationConfig()
    config.check()
    if len(samples) < 4:
        raise UserError(f"Representation similarity needs at least 4 samples; got {len(samples)}.")
    for name, indices in groups.items():
        bad = [i for i in indices if not 0 <= int(i) < len(samples)]
        if bad:
            raise UserError(
                f"Group {name!r} names sample index {bad[0]}, but there are {len(samples)} samples."
            )
    if states is None:
        states = capture_series(series, samples, config.capture_config(), show_progress=show_progress)
    states = {name: np.asarray(array) for name, array in states.items()}
    probes = [
        probe_curve(array, groups.get(pos, []), groups.get(neg, []), config, model=name, names=(pos, neg))
        for name, array in states.items()
        for pos, neg in config.probe_tasks
    ]
    return RepresentationResult(
        config=json.loads(json.dumps(asdict(config))),  # tuples as JSON lists, so a reload compares equal
        sample_ids=[s.id for s in samples],
        models=list(states),
        states=next(iter(states.values())).shape[1],
        cka=cka_curves(states) if len(states) >= 2 else [],
        probes=probes,
    )


def _register_report() -> None:
    from rlvr_lens.analyses.representation_report import register_entries

    register_entries()


_register_report()

"""The detection scoreboard: every per-sample signal scored against ground truth, beside the
published membership-inference detectors.

A *signal* is one number per sample, named ``"<source>:<name>"`` (e.g.
``"perplexity:answer_nll_low"``, ``"detector:min_k_pp@0.3"``). Names that differ only after
an ``@`` form one *family* with a free parameter (Min-K%'s ``k``, the probe's prompt
fraction); the scoreboard picks the member on the calibration split.

For each *task* (a positive and a negative sample group, e.g. leaked vs clean, or leakage
vs stable) the samples of both groups are split once, seeded and stratified, into a
**calibration** part (``calibration_fraction``) and a **scored** part. On the calibration
part only, the scoreboard chooses

* the family member (e.g. ``k``) with the highest AUROC,
* the direction of a signal whose direction is not fixed by its definition (generic
  arrays): higher-is-positive when its calibration AUROC is >= 0.5, else reversed,
* the verdict threshold: the lowest value that flags at most ``max_fpr`` of the
  calibration negatives (:func:`rlvr_lens.analyses.scoring.threshold_at_fpr`).

On the scored part it reports the AUROC with a seeded bootstrap interval, the TPR at
``max_fpr`` FPR, the thresholded verdict's TPR/FPR, and the AUROC difference to Min-K%++
on the same samples (paired bootstrap interval). With the signals of an organism built
with **zero leaks**, it also reports each verdict's false-alarm rate there: the share of
its samples that the fixed threshold flags (every flag is false).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rlvr_lens.analyses.scoring import _auroc_rows, auroc, auroc_interval, threshold_at_fpr, tpr_at_fpr
from rlvr_lens.errors import UserError
from rlvr_lens.results import Result

#: Published AUROCs (%) of the same detectors: Min-K%++ paper (Zhang et al., ICLR 2025),
#: WikiMIA, length 32, mean over 5 models.
PUBLISHED = {"loss": 66.5, "zlib": 67.0, "min_k": 67.8, "min_k_pp": 78.3}
PUBLISHED_SOURCE = "Min-K%++ paper (Zhang et al., ICLR 2025), WikiMIA length 32, mean over 5 models"
REFERENCE_FAMILY = "detector:min_k_pp"
DETECTOR_BAR = 0.9  # AUROC a signal must reach to be called a detector


@dataclass
class Signal:
    """Per-sample values (``None`` = not computed for that sample).

    ``oriented``: the definition fixes the direction (higher = more likely positive);
    otherwise the direction is chosen on the calibration split.
    """

    values: list[float | None]
    oriented: bool = True


@dataclass
class ScoreboardConfig:
    """Settings of :func:`scoreboard`.

    Attributes:
        tasks: ``(positive group, negative group)`` pairs; a task whose groups are missing
            or too small is reported as skipped.
        calibration_fraction: share of each group used to choose k, direction and threshold.
        max_fpr: false-positive rate of the thresholded verdict and of the TPR column.
        n_boot: bootstrap replicates of the intervals.
        seed: seed of the split and the bootstrap.
    """

    tasks: tuple[tuple[str, str], ...] = (("leaked", "clean"), ("leakage", "stable"))
    calibration_fraction: float = 0.3
    max_fpr: float = 0.05
    n_boot: int = 1000
    seed: int = 0

    def check(self) -> None:
        if not 0.0 < self.calibration_fraction < 1.0:
            raise UserError(f"The calibration fraction must lie strictly between 0 and 1; got {self.calibration_fraction}.")
        if not 0.0 < self.max_fpr < 1.0:
            raise UserError(f"max_fpr must lie strictly between 0 and 1; got {self.max_fpr}.")
        if self.n_boot < 10:
            raise UserError(f"Use at least 10 bootstrap replicates; got {self.n_boot}.")
        if not self.tasks:
            raise UserError("The scoreboard needs at least one task.")


@dataclass
class SignalScore:
    """One signal family on one task. AUROCs in [0, 1]; rates are shares of samples."""

    family: str
    chosen: str  # the member picked on the calibration split (e.g. "detector:min_k_pp@0.3")
    direction: int  # +1: higher = positive; -1: reversed (chosen on calibration for unoriented signals)
    calibration_auroc: float | None
    auroc: float | None
    ci_low: float | None
    ci_high: float | None
    tpr_at_fpr: float | None
    threshold: float | None  # on direction * value; fixed on the calibration split
    verdict_tpr: float | None  # scored split, at the fixed threshold
    verdict_fpr: float | None
    false_alarm: float | None  # zero-leak organism: share of its samples flagged
    delta_vs_reference: float | None = None  # AUROC - Min-K%++'s AUROC, same scored samples
    delta_ci_low: float | None = None
    delta_ci_high: float | None = None
    n_pos: int = 0
    n_neg: int = 0


@dataclass
class TaskScores:
    positive: str
    negative: str
    calibration: list[int]
    scored: list[int]
    rows: list[SignalScore]
    skipped: str | None = None

    @property
    def name(self) -> str:
        return f"{self.positive} vs {self.negative}"


@dataclass
class ScoreboardResult(Result):
    """Every signal family scored on every task (see the module docstring)."""

    kind = "scoreboard"

    config: dict
    sample_ids: list[str]
    groups: dict[str, list[int]]
    tasks: list[TaskScores]
    published: dict[str, float]
    published_source: str
    zero_leak_samples: int | None
    signals: dict[str, list[float | None]] = field(default_factory=dict)
    base: str = ""  # names of the compared checkpoints ("" when not given): the verdict attributes the result by them
    tuned: str = ""


# ----------------------------------------------------------------------------- helpers


def family_of(name: str) -> str:
    """``"detector:min_k@0.3"`` -> ``"detector:min_k"``."""
    return name.split("@", 1)[0]


def split_calibration(positive: Sequence[int], negative: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(calibration, scored)`` sample indices: each group shuffled (seeded) and cut at ``ceil(fraction * n)``."""
    rng = np.random.default_rng(seed)
    calibration, scored = [], []
    for group in (positive, negative):
        order = [int(i) for i in rng.permutation(np.asarray(sorted(group), dtype=np.int64))]
        cut = math.ceil(fraction * len(order))
        calibration += order[:cut]
        scored += order[cut:]
    return sorted(calibration), sorted(scored)


def _pick(values: Sequence[float | None], indices: Sequence[int], direction: int = 1) -> list[float | None]:
    return [None if values[i] is None or math.isnan(values[i]) else direction * float(values[i]) for i in indices]


def paired_delta_interval(
    a: Sequence[float | None], b: Sequence[float | None], labels: Sequence[bool], *, n_boot: int, seed: int, level: float = 0.95
) -> tuple[float, float, float] | None:
    """``(AUROC(a) - AUROC(b), low, high)`` on the samples where both are present; paired bootstrap
    (the same resampled positives and negatives for both signals)."""
    kept = [(x, y, lab) for x, y, lab in zip(a, b, labels) if x is not None and y is not None]
    pos = np.array([(x, y) for x, y, lab in kept if lab], dtype=np.float64).reshape(-1, 2)
    neg = np.array([(x, y) for x, y, lab in kept if not lab], dtype=np.float64).reshape(-1, 2)
    if len(pos) == 0 or len(neg) == 0:
        return None
    point = _auroc_rows(pos.T, neg.T)
    rng = np.random.default_rng(seed)
    pi = rng.integers(0, len(pos), (n_boot, len(pos)))
    ni = rng.integers(0, len(neg), (n_boot, len(neg)))
    delta = _auroc_rows(pos[pi, 0], neg[ni, 0]) - _auroc_rows(pos[pi, 1], neg[ni, 1])
    tail = (1 - level) / 2
    low, high = np.quantile(delta, [tail, 1 - tail])
    return float(point[0] - point[1]), float(low), float(high)


# ----------------------------------------------------------------------------- the analysis


def _score_family(
    family: str,
    members: list[str],
    signals: Mapping[str, Signal],
    calibration: list[int],
    scored: list[int],
    labels: dict[int, bool],
    zero_leak: Mapping[str, Signal] | None,
    config: ScoreboardConfig,
) -> SignalScore:
    cal_labels = [labels[i] for i in calibration]
    best: tuple[float, str, int] | None = None
    for name in members:
        signal = signals[name]
        value = auroc(_pick(signal.values, calibration), cal_labels)
        if value is None:
            continue
        direction = 1 if signal.oriented or value >= 0.5 else -1
        oriented_value = value if direction == 1 else 1 - value
        if best is None or oriented_value > best[0]:
            best = (oriented_value, name, direction)
    if best is None:  # not computable on the calibration split: take the first member as it is
        best = (None, members[0], 1)  # type: ignore[assignment]
    cal_auroc, chosen, direction = best
    values = signals[chosen].values
    scores = _pick(values, scored, direction)
    score_labels = [labels[i] for i in scored]
    interval = auroc_interval(scores, score_labels, n_boot=config.n_boot, seed=config.seed)
    negatives = [v for v, y in zip(_pick(values, calibration, direction), cal_labels) if not y and v is not None]
    threshold = threshold_at_fpr(negatives, config.max_fpr) if negatives else None
    verdict_tpr = verdict_fpr = false_alarm = None
    if threshold is not None:
        pos = [v for v, y in zip(scores, score_labels) if y and v is not None]
        neg = [v for v, y in zip(scores, score_labels) if not y and v is not None]
        verdict_tpr = sum(v >= threshold for v in pos) / len(pos) if pos else None
        verdict_fpr = sum(v >= threshold for v in neg) / len(neg) if neg else None
        if zero_leak is not None and chosen in zero_leak:
            clean = [direction * v for v in zero_leak[chosen].values if v is not None and not math.isnan(v)]
            false_alarm = sum(v >= threshold for v in clean) / len(clean) if clean else None
    return SignalScore(
        family=family,
        chosen=chosen,
        direction=direction,
        calibration_auroc=cal_auroc,
        auroc=auroc(scores, score_labels),
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None,
        tpr_at_fpr=tpr_at_fpr(scores, score_labels, config.max_fpr),
        threshold=None if threshold is None or math.isinf(threshold) else threshold,
        verdict_tpr=verdict_tpr,
        verdict_fpr=verdict_fpr,
        false_alarm=false_alarm,
        n_pos=sum(1 for v, y in zip(scores, score_labels) if y and v is not None),
        n_neg=sum(1 for v, y in zip(scores, score_labels) if not y and v is not None),
    )


def scoreboard(
    signals: Mapping[str, Signal | Sequence[float | None]],
    groups: Mapping[str, Sequence[int]],
    config: ScoreboardConfig | None = None,
    *,
    sample_ids: Sequence[str] | None = None,
    zero_leak: Mapping[str, Signal | Sequence[float | None]] | None = None,
    base: str = "",
    tuned: str = "",
) -> ScoreboardResult:
    """Score every signal family on every task of ``config``.

    Args:
        signals: ``"<source>:<name>[@<param>]"`` -> per-sample values (a plain sequence
            counts as an oriented :class:`Signal`).
        groups: group name -> sample indices (e.g. from ``sample_groups`` of the evaluation,
            or ``rlvr_lens.data.sample.label_groups``).
        config: see :class:`ScoreboardConfig`.
        sample_ids: ids of the samples (stored in the result).
        zero_leak: the same signals computed on an organism built with zero leaks, for the
            false-alarm rates (its own samples; every one is clean).
        base, tuned: names of the checkpoints the signals compare (stored; the verdict needs
            ``tuned`` to know which checkpoint the scores are about).
    """
    config = config or ScoreboardConfig()
    config.check()
    signals = {k: v if isinstance(v, Signal) else Signal(list(v)) for k, v in signals.items()}
    if zero_leak is not None:
        zero_leak = {k: v if isinstance(v, Signal) else Signal(list(v)) for k, v in zero_leak.items()}
    if not signals:
        raise UserError("The scoreboard got no per-sample signal to score.")
    lengths = {len(s.values) for s in signals.values()}
    if len(lengths) != 1:
        raise UserError(f"Every signal needs one value per sample; got lengths {sorted(lengths)}.")
    (n,) = lengths
    families: dict[str, list[str]] = {}
    for name in signals:
        families.setdefault(family_of(name), []).append(name)
    tasks = []
    for t, (positive, negative) in enumerate(config.tasks):
        pos, neg = list(groups.get(positive, [])), list(groups.get(negative, []))
        bad = [i for i in pos + neg if not 0 <= i < n]
        if bad:
            raise UserError(f"Group index {bad[0]} is out of range for {n} samples.")
        if set(pos) & set(neg):
            raise UserError(f"Groups {positive!r} and {negative!r} share samples; a task needs disjoint groups.")
        calibration, scored = split_calibration(pos, neg, config.calibration_fraction, config.seed + t)
        labels = {i: True for i in pos} | {i: False for i in neg}
        n_cal = (sum(labels[i] for i in calibration), sum(not labels[i] for i in calibration))
        n_sc = (sum(labels[i] for i in scored), sum(not labels[i] for i in scored))
        if min(*n_cal, *n_sc) < 1:
            reason = f"{len(pos)} {positive} and {len(neg)} {negative} samples: too few to split into calibration and scored parts"
            tasks.append(TaskScores(positive, negative, calibration, scored, [], skipped=reason))
            continue
        rows = [
            _score_family(family, members, signals, calibration, scored, labels, zero_leak, config)
            for family, members in families.items()
        ]
        reference = next((r for r in rows if r.family == REFERENCE_FAMILY), None)
        if reference is not None:
            score_labels = [labels[i] for i in scored]
            ref_values = _pick(signals[reference.chosen].values, scored, reference.direction)
            for row in rows:
                delta = paired_delta_interval(
                    _pick(signals[row.chosen].values, scored, row.direction),
                    ref_values,
                    score_labels,
                    n_boot=config.n_boot,
                    seed=config.seed,
                )
                if delta is not None:
                    row.delta_vs_reference, row.delta_ci_low, row.delta_ci_high = delta
        tasks.append(TaskScores(positive, negative, calibration, scored, rows))
    return ScoreboardResult(
        config={
            "tasks": [list(t) for t in config.tasks],
            "calibration_fraction": config.calibration_fraction,
            "max_fpr": config.max_fpr,
            "n_boot": config.n_boot,
            "seed": config.seed,
        },
        sample_ids=list(sample_ids) if sample_ids is not None else [str(i) for i in range(n)],
        groups={k: [int(i) for i in v] for k, v in groups.items()},
        tasks=tasks,
        published=dict(PUBLISHED),
        published_source=PUBLISHED_SOURCE,
        zero_leak_samples=len(next(iter(zero_leak.values())).values) if zero_leak else None,
        signals={k: list(s.values) for k, s in signals.items()},
        base=base,
        tuned=tuned,
    )


# ----------------------------------------------------------------------------- signals from results


def _aligned(ids: Sequence[str], values_by_id: Mapping[str, float | None]) -> list[float | None]:
    return [None if values_by_id.get(i) is None else float(values_by_id[i]) for i in ids]


def collect_signals(
    results: Sequence[Result], sample_ids: Sequence[str], *, tuned: str | None = None, strict: bool = False
) -> dict[str, Signal]:
    """Per-sample signals from finished results, aligned on ``sample_ids`` (``None`` where absent).

    Understood kinds: ``perplexity`` (the four signals of its ``SIGNALS``, for checkpoint
    ``tuned``, default the last), ``contamination`` (exact match and ROUGE-L of checkpoint
    ``tuned`` per prompt fraction: one family each), ``token_divergence`` (per-sample mean
    JSD along the tuned model's responses), ``detectors`` (every detector and the reference
    ratio). Any other result with a ``per_sample_signals()`` method (``name -> values``
    following its ``sample_ids``) contributes its signals with the direction left to the
    calibration split. A result of any other kind is skipped, or with ``strict`` (results a user
    named) a :class:`UserError`.
    """
    out: dict[str, Signal] = {}
    for result in results:
        ids = getattr(result, "sample_ids", None)
        if result.kind == "perplexity":
            names = result.checkpoints
            t = names.index(tuned) if tuned in names else len(names) - 1
            base, ckpt = result.per_checkpoint[0], result.per_checkpoint[t]

            def by_id(values, ids=ids):
                return _aligned(sample_ids, dict(zip(ids, values)))

            neg = [None if v is None else -v for v in ckpt.prompt_nll]
            out["perplexity:prompt_nll_low"] = Signal(by_id(neg))
            out["perplexity:answer_nll_low"] = Signal(by_id([None if v is None else -v for v in ckpt.answer_nll]))
            if t > 0:
                drop = [None if a is None or b is None else a - b for a, b in zip(base.answer_nll, ckpt.answer_nll)]
                rise = [None if a is None or b is None else a - b for a, b in zip(ckpt.prompt_nll, base.prompt_nll)]
                out["perplexity:answer_nll_drop"] = Signal(by_id(drop))
                out["perplexity:prompt_nll_rise"] = Signal(by_id(rise))
        elif result.kind == "contamination":
            name = tuned if tuned in result.checkpoints else result.checkpoints[-1]
            for run in result.runs:
                if run.checkpoint != name:
                    continue
                for key in ("exact_match", "rouge_l"):
                    values = [None if v is None else float(v) for v in getattr(run, key)]
                    out[f"partial_prompt:{key}@{run.fraction:g}"] = Signal(_aligned(sample_ids, dict(zip(ids, values))))
        elif result.kind == "token_divergence":
            for response in result.responses:
                if response.responses_from == "tuned":
                    values = {s.sample_id: s.mean_jsd for s in response.samples}
                    out["tokens:mean_jsd"] = Signal(_aligned(sample_ids, values))
        elif result.kind == "detectors":
            for key, values in result.signals().items():
                out[f"detector:{key}"] = Signal(_aligned(sample_ids, dict(zip(ids, values))))
        elif hasattr(result, "per_sample_signals"):
            for key, values in result.per_sample_signals().items():
                out[f"{result.kind}:{key}"] = Signal(_aligned(sample_ids, dict(zip(ids, values))), oriented=False)
        elif strict:
            raise UserError(f"A {result.kind} result carries no per-sample signals the scoreboard can score.")
    return out


def measure_signals(base, tuned, samples, config=None, *, show_progress: bool = False):
    """The signals a loaded pair gives directly: every detector (tuned, with the base as
    reference) and the four perplexity signals (see ``perplexity.SIGNALS``).

    Returns ``(signals, detectors_result)``; signals of other analyses (partial-prompt probe,
    token divergence, circuits) come from their results through :func:`collect_signals`.
    """
    from rlvr_lens.analyses.detectors import DetectorsConfig, detector_scores
    from rlvr_lens.analyses.perplexity import checkpoint_nll, encode_sample, leading_special_ids

    config = config or DetectorsConfig()
    detectors = detector_scores(tuned, samples, config, reference=base, show_progress=show_progress)
    leading = leading_special_ids(tuned.tokenizer)
    encoded = [encode_sample(tuned.tokenizer, s, config.template, leading=leading) for s in samples]
    pad_id = tuned.tokenizer.pad_token_id if tuned.tokenizer.pad_token_id is not None else 0
    nll = {
        who.name: checkpoint_nll(who.model, encoded, pad_id=pad_id, batch_size=config.batch_size)
        for who in (base, tuned)
    }
    (bp, ba), (tp, ta) = nll[base.name], nll[tuned.name]

    def diff(x, y):
        return [None if a is None or b is None else a - b for a, b in zip(x, y)]

    signals = {f"detector:{k}": Signal(list(v)) for k, v in detectors.signals().items()}
    signals["perplexity:prompt_nll_low"] = Signal([None if v is None else -v for v in tp])
    signals["perplexity:answer_nll_low"] = Signal([None if v is None else -v for v in ta])
    signals["perplexity:answer_nll_drop"] = Signal(diff(ba, ta))
    signals["perplexity:prompt_nll_rise"] = Signal(diff(tp, bp))
    return signals, detectors


def _register_report() -> None:
    from rlvr_lens.analyses.scoreboard_report import register_entries

    register_entries()


_register_report()

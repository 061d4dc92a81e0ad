"""The audit's answer: is a tuned model's gain consistent with reasoning, with retrieval of
memorized answers, or undetermined? Computed from whichever results an audit produced.

Each result kind that carries evidence has an *evidence function* (``@evidence("kind")``)
that turns the result's JSON form into :class:`Signal` s, one per tuned checkpoint it
covers. A new analysis plugs in by adding one such function; nothing else changes. Every
signal carries a 95% bootstrap interval over samples (:mod:`rlvr_lens.analyses.stats`; the
accuracy and perplexity ones compare tuned with base **on the same samples**), so no claim
rests on a difference that could be noise. The signals today:

* **gain** (``evaluation``, else ``token_divergence``): accuracy of tuned minus base.
  Without a significant gain there is nothing to explain and the verdict is undetermined.
* **perplexity paradox** (``perplexity``): answer NLL falls *and* prompt NLL rises from the
  base to the tuned checkpoint, both significantly (the *Spurious Rewards Paradox*
  signature of a tuning step that leans on memorized answers).
* **answers from partial prompts** (``contamination``): the share of samples whose correct
  answer a model produces when shown only the first fraction of the problem (the smallest
  fraction probed), tuned minus base. Answering a problem one has not been shown is
  retrieval, not reasoning.
* **detectors flag the gain samples** (``scoreboard``, task leakage vs stable): a published
  membership detector (loss, zlib, Min-K%, Min-K%++; not the reference ratio, which
  separates any changed answer) whose AUROC interval's lower end clears the scoreboard's
  detector bar 0.9; k and the flagging threshold come from the scoreboard's calibration
  split. Ruled out when every detector's upper end is below the bar. Not decisive.
* **corroborating** signals (``circuits``, ``ablation``, ``steering``): a localized,
  leakage-specific, causal change is what a memorized shortcut looks like, but a skill can
  be localized too. When one holds it is listed for a memorization verdict and keeps the
  verdict from saying "reasoning"; it never makes a memorization verdict alone, and when
  it does not hold it counts for nothing either way:

  - **localized shortcut (circuits)**: the leakage group's anchor window, its peak recovery
    interval above chance (0) and the recovery at that window higher on leakage than on
    stable samples (bootstrap interval of the difference > 0). "No localized shortcut" is
    not evidence of reasoning.
  - **reset removes the gain (interventions)**: the reset window chosen on a seeded half of
    the leakage samples; on the other half the reset loses more than half the gain (lower
    end of the paired interval) while the matched-noise control keeps significantly more.
  - **neurons suppress gained answers specifically (steering)**: at the smallest alpha,
    leakage accuracy falls more than stable accuracy (Bonferroni-corrected interval over the
    curves > 0) and the matched-norm random neurons do not do the same.

* **context** (``token_divergence``; the scoreboard's leaked vs clean task; any signal
  with too few samples, stated as such): reported, not used for the decision.

Decision, per tuned checkpoint (``reasoning`` needs positive evidence, never a default):

1. no gain signal, or a gain whose interval includes 0 -> ``undetermined``;
2. any direct (not corroborating) memorization signal that holds (its interval beyond its
   threshold in the memorization direction) -> ``memorization``;
3. every decisive memorization test present and ruled out (its interval's upper end
   below the bound stated in the signal), no other memorization test inconclusive and no
   corroborating signal holding -> ``reasoning``;
4. otherwise ``undetermined`` (a decisive test is missing or inconclusive, or the direct
   tests are ruled out while a localized shortcut holds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlvr_lens.analyses.stats import Interval, paired_bootstrap, sign_test
from rlvr_lens.results import Result

MEMORIZATION = "memorization"
REASONING = "reasoning"
UNDETERMINED = "undetermined"
LABELS = {
    MEMORIZATION: "memorization (retrieval of memorized answers)",
    REASONING: "reasoning",
    UNDETERMINED: "undetermined",
}
#: The memorization tests the verdict needs before it may say "reasoning".
DECISIVE = ("perplexity paradox", "answers from partial prompts")
#: Retrieval that could explain at most this share of the gain counts as ruled out.
RULED_OUT_SHARE = 0.5
SIGNIFICANCE = "95% paired bootstrap interval over samples (2,000 resamples) excludes 0"


@dataclass
class Signal:
    """One piece of evidence about one tuned checkpoint.

    Attributes:
        tuned: the tuned checkpoint (its name before any ``/step-k``).
        name: what was measured (``gain``, ``perplexity paradox``, ...).
        source: the result kind it comes from.
        points_to: ``"gain"``, ``"memorization"`` or ``"context"``.
        value: the measured effect (tuned minus base; units in ``text``).
        interval: its 95% bootstrap interval ``[low, high]`` (``None`` when not computed).
        threshold: the value the interval is compared with.
        threshold_source: where the threshold comes from.
        holds: the effect is present (interval beyond the threshold, the signal's direction).
        ruled_out: the effect is absent with confidence (interval's upper end below the bound).
        p_value: two-sided sign-test p-value of the per-sample differences, when computed.
        text: one sentence with the numbers.
        corroborating: a memorization signal that supports a memorization verdict but never makes
            one alone; when it holds the verdict cannot be "reasoning"; when it does not, it
            counts for nothing (circuits and interventions).
    """

    tuned: str
    name: str
    source: str
    points_to: str
    value: float | None
    interval: list[float] | None
    threshold: float | None
    threshold_source: str
    holds: bool
    ruled_out: bool = False
    p_value: float | None = None
    text: str = ""
    corroborating: bool = False


@dataclass
class ModelVerdict:
    """The verdict on one tuned checkpoint: label, signals for and against, and what would change it."""

    tuned: str
    base: str
    verdict: str
    label: str
    reason: str
    supporting: list[Signal] = field(default_factory=list)
    contradicting: list[Signal] = field(default_factory=list)
    inconclusive: list[Signal] = field(default_factory=list)
    context: list[Signal] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    would_change: list[str] = field(default_factory=list)


@dataclass
class VerdictResult(Result):
    """Verdicts of every tuned checkpoint of an audit, from the results present."""

    kind = "verdict"

    verdicts: list[ModelVerdict]
    results_used: list[str]  # kinds of the results that gave evidence
    method: str = ""


# ----------------------------------------------------------------------------- evidence functions

EvidenceFunction = Callable[[dict[str, Any]], list[Signal]]
_EVIDENCE: dict[str, EvidenceFunction] = {}


def evidence(kind: str) -> Callable[[EvidenceFunction], EvidenceFunction]:
    """Register ``function(result_dict) -> [Signal]`` as the evidence of results of ``kind``."""

    def add(function: EvidenceFunction) -> EvidenceFunction:
        _EVIDENCE[kind] = function
        return function

    return add


def model_key(name: str) -> str:
    """``rlvr-random/step-50`` -> ``rlvr-random``: checkpoints of one run share a key."""
    return name.split("/", 1)[0]


def _interval(iv: Interval | None) -> list[float] | None:
    return None if iv is None else [iv.low, iv.high]


def _gain_signal(tuned: str, source: str, base_correct: list[bool], tuned_correct: list[bool]) -> Signal:
    diffs = [float(t) - float(b) for b, t in zip(base_correct, tuned_correct)]
    iv = paired_bootstrap(diffs)
    holds = iv is not None and iv.low > 0
    base_rate = sum(base_correct) / max(1, len(base_correct))
    loss = iv is not None and iv.high < 0
    text = (
        f"accuracy {base_rate:.3f} -> {base_rate + (iv.mean if iv else 0):.3f}: gain {iv.text() if iv else 'n/a'}"
        + ("" if holds else " (a significant loss)" if loss else " (not significant)")
    )
    return Signal(tuned, "gain", source, "gain", iv.mean if iv else None, _interval(iv), 0.0, SIGNIFICANCE, holds,
                  p_value=sign_test(diffs), text=text)


@evidence("evaluation")
def _evaluation_evidence(result: dict[str, Any]) -> list[Signal]:
    models = result["models"]
    base = result["correct"][models[0]]
    return [_gain_signal(model_key(m), "evaluation", base, result["correct"][m]) for m in models[1:]]


@evidence("token_divergence")
def _tokens_evidence(result: dict[str, Any]) -> list[Signal]:
    tuned = model_key(result["tuned"])
    by_source = {r["responses_from"]: r for r in result["responses"]}
    signals = []
    if "tuned" in by_source and "base" in by_source:
        base = {s["sample_id"]: s["correct"] for s in by_source["base"]["samples"]}
        paired = [(base[s["sample_id"]], s["correct"]) for s in by_source["tuned"]["samples"] if s["sample_id"] in base]
        if paired:
            signal = _gain_signal(tuned, "token_divergence", [b for b, _ in paired], [t for _, t in paired])
            signals.append(signal)
    for source, response in by_source.items():
        share = response["share_above"].get("0.1")
        signals.append(
            Signal(tuned, f"tokens changed ({source} responses)", "token_divergence", "context", share, None, 0.1,
                   "JSD threshold of the token analysis (nats)", False,
                   text=f"share of {source}-response tokens whose next-token distribution moved by JSD > 0.1 nats: "
                   f"{share:.3f} (how much changed, not whether it is reasoning)")
        )
    return signals


@evidence("perplexity")
def _perplexity_evidence(result: dict[str, Any]) -> list[Signal]:
    per = result["per_checkpoint"]
    base = per[0]
    last_of: dict[str, dict] = {}
    for ckpt in per[1:]:
        last_of[model_key(ckpt["name"])] = ckpt  # the last checkpoint of each run
    signals = []
    for tuned, ckpt in last_of.items():
        answer = [None if a is None or b is None else a - b for a, b in zip(ckpt["answer_nll"], base["answer_nll"])]
        prompt = [None if a is None or b is None else a - b for a, b in zip(ckpt["prompt_nll"], base["prompt_nll"])]
        a_iv, p_iv = paired_bootstrap(answer), paired_bootstrap(prompt)
        if a_iv is None or p_iv is None:
            continue
        falls, rises = a_iv.high < 0, p_iv.low > 0
        holds = falls and rises
        # absent with confidence: the answer NLL does not fall, or the prompt NLL does not rise
        ruled_out = a_iv.low >= 0 or p_iv.high <= 0
        state = "holds" if holds else "ruled out" if ruled_out else "not significant"
        text = (
            f"from {base['name']} to {ckpt['name']}: answer NLL change (nats/token) {a_iv.text()} "
            f"({'falls' if falls else 'no significant fall'}), prompt NLL change {p_iv.text()} "
            f"({'rises' if rises else 'no significant rise'}): paradox {state}"
        )
        signals.append(
            Signal(tuned, "perplexity paradox", "perplexity", MEMORIZATION, a_iv.mean, [a_iv.low, a_iv.high], 0.0,
                   "the paradox's definition (any fall of answer and rise of prompt perplexity, arXiv 2601.11061), "
                   "made a test: " + SIGNIFICANCE + " for both changes",
                   holds, ruled_out, sign_test(answer), text)
        )
    return signals


@evidence("contamination")
def _contamination_evidence(result: dict[str, Any]) -> list[Signal]:
    fraction = min(result["fractions"])
    runs = {r["checkpoint"]: r for r in result["runs"] if r["fraction"] == fraction}
    names = result["checkpoints"]
    base = runs.get(names[0])
    if base is None:
        return []
    signals = []
    for name in names[1:]:
        run = runs.get(name)
        if run is None:
            continue
        diffs = [None if b is None or t is None else float(t) - float(b) for b, t in zip(base["answer_correct"], run["answer_correct"])]
        iv = paired_bootstrap(diffs)
        if iv is None:
            continue
        signals.append(
            Signal(model_key(name), "answers from partial prompts", "contamination", MEMORIZATION, iv.mean,
                   [iv.low, iv.high], 0.0,
                   f"shown {fraction:.0%} of each problem, a model that answers correctly did not read the problem: "
                   f"any significant rise is retrieval ({SIGNIFICANCE})",
                   iv.low > 0, False, sign_test(diffs),
                   f"share of samples answered correctly from the first {fraction:.0%} of the problem, {name} minus "
                   f"{names[0]}: {iv.text()}")
        )
    return signals


# ----------------------------------------------------------------------------- scoreboard, circuits, interventions
#
# These signals come from analyses that localize or detect *where* the gain sits. Detectors
# that flag the gain samples as training data (scoreboard) are a direct retrieval test; the
# circuits and interventions signals are *corroborating*: a localized, leakage-specific,
# causal change is what the memorization shortcut looks like, but a genuine skill can be
# localized too, so they support a memorization verdict without making one alone, and when
# they hold they keep the verdict from saying "reasoning". Their absence is never evidence
# of reasoning (a shortcut can be spread over layers; one-window patching or reset can miss it).

#: Smallest group (samples actually tested) a circuits / interventions signal is computed on.
MIN_GROUP = 3
#: Share of the leakage samples that chooses the reset window (seeded; the rest are tested).
INTERVENTION_CALIBRATION = 0.5
LEVEL = 0.95


def _not_enough(tuned: str, name: str, source: str, text: str) -> Signal:
    """An explicit "cannot be tested here" signal: shown with the evidence, never used to decide."""
    prefix = "not enough samples"
    text = prefix + text[len(prefix):] if text.lower().startswith(prefix) else f"{prefix}: {text}"
    return Signal(tuned, name, source, "context", None, None, None, "not computed", False, text=text)


def _bootstrap_difference(statistic: Callable[[np.ndarray, np.ndarray], float], n_a: int, n_b: int, *, level: float = LEVEL,
                          resamples: int = 2000, seed: int = 0) -> Interval | None:
    """Percentile bootstrap of ``statistic(rows_a, rows_b)`` resampling two independent groups
    (``n_a`` and ``n_b`` samples) separately; ``None`` when the point value is undefined (NaN)."""
    point = statistic(np.arange(n_a), np.arange(n_b))
    if not math.isfinite(point):
        return None
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n_a, n_a), rng.integers(0, n_b, n_b)) for _ in range(resamples)])
    values = values[np.isfinite(values)]
    if values.size < resamples // 2:  # the statistic is undefined on most resamples: no interval
        return None
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(float(point), float(low), float(high), n_a + n_b, level)


@evidence("scoreboard")
def _scoreboard_evidence(result: dict[str, Any]) -> list[Signal]:
    """Detectors that flag the gain samples (leakage vs stable) at the detector bar, with the
    lower end of their AUROC interval; and, as context, those that flag the planted leaks."""
    from rlvr_lens.analyses.scoreboard import DETECTOR_BAR

    tuned = model_key(result.get("tuned") or "")
    cal = result["config"]
    source = (
        f"the scoreboard's detector bar AUROC {DETECTOR_BAR:g} (rlvr_lens.analyses.scoreboard.DETECTOR_BAR), required of the "
        f"lower end of the AUROC's 95% bootstrap interval on the scored split; k and the flagging threshold (at "
        f"{cal['max_fpr']:.0%} FPR) chosen on the scoreboard's calibration split ({cal['calibration_fraction']:.0%} of each "
        f"group, seed {cal['seed']}), never on the scored samples"
    )
    signals = []
    for task in result["tasks"]:
        key = (task["positive"], task["negative"])
        if key not in (("leakage", "stable"), ("leaked", "clean")):
            continue
        gain_task = key == ("leakage", "stable")
        name = "detectors flag the gain samples" if gain_task else "detectors flag the planted leaks"
        if task.get("skipped"):
            signals.append(_not_enough(tuned, name, "scoreboard", task["skipped"]))
            continue
        # the reference ratio compares tuned with base likelihoods: on leakage vs stable it
        # separates the samples whose answer changed for any gain, memorized or reasoned
        rows = [r for r in task["rows"] if r["family"].startswith("detector:") and r["ci_low"] is not None
                and not (gain_task and r["family"] == "detector:ref_ratio")]
        if not rows:
            continue
        best = max(rows, key=lambda r: (r["ci_low"], r["auroc"]))
        passing = [r for r in rows if r["ci_low"] > DETECTOR_BAR]
        holds = bool(passing)
        ruled_out = all(r["ci_high"] < DETECTOR_BAR for r in rows)

        def describe(r, task=task):
            rates = "" if r["verdict_tpr"] is None else (
                f", its calibrated threshold flags {r['verdict_tpr']:.0%} of {task['positive']} at {r['verdict_fpr']:.0%} "
                f"of {task['negative']} flagged")
            return f"{r['chosen']} AUROC {r['auroc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] ({r['n_pos']} vs {r['n_neg']} scored{rates})"

        state = (f"{len(passing)} detector(s) clear the bar: " + "; ".join(describe(r) for r in passing) if holds else
                 f"no detector reaches the bar (every interval's upper end < {DETECTOR_BAR:g}); best {describe(best)}" if ruled_out else
                 f"no detector clears the bar with confidence; best {describe(best)}")
        what = (f"{task['positive']} (gained) vs {task['negative']} (already correct) samples, membership detectors on the "
                "tuned model (reference ratio left out: it separates any changed answer)" if gain_task else
                f"{task['positive']} vs {task['negative']} samples of the organism (can the detectors see memorized text "
                "in this model at all? says nothing about where the gain comes from)")
        signals.append(
            Signal(tuned, name, "scoreboard", MEMORIZATION if gain_task else "context", best["auroc"],
                   [best["ci_low"], best["ci_high"]], DETECTOR_BAR, source, holds if gain_task else False,
                   ruled_out if gain_task else False, text=f"{what}: {state}")
        )
    return signals


def _recovery(m_from: np.ndarray, m_to: np.ndarray, patched: np.ndarray, min_gap: float) -> Callable[[np.ndarray], float]:
    def statistic(rows: np.ndarray) -> float:
        gap = m_to[rows].mean() - m_from[rows].mean()
        return float("nan") if abs(gap) < min_gap else float((patched[rows].mean() - m_from[rows].mean()) / gap)

    return statistic


@evidence("circuits")
def _circuits_evidence(result: dict[str, Any]) -> list[Signal]:
    """The anchor window of the leakage group: localized above chance and specific to leakage vs stable."""
    from rlvr_lens.analyses.localization import Curve, is_flat

    tuned, name = model_key(result["tuned"]), "localized shortcut (circuits)"
    verdict = next((v for v in result.get("verdicts", []) if v["group"] == "leakage"), None)
    if verdict is None:
        return []
    config = result["config"]
    if verdict["status"] == "not enough samples" or verdict["n_samples"] < MIN_GROUP:
        return [_not_enough(tuned, name, "circuits", verdict["message"] or f"{verdict['n_samples']} leakage samples")]
    source = ("chance = 0 (patching recovers nothing): the peak's 95% bootstrap interval over leakage samples must exclude "
              f"it; the anchor needs a peak >= {config.get('min_recovery', 0.2):g} (circuits' min_recovery) on a curve not "
              "flat within its bands; specificity: leakage minus stable recovery at that window, 95% bootstrap "
              "interval (groups resampled separately) > 0")
    if verdict["status"] != "localized" or verdict.get("anchor") is None:
        return [Signal(tuned, name, "circuits", MEMORIZATION, None, None, 0.0, source, False, corroborating=True,
                       text=f"{verdict['message']} ({verdict['n_samples']} leakage samples): no evidence of a localized "
                       "shortcut, which is not evidence of reasoning either (a shortcut can be spread over layers)")]
    min_recovery = config.get("min_recovery", 0.2)
    def peak_of(c: Curve) -> float:
        return max((v for v in c.value if v is not None), default=-math.inf)

    curves = [Curve(**c) for c in verdict["curves"] if c["name"].startswith("recovery ")]
    if not curves:
        return []
    anchored = [c for c in curves if not is_flat(c) and peak_of(c) >= min_recovery]
    curve = max(anchored or curves, key=peak_of)
    component = curve.name.split()[-1]
    peak = max(range(len(curve.value)), key=lambda i: -math.inf if curve.value[i] is None else curve.value[i])
    value, low, high = curve.value[peak], curve.lo[peak], curve.hi[peak]
    if value is None or low is None or high is None:
        return []
    above_chance = low > 0
    window = f"layers {verdict['anchor']['start']}-{verdict['anchor']['end']}" if verdict["anchor"]["end"] > verdict["anchor"]["start"] \
        else f"layer {verdict['anchor']['start']}"
    text = f"anchor window {window} ({component}): patching it from tuned into base recovers {value:.2f} [{low:.2f}, {high:.2f}] of the tuned answer log-probability on {verdict['n_samples']} leakage samples"
    specific = None
    patching, groups = result.get("patching"), result["groups"]
    stable = groups.get("stable", [])
    variant = direction = None
    if patching is not None:
        variant = next((i for i, v in enumerate(patching["variants"]) if v["component"] == component and v["layers"][0] == peak), None)
        direction = next((d for d in patching["directions"] if d["direction"] == "tuned_into_base"), None)
    if variant is not None and direction is not None and len(stable) >= MIN_GROUP:
        m_base, m_tuned = np.asarray(patching["m_base"], float), np.asarray(patching["m_tuned"], float)
        patched = np.asarray(direction["m_patched"], float)[:, variant]
        min_gap = patching["config"].get("min_gap", 1e-3)
        leak_rows, stable_rows = np.asarray(groups["leakage"]), np.asarray(stable)
        on = [_recovery(m_base[r], m_tuned[r], patched[r], min_gap) for r in (leak_rows, stable_rows)]
        specific = _bootstrap_difference(lambda a, b: on[0](a) - on[1](b), len(leak_rows), len(stable_rows), seed=config.get("seed", 0))
        text += (f"; on {len(stable_rows)} stable samples the same window recovers {on[1](np.arange(len(stable_rows))):.2f}, "
                 f"leakage minus stable {specific.text(2)}" if specific is not None else
                 "; specificity not testable: the stable samples' base and tuned answers score alike (recovery undefined)")
    else:
        text += "; specificity not testable (no patching result or fewer than 3 stable samples)"
    holds = above_chance and specific is not None and specific.low > 0
    text += (": localized and specific to the gained samples" if holds else
             ": not above chance" if not above_chance else ": localized but not shown to be specific to the gained samples")
    return [Signal(tuned, name, "circuits", MEMORIZATION, value, [low, high], 0.0, source, holds, corroborating=True, text=text)]


def _split(indices: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    order = [int(i) for i in np.random.default_rng(seed).permutation(np.asarray(sorted(indices), dtype=np.int64))]
    cut = math.ceil(fraction * len(order))
    return sorted(order[:cut]), sorted(order[cut:])


@evidence("ablation")
def _ablation_evidence(result: dict[str, Any]) -> list[Signal]:
    """Reset of one window removes most of the leakage gain while its matched-noise control keeps it."""
    tuned, name = model_key(result["tuned"]), "reset removes the gain (interventions)"
    leakage = result["groups"].get("leakage", [])
    calibration, scored = _split(leakage, INTERVENTION_CALIBRATION, result["config"].get("seed", 0))
    if len(scored) < MIN_GROUP or not calibration:
        return [_not_enough(tuned, name, "ablation", f"{len(leakage)} leakage samples; the window is chosen on "
                            f"{INTERVENTION_CALIBRATION:.0%} of them and at least {MIN_GROUP} are needed to test it")]
    ref = {r["mode"]: np.asarray(r["correct"], float) for r in result["references"]}
    by_key = {(v["mode"], v["part"], tuple(v["window"])): np.asarray(v["correct"], float) for v in result["variants"]}
    resets = [k for k in by_key if k[0] == "reset"]
    if not resets or "tuned" not in ref or "base" not in ref:
        return []
    cal, sc = np.asarray(calibration), np.asarray(scored)
    chosen = max(resets, key=lambda k: (ref["tuned"][cal] - by_key[k][cal]).mean())  # first of the best (narrow windows come first)
    _, part, window = chosen
    gain = float((ref["tuned"][sc] - ref["base"][sc]).mean())
    removal = paired_bootstrap(list(ref["tuned"][sc] - by_key[chosen][sc]))
    noise = by_key.get(("noise", part, window))
    control = None if noise is None else paired_bootstrap(list(noise[sc] - by_key[chosen][sc]))
    retain = by_key.get(("retain", part, window))
    bound = RULED_OUT_SHARE * gain
    holds = gain > 0 and removal.low > bound and control is not None and control.low > 0
    what = {"mlp": "the MLP", "attn": "the attention"}.get(part, "all parameters")
    text = (f"reset of {what} of layers [{window[0]}, {window[1]}] (the window removing most of the gain on "
            f"{len(calibration)} calibration leakage samples) on the other {len(scored)}: tuned accuracy lost "
            f"{removal.text()} of a gain of {gain:+.3f} over base")
    text += ("; no matched-noise control was run, so the loss could be any damage" if control is None else
             f"; the matched-noise control keeps {control.text()} more than the reset")
    if retain is not None:
        text += f"; retaining only this window in the base recovers {float((retain[sc] - ref['base'][sc]).mean()):+.3f}"
    text += (": a localized, causal change carries the gain" if holds else
             f": not shown (needs the loss's lower end > {bound:.3f} = {RULED_OUT_SHARE:g} x gain and the control's > 0)")
    return [Signal(tuned, name, "ablation", MEMORIZATION, removal.mean, [removal.low, removal.high], bound,
                   f"most of the gain: the loss's 95% paired bootstrap lower end above {RULED_OUT_SHARE:g} x the gain on the "
                   f"tested samples, and the matched-noise control's interval above 0; window chosen on a seeded "
                   f"{INTERVENTION_CALIBRATION:.0%} calibration part of the leakage samples, never tested on them",
                   holds, corroborating=True, p_value=sign_test(list(ref["tuned"][sc] - by_key[chosen][sc])), text=text)]


@evidence("steering")
def _steering_evidence(result: dict[str, Any]) -> list[Signal]:
    """Scaling selected neurons down suppresses leakage answers more than stable ones (and more than random neurons do)."""
    tuned, name = model_key(result["model"]), "neurons suppress gained answers specifically (steering)"
    alphas = result["alphas"]
    scored = result["scored"]
    position = {i: j for j, i in enumerate(scored)}
    leak = [position[i] for i in result["groups"].get("leakage", []) if i in position]
    stable = [position[i] for i in result["groups"].get("stable", []) if i in position]
    if len(leak) < MIN_GROUP or len(stable) < MIN_GROUP:
        return [_not_enough(tuned, name, "steering", f"{len(leak)} leakage and {len(stable)} stable scored samples, "
                            f"at least {MIN_GROUP} of each are needed")]
    if 1.0 not in alphas or min(alphas) >= 1.0:
        return []
    one, low_alpha = alphas.index(1.0), alphas.index(min(alphas))
    selected = [c for c in result["curves"] if c["neurons"] == "selected"]
    if not selected:
        return []
    level = 1 - (1 - LEVEL) / len(selected)  # Bonferroni over the curves tested

    def specificity(curve) -> Interval | None:
        drop = np.asarray(curve["correct"][one], float) - np.asarray(curve["correct"][low_alpha], float)
        lk, st = drop[leak], drop[stable]
        return _bootstrap_difference(lambda a, b: float(lk[a].mean() - st[b].mean()), len(lk), len(st), level=level)

    tested = [(c, specificity(c)) for c in selected]
    tested = [(c, iv) for c, iv in tested if iv is not None]
    if not tested:
        return []
    curve, best = max(tested, key=lambda ci: ci[1].low)
    control = next((c for c in result["curves"] if c["neurons"] == "random" and
                    (c["layer"], c["selection"], c["scope"]) == (curve["layer"], curve["selection"], curve["scope"])), None)
    control_iv = specificity(control) if control is not None else None
    holds = best.low > 0 and control_iv is not None and control_iv.mean < best.low
    leak_drop = float(np.mean(np.asarray(curve["correct"][one], float)[leak] - np.asarray(curve["correct"][low_alpha], float)[leak]))
    text = (f"scaling {curve['selection']} neurons ({curve['scope']}) of layer {curve['layer']} by {min(alphas):g}: leakage "
            f"accuracy falls {leak_drop:+.3f}, leakage minus stable fall {best.text()} ({best.level:.2%} interval, "
            f"Bonferroni over {len(selected)} curves)")
    text += ("; no random-neuron control" if control_iv is None else
             f"; matched-norm random neurons: leakage minus stable {control_iv.mean:+.3f}")
    text += (": specific to the gained answers" if holds else
             ": not specific (stable answers fall as much, or random neurons do the same)" if best.low <= 0 else
             ": random neurons of matched norm are as specific")
    return [Signal(tuned, name, "steering", MEMORIZATION, best.mean, [best.low, best.high], 0.0,
                   "0: suppression of leakage and stable answers equal; the Bonferroni-corrected bootstrap interval (groups "
                   "resampled separately) must exclude it, and the random control's value stay below its lower end; shared "
                   "neuron sets chosen on steering's own calibration split",
                   holds, corroborating=True, text=text)]


# ----------------------------------------------------------------------------- decision


def _as_dict(result: Result | dict[str, Any]) -> dict[str, Any]:
    return result if isinstance(result, dict) else result.to_dict()


def decide(tuned: str, base: str, signals: list[Signal]) -> ModelVerdict:
    """The verdict on ``tuned`` from its signals (see the module docstring)."""
    gains = [s for s in signals if s.points_to == "gain"]
    gain = max(gains, key=lambda s: (s.source == "evaluation", s.interval is not None)) if gains else None
    memo = [s for s in signals if s.points_to == MEMORIZATION]
    context = [s for s in signals if s.points_to == "context"]
    # retrieval that could explain at most half of the gain is ruled out
    for s in memo:
        if s.name == "answers from partial prompts" and gain is not None and gain.value is not None and s.interval:
            bound = max(0.02, RULED_OUT_SHARE * gain.value)
            s.ruled_out = s.interval[1] < bound
            s.text += f" (ruled out when the upper end < {bound:.3f} = {RULED_OUT_SHARE:g} x gain)"
    present = {s.name for s in memo}
    missing = [name for name in DECISIVE if name not in present]
    corroborating = [s for s in memo if s.corroborating]
    backing = [s for s in corroborating if s.holds]  # localized / specific changes that fit a shortcut
    idle = [s for s in corroborating if not s.holds]  # count for nothing either way
    memo = [s for s in memo if not s.corroborating]
    holding = [s for s in memo if s.holds]
    ruled_out = [s for s in memo if s.ruled_out and not s.holds]
    open_ = [s for s in memo if not s.holds and not s.ruled_out]
    would_change = [f"run the analysis that gives the {name} test" for name in missing]
    verdict = UNDETERMINED
    if gain is None:
        reason = "no accuracy comparison of tuned and base is present (run the evaluation or token analysis), so there is no gain to explain"
        supporting, contradicting, inconclusive = [], [], memo + corroborating
        would_change.insert(0, "an accuracy comparison of tuned vs base on these samples")
    elif not gain.holds:
        reason = f"there is no significant accuracy gain ({gain.text}), so there is no gain to explain"
        supporting, contradicting, inconclusive = [gain], [], memo + corroborating
        would_change.insert(0, "a significant accuracy gain (more samples, or a tuned model that gains)")
    elif holding:
        verdict = MEMORIZATION
        reason = "the gain is significant and " + "; ".join(f"the {s.name} test holds" for s in holding + backing)
        supporting, contradicting, inconclusive = [gain, *holding, *backing], ruled_out, open_ + idle
        would_change.append("the memorization tests losing significance on more samples (their intervals reaching 0)")
    elif not missing and not open_ and not backing:
        verdict = REASONING
        reason = "the gain is significant and every memorization test is ruled out: " + "; ".join(s.name for s in ruled_out)
        supporting, contradicting, inconclusive = [gain, *ruled_out], [], idle
        would_change.append("a significant perplexity paradox or a significant rise of answers from partial prompts")
    else:
        reason = "the gain is significant but " + (
            f"the decisive test(s) {', '.join(missing)} are missing" if missing else
            "the memorization tests are inconclusive: " + "; ".join(s.name for s in open_) if open_ else
            "while every direct memorization test is ruled out, a localized change that fits a memorized shortcut "
            "holds: " + "; ".join(s.name for s in backing) + " (it backs a memorization verdict but cannot make one alone)"
        )
        supporting, contradicting, inconclusive = [gain], ruled_out, open_ + corroborating
        if open_:
            would_change.append("more samples, so that the inconclusive tests either hold or are ruled out")
        if backing and not missing and not open_:
            would_change.append("a direct memorization test holding (memorization), or the localized change losing "
                                "significance or specificity on more samples (reasoning)")
    return ModelVerdict(tuned, base, verdict, LABELS[verdict], reason, supporting, contradicting, inconclusive, context,
                        missing, would_change)


def build_verdict(results: list[Result | dict[str, Any]]) -> VerdictResult:
    """The verdict of every tuned checkpoint that the ``results`` cover (results of unknown kinds are skipped)."""
    signals: list[Signal] = []
    used: list[str] = []
    base = ""
    order: list[str] = []
    for result in results:
        data = _as_dict(result)
        function = _EVIDENCE.get(data.get("kind", ""))
        if function is None:
            continue
        found = function(data)
        if found and data["kind"] not in used:
            used.append(data["kind"])
        signals += found
        base = base or _base_name(data)
        order += [s.tuned for s in found if s.tuned not in order]
    if "" in order:  # a result that does not name its checkpoint (a scoreboard saved before it stored one)
        order.remove("")
        unnamed = [s for s in signals if s.tuned == ""]
        if len(order) == 1:  # only one tuned checkpoint: it is about that one
            for s in unnamed:
                s.tuned = order[0]
    verdicts = [decide(t, base, [s for s in signals if s.tuned == t]) for t in order]
    verdicts.sort(key=lambda v: not any(s.points_to == "gain" for s in v.supporting + v.inconclusive))  # compared ones first
    return VerdictResult(verdicts=verdicts, results_used=used, method=__doc__.split("\n\n", 1)[0])


def _base_name(data: dict[str, Any]) -> str:
    for key in ("base",):
        if isinstance(data.get(key), str):
            return data[key]
    for key in ("checkpoints", "models"):
        if data.get(key):
            return model_key(data[key][0])
    return ""


def verdict_lines(result: VerdictResult) -> list[str]:
    """The verdict as terminal lines (what ``audit`` and ``demo`` print)."""
    lines = []
    for v in result.verdicts:
        lines.append(f"verdict for {v.tuned} (vs {v.base}): {v.label.upper()}: {v.reason}.")
        for title, group in (("for", v.supporting), ("against", v.contradicting), ("inconclusive", v.inconclusive)):
            lines += [f"    {title:<12} {s.name}: {s.text}" for s in group]
        if v.would_change:
            lines.append(f"    would change it: {'; '.join(v.would_change)}")
    return lines or ["verdict: undetermined (no result that gives evidence was computed)"]

"""The audit's answer: is a tuned model's gain consistent with reasoning, with retrieval of
memorized answers, or undetermined? Computed from whichever results an audit produced.

Each result kind that carries evidence has an *evidence function* (``@evidence("kind")``)
that turns the result's JSON form into :class:`Signal` s, one per tuned checkpoint it
covers. A new analysis plugs in by adding one such function; nothing else changes. Every
signal is a paired comparison of the tuned model with its base **on the same samples**,
with a 95% bootstrap interval over samples (:mod:`rlvr_lens.analyses.stats`), so no claim
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
* **context** (``token_divergence``): how much of the next-token distribution moved;
  reported, not used for the decision (a sparse change fits both explanations).

Decision, per tuned checkpoint (``reasoning`` needs positive evidence, never a default):

1. no gain signal, or a gain whose interval includes 0 -> ``undetermined``;
2. any memorization signal that holds (its interval excludes 0 in the memorization
   direction) -> ``memorization``;
3. every decisive memorization test present and ruled out (its interval's upper end
   below the bound stated in the signal) -> ``reasoning``;
4. otherwise ``undetermined`` (a decisive test is missing or inconclusive).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
    holding = [s for s in memo if s.holds]
    ruled_out = [s for s in memo if s.ruled_out and not s.holds]
    open_ = [s for s in memo if not s.holds and not s.ruled_out]
    would_change = [f"run the analysis that gives the {name} test" for name in missing]
    verdict = UNDETERMINED
    if gain is None:
        reason = "no accuracy comparison of tuned and base is present (run the evaluation or token analysis), so there is no gain to explain"
        supporting, contradicting, inconclusive = [], [], memo
        would_change.insert(0, "an accuracy comparison of tuned vs base on these samples")
    elif not gain.holds:
        reason = f"there is no significant accuracy gain ({gain.text}), so there is no gain to explain"
        supporting, contradicting, inconclusive = [gain], [], memo
        would_change.insert(0, "a significant accuracy gain (more samples, or a tuned model that gains)")
    elif holding:
        verdict = MEMORIZATION
        reason = "the gain is significant and " + "; ".join(f"the {s.name} test holds" for s in holding)
        supporting, contradicting, inconclusive = [gain, *holding], ruled_out, open_
        would_change.append("the memorization tests losing significance on more samples (their intervals reaching 0)")
    elif not missing and not open_:
        verdict = REASONING
        reason = "the gain is significant and every memorization test is ruled out: " + "; ".join(s.name for s in ruled_out)
        supporting, contradicting, inconclusive = [gain, *ruled_out], [], []
        would_change.append("a significant perplexity paradox or a significant rise of answers from partial prompts")
    else:
        reason = "the gain is significant but " + (
            f"the decisive test(s) {', '.join(missing)} are missing" if missing else
            "the memorization tests are inconclusive: " + "; ".join(s.name for s in open_)
        )
        supporting, contradicting, inconclusive = [gain], ruled_out, open_
        if open_:
            would_change.append("more samples, so that the inconclusive tests either hold or are ruled out")
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

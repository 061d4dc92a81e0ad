"""The verdict's report section: first in the report, one row per signal with value, interval and threshold."""

from __future__ import annotations

from pathlib import Path

from rlvr_lens.analyses.verdict import LABELS, VerdictResult
from rlvr_lens.report.html import Section, Table
from rlvr_lens.report.registry import ReportEntry, register


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _rows(verdict) -> list[list[str]]:
    rows = []
    for role, signals in (
        ("supports", verdict.supporting),
        ("contradicts", verdict.contradicting),
        ("inconclusive", verdict.inconclusive),
        ("context", verdict.context),
    ):
        for s in signals:
            interval = "" if s.interval is None else f"[{s.interval[0]:+.4f}, {s.interval[1]:+.4f}]"
            state = "holds" if s.holds else "ruled out" if s.ruled_out else "not significant" if s.interval else "-"
            p = "" if s.p_value is None else f"{s.p_value:.3g}"
            rows.append([verdict.tuned, role, s.name, _num(s.value), interval, p, state, _num(s.threshold), s.threshold_source])
    return rows


def plot_verdict(result: VerdictResult) -> dict:
    return {}


def section_verdict(result: VerdictResult, figures: dict[str, Path]) -> Section:
    if not result.verdicts:
        return Section("verdict", "Verdict", "<b>Undetermined</b>: no analysis that gives evidence was computed.")
    summary = "; ".join(f"{v.tuned}: {LABELS[v.verdict]}" for v in result.verdicts) + "."
    paragraphs = [
        "Is each tuned checkpoint's gain on these samples consistent with reasoning, or with retrieval of memorized "
        "answers? Every signal compares the tuned model with its base on the same samples and carries a 95% "
        "bootstrap interval over samples; a signal only counts when its interval excludes its threshold. "
        "<b>Reasoning</b> needs a significant gain and every memorization test ruled out; <b>memorization</b> needs a "
        "significant gain and at least one memorization test that holds; anything else is <b>undetermined</b>. "
        "Circuits and interventions signals only corroborate: a localized, leakage-specific change backs a "
        "memorization verdict and rules out a reasoning one, but never makes a verdict alone. "
        "The table lists every signal; <code>verdict.json</code> holds each one's full sentence.",
    ]
    for v in result.verdicts:
        text = f"<b>{v.tuned} vs {v.base}: {LABELS[v.verdict]}</b>, because {v.reason}."
        if v.would_change:
            text += f" What would change it: {'; '.join(v.would_change)}."
        paragraphs.append(text)
    table = Table(
        ["tuned", "role", "signal", "value", "95% interval", "sign-test p", "state", "threshold", "threshold from"],
        [row for v in result.verdicts for row in _rows(v)],
        "Every signal of the verdict (value = tuned minus base, per sample, for accuracy (a share) and NLL (nats per token); "
        "AUROC for the detectors; share of the tuned answer's log-probability recovered for circuits; accuracy lost for "
        "reset; leakage minus stable accuracy fall for steering)",
    )
    return Section("verdict", "Verdict: reasoning or memorization?", summary, paragraphs, [table])


register("verdict", ReportEntry(plot=plot_verdict, section=section_verdict, order=0))

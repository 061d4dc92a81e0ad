"""Audit caching: a finished step is reused, a changed key recomputes, a failure loses nothing."""

from __future__ import annotations

from dataclasses import dataclass

from rlvr_lens.audit import AuditStep, fingerprint_checkpoint, fingerprint_file, run_steps
from rlvr_lens.results import Result


@dataclass
class _Count(Result):
    kind = "count"
    value: int


def test_cached_steps_are_not_recomputed_and_failures_are_isolated(tmp_path):
    calls = []

    def make(value):
        def run():
            calls.append(value)
            return _Count(value)

        return run

    def broken():
        raise RuntimeError("analysis bug")

    steps = [AuditStep("a", _Count, {"v": 1}, make(1)), AuditStep("b", _Count, {}, broken), AuditStep("c", _Count, {"v": 3}, make(3))]
    first = run_steps(tmp_path, steps)
    assert [s.status for s in first.steps] == ["computed", "failed", "computed"]
    assert "analysis bug" in first.steps[1].error
    assert [r.value for r in first.results] == [1, 3]
    second = run_steps(tmp_path, steps)
    assert [s.status for s in second.steps] == ["cached", "failed", "cached"]
    assert calls == [1, 3]
    changed = run_steps(tmp_path, [AuditStep("a", _Count, {"v": 2}, make(2))])
    assert changed.steps[0].status == "computed" and calls == [1, 3, 2]


def test_fingerprints_change_with_content(tmp_path, tiny_pair):
    data = tmp_path / "d.jsonl"
    data.write_text("a\n")
    before = fingerprint_file(data)
    data.write_text("b\n")
    assert fingerprint_file(data) != before
    assert fingerprint_checkpoint(tiny_pair[0]) != fingerprint_checkpoint(tiny_pair[1])
    assert fingerprint_checkpoint("org/model") == {"source": "org/model"}

"""``rlvr-lens demo`` end to end on the tiny ``test`` organism: every analysis step runs and lands in one report."""

from __future__ import annotations

import json

import pytest

from rlvr_lens.cli import main


@pytest.mark.slow
def test_demo_builds_audits_and_reports(tmp_path, capsys, single_thread):
    organism, out = tmp_path / "organism", tmp_path / "demo"
    argv = ["demo", "--preset", "test", "--organism-dir", str(organism), "--out", str(out), "--limit", "8", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    err = captured.err
    assert "failed" not in err
    assert "verdict for rlvr-" in captured.out  # the verdict is printed on the terminal
    # one perplexity trajectory per RL run, then the probe, both token analyses per pair, and the weights
    manifest = json.loads((organism / "manifest.json").read_text())
    rl_runs = [s["name"] for s in manifest["stages"] if s["name"].startswith("rlvr-")]
    assert len(rl_runs) >= 2
    for run in rl_runs:
        assert f"perplexity-{run}" in err and f"tokens-{run}" in err and f"cross-sampling-{run}" in err
    for kind in ("organism", "perplexity", "contamination", "token_divergence", "cross_sampling", "weights"):
        assert (out / f"{kind}.json").is_file(), kind
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 6 and "leaked" in html
    # the verdict first, the run's options and environment last
    sections = [part.split("'", 1)[0] for part in html.split("<section id='")[1:]]
    assert sections[0] == "verdict" and sections[-1] == "run" and (out / "verdict.json").is_file()
    # the first --limit evaluation samples reach the results, with their leaked / clean labels scored
    perplexity = json.loads((out / "perplexity.json").read_text())
    assert [len(c["prompt_nll"]) for c in perplexity["per_checkpoint"]] == [8] * len(perplexity["checkpoints"])
    assert perplexity["auroc"]["base"]["prompt_nll_low"] is not None

    # a second run reuses the organism and every cached analysis step
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "computed" not in err and err.count("cached") >= 2 + 2 * len(rl_runs)

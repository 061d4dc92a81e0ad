"""The HTML report opened in a real browser (headless Chromium): every section, figure and table
rendered, no console error, nothing loaded from outside the file; a screenshot is saved."""

from __future__ import annotations

import re

import pytest

from rlvr_lens.analyses.perplexity import (
    CheckpointPerplexity,
    PerplexityResult,
    aggregate_ppl,
    paradox_verdict,
)
from rlvr_lens.analyses.verdict import build_verdict
from rlvr_lens.report import write_run
from rlvr_lens.report.browser import external_references, find_browser, open_page, screenshot
from rlvr_lens.report.run_info import run_section

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium-family browser installed (`make test` installs Debian's chromium when run as root)"
)


def _perplexity_result(n: int = 12) -> PerplexityResult:
    def ckpt(name, shift):
        prompt = [2.0 + shift + 0.01 * i for i in range(n)]
        answer = [1.0 - shift + 0.01 * i for i in range(n)]
        return CheckpointPerplexity(name, "float32", prompt, answer, aggregate_ppl(prompt), aggregate_ppl(answer))

    per = [ckpt("base", 0.0), ckpt("rl/step-10", 0.1)]
    groups = {"leaked": list(range(n // 2)), "clean": list(range(n // 2, n))}
    for c in per:
        c.groups = {g: {"prompt_ppl": aggregate_ppl(c.prompt_nll, i), "answer_ppl": aggregate_ppl(c.answer_nll, i)} for g, i in groups.items()}
    return PerplexityResult(
        checkpoints=["base", "rl/step-10"], template="plain", sample_ids=[str(i) for i in range(n)],
        prompt_tokens=[10] * n, answer_tokens=[5] * n, answer_from=["answer"] * n, leading_specials=0,
        per_checkpoint=per, verdict=paradox_verdict(per), groups=groups,
        group_verdicts={g: paradox_verdict(per, idx) for g, idx in groups.items()},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    perplexity = _perplexity_result()
    verdict = build_verdict([perplexity])
    trailing = [run_section({"batch_size": 8, "analyses": ["perplexity"]}, {"rlvr-lens": "0", "device": "cpu", "dtype": "auto"})]
    path = write_run(out, [perplexity, verdict], title="browser test", context=["data: test"], trailing=trailing)
    return path


def test_report_references_nothing_outside_itself(report):
    assert external_references(report.read_text()) == []


def test_every_section_figure_and_table_renders_without_errors(report):
    html = report.read_text()
    page = open_page(report, browser=BROWSER)
    sections = re.findall(r"<section id='([^']+)'>", html)
    assert sections[0] == "verdict" and sections[-1] == "run"  # verdict first, run configuration last
    for anchor in sections:  # each section is in the rendered DOM with its heading, and listed in the contents
        assert re.search(rf'<section id="{re.escape(anchor)}"><h2>[^<]+</h2>', page.dom), anchor
        assert f'<a href="#{anchor}">' in page.dom
    assert page.dom.count("<table>") == html.count("<table>") >= 4
    assert page.dom.count("<td>") == html.count("<td>") > 10
    assert page.images == html.count("<img ") >= 1 and page.images_loaded == page.images
    assert page.errors == [] and page.console == []
    assert page.resources == []  # nothing was requested (figures are inline data URIs)


def test_screenshot(report, tmp_path):
    png = screenshot(report, tmp_path / "top.png", width=900, height=700, browser=BROWSER)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (900, 700)


def test_the_probe_sees_errors_and_external_requests(tmp_path):
    """The checks can fail: a page with a script error and an external image is caught by both."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img src='http://example.invalid/x.png'><script>undefined_call()</script></body></html>")
    page = open_page(bad, browser=BROWSER)
    assert page.images == 1 and page.images_loaded == 0
    assert any("undefined_call" in e for e in page.errors) or any("undefined_call" in c for c in page.console)
    assert external_references(bad.read_text()) == ["http://example.invalid/x.png"]

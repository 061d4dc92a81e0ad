"""The report: JSON + PNG + one self-contained HTML page, written atomically."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlvr_lens.report import ReportEntry, Section, Table, register, write_run  # noqa: E402
from rlvr_lens.results import Result  # noqa: E402


@dataclass
class _Toy(Result):
    kind = "toy"
    label: str
    values: list[float]


def _plot(result):
    figure, axis = plt.subplots()
    axis.plot(result.values)
    return {"curve": figure}


def _section(result, figures):
    return Section(
        "toy",
        f"Toy {result.label}",
        summary="values <b>rise</b>",
        paragraphs=["<script>alert(1)</script> stays text"],
        tables=[Table(["name", "value"], [[result.label, f"{result.values[-1]:.2f}"]])],
        figures=[("the curve", figures["curve"])],
    )


register("toy", ReportEntry(_plot, _section))


def test_write_run_saves_json_figures_and_self_contained_html(tmp_path):
    html_path = write_run(tmp_path, [_Toy("a", [1.0, 2.0]), _Toy("b", [3.0, 5.0])], context=["two toys"])
    assert json.loads((tmp_path / "toy.json").read_text())["label"] == "a"
    assert json.loads((tmp_path / "toy-2.json").read_text())["label"] == "b"
    png = (tmp_path / "figures" / "toy-2-curve.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    html = html_path.read_text()
    assert base64.b64encode(png).decode() in html  # figures are inlined: works offline
    assert "src=\"http" not in html and "<link" not in html
    assert "<b>rise</b>" in html and "<script>alert" not in html
    assert "id='toy'" in html and "id='toy-2'" in html and "Toy b" in html
    assert not [p for p in tmp_path.rglob("*.tmp")]

"""Which figures and which report section belong to each result kind, and writing a run."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlvr_lens.io import atomic_save_figure, atomic_write_text
from rlvr_lens.report.html import Section, render_html
from rlvr_lens.results import Result


@dataclass(frozen=True)
class ReportEntry:
    """How one result kind appears in the report.

    ``plot(result) -> {name: matplotlib Figure}``; ``section(result, figures) -> Section``
    where ``figures`` maps the same names to the saved PNG paths.
    """

    plot: Callable[[Result], dict]
    section: Callable[[Result, dict[str, Path]], Section]
    order: int = 100


_ENTRIES: dict[str, ReportEntry] = {}


def register(kind: str, entry: ReportEntry) -> None:
    _ENTRIES[kind] = entry


def _load_analysis_modules() -> None:
    """Import analysis modules so that they register their report entries."""
    import importlib
    import pkgutil

    import rlvr_lens.analyses as analyses

    for info in pkgutil.iter_modules(analyses.__path__):
        importlib.import_module(f"rlvr_lens.analyses.{info.name}")
    importlib.import_module("rlvr_lens.train.grpo")  # registers the GRPO run's entry (kind "grpo_run")


def remove_stale_outputs(out: Path, written: set[Path]) -> list[Path]:
    """Delete what an earlier run left in ``out`` beside this run's files, so the directory
    never shows old results next to a new report: result files (``<kind>.json`` or
    ``<kind>-N.json`` holding that ``kind``) and figures not in ``written``. The audit cache
    and any other file are kept."""
    import json

    removed = []
    for path in sorted(out.glob("*.json")):
        if path in written:
            continue
        try:
            kind = json.loads(path.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        numbered = isinstance(kind, str) and path.stem.startswith(f"{kind}-") and path.stem[len(kind) + 1 :].isdigit()
        if path.stem == kind or numbered:
            path.unlink(missing_ok=True)
            removed.append(path)
    for path in sorted((out / "figures").glob("*.png")):
        if path not in written:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_run(
    out_dir: str | os.PathLike,
    results: list[Result],
    *,
    title: str = "rlvr-lens report",
    context: list[str] | None = None,
    trailing: list[Section] | None = None,
) -> Path:
    """Save every result as JSON, draw its figures, and write ``report.html``; return its path.

    ``trailing`` sections (e.g. the run's configuration and environment) come last."""
    import matplotlib

    matplotlib.use("Agg")
    _load_analysis_modules()
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    sections: list[tuple[int, Section]] = []
    seen: dict[str, int] = {}
    written: set[Path] = set()
    for result in results:
        # several results of one kind (e.g. token divergence of two pairs) get -2, -3, ... stems
        seen[result.kind] = seen.get(result.kind, 0) + 1
        stem = result.kind if seen[result.kind] == 1 else f"{result.kind}-{seen[result.kind]}"
        written.add(result.save(out / f"{stem}.json"))
        entry = _ENTRIES.get(result.kind)
        if entry is None:
            sections.append((1000, Section(stem, result.kind, paragraphs=["(no report section registered)"])))
            continue
        paths: dict[str, Path] = {}
        for name, figure in entry.plot(result).items():
            paths[name] = atomic_save_figure(out / "figures" / f"{stem}-{name}.png", figure)
            written.add(paths[name])
        section = entry.section(result, paths)
        section.anchor = stem
        sections.append((entry.order, section))
    remove_stale_outputs(out, written)
    sections.sort(key=lambda item: item[0])
    html = render_html([s for _, s in sections] + list(trailing or []), title=title, context=context)
    return atomic_write_text(out / "report.html", html)

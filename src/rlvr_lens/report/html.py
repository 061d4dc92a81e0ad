"""Render report sections as one self-contained HTML page (works offline)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass, field
from pathlib import Path

from rlvr_lens import __version__


@dataclass
class Table:
    """A small table: ``columns`` names and ``rows`` of already formatted cells."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Section:
    """One analysis' part of the report.

    Attributes:
        anchor: HTML id (usually the result kind).
        title: heading.
        summary: the finding in one or two sentences (shown first, in bold).
        paragraphs: explanation that reads well without the paper at hand (plain text;
            ``<b>``/``<i>``/``<code>`` tags allowed).
        tables: tables to show.
        figures: ``(caption, png_path)`` pairs; PNGs are inlined as base64.
    """

    anchor: str
    title: str
    summary: str = ""
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.meta{color:#666;font-size:.9em} .summary{background:#f3f6fb;border-left:4px solid #4a72b0;padding:.6em 1em;font-weight:600}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f0f0f0} td:first-child,th:first-child{text-align:left} caption{caption-side:top;text-align:left;color:#555;padding:.3em 0}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9em}
nav{background:#fafafa;border:1px solid #e4e4e4;padding:.4em 1em;margin:1em 0} nav ol{margin:.3em 0;columns:2} code{background:#f5f5f5;padding:0 .2em}
"""


def _escape_keep_tags(text: str) -> str:
    escaped = html.escape(text, quote=False)
    for tag in ("b", "i", "code", "br/"):
        escaped = escaped.replace(f"&lt;{tag}&gt;", f"<{tag}>").replace(f"&lt;/{tag}&gt;", f"</{tag}>")
    return escaped


def _table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure_html(caption: str, path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"/>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def render_html(sections: list[Section], *, title: str = "rlvr-lens report", context: list[str] | None = None) -> str:
    """Return the HTML text of the report (write it with :func:`rlvr_lens.io.atomic_write_text`)."""
    items = "".join(f'<li><a href="#{html.escape(s.anchor)}">{html.escape(s.title)}</a></li>' for s in sections)
    nav = f"<b>Contents</b><ol>{items}</ol>"
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p class='meta'>rlvr-lens {__version__} &middot; {stamp}</p>",
    ]
    parts += [f"<p class='meta'>{_escape_keep_tags(line)}</p>" for line in context or []]
    parts.append(f"<nav id='contents'>{nav}</nav>")
    for section in sections:
        parts.append(f"<section id='{html.escape(section.anchor)}'><h2>{html.escape(section.title)}</h2>")
        if section.summary:
            parts.append(f"<p class='summary'>{_escape_keep_tags(section.summary)}</p>")
        parts += [f"<p>{_escape_keep_tags(p)}</p>" for p in section.paragraphs]
        parts += [_table_html(t) for t in section.tables]
        parts += [_figure_html(caption, path) for caption, path in section.figures]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)

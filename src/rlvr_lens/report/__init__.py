"""One self-contained HTML page (figures inlined as PNG) plus the JSON of every result.

Each analysis module registers a :class:`ReportEntry` for its result kind with
:func:`register`: a function that draws its figures and one that writes its section.
:func:`write_run` then saves, for a list of results, ``<kind>.json``,
``figures/<kind>-<name>.png`` and ``report.html``, every file atomically.
"""

from rlvr_lens.report.html import Section, Table, render_html
from rlvr_lens.report.registry import ReportEntry, register, write_run

__all__ = ["ReportEntry", "Section", "Table", "register", "render_html", "write_run"]

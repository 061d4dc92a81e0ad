"""Progress of long loops. Analyses only report progress when the caller asks (the CLI does).

On a terminal a loop shows a tqdm bar. Anywhere else (a log file, CI, ``nohup``, a
notebook's captured stderr) a bar would come out as thousands of carriage-return lines, so
a loop writes one line when it ends instead: what it did, how many items, and how long it
took. A loop whose unit is ``"stage"`` (a few long steps, e.g. building the organism)
writes one line per stage with that stage's duration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def format_seconds(seconds: float) -> str:
    """``0.42 s``, ``12.3 s``, ``4 min 05 s``, ``1 h 02 min``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _plural(unit: str, count: int) -> str:
    if count == 1:
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


def _lines(iterable: Iterable[T], desc: str, unit: str, stream: TextIO) -> Iterator[T]:
    """Yield the items of ``iterable``; write one line per stage or one line at the end.

    A stage ends when the caller asks for the next item, or when the loop is left (also by
    ``break``, an exception, or dropping a generator that was advanced with ``next``).
    """
    start = time.perf_counter()
    count = 0
    current: tuple[object, float] | None = None  # the stage being worked on, and since when

    def stage_done() -> None:
        if unit == "stage" and current is not None:
            took = format_seconds(time.perf_counter() - current[1])
            print(f"{desc}: {current[0]} done in {took}", file=stream, flush=True)

    try:
        for item in iterable:
            stage_done()
            current = (item, time.perf_counter())
            count += 1
            yield item  # the caller works on ``item`` until it asks for the next one
    finally:
        stage_done()
        if unit != "stage" and count:
            took = format_seconds(time.perf_counter() - start)
            print(f"{desc or 'loop'}: {count} {_plural(unit, count)} in {took}", file=stream, flush=True)


def progress(
    iterable: Iterable[T],
    *,
    enabled: bool,
    desc: str = "",
    total: int | None = None,
    unit: str = "it",
    stream: TextIO | None = None,
) -> Iterator[T]:
    """Iterate over ``iterable``, reporting progress on ``stream`` (default: stderr) when ``enabled``.

    A tqdm bar on a terminal; otherwise plain lines (see the module docstring).
    """
    if not enabled:
        return iter(iterable)
    stream = stream if stream is not None else sys.stderr
    if _is_terminal(stream):
        from tqdm.auto import tqdm  # imported here: not needed by --help or log-file runs

        return iter(tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True, file=stream))
    return _lines(iterable, desc, unit, stream)

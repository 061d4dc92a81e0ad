"""Progress bars for long loops. Analyses only show one when the caller asks (the CLI does)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], *, enabled: bool, desc: str = "", total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when ``enabled``; otherwise return it unchanged."""
    if not enabled:
        return iter(iterable)
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True))

"""Read the numbers of a report section back and compare them with the result they came from.

A cell such as ``"0.125"``, ``"3.2e-05"``, ``"12.5%"`` or ``"n/a"`` is parsed back; it shows a
value correctly when it lies within half a unit of its last displayed digit.
"""

from __future__ import annotations

import math
import re

_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:e([+-]?\d+))?")


def numbers_in(text: str) -> list[str]:
    """Every number written in ``text`` (as displayed)."""
    return [m.group(0) for m in _NUMBER.finditer(text)]


def assert_shows(cell: str, value, *, scale: float = 1.0, where: str = "") -> None:
    """``cell`` (a formatted number, possibly followed by ``%`` or text) displays ``value * scale``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        assert cell.strip() == "n/a", f"{where}: {cell!r} should be n/a"
        return
    match = _NUMBER.search(cell)
    assert match, f"{where}: no number in {cell!r}"
    decimals = len(match.group(1) or "")
    exponent = int(match.group(2) or 0)
    tolerance = 0.5 * 10.0 ** (exponent - decimals) * (1 + 1e-9) + 1e-15
    shown = float(match.group(0))
    assert abs(shown - value * scale) <= tolerance, f"{where}: {cell!r} does not show {value * scale!r}"


def column(table, header: str) -> list[str]:
    """The cells of the column named ``header``."""
    index = table.columns.index(header)
    return [row[index] for row in table.rows]

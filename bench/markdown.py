"""Figures as Markdown table cells, the same way in every section of the report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def cell(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        # Small figures (CPU ms, statements per vote) keep three significant digits.
        if 0 < abs(value) < 1 and digits < 3:
            return f"{value:.3g}"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value, digits) for value in row) + " |" for row in rows]
    return lines

"""The one Markdown-table helper: every report's tables are built here, with cells formatted one way."""

from __future__ import annotations

import json
import math
from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: text as is, a missing figure (None, NaN) as "—", a float to ``digits`` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def cell(value: Any, width: int = 60) -> str:
    """Free text (or any JSON value) made safe for one cell: pipes escaped, newlines shown as ⏎, cut at ``width``."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    text = text.replace("|", "\\|").replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table as lines; cells that are not text go through :func:`fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]

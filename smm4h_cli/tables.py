"""Plain-text renderings of result tables, shared by the commands and the study report."""

from __future__ import annotations

from typing import Any, Sequence


def format_cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


def _md_cell(text: str) -> str:
    """A table cell that cannot break the table: pipes escaped, line breaks flattened."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, Any]], headers: dict[str, str] | None = None, digits: int = 3) -> str:
    keys = list(rows[0])
    names = [(headers or {}).get(k, k) for k in keys]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(keys))) + "|"]
    lines += ["| " + " | ".join(_md_cell(format_cell(r[k], digits)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"

"""Plain-text renderings of result tables, shared by the commands and the study report."""

from __future__ import annotations

import re
from typing import Any, Sequence

#: How a command prints its table: for people (``table``), or as JSON, CSV or Markdown.
FORMATS = ("table", "json", "csv", "markdown")


def format_cell(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "–" if value is None else str(value)  # not applicable: shown, where an empty cell looks like a gap


def _md_cell(text: str) -> str:
    """A table cell that cannot break the table: pipes escaped, line breaks flattened."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


_NUMBER = re.compile(r"^[*<\[\s]*[-+]?\d[\d,.]*")


def _numeric(value: Any) -> bool:
    """Numbers, and cells written from numbers (``**0.812** ± 0.010``, ``< 0.001``, ``[-0.05, +0.02]``, ``–``)."""
    if value is None or isinstance(value, bool):
        return value is None
    if isinstance(value, (int, float)):
        return True
    return value in ("", "–") or bool(_NUMBER.match(str(value)))


def markdown_table(rows: Sequence[dict[str, Any]], headers: dict[str, str] | None = None, digits: int = 3) -> str:
    keys = list(rows[0])
    names = [(headers or {}).get(k, k) for k in keys]
    # The first column names the row; numbers align right, text left.
    numeric = [i > 0 and all(_numeric(r[k]) for r in rows) for i, k in enumerate(keys)]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join("---:" if right else "---" for right in numeric) + "|"]
    lines += ["| " + " | ".join(_md_cell(format_cell(r[k], digits)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


TABLE2_HEADERS = {"f1": "F1", "precision": "Precision", "recall": "Recall"}


def format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_clause(p: float, shown: str | None = None) -> str:
    """``p = 0.002`` or ``p < 0.001``, for a sentence (``format_p`` is for a table's cell);
    ``shown``: p as the caller already formats it (default: ``format_p``)."""
    shown = format_p(p) if shown is None else shown
    return f"p {shown}" if shown.startswith("<") else f"p = {shown}"


def table2_rows(result: dict[str, Any], bold: tuple[str, str], ci_label: str = "CI") -> tuple[list[dict], list[dict]]:
    """The rows of Table 2 from ``Comparison.to_dict()``: one per arm (scores with ± std over seeds,
    the best of each column wrapped in ``bold``), and one per pair (ΔF1, its interval, McNemar p, verdict).
    """

    def cell(arm: dict, metric: str) -> str:
        text = f"{arm[metric]:.3f}"
        if arm[f"{metric}_std"] is not None:
            text += f" ± {arm[f'{metric}_std']:.3f}"
        return f"{bold[0]}{text}{bold[1]}" if arm["arm"] in result["winners"][metric] else text

    arms = [{"arm": a["arm"], **{m: cell(a, m) for m in TABLE2_HEADERS}, "seeds": a["seeds"]} for a in result["arms"]]
    conf = f"{result['confidence']:.0%}"
    pairs = [
        {
            "comparison": f"{p['b']} vs {p['a']}",
            "ΔF1": f"{p['f1_diff']:+.3f}",
            f"{conf} {ci_label}": f"[{p['ci_low']:+.3f}, {p['ci_high']:+.3f}]",
            "McNemar p": format_p(p["mcnemar_p"]),
            "verdict": p["verdict"],
        }
        for p in result["pairs"]
    ]
    return arms, pairs

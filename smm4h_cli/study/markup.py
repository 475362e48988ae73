"""Text and HTML that cannot carry anything in: the report's one security boundary.

Text that came from data or a model (posts, file and model names, group names) enters the
report's Markdown only through :func:`literal`, so it shows as written and is never read as
Markdown or HTML; input paths show through :func:`shown_path`, never as the machine's absolute
paths; :func:`render_html` embeds the figures the study wrote, by a fixed list, and follows no
image or link found in the Markdown.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any

from smm4h_cli.sample import sample_dir

# Characters that can open Markdown or HTML inline (emphasis, code, links and images, autolinks,
# raw HTML, entities, escapes, table cells, GFM strikethrough and math), written as numeric
# character references: CommonMark shows a reference as its character and never reads it as
# markup, in running text and in table cells alike (a backslash escape would not survive the
# table's own escaping of backslashes).
_MARKUP = {c: f"&#{ord(c)};" for c in "\\`*_[<&|~$"}
_LINE_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")
# What opens a block where the text starts a line (in a list item or quote): an indent, a quote,
# a heading, a list item, an ordered list item (its delimiter), a thematic break.
_BLOCK_START = re.compile(
    r"[ \t]|>|#{1,6}(?=[ \t]|$)|[-+](?=[ \t]|$)|\d{1,9}(?P<delimiter>[.)])(?=[ \t]|$)|-(?=(?:[ \t]*-){2,}[ \t]*$)"
)


def literal(value: Any) -> str:
    """``value`` as Markdown text that shows exactly as written (line breaks become spaces).

    The one way text from data or a model enters the report: a post holding
    ``![x](/etc/passwd)``, ``<img src=...>`` or ``[x](javascript:...)`` shows those characters
    and makes no image, link or tag in any CommonMark renderer.
    """
    text = "".join(_MARKUP.get(c, c) for c in _LINE_BREAKS.sub(" ", str(value)))
    block = _BLOCK_START.match(text)
    if block:
        i = block.start("delimiter") if block.group("delimiter") else 0
        return f"{text[:i]}&#{ord(text[i])};{text[i + 1:]}"
    return text


def _literal_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows with every text cell made :func:`literal` (numbers stay numbers)."""
    return [{k: literal(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]


def shown_path(path: Path) -> str:
    """An input path as the report shows it: never the absolute path of the machine it ran on.

    The package's sample data shows as ``sample_data/task5/train.jsonl``; a path inside the
    current folder, relative to it; one in the home folder as ``~/...``; any other path as the
    user gave it.
    """
    p = Path(path)
    try:
        return "sample_data/" + p.resolve().relative_to(sample_dir().resolve()).as_posix()
    except (ValueError, OSError):
        pass
    if p.is_absolute():
        for folder, shown in ((Path.cwd(), ""), (Path.home(), "~/")):
            try:
                return shown + p.relative_to(folder).as_posix()
            except ValueError:
                pass
    return os.path.normpath(p).replace(os.sep, "/")


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #1b1b1b; line-height: 1.5; }
h1 { font-size: 1.7em; border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #bbb; padding: .3em .6em; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; }
code { background: #f3f3f3; padding: 0 .2em; }
blockquote { border-left: 4px solid #4c72b0; margin: 1em 0; padding: .2em 1em; background: #f5f8fc; }
"""


def render_html(markdown: str, figures: dict[str, Path], title: str) -> str:
    """The Markdown as one HTML page that opens offline.

    ``figures`` maps an image source as written in the Markdown (``figure2/tsne.png``) to the
    file the study wrote there; those are embedded as data URIs. Nothing else is: no raw HTML
    (``html=False``: it shows as text), no other image (it shows as its alt text), no link (its
    text stays). Whatever the Markdown holds, the page holds no file but the listed figures and
    points nowhere.
    """
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    for token in tokens:
        if token.children:
            token.children = [t for child in token.children for t in _inline_allowed(child, figures)]
    body = md.renderer.render(tokens, md.options, {})
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )


def _inline_allowed(token, figures: dict[str, Path]) -> list:
    """``token`` as the page may show it: a listed figure embedded, any other image as its alt
    text, links without their target, raw HTML as text."""
    from markdown_it.token import Token

    if token.type == "image":
        path = figures.get(token.attrGet("src") or "")
        if path is None or not path.is_file():
            return [Token("text", "", 0, content=token.content)]
        mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
        token.attrSet("src", f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode())
        return [token]
    if token.type in ("link_open", "link_close"):
        return []
    if token.type in ("html_inline", "html_block"):
        return [Token("text", "", 0, content=token.content)]
    return [token]

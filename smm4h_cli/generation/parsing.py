"""A model's answer into posts: the numbered list the prompt asks for, parsed as far as it honestly can be.

Nothing is dropped without being counted. Each answer yields its posts and a tally of what was
not clean, by kind:

per answer (counted once per call)
    ``empty``       no content at all;
    ``refusal``     no list, and the text reads as a refusal ("I can't ...", "As an AI ...");
    ``no_list``     text, but no numbered or bulleted items in it;
    ``prose``       text outside the list items (an introduction, a closing remark);
    ``numbering``   items numbered other than 1., 2., 3., ... (``1)``, ``Tweet 1:``, bullets, gaps);
    ``truncated``   the answer hit the token limit: its last, cut-off item is dropped.
    An empty, refused or list-less answer keeps no post and counts only its own kind.
per post (counted once per item)
    ``missing_items``      the list has fewer items than asked for (none are invented);
    ``extra_items``        the list has more items than asked for: those past the count are dropped;
    ``empty_items``        an item with no text;
    ``placeholder_items``  an item that only echoes the prompt's "outputN" placeholder.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

CALL_ISSUES = ("empty", "refusal", "no_list", "prose", "numbering", "truncated")
ITEM_ISSUES = ("missing_items", "extra_items", "empty_items", "placeholder_items")

# "1. text" is the paper's style; the looser pattern takes "1) text", "**1.** text", "1: text",
# "Tweet 1: text", "#1. text". At most three digits, and a separator is required, so a post
# starting "23 years old ..." is not read as item 23.
_PAPER_ITEM = re.compile(r"^(\d{1,3})\.\s+(.*)$")
_ITEM = re.compile(
    r"^(?:[*_]{1,2})?#?\s*(?:(?:tweet|post|output|example)\s*#?\s*)?(\d{1,3})\s*(?:[.):\]]|\s-)(?:[*_]{1,2})?\s*(.*)$",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^[-*•]\s+(.*)$")
_PLACEHOLDER = re.compile(r"^(?:output|tweet|post)\s*\d*\s*[:.]?$", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\b(I can(?:no|')t|I cannot|I am unable|I'm unable|I'm sorry|I am sorry|As an AI|I won't|I will not)\b",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`"


@dataclass
class Parsed:
    """The posts of one answer, in order, and the tally of its issues by kind."""

    posts: list[str] = field(default_factory=list)
    issues: Counter = field(default_factory=Counter)


def _clean(text: str) -> str:
    text = text.strip()
    for _ in range(2):  # "**"text"**" and the like
        if len(text) >= 4 and text[:2] == text[-2:] and text[:2] in ("**", "__"):
            text = text[2:-2].strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
            text = text[1:-1].strip()
    return text


def parse_numbered_list(content: str | None, expected: int, finish_reason: str | None = None) -> Parsed:
    """Posts from an answer that should be a numbered list of ``expected`` items."""
    out = Parsed()
    if content is None or not content.strip():
        out.issues["empty"] += 1
        return out

    lines = content.replace("\r\n", "\n").split("\n")
    numbered = [(_ITEM.match(line.strip()), line) for line in lines]
    use_numbers = any(m for m, _ in numbered)
    items: list[tuple[int | None, list[str]]] = []
    prose = False
    paper_style = True
    current: list[str] | None = None
    for (match, line) in numbered:
        stripped = line.strip()
        if not stripped:
            current = None  # a blank line ends an item; text after it is outside the list
            continue
        if use_numbers and match:
            paper_style &= bool(_PAPER_ITEM.match(stripped))
            current = [match.group(2)]
            items.append((int(match.group(1)), current))
        elif not use_numbers and (bullet := _BULLET.match(stripped)):
            current = [bullet.group(1)]
            items.append((None, current))
        elif current is not None:
            current.append(stripped)
        else:
            prose = True

    if not items:
        out.issues["refusal" if _REFUSAL.search(content) else "no_list"] += 1
        return out
    if prose:
        out.issues["prose"] += 1
    numbers = [n for n, _ in items]
    if not use_numbers or not paper_style or numbers != list(range(1, len(items) + 1)):
        out.issues["numbering"] += 1
    texts = ["\n".join(parts).strip() for _, parts in items]
    cut = finish_reason == "length"
    if len(texts) > expected:
        out.issues["extra_items"] += len(texts) - expected
        texts, cut = texts[:expected], False  # the cut-off item was past the count anyway
    elif len(texts) < expected:
        out.issues["missing_items"] += expected - len(texts)
    if cut:
        out.issues["truncated"] += 1
        texts = texts[:-1]
    for text in texts:
        text = _clean(text)
        if not text:
            out.issues["empty_items"] += 1
        elif _PLACEHOLDER.match(text):
            out.issues["placeholder_items"] += 1
        else:
            out.posts.append(text)
    return out

"""A model's answer into posts: the numbered list or the JSON object the prompt asks for, parsed
as far as it honestly can be, with no prompt text let into a post.

Nothing is dropped without being counted. Each answer yields its posts and a tally of what was
not clean, by kind:

per answer (counted once per call)
    ``empty``       no content at all;
    ``refusal``     no list, and the text reads as a refusal ("I can't ...", "As an AI ...");
    ``no_list``     text, but no numbered or bulleted items in it;
    ``prose``       text outside the list items (an introduction, a closing remark, also one run on
                    into the last item without a blank line when it speaks of "your dataset" and
                    the like: ``_CHATTER``);
    ``numbering``   items numbered other than 1., 2., 3., ... (``1)``, ``Tweet 1:``, bullets, gaps);
    ``truncated``   the answer hit the token limit: its last, cut-off item is dropped.
    ``invalid_json`` (JSON output) not a JSON object with a ``posts`` list, and not a truncated one.
    An empty, refused, list-less or invalid answer keeps no post and counts only its own kind.
per post (counted once per item)
    ``missing_items``      the list has fewer items than asked for (none are invented);
    ``extra_items``        the list has more items than asked for: those past the count are dropped;
    ``empty_items``        an item with no text;
    ``placeholder_items``  an item that only echoes the prompt's "outputN" placeholder;
    ``fragment_items``     an item that is not a post: fewer than 3 words with letters in them, or
                           a fifth or more of its characters JSON or markup (``{}[]<>``) — the
                           pieces of JSON a small model writes inside the grammar's strings
                           (``"},\n body:"``, ``"[4]"``, ``"Istanbul, Turkey"``);
    ``invalid_items``      (JSON output) an item that is not a string;
    ``prompt_echo``        an item that goes on with text of the prompt (an "Example of label 0:"
                           header, an example, the instructions): that text is cut, the post kept;
    ``echo_items``         an item that is nothing but prompt text: dropped.

Echoed prompt text is found by one rule (:func:`cut_echo`): from a label header ("Example(s) of
label N:", "Label N:") anywhere, or from a line after the first whose normalised start is text of
the prompt, to the end of the item. A post that as a whole copies an example is not cut here: it
is flagged ``example_copy`` by ``dedup``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from smm4h_cli.generation.dedup import normalise

CALL_ISSUES = ("empty", "refusal", "no_list", "prose", "numbering", "truncated", "invalid_json")
ITEM_ISSUES = ("missing_items", "extra_items", "empty_items", "placeholder_items", "fragment_items", "invalid_items", "prompt_echo", "echo_items")

# "1. text" is the paper's style; the looser pattern takes "1) text", "**1.** text", "1: text",
# "Tweet 1: text", "#1. text". At most three digits, and a separator is required, so a post
# starting "23 years old ..." is not read as item 23; a "." or ":" followed by a digit is a time
# or a number ("3:00 am and still no sleep", "1.5 years"), not a separator.
_PAPER_ITEM = re.compile(r"^(\d{1,3})\.\s+(.*)$")
_ITEM = re.compile(
    r"^(?:[*_]{1,2})?#?\s*(?:(?:tweet|post|output|example)\s*#?\s*)?(\d{1,3})\s*(?:[.:](?!\d)|[)\]]|\s-)(?:[*_]{1,2})?\s*(.*)$",
    re.IGNORECASE,
)
#: A later line of the last item that speaks to whoever asked for the posts ("I hope these tweets
#: are helpful for your dataset!"): closing chatter, cut and counted as ``prose``. Narrow on purpose:
#: only words no parent's post has reason to use (a dataset, "feel free to modify"), so that a
#: post's own later lines ("let me know if you have tips", "I hope these meds help") stay.
_CHATTER = re.compile(
    r"\byour (?:dataset|data set|training data|classifier|model|task|project|research|request|needs|purposes?)\b"
    r"|\blet me know if you (?:need|want|would like|'d like) (?:more|any|additional|other|different|me)\b"
    r"|\bfeel free to (?:use|modify|adjust|edit|change|tweak)\b"
    r"|\b(?:these|the above) (?:\w+ )?(?:tweets|posts|examples) (?:are|were) (?:all )?(?:fictional|generated|made up)\b",
    re.IGNORECASE,
)
_BULLET = re.compile(r"^[-*•]\s+(.*)$")
_PLACEHOLDER = re.compile(r"^(?:output|tweet|post)\s*\d*\s*[:.]?$", re.IGNORECASE)
_REFUSAL = re.compile(
    r"\b(I can(?:no|')t|I cannot|I am unable|I'm unable|I'm sorry|I am sorry|As an AI|I won't|I will not)\b",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`"
#: The quote marks of each kind: a wrapping pair is stripped only when the text holds no other of its kind.
_QUOTE_KINDS = ("\"“”", "'‘’`")
_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
#: A post has at least this many words with a letter in them, and under a fifth of markup characters.
MIN_WORDS, _MARKUP, _MARKUP_SHARE = 3, frozenset("{}[]<>"), 0.2
_WORD = re.compile(r"[^\W\d_]")
_ECHO_HEADER = re.compile(r"(?:\bexamples?\s+of\s+)?\blabel\s*['\"]?\s*[01]\s*['\"]?\s*:", re.IGNORECASE)
#: A line after a post's first is prompt text when this many of its first normalised characters are.
_ECHO_PREFIX, _ECHO_MIN = 40, 20


@dataclass
class Parsed:
    """The posts of one answer, in order, and the tally of its issues by kind."""

    posts: list[str] = field(default_factory=list)
    issues: Counter = field(default_factory=Counter)


def _wrapped(text: str) -> bool:
    """Whether ``text`` is wrapped in one pair of quotes of one kind, with no other of that kind
    inside (``"Autism" is not a bad word, my son is "different"`` is not: it quotes two words)."""
    if len(text) < 2 or text[0] not in _QUOTES or text[-1] not in _QUOTES:
        return False
    kind = next(k for k in _QUOTE_KINDS if text[0] in k)
    if text[-1] not in kind:
        return False
    inner = _APOSTROPHE.sub("", text[1:-1]) if kind[0] == "'" else text[1:-1]  # don't, son’s: not quotes
    return not any(c in kind for c in inner)


def _clean(text: str) -> str:
    text = text.strip()
    for _ in range(2):  # "**"text"**" and the like
        if len(text) >= 4 and text[:2] == text[-2:] and text[:2] in ("**", "__"):
            text = text[2:-2].strip()
        if _wrapped(text):
            text = text[1:-1].strip()
    return text


def cut_echo(text: str, prompt_norm: str) -> tuple[str, bool]:
    """``text`` up to the first echoed prompt text (see the module docstring), and whether any was cut."""
    original = text
    while (lead := _ECHO_HEADER.match(text)):  # "Label 1: post": the tag goes, the post stays
        text = text[lead.end():].lstrip()
    header = _ECHO_HEADER.search(text)
    end = header.start() if header else len(text)
    lines = text[:end].split("\n")
    for i, line in enumerate(lines[1:], start=1):
        norm = normalise(line)
        if prompt_norm and len(norm) >= _ECHO_MIN and norm[:_ECHO_PREFIX] in prompt_norm:
            lines = lines[:i]
            break
    kept = "\n".join(lines).rstrip()
    return kept, kept != original.rstrip()


def fragment(text: str) -> bool:
    """Whether ``text`` is a fragment, not a post (``fragment_items`` in the module docstring)."""
    words = sum(1 for w in text.split() if _WORD.search(w))
    return words < MIN_WORDS or sum(c in _MARKUP for c in text) >= _MARKUP_SHARE * len(text)


def _finish(out: Parsed, texts: list, prompt: str | None) -> Parsed:
    """The per-item checks every format shares: types, quotes, emptiness, placeholders, prompt echo."""
    prompt_norm = normalise(prompt) if prompt else ""
    for text in texts:
        if not isinstance(text, str):
            out.issues["invalid_items"] += 1
            continue
        text, cut = cut_echo(_clean(text), prompt_norm) if prompt_norm else (_clean(text), False)
        text = _clean(text)
        if cut and not text:
            out.issues["echo_items"] += 1
        elif not text:
            out.issues["empty_items"] += 1
        elif _PLACEHOLDER.match(text):
            out.issues["placeholder_items"] += 1
        elif fragment(text):
            out.issues["fragment_items"] += 1
        else:
            if cut:
                out.issues["prompt_echo"] += 1
            out.posts.append(text)
    return out


def parse_answer(content: str | None, expected: int, finish_reason: str | None = None,
                 output_format: str = "list", prompt: str | None = None) -> Parsed:
    """Posts from an answer in ``output_format`` (``list`` or ``json``); ``prompt``: the call's prompt, whose echoes are cut."""
    if output_format == "json":
        return parse_json_posts(content, expected, finish_reason, prompt)
    return parse_numbered_list(content, expected, finish_reason, prompt)


def _count(out: Parsed, texts: list, expected: int) -> list:
    if len(texts) > expected:
        out.issues["extra_items"] += len(texts) - expected
        return texts[:expected]
    if len(texts) < expected:
        out.issues["missing_items"] += expected - len(texts)
    return texts


def _salvage(content: str) -> list | None:
    """The complete items of a JSON answer cut off by the token limit, or None if it is not one."""
    start = re.match(r'\s*\{\s*"posts"\s*:\s*\[', content)
    if not start:
        return None
    decoder, items, at = json.JSONDecoder(strict=False), [], start.end()
    while True:
        while at < len(content) and content[at] in " \t\r\n,":
            at += 1
        try:
            item, at = decoder.raw_decode(content, at)
        except json.JSONDecodeError:
            return items
        items.append(item)


def parse_json_posts(content: str | None, expected: int, finish_reason: str | None = None, prompt: str | None = None) -> Parsed:
    """Posts from an answer that should be ``{"posts": [expected strings]}`` (``--output-format json``).

    The schema asks for exactly ``expected`` items, but a server may not enforce it, or the
    token limit may cut the answer: what came is counted as honestly as a list is.
    """
    out = Parsed()
    if content is None or not content.strip():
        out.issues["empty"] += 1
        return out
    try:
        # strict=False: a raw line break inside a string, which llama.cpp's JSON grammar lets
        # through, is text of the post, not a broken answer
        data = json.loads(content, strict=False)
    except json.JSONDecodeError:
        salvaged = _salvage(content) if finish_reason == "length" else None
        if salvaged is None:
            out.issues["refusal" if _REFUSAL.search(content) else "invalid_json"] += 1
            return out
        out.issues["truncated"] += 1
        return _finish(out, _count(out, salvaged, expected), prompt)
    texts = data.get("posts") if isinstance(data, dict) else None
    if not isinstance(texts, list):
        out.issues["invalid_json"] += 1
        return out
    return _finish(out, _count(out, texts, expected), prompt)


def parse_numbered_list(content: str | None, expected: int, finish_reason: str | None = None, prompt: str | None = None) -> Parsed:
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
    last = items[-1][1]
    chatter = next((i for i in range(1, len(last)) if _CHATTER.search(last[i])), None)
    if chatter is not None:  # closing chatter run on into the last item, without a blank line
        del last[chatter:]
        prose = True
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
    return _finish(out, texts, prompt)

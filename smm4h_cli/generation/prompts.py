"""Task definitions and the few-shot prompt of the paper (Appendix A.1.1 for Task 5, A.1.2 for Task 6).

A prompt is the task's label definitions, ``k`` negative and ``k`` positive examples drawn from
the training file, and the request for a numbered list of fictional posts of label 1, in the
paper's words. The built-in definitions are the appendix text verbatim (only the PDF's page
breaks are joined); ``load_definitions`` reads a user's own task from YAML or JSON so the same
prompt serves any binary task.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from smm4h_cli.errors import InputError

TASK5_DEFINITION = (
    "The following tweets are from a parent with a child. The label has a definition like ' This binary "
    "classification task involves automatically distinguishing tweets, posted by users who had reported "
    "their pregnancy on Twitter, that report having a child with attention-deficit/hyperactivity disorder "
    "(ADHD), autism spectrum disorders (ASD), delayed speech, or asthma (annotated as \"1\"), from tweets "
    "that merely mention a disorder (annotated as \"0\")."
)

TASK6_DEFINITION = (
    "The posts in the following dataset come from social media platforms Twitter and Reddit. These posts "
    "are used to automatically train models focused on identifying instances where the user's exact age is "
    "explicitly mentioned. This is particularly useful for health and demographic research applications "
    "that require precise age data.\n\n"
    "Here's a summary of the definitions for labels 0 and 1 in this dataset:\n\n"
    "Label 1: This label is assigned to posts where the user's exact age can be determined directly from "
    "the text at the time the entry was posted. Examples include explicit mentions of age, such as \"It's my "
    "21st birthday today\" or inferred statements where the user indicates they will be a certain age, like "
    "\"tomorrow I'll be 20.\"\n\n"
    "Label 0: This label is used for posts where the age of the user cannot be determined or is ambiguous. "
    "Examples include unclear references to age, mentions of age that may not be current (like past or "
    "future tense without a clear indicator of current age), or mentions of someone else's age (e.g., a "
    "sibling or child)"
)

EXAMPLE_ORDERS = ("negative_first", "positive_first")
#: ``paper``: Appendix A.1 verbatim. ``list``: the same definitions and examples, with the examples
#: as bullets and a plain request for a numbered list, which a 135M-parameter model can follow
#: (given the paper's "1. output1 ..." template, SmolLM2 echoes the placeholders).
REQUEST_STYLES = ("paper", "list")


@dataclass(frozen=True)
class TaskDefinition:
    """What the generator is told about a binary task.

    Attributes:
        name: a short name for provenance and messages (``task5``, or the file's stem).
        definition: the label definitions, placed before the examples (the paper's first paragraph(s)).
        post_kind: what to create, plural, as in "Create 10 fictional {post_kind} of ' label 1'".
        example_order: ``negative_first`` (the paper's Task 5 prompt) or ``positive_first`` (Task 6).
    """

    name: str
    definition: str
    post_kind: str = "tweets"
    example_order: str = "negative_first"

    def __post_init__(self) -> None:
        if not self.definition.strip():
            raise InputError(f"the task definition '{self.name}' has an empty 'definition'; write the label definitions there.")
        if not self.post_kind.strip():
            raise InputError(f"the task definition '{self.name}' has an empty 'post_kind'; write what to create, e.g. tweets.")
        if self.example_order not in EXAMPLE_ORDERS:
            raise InputError(
                f"the task definition '{self.name}': example_order must be one of {', '.join(EXAMPLE_ORDERS)}; "
                f"got '{self.example_order}'."
            )


BUILTIN = {
    5: TaskDefinition("task5", TASK5_DEFINITION, "tweets", "negative_first"),
    6: TaskDefinition("task6", TASK6_DEFINITION, "tweets", "positive_first"),
}


def builtin_task(task: int) -> TaskDefinition:
    """The paper's definitions for SMM4H 2024 Task 5 or Task 6."""
    if task not in BUILTIN:
        raise InputError(f"--task must be 5 or 6 (the SMM4H 2024 tasks); got {task}. Use --definitions FILE for another task.")
    return BUILTIN[task]


def load_definitions(path: str | Path) -> TaskDefinition:
    """A user's task from a YAML or JSON file with keys ``definition`` (required), ``post_kind``,
    ``example_order`` and ``name``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such definitions file. Give a YAML or JSON file with a 'definition' key.")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid YAML or JSON ({str(exc).splitlines()[0]}). Fix the file's syntax.") from None
    if not isinstance(data, dict) or not isinstance(data.get("definition"), str):
        raise InputError(
            f"{p}: expected a mapping with a 'definition' text (the label definitions), and optionally "
            f"'post_kind' (e.g. tweets), 'example_order' (negative_first or positive_first) and 'name'."
        )
    known = {"name", "definition", "post_kind", "example_order"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{p}: unknown key(s) {', '.join(unknown)}; the keys are {', '.join(sorted(known))}.")
    return TaskDefinition(
        name=str(data.get("name") or p.stem),
        definition=data["definition"].strip(),
        post_kind=str(data.get("post_kind", "tweets")),
        example_order=str(data.get("example_order", "negative_first")),
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def few_shot_prompt(
    task: TaskDefinition,
    positives: Sequence[str],
    negatives: Sequence[str],
    count: int = 10,
    attributes: dict[str, str] | None = None,
    style: str = "paper",
    output_format: str = "list",
) -> str:
    """The paper's prompt (Appendix A.1): definitions, examples, and the request for ``count``
    posts of label 1 in a numbered list. ``attributes`` (AttrPrompt) adds the characteristics
    every post must have, just before the request; ``style="list"`` words the examples and the
    request for small models (see ``REQUEST_STYLES``). ``output_format="json"`` changes only the
    answer-format sentence: the JSON object ``{"posts": [...]}`` in place of the numbered list
    (``structured.py``); ``paper`` style with ``list`` output is Appendix A.1 verbatim."""
    if style not in REQUEST_STYLES:
        raise InputError(f"--request-style must be one of {', '.join(REQUEST_STYLES)}; got '{style}'.")
    mark = "" if style == "paper" else "- "
    neg = "Examples of label 0:\n" + "\n".join(mark + _one_line(t) for t in negatives)
    pos = "Examples of label 1:\n" + "\n".join(mark + _one_line(t) for t in positives)
    blocks = [task.definition, *((neg, pos) if task.example_order == "negative_first" else (pos, neg))]
    if attributes:
        lines = "\n".join(f"- {name}: {value}" for name, value in attributes.items())
        blocks.append(f"Every one of the {task.post_kind} you create must have these characteristics:\n{lines}")
    json_output = output_format == "json"
    if style == "paper":
        blocks.append(f"Create {count} fictional {task.post_kind} of ' label 1'.")
        if json_output:
            template = json.dumps({"posts": [f"output{i}" for i in range(1, count + 1)]})
        else:
            template = "\n".join(f"{i}. output{i}" for i in range(1, count + 1))
        blocks.append(f"You should output following style\n\n{template}")
    elif json_output:
        blocks.append(
            f"Write {count} new fictional {task.post_kind} of label 1. Answer with a JSON object "
            f'{{"posts": [...]}} holding exactly {count} strings, one post each, and nothing else.'
        )
    else:
        blocks.append(
            f"Write {count} new fictional {task.post_kind} of label 1. Answer with a numbered list "
            f"from 1 to {count}, one per line, and nothing else."
        )
    return "\n\n".join(blocks)


def request_hash(request: dict, server: dict | None = None) -> str:
    """A stable hash of a chat request (model, messages, parameters) and of the ``server`` that
    answers it (``backends.cache_identity``; None: the request alone, OpenAI's key): the cache key."""
    keyed = request if server is None else {"request": request, "server": server}
    canonical = json.dumps(keyed, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]
